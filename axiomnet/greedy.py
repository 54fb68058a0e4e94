"""The exact tree metric and the greedy next hop, vectorised over neighbours with numpy (pure, no I/O).

A node's coordinates are its tree's root and the path of ports from that root (ports are 1..MAX_PORT). Two
nodes of one tree are ``len(a) + len(b) - 2 * lcp(a, b)`` hops apart along the tree (lcp: the length of the
longest common prefix); this integer metric is exactly what a greedy hyperbolic embedding of the tree
realises, without its floating-point limits (docs/ROUTING.md §1). Forwarding is greedy over ALL links: a packet
goes to the neighbour strictly closest to the destination among those strictly closer than this node, so the
distance strictly falls at every hop and, with consistent coordinates, always reaches the destination (the
parent, or the child whose subtree holds the destination, is always strictly closer).

A node's neighbours live in :class:`NeighbourPaths`: their paths sorted, with the common prefix of each two
adjacent ones, so every neighbour's distance to a destination is one running minimum in numpy, whatever the
paths' length. The simulator's batch form (:func:`distances_to`, over rows of many nodes at once) keeps paths in
a padded ``uint16`` matrix, 0 past a row's length; since ports are >= 1 a padding cell never equals a port, so
the common-prefix length of a row and a destination never runs past either path; the tests hold both forms
to the scalar metric. Nothing here sees a float: distances are integers, costs only break ties.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from axiomnet.constants import MAX_PORT, MAX_TREE_DEPTH

PATH_DTYPE = np.uint16
NO_HOP = -1
Path = tuple[int, ...]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two paths (any sequences of ints: lists and tuples compare)."""
    if type(a) is not tuple or type(b) is not tuple:
        a, b = tuple(a), tuple(b)  # slices of a list and a tuple never compare equal
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1  # a[:lo] == b[:lo] and a[:hi + 1] != b[:hi + 1]: bisect on slices compared in C
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def tree_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Hops between two positions of one tree: |a| + |b| - 2 * (length of their common prefix)."""
    return len(a) + len(b) - 2 * common_prefix(a, b)


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
    differs = matrix[:, :n] != dst[:n]
    first = differs.argmax(axis=1)  # the first differing column, or 0 when none differs
    # A row that differs nowhere in the first n columns shares the whole destination path as its prefix.
    lcp = np.where(differs[np.arange(len(first)), first], first, n)
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
    """The neighbours that share our tree, their paths sorted, with their costs (rebuilt on change).

    ``next_hop`` is the whole forwarding decision for one destination: every neighbour's exact distance to it
    in ONE vectorised pass, then the greedy choice. The pass needs no row-by-column comparison: with the paths
    sorted, the common prefix of the destination and any row is the running minimum of the adjacent rows'
    common prefixes from the destination's sorted position out to that row (``adjacent``, computed once per
    build), starting from the destination's common prefix with its two sorted neighbours. So a lookup is a
    bisect, two prefix comparisons and O(neighbours) numpy work, independent of path length (docs/ROUTING.md §3).
    """

    def __init__(self, keys: Sequence[bytes], paths: Sequence[Path], costs: Sequence[float]) -> None:
        if not len(keys) == len(paths) == len(costs):
            raise ValueError("keys, paths and costs must have one entry per neighbour")
        self.keys = list(keys)
        order = sorted(range(len(paths)), key=paths.__getitem__)
        self._paths = [tuple(paths[i]) for i in order]
        self._order = np.array(order, dtype=np.int64)
        self._lengths = np.fromiter((len(p) for p in self._paths), dtype=np.int64, count=len(order))
        self._costs = np.asarray(costs, dtype=np.float64)[self._order] if order else np.zeros(0)
        # adjacent[i]: common prefix of sorted rows i - 1 and i (0 for i = 0); shifted[i] = adjacent[i + 1].
        self._adjacent = np.fromiter(
            (common_prefix(self._paths[i - 1], self._paths[i]) if i else 0 for i in range(len(order))),
            dtype=np.int64, count=len(order))
        self._shifted = np.append(self._adjacent[1:], 0)

    def __len__(self) -> int:
        return len(self.keys)

    def distances(self, dst: Path) -> npt.NDArray[np.int64]:
        """Every neighbour's tree distance to ``dst``, in the order the neighbours were given."""
        out = np.empty(len(self.keys), dtype=np.int64)
        if self.keys:
            out[self._order] = self._sorted_distances(tuple(dst))
        return out

    def _sorted_distances(self, dst: Path) -> npt.NDArray[np.int64]:
        paths = self._paths
        at = bisect_left(paths, dst)  # paths[at - 1] < dst <= paths[at]
        # Sorted row j's common prefix with dst is the minimum of the adjacent common prefixes between dst's
        # place and row j, the first step being dst's own common prefix with its sorted neighbour:
        #   j >= at: min(lcp(dst, paths[at]), adjacent[at + 1], ..., adjacent[j])
        #   j <  at: min(lcp(dst, paths[at - 1]), adjacent[at - 1], ..., adjacent[j + 1])
        lcp = np.concatenate((self._shifted[:at], self._adjacent[at:]))
        if at < len(paths):
            lcp[at] = common_prefix(dst, paths[at])
            np.minimum.accumulate(lcp[at:], out=lcp[at:])
        if at:
            lcp[at - 1] = common_prefix(dst, paths[at - 1])
            left = lcp[at - 1::-1]
            np.minimum.accumulate(left, out=left)
        lcp *= -2
        lcp += self._lengths
        lcp += len(dst)
        return lcp

    def next_hop(self, self_path: Path, dst: Path) -> tuple[int, int]:
        """(index of the neighbour to forward to or NO_HOP, our own distance to ``dst``): the smallest distance
        among those strictly below ours, ties broken by the lower cost, then by the lower index."""
        self_distance = tree_distance(self_path, dst)
        if not self.keys or self_distance == 0:
            return NO_HOP, self_distance
        distances = self._sorted_distances(tuple(dst))
        nearest = distances.min()
        if nearest >= self_distance:
            return NO_HOP, self_distance
        best = np.flatnonzero(distances == nearest)
        if best.size > 1:  # lexsort: the last key is the primary one
            best = best[np.lexsort((self._order[best], self._costs[best]))]
        return int(self._order[best[0]]), self_distance


