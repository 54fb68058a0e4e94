"""Demo topologies: which nodes are linked (and peer), shortest paths and the longest of them (pure)."""

from __future__ import annotations

import string
from collections import deque
from dataclasses import dataclass
from itertools import combinations

KINDS = ("line", "ring", "star", "mesh")


@dataclass(frozen=True)
class Topology:
    """``nodes`` nodes named A, B, C, ...; ``edges`` are the links (each one a veth and a peering)."""

    kind: str
    nodes: int
    edges: tuple[tuple[int, int], ...]

    def name(self, index: int) -> str:
        return string.ascii_uppercase[index]

    def neighbours(self, index: int) -> list[int]:
        return sorted({b for a, b in self.edges if a == index} | {a for a, b in self.edges if b == index})

    def path(self, src: int, dst: int) -> list[int]:
        """A shortest path from ``src`` to ``dst`` (breadth first, lowest index first), [] if unconnected."""
        previous: dict[int, int | None] = {src: None}
        queue = deque([src])
        while queue:
            node = queue.popleft()
            if node == dst:
                break
            for nxt in self.neighbours(node):
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        if dst not in previous:
            return []
        path = [dst]
        while (step := previous[path[-1]]) is not None:
            path.append(step)
        return path[::-1]

    def pairs(self) -> list[tuple[int, int]]:
        """Every unordered pair of nodes, in order."""
        return list(combinations(range(self.nodes), 2))

    def longest_pair(self) -> tuple[int, int]:
        """The pair whose shortest path has the most hops (the first such pair)."""
        return max(self.pairs(), key=lambda pair: len(self.path(*pair)))


def chain(nodes: int) -> tuple[tuple[int, int], ...]:
    """The links of a line of ``nodes`` nodes of any length, 0-1, 1-2, ... (the deep-chain test's topology;
    :func:`build` names its nodes by letter and stops at 26)."""
    if nodes < 2:
        raise ValueError("a chain has at least 2 nodes")
    return tuple((i, i + 1) for i in range(nodes - 1))


def build(kind: str, nodes: int) -> Topology:
    """The ``kind`` topology of ``nodes`` nodes; ValueError for an unknown kind or a size it cannot have."""
    if kind not in KINDS:
        raise ValueError(f"unknown topology {kind!r} (known: {', '.join(KINDS)})")
    if not 2 <= nodes <= len(string.ascii_uppercase):
        raise ValueError("a topology has 2 to 26 nodes")
    if kind == "ring" and nodes < 3:
        raise ValueError("a ring needs at least 3 nodes")
    if kind == "line":
        edges = list(chain(nodes))
    elif kind == "ring":
        edges = [*chain(nodes), (0, nodes - 1)]
    elif kind == "star":
        edges = [(0, i) for i in range(1, nodes)]
    else:
        edges = list(combinations(range(nodes), 2))
    return Topology(kind, nodes, tuple(edges))
