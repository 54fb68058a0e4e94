"""The exact tree metric and the one-pass greedy next hop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axiomnet.constants import MAX_PORT, MAX_TREE_DEPTH
from axiomnet.greedy import (NO_HOP, UNREACHED, NeighbourForest, NeighbourPaths, common_prefix, distances_to,
                             forest_choice, greedy_choice, pad_paths, tree_distance, valid_path)

paths = st.lists(st.integers(1, 6), max_size=12).map(tuple)


def test_tree_distance_examples() -> None:
    assert tree_distance((), ()) == 0
    assert tree_distance((1, 2), (1, 2)) == 0
    assert tree_distance((1,), (1, 2, 3)) == 2  # an ancestor two levels up
    assert tree_distance((1, 2), (1, 3)) == 2  # siblings
    assert tree_distance((2,), (1, 3)) == 3  # through the root


@settings(max_examples=300)
@given(paths, paths)
def test_prop_coordinate_distance_commutative(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    """The seed's prop_coordinate_distance_commutative, for the metric routing uses."""
    assert tree_distance(a, b) == tree_distance(b, a) >= 0
    assert (tree_distance(a, b) == 0) == (a == b)


@pytest.mark.slow
@settings(max_examples=300)
@given(paths, paths, paths)
def test_tree_distance_is_a_metric(a: tuple[int, ...], b: tuple[int, ...], c: tuple[int, ...]) -> None:
    assert tree_distance(a, c) <= tree_distance(a, b) + tree_distance(b, c)


@pytest.mark.slow
@settings(max_examples=200)
@given(st.lists(paths, min_size=1, max_size=20), paths)
def test_vectorised_distances_equal_the_scalar_metric(rows: list[tuple[int, ...]], dst: tuple[int, ...]) -> None:
    matrix, lengths = pad_paths(rows, MAX_TREE_DEPTH)
    target = np.zeros(MAX_TREE_DEPTH, dtype=np.uint16)
    target[: len(dst)] = dst
    assert distances_to(matrix, lengths, target, len(dst)).tolist() == [tree_distance(r, dst) for r in rows]


def test_greedy_choice_takes_only_strictly_closer_and_breaks_ties_by_cost() -> None:
    distances = np.array([5, 3, 3, 4])
    costs = np.array([0.1, 0.9, 0.2, 0.0])
    assert greedy_choice(distances, costs, self_distance=4) == 2
    assert greedy_choice(distances, costs, self_distance=3) == NO_HOP


def test_neighbour_paths_next_hop_goes_down_to_the_child_or_up_to_the_parent() -> None:
    # We are (1,); neighbours: parent (), child (1, 4), and a cross link (2, 7).
    table = NeighbourPaths([b"p", b"c", b"x"], [(), (1, 4), (2, 7)], [1.0, 1.0, 1.0])
    assert table.next_hop((1,), (1, 4, 9)) == (1, 2)
    assert table.next_hop((1,), (3,)) == (0, 2)
    assert table.next_hop((1,), (2, 7, 1)) == (2, 4)  # the cross link is closer than the parent
    assert table.next_hop((1,), (1,)) == (NO_HOP, 0)


