"""Demo topologies: links, paths and the longest path."""

from __future__ import annotations

import pytest

from axiomnet.lab.topology import build, chain


def test_line() -> None:
    topo = build("line", 4)
    assert topo.edges == ((0, 1), (1, 2), (2, 3))
    assert topo.path(0, 3) == [0, 1, 2, 3] and topo.longest_pair() == (0, 3)
    assert topo.neighbours(1) == [0, 2] and [topo.name(i) for i in range(4)] == ["A", "B", "C", "D"]
    assert topo.pairs() == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_ring_star_mesh() -> None:
    ring = build("ring", 5)
    assert len(ring.edges) == 5 and ring.path(0, 4) == [0, 4] and len(ring.path(*ring.longest_pair())) == 3
    star = build("star", 4)
    assert star.neighbours(0) == [1, 2, 3] and star.path(1, 3) == [1, 0, 3]
    mesh = build("mesh", 4)
    assert len(mesh.edges) == 6 and all(len(mesh.path(a, b)) == 2 for a, b in mesh.pairs())


def test_two_nodes_are_one_link_and_bad_shapes_are_refused() -> None:
    assert build("line", 2).edges == ((0, 1),) and build("star", 2).edges == ((0, 1),)
    with pytest.raises(ValueError, match="ring needs at least 3"):
        build("ring", 2)
    with pytest.raises(ValueError, match="unknown topology"):
        build("torus", 4)
    with pytest.raises(ValueError):
        build("line", 1)


def test_a_chain_has_any_length_beyond_the_26_lettered_nodes() -> None:
    edges = chain(40)  # the deep-chain test's line (tests/integration/test_deep_chain.py)
    assert len(edges) == 39 and edges[0] == (0, 1) and edges[-1] == (38, 39)
    assert all(b == a + 1 for a, b in edges)
    assert chain(4) == build("line", 4).edges
    with pytest.raises(ValueError, match="at least 2"):
        chain(1)
