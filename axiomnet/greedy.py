"""The exact tree metric and the greedy next hop, vectorised over neighbours with numpy (pure, no I/O).

A node's coordinates are its tree's root and the path of ports from that root (ports are 1..MAX_PORT). Two
nodes of one tree are ``len(a) + len(b) - 2 * lcp(a, b)`` hops apart along the tree (lcp: the length of the
longest common prefix); this integer metric is exactly what a greedy hyperbolic embedding of the tree
realises, without its floating-point limits (docs/ROUTING.md §1). Forwarding is greedy over ALL links: a packet
goes to the neighbour strictly closest to the destination among those strictly closer than this node, so the
distance strictly falls at every hop and, with consistent coordinates, always reaches the destination (the
parent, or the child whose subtree holds the destination, is always strictly closer).

Paths live in a padded ``uint16`` matrix, one row per neighbour, 0 past a row's length; since ports are >= 1 a
padding cell never equals a port, so the common-prefix length of a row and a destination never runs past
either path. Nothing here sees a float: distances are integers, costs only break ties.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from axiomnet.constants import MAX_PORT, MAX_TREE_DEPTH

PATH_DTYPE = np.uint16
NO_HOP = -1
Path = tuple[int, ...]


def tree_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Hops between two positions of one tree: |a| + |b| - 2 * (length of their common prefix)."""
    common = 0
    for x, y in zip(a, b):
        if x != y:
            break
        common += 1
    return len(a) + len(b) - 2 * common


def valid_path(path: Sequence[int]) -> bool:
    """True if ``path`` is a usable position: at most MAX_TREE_DEPTH ports, each an int in 1..MAX_PORT."""
    return len(path) <= MAX_TREE_DEPTH and all(type(p) is int and 1 <= p <= MAX_PORT for p in path)


def pad_paths(paths: Sequence[Sequence[int]], width: int | None = None) -> tuple[npt.NDArray[np.uint16],
                                                                                   npt.NDArray[np.int64]]:
    """(matrix, lengths): ``paths`` as rows of a 0-padded uint16 matrix ``width`` wide (default: the longest)."""
    lengths = np.fromiter((len(p) for p in paths), dtype=np.int64, count=len(paths))
    if width is None:
        width = int(lengths.max()) if len(paths) else 0
    matrix = np.zeros((len(paths), max(width, 1)), dtype=PATH_DTYPE)
    for i, path in enumerate(paths):
        matrix[i, : len(path)] = path
    return matrix, lengths


def distances_to(matrix: npt.NDArray[np.uint16], lengths: npt.NDArray[np.int64],
                 dst: npt.NDArray[np.uint16], dst_len: int) -> npt.NDArray[np.int64]:
    """Tree distance from every row of ``matrix`` to the destination path ``dst[:dst_len]`` (one numpy pass)."""
    n = min(dst_len, matrix.shape[1])
    if n == 0:
        return lengths + dst_len
    eq = matrix[:, :n] == dst[:n]
    # argmin of a boolean row is its first False; a row equal over all n columns has lcp n.
    lcp = np.where(eq.all(axis=1), n, eq.argmin(axis=1))
    return lengths + dst_len - 2 * lcp


def greedy_choice(distances: npt.NDArray[np.int64], costs: npt.NDArray[np.float64], self_distance: int) -> int:
    """Index of the neighbour to forward to, or NO_HOP: the smallest distance among those strictly below
    ``self_distance``, ties broken by the lower cost, then by the lower index (deterministic)."""
    closer = np.flatnonzero(distances < self_distance)
    if closer.size == 0:
        return NO_HOP
    d = distances[closer]
    best = closer[d == d.min()]
    if best.size > 1:
        best = best[np.argsort(costs[best], kind="stable")]
    return int(best[0])


class NeighbourPaths:
    """The neighbours that share our tree, as one padded path matrix with their costs (rebuilt on change).

    ``next_hop`` is the whole forwarding decision for one destination: ONE vectorised computation of every
    neighbour's distance to it, then the greedy choice.
    """

    def __init__(self, keys: Sequence[bytes], paths: Sequence[Path], costs: Sequence[float]) -> None:
        if not len(keys) == len(paths) == len(costs):
            raise ValueError("keys, paths and costs must have one entry per neighbour")
        self.keys = list(keys)
        self.matrix, self.lengths = pad_paths(paths, MAX_TREE_DEPTH)
        self.costs = np.asarray(costs, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def next_hop(self, self_path: Path, dst: Path) -> tuple[int, int]:
        """(index of the neighbour to forward to or NO_HOP, our own distance to ``dst``)."""
        self_distance = tree_distance(self_path, dst)
        if not self.keys or self_distance == 0:
            return NO_HOP, self_distance
        target = np.zeros(MAX_TREE_DEPTH, dtype=PATH_DTYPE)
        target[: len(dst)] = dst
        distances = distances_to(self.matrix, self.lengths, target, len(dst))
        return greedy_choice(distances, self.costs, self_distance), self_distance