def test_next_hop_over_max_depth_paths_and_many_neighbours_is_exact() -> None:
    rng = np.random.default_rng(1)
    rows = [tuple(int(x) for x in rng.integers(1, 4, size=rng.integers(0, MAX_TREE_DEPTH + 1))) for _ in range(500)]
    dst = rows[17]
    table = NeighbourPaths([bytes([i % 256, i // 256]) for i in range(500)], rows, [1.0] * 500)
    index, own = table.next_hop((9,), dst)
    assert own == tree_distance((9,), dst)
    assert index == 17 or tree_distance(rows[index], dst) == 0


def test_valid_path_bounds() -> None:
    assert valid_path(()) and valid_path((1, MAX_PORT))
    assert not valid_path((0,)) and not valid_path((MAX_PORT + 1,))
    assert not valid_path((1,) * (MAX_TREE_DEPTH + 1)) and valid_path((1,) * MAX_TREE_DEPTH)
    assert not valid_path((1.0,))  # type: ignore[arg-type]  # no float ever reaches a routing decision


def _brute_force_next_hop(rows: list[tuple[int, ...]], costs: list[float], me: tuple[int, ...],
                          dst: tuple[int, ...]) -> tuple[int, int]:
    """The greedy rule written out with the scalar metric: smallest distance below ours, then cost, then index."""
    own = tree_distance(me, dst)
    closer = [(tree_distance(r, dst), c, i) for i, (r, c) in enumerate(zip(rows, costs)) if tree_distance(r, dst) < own]
    return (min(closer)[2] if closer and own else NO_HOP), own


# Few port values and short paths make shared prefixes, duplicate rows and distance ties common.
short_paths = st.lists(st.integers(1, 3), max_size=6).map(tuple)


@pytest.mark.slow
@settings(max_examples=500)
@given(st.lists(st.tuples(short_paths, st.sampled_from([0.5, 1.0, 2.0])), max_size=16), short_paths, short_paths)
def test_sorted_next_hop_equals_the_greedy_rule_on_the_scalar_metric(
        neighbours: list[tuple[tuple[int, ...], float]], me: tuple[int, ...], dst: tuple[int, ...]) -> None:
    rows = [r for r, _ in neighbours]
    costs = [c for _, c in neighbours]
    table = NeighbourPaths([bytes([i]) for i in range(len(rows))], rows, costs)
    assert table.next_hop(me, dst) == _brute_force_next_hop(rows, costs, me, dst)
    assert table.distances(dst).tolist() == [tree_distance(r, dst) for r in rows]


@settings(max_examples=300)
@given(paths, paths)
def test_common_prefix_is_the_first_mismatch(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert common_prefix(a, b) == common_prefix(list(a), b) == common_prefix(b, list(a)) == first


def test_next_hop_over_deep_paths_and_many_neighbours_matches_the_scalar_metric() -> None:
    rng = np.random.default_rng(2)
    rows = [tuple(int(x) for x in rng.integers(1, 3, size=rng.integers(0, MAX_TREE_DEPTH + 1))) for _ in range(300)]
    costs = [float(c) for c in rng.integers(1, 3, size=300)]
    table = NeighbourPaths([bytes([i % 256, i // 256]) for i in range(300)], rows, costs)
    for _ in range(50):
        near = rows[int(rng.integers(300))]
        cut = int(rng.integers(len(near) + 1))
        dst = near[:cut] + tuple(int(x) for x in rng.integers(1, 3, size=int(rng.integers(0, 20))))
        me = tuple(int(x) for x in rng.integers(1, 3, size=int(rng.integers(0, 40))))
        assert table.next_hop(me, dst) == _brute_force_next_hop(rows, costs, me, dst)


# --- several trees: greedy on the minimum distance over trees ---------------------------------------------------
def test_forest_choice_takes_the_smallest_minimum_over_trees_strictly_below_ours() -> None:
    costs = np.array([1.0, 1.0, 0.5])
    # Neighbour 0 is at 3 in tree 0, neighbour 1 at 1 in tree 1 (outside tree 0), neighbour 2 at 4 / 2.
    d = np.array([[3, UNREACHED, 4], [5, 1, 2]])
    assert forest_choice(d, costs, 4) == 1
    assert forest_choice(d, costs, 1) == NO_HOP  # nothing strictly below the watermark
    assert forest_choice(np.array([[2, 2, 2]]), costs, 3) == 2  # a tie goes to the lower cost
    assert forest_choice(d, costs, UNREACHED) == NO_HOP  # no tree shared with the destination
    with pytest.raises(ValueError):
        forest_choice(np.array([3, 1]), costs[:2], 4)


def _tree_coordinates(graph: Any, root: int) -> dict[int, tuple[int, ...]]:
    """BFS tree from ``root``: each node's path of ports (a child's port = its place among the parent's sorted
    neighbours, + 1), as Tree gives ports per link."""
    import networkx as nx
    paths = {root: ()}
    for parent, child in nx.bfs_edges(graph, root):
        paths[child] = paths[parent] + (sorted(graph[parent]).index(child) + 1,)
    return paths


def _forest(graph: Any, v: int, trees: list[dict[int, tuple[int, ...]]]) -> tuple[list[int], NeighbourForest]:
    nbs = sorted(graph[v])
    table = NeighbourForest([bytes([i % 256, i // 256]) for i in range(len(nbs))],
                            [(list(range(len(nbs))), [t[u] for u in nbs]) for t in trees], [1.0] * len(nbs))
    return nbs, table


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 60), st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_greedy_on_the_minimum_over_trees_always_delivers_and_never_beats_the_best_tree_bound(
        n: int, seed: int, k: int) -> None:
    import networkx as nx
    rng = np.random.default_rng(seed)
    graph = nx.compose(nx.random_labeled_tree(n, seed=seed), nx.gnp_random_graph(n, 3 / n, seed=seed))
    trees = [_tree_coordinates(graph, int(r)) for r in rng.choice(n, size=k, replace=False)]
    tables = {v: _forest(graph, v, trees) for v in graph}
    for s, d in rng.integers(0, n, size=(20, 2)):
        s, d = int(s), int(d)
        if s == d:
            continue
        x, hops = s, 0
        _, watermark = tables[s][1].next_hop([t[s] for t in trees], [t[d] for t in trees])
        start = watermark
        assert start == min(tree_distance(t[s], t[d]) for t in trees)
        while x != d:
            nbs, table = tables[x]
            index, mine = table.next_hop([t[x] for t in trees], [t[d] for t in trees])
            assert mine <= watermark and index != NO_HOP  # never a dead end with consistent coordinates
            nxt = nbs[index]
            nxt_min = min(tree_distance(t[nxt], t[d]) for t in trees)
            # The brute-force rule: the chosen neighbour's minimum is the smallest of all, strictly below ours.
            assert nxt_min == min(min(tree_distance(t[u], t[d]) for t in trees) for u in nbs) < mine
            x, hops, watermark = nxt, hops + 1, nxt_min
        assert hops <= start  # no loop, and never longer than the best single tree's path


@settings(max_examples=200)
@given(st.lists(st.tuples(short_paths, st.sampled_from([0.5, 1.0, 2.0])), max_size=12), short_paths, short_paths)
def test_one_tree_forest_decides_exactly_as_neighbour_paths(
        neighbours: list[tuple[tuple[int, ...], float]], me: tuple[int, ...], dst: tuple[int, ...]) -> None:
    rows = [r for r, _ in neighbours]
    costs = [c for _, c in neighbours]
    keys = [bytes([i]) for i in range(len(rows))]
    forest = NeighbourForest(keys, [(list(range(len(rows))), rows)], costs)
    assert forest.next_hop([me], [dst]) == NeighbourPaths(keys, rows, costs).next_hop(me, dst)


def test_a_tree_we_or_the_destination_are_not_in_takes_no_part() -> None:
    keys = [b"a", b"b"]
    # Tree 0: neighbour a is the destination's sibling; tree 1 holds only b, which is the destination there.
    forest = NeighbourForest(keys, [([0], [(1,)]), ([1], [(2, 1)])], [1.0, 1.0])
    assert forest.next_hop([(), (2,)], [(2,), (2, 1)]) == (1, 1)  # tree 1 says b is the destination
    assert forest.next_hop([(), None], [(2,), (2, 1)]) == (NO_HOP, 1)  # not in tree 1: only tree 0 counts
    assert forest.next_hop([(), (2,)], [(2,), None]) == (NO_HOP, 1)
    assert forest.next_hop([None, None], [(2,), (2, 1)]) == (NO_HOP, UNREACHED)
    with pytest.raises(ValueError):
        NeighbourForest(keys, [([0, 1], [(1,)])], [1.0, 1.0])