# --- several trees: greedy on the minimum distance over trees (docs/ROUTING.md "Several trees") -----------------
UNREACHED = np.iinfo(np.int64).max // 4  # the distance of a neighbour (or of us) outside every usable tree


def forest_choice(distances: npt.NDArray[np.int64], costs: npt.NDArray[np.float64], self_distance: int) -> int:
    """The greedy next hop over k trees: ``distances[t, j]`` is neighbour j's distance to the destination in tree
    t (UNREACHED where j, or the destination, is not in that tree), ``self_distance`` our own minimum over the
    trees (the packet's watermark). Index of the neighbour with the smallest minimum over trees among those
    strictly below ``self_distance`` (ties by the lower cost, then the lower index), or NO_HOP.

    The minimum over trees is what falls strictly at every hop, so no packet loops; and it never dead-ends while
    coordinates are consistent: in the tree t that gives our minimum m, our parent or the child whose subtree
    holds the destination is at m - 1 in t, so its minimum is at most m - 1.
    """
    if distances.ndim != 2 or distances.shape[1] != len(costs):
        raise ValueError("distances must be k rows of one entry per neighbour")
    if self_distance >= UNREACHED or distances.shape[0] == 0:
        return NO_HOP
    return greedy_choice(distances.min(axis=0), costs, self_distance)


class NeighbourForest:
    """The neighbours' positions in k trees: one :class:`NeighbourPaths` per tree over the neighbours that share
    that tree with us (their indices into ``keys``), and the greedy step on the minimum distance over trees.

    With k = 1 it decides exactly as :meth:`NeighbourPaths.next_hop`. A tree whose destination path is None (the
    destination's coordinates in it are unknown, or it is under another root than ours) takes no part."""

    def __init__(self, keys: Sequence[bytes], trees: Sequence[tuple[Sequence[int], Sequence[Path]]],
                 costs: Sequence[float]) -> None:
        if len(keys) != len(costs):
            raise ValueError("keys and costs must have one entry per neighbour")
        self.keys = list(keys)
        self._costs = np.asarray(costs, dtype=np.float64)
        self._members: list[npt.NDArray[np.int64]] = []
        self._tables: list[NeighbourPaths] = []
        for members, paths in trees:
            idx = np.asarray(members, dtype=np.int64)
            if len(idx) != len(paths) or (idx.size and (idx.min() < 0 or idx.max() >= len(self.keys))):
                raise ValueError("each tree needs one path per member, members indexing keys")
            self._members.append(idx)
            self._tables.append(NeighbourPaths([self.keys[i] for i in idx], paths, self._costs[idx].tolist()))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def trees(self) -> int:
        return len(self._tables)

    def distances(self, dsts: Sequence[Path | None]) -> npt.NDArray[np.int64]:
        """(k, neighbours): every neighbour's distance to the destination in every tree (UNREACHED outside)."""
        if len(dsts) != len(self._tables):
            raise ValueError("one destination path (or None) per tree")
        out = np.full((len(self._tables), len(self.keys)), UNREACHED, dtype=np.int64)
        for t, (members, table, dst) in enumerate(zip(self._members, self._tables, dsts)):
            if dst is not None and members.size:
                out[t, members] = table.distances(dst)
        return out

    def next_hop(self, self_paths: Sequence[Path | None], dsts: Sequence[Path | None]) -> tuple[int, int]:
        """(index of the neighbour to forward to or NO_HOP, our own minimum distance over the trees where both we
        and the destination have a path: the watermark the packet leaves with, UNREACHED if there is none)."""
        if len(self_paths) != len(self._tables):
            raise ValueError("one own path (or None) per tree")
        usable = [None if own is None else dst for own, dst in zip(self_paths, dsts)]
        self_distance = min((tree_distance(own, dst) for own, dst in zip(self_paths, usable)
                             if own is not None and dst is not None), default=UNREACHED)
        if not self.keys or self_distance == 0:
            return NO_HOP, self_distance
        return forest_choice(self.distances(usable), self._costs, self_distance), self_distance
