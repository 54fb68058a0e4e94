"""What the simulator measures on a Network between rounds: greedy forwarding of sampled packets with
axiomnet.greedy (exactly as axiomnet/forward.py relays), stretch against BFS, lookup messages with
axiomnet.bloom's filters, and per-node state in bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import shortest_path

from axiomnet.announce import Announcement, Hop, encode_announcement
from axiomnet.bloom import RAW_SIZE, WORDS, bit_indices
from axiomnet.constants import (
    MAX_CACHED_PORTS,
    BLOOM_BITS,
    HEARTBEAT_INTERVAL,
    HOP_LIMIT,
    MAX_DEAD_ROOTS,
    MAX_LOOKUP_CACHE,
    MAX_TREE_DEPTH,
    MAX_VERIFIED_SIGNATURES,
)
from axiomnet.fastpath import MAX_RELAY_ENTRIES
from axiomnet.forward import MAX_HOP_CACHE
from axiomnet.greedy import NO_HOP, UNREACHED, distances_to, forest_choice, tree_distance
from tools.sim.engine import Network
from tools.sim.engine import filters_of as _filters_of
from tools.sim.engine import segmented_or as _segmented_or

IntArray = npt.NDArray[np.int64]
BFS_CHUNK = 32  # sources per scipy BFS call (memory: BFS_CHUNK x n distances)


@dataclass
class Trace:
    """One packet's fate: delivered or the reason it was dropped, hops taken, the watermark at each hop."""

    delivered: bool
    hops: int
    reason: str
    watermarks: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)


class _TreeView:
    """One tree's forwarding view after a round: own positions, and each node's neighbour table
    (Forwarder._refresh: Tree.routing_neighbours as a padded path matrix), built when a packet first needs it."""

    def __init__(self, net: Network, now: float) -> None:
        self.net = net
        self.paths, self.depth = net.positions()
        self.rows = net.routing_edges(now)
        self.starts = np.searchsorted(net.links.dst[self.rows], np.arange(net.links.n + 1))
        self._tables: dict[int, tuple[IntArray, npt.NDArray[np.uint16], IntArray]] = {}
        self._paths: dict[int, tuple[int, ...]] = {}

    def path(self, v: int) -> tuple[int, ...]:
        p = self._paths.get(v)
        if p is None:
            p = self._paths[v] = tuple(self.paths[v, : self.depth[v]].tolist())
        return p

    def table(self, x: int) -> tuple[IntArray, npt.NDArray[np.uint16], IntArray]:
        t = self._tables.get(x)
        if t is None:
            rows = self.rows[self.starts[x]: self.starts[x + 1]]
            t = self._tables[x] = (rows, self.net.neighbour_paths(rows), self.net.st_depth[rows])
        return t


class Forwarding:
    """The forwarding view of one tree (``net``) or of several over the same links (``net`` plus ``more``: each a
    tree under its own root order, as salted root hashes would give): a packet carries the destination's
    coordinates in every tree where the source and the destination share a root, and every hop takes
    axiomnet.greedy.forest_choice on the minimum distance over the trees it shares with them (with one tree, exactly
    NeighbourPaths.next_hop)."""

    def __init__(self, net: Network, more: tuple[Network, ...] = ()) -> None:
        self.net = net
        self.now = (net.t + 0.5) * HEARTBEAT_INTERVAL  # packets travel between two heartbeats
        # Each tree was run on its own round count: its views are read at its own time (the trees of one network
        # tick together; here each converged separately).
        self.views = [_TreeView(n, (n.t + 0.5) * HEARTBEAT_INTERVAL) for n in (net, *more)]
        self.paths, self.depth = self.views[0].paths, self.views[0].depth  # tree 0 (the lookup tree)
        self._targets: dict[int, npt.NDArray[np.uint16]] = {}

    def path(self, v: int) -> tuple[int, ...]:
        return self.views[0].path(v)

    def decide(self, x: int, tags: list[int], dsts: list[tuple[int, ...] | None]) -> tuple[int, int]:
        """(edge into ``x`` from the next hop, or NO_HOP; x's own minimum distance over the usable trees):
        NeighbourForest.next_hop over the trees whose root at x is the packet's (``tags``)."""
        lk = self.net.links
        off, deg = int(lk.offsets[x]), int(lk.degree[x])
        per = np.full((len(self.views), deg), UNREACHED, dtype=np.int64)
        self_distance = UNREACHED
        for t, (view, tag, dst) in enumerate(zip(self.views, tags, dsts)):
            if dst is None or view.net.root[x] != tag:
                continue
            self_distance = min(self_distance, tree_distance(view.path(x), dst))
            rows, matrix, lengths = view.table(x)
            if rows.size:
                per[t, rows - off] = distances_to(matrix, lengths, self._target(t, dst), len(dst))
        if deg == 0 or self_distance == 0:
            return NO_HOP, self_distance
        index = forest_choice(per, lk.rtt[off: off + deg], self_distance)
        return (NO_HOP if index == NO_HOP else off + index), self_distance

    def _target(self, t: int, dst: tuple[int, ...]) -> npt.NDArray[np.uint16]:
        target = self._targets.get(t)
        if target is None or target.shape[0] != self.views[t].paths.shape[1]:
            target = self._targets[t] = np.zeros(self.views[t].paths.shape[1], dtype=np.uint16)
        target[:] = 0
        target[: len(dst)] = dst
        return target

    def route(self, s: int, d: int, keep_nodes: bool = False) -> Trace:
        """Send one TRAFFIC packet from ``s`` to ``d``'s current coordinates (what a fresh lookup returns), hop
        by hop as Forwarder._originate and Forwarder._relay do."""
        tags = [int(v.net.root[s]) for v in self.views]
        dsts = [v.path(d) if v.net.root[d] == tag else None for v, tag in zip(self.views, tags)]
        if all(dst is None for dst in dsts):
            return Trace(False, 0, "other_tree")  # Forwarder.send: looked up in another tree -> ask again
        hop, distance = self.decide(s, tags, dsts)
        trace = Trace(False, 0, "", [distance], [s] if keep_nodes else [])
        if hop == NO_HOP:
            trace.reason = "no_route"
            return trace
        watermark, hop_limit = distance, HOP_LIMIT if self.net.depth_bound == MAX_TREE_DEPTH else 2 * self.net.depth_bound + 2
        while True:
            y = int(self.net.links.src[hop])
            trace.hops += 1
            if keep_nodes:
                trace.nodes.append(y)
            if not (self.net.alive[y] and self.net.link_up[hop]):
                trace.reason = "lost"  # sent to a neighbour that is gone: not yet timed out
                return trace
            if y == d:
                trace.delivered = True
                return trace
            if all(dst is None or v.net.root[y] != tag for v, tag, dst in zip(self.views, tags, dsts)):
                trace.reason = "other_root"
                return trace
            if hop_limit <= 1:
                trace.reason = "hop_limit"
                return trace
            hop, distance = self.decide(y, tags, dsts)
            if distance >= watermark:
                trace.reason = "watermark"
                return trace
            if hop == NO_HOP:
                trace.reason = "no_route"  # path broken: a PATH_BROKEN goes back to the source
                return trace
            hop_limit -= 1
            watermark = distance
            trace.watermarks.append(distance)


def sample_pairs(nodes: IntArray, count: int, rng: np.random.Generator, per_source: int = 4) -> IntArray:
    """``count`` (source, destination) pairs of distinct nodes from ``nodes``, ``per_source`` per source."""
    if len(nodes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    sources = rng.choice(nodes, size=-(-count // per_source))
    src = np.repeat(sources, per_source)[:count]
    dst = rng.choice(nodes, size=count)
    clash = src == dst
    while clash.any():
        dst[clash] = rng.choice(nodes, size=int(clash.sum()))
        clash = src == dst
    return np.stack([src, dst], axis=1)


def bfs_hops(csr: object, pairs: IntArray) -> IntArray:
    """Shortest-path hop counts for ``pairs`` (scipy BFS from each distinct source, in chunks)."""
    out = np.zeros(len(pairs), dtype=np.int64)
    sources = np.unique(pairs[:, 0])
    for lo in range(0, len(sources), BFS_CHUNK):
        chunk = sources[lo: lo + BFS_CHUNK]
        dist = shortest_path(csr, unweighted=True, directed=False, indices=chunk)
        row = np.searchsorted(chunk, pairs[:, 0])
        sel = np.isin(pairs[:, 0], chunk)
        out[sel] = dist[row[sel], pairs[sel, 1]]
    return out


def delivery(net: Network, pairs: IntArray, more: tuple[Network, ...] = ()) -> tuple[list[Trace], Forwarding]:
    """Route every pair once on the current state (of one tree, or of ``net`` and the trees ``more``)."""
    fwd = Forwarding(net, more)
    return [fwd.route(int(s), int(d)) for s, d in pairs], fwd


# --- lookups: bloom filters on tree links (Tree.bloom_for, Tree.lookup_targets, Forwarder._on_lookup) ------
def address_bits(addresses: list[bytes]) -> IntArray:
    """The BLOOM_HASHES bit numbers of each address (axiomnet.bloom.bit_indices), one row per node."""
    return np.array([bit_indices(a) for a in addresses], dtype=np.int64)


class Filters:
    """The filters every tree link carries in a stable forest: ``up[c]`` is what child c tells its parent
    (its subtree's addresses), ``down[c]`` what the parent tells c (every other address of the tree) — the
    fixed point of Tree.bloom_for, which announcements reach one hop per round."""

    def __init__(self, parent: IntArray, depth: IntArray, alive: npt.NDArray[np.bool_], bits: IntArray) -> None:
        n = len(parent)
        own = _filters_of(bits)
        child = np.flatnonzero(alive & (parent >= 0))
        up = own.copy()
        for d in range(int(depth[child].max(initial=0)), 0, -1):
            level = child[depth[child] == d]
            np.bitwise_or.at(up, parent[level], up[level])
        order = child[np.argsort(parent[child], kind="stable")]
        group = parent[order]
        pre = _segmented_or(up[order], group)
        suf = _segmented_or(up[order][::-1], group[::-1])[::-1]
        first = np.ones(len(order), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = group[:-1] != group[1:]
        siblings = np.zeros((len(order), WORDS), dtype=np.uint64)
        siblings[~first] |= pre[np.flatnonzero(~first) - 1]
        siblings[~last] |= suf[np.flatnonzero(~last) + 1]
        sib = np.zeros((n, WORDS), dtype=np.uint64)
        sib[order] = siblings
        down = np.zeros((n, WORDS), dtype=np.uint64)
        for d in range(1, int(depth[child].max(initial=0)) + 1):
            level = child[depth[child] == d]
            down[level] = own[parent[level]] | down[parent[level]] | sib[level]
        self.up, self.down, self.bits = up, down, bits
        self.parent = parent
        self.children_order = order
        self.child_start = np.searchsorted(group, np.arange(n))
        self.child_count = np.searchsorted(group, np.arange(n), side="right") - self.child_start

    def holds(self, words: npt.NDArray[np.uint64], bits: IntArray) -> npt.NDArray[np.bool_]:
        """Per filter row: does it hold the address with these bit numbers (Bloom.__contains__)?"""
        out = np.ones(len(words), dtype=bool)
        for b in bits:
            out &= ((words[:, b >> 6] >> np.uint64(b & 63)) & np.uint64(1)).astype(bool)
        return out

    def set_bits(self) -> IntArray:
        """Bits set in each node's filter to its parent and from its parent (for the wire size)."""
        return np.bitwise_count(self.up).sum(axis=1) + np.bitwise_count(self.down).sum(axis=1)

    def lookup(self, s: int, owner: int, hostile: npt.NDArray[np.bool_] | None = None) -> tuple[int, bool]:
        """(LOOKUP transmissions, owner reached) for a lookup from ``s`` of ``owner``'s address: multicast on
        tree links whose filter holds it, never back to the sender, the owner answering instead of forwarding;
        a ``hostile`` node receives it and forwards nothing."""
        bits = self.bits[owner]
        down_has = self.holds(self.down, bits)  # the parent's filter to each child holds it
        up_has = self.holds(self.up, bits)  # each child's filter to its parent holds it
        at = np.array([s], dtype=np.int64)
        came = np.array([-1], dtype=np.int64)
        messages, reached = 0, False
        while at.size:
            p = self.parent[at]
            go_up = (p >= 0) & (p != came) & down_has[at]
            starts, counts = self.child_start[at], self.child_count[at]
            idx = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
            kids = self.children_order[idx]
            senders = np.repeat(at, counts)
            back = np.repeat(came, counts)
            go_down = up_has[kids] & (kids != back)
            nxt = np.concatenate([p[go_up], kids[go_down]])
            frm = np.concatenate([at[go_up], senders[go_down]])
            messages += len(nxt)
            hit = nxt == owner
            reached |= bool(hit.any())
            keep = ~hit if hostile is None else ~hit & ~hostile[nxt]
            at, came = nxt[keep], frm[keep]
        return messages, reached


# --- per-node state ----------------------------------------------------------------------------------------
def _announcement_size(hops: int) -> int:
    hop = Hop(bytes(32), 1, 1, bytes(64))
    return len(encode_announcement(Announcement(bytes(32), 1, bytes(64), (hop,) * hops, 1, 1, bytes(64))))


ANN_BASE = _announcement_size(0)  # header + certificate
ANN_PER_HOP = _announcement_size(1) - ANN_BASE


def state_bytes(net: Network, filters: Filters | None) -> dict[str, float]:
    """Per-node routing state: the announcements held (one per neighbour, its chain included), the lookup
    filters held (one per tree neighbour), and the bounds of the caches (the same for every node)."""
    lk = net.links
    live = net.alive[lk.src] & net.alive[lk.dst]
    ann = np.where(live, ANN_BASE + ANN_PER_HOP * net.st_depth, 0)
    per_node = np.bincount(lk.dst, weights=ann, minlength=lk.n)
    tree_degree = np.bincount(net.parent[net.parent >= 0], minlength=lk.n) + (net.parent >= 0)
    bloom_mem = tree_degree * (BLOOM_BITS // 8)
    alive = net.alive
    out = {
        "announcements_bytes_mean": float(per_node[alive].mean()),
        "announcements_bytes_max": float(per_node[alive].max()),
        "bloom_bytes_mean": float(bloom_mem[alive].mean()),
        "bloom_bytes_max": float(bloom_mem[alive].max()),
        "degree_mean": float(lk.degree[alive].mean()),
        "degree_max": int(lk.degree[alive].max()),
    }
    if filters is not None:
        bits = filters.set_bits()
        wire = np.minimum(2 + 2 * bits, 2 + RAW_SIZE)  # Bloom.encode: sparse while shorter than the raw bits
        out["bloom_wire_bytes_mean"] = float(wire[alive & (net.parent >= 0)].mean()) if (net.parent >= 0).any() else 0.0
    # Bounded caches (axiomnet/constants.py): worst case, whatever the network's size. Paths are 2 bytes a port on the
    # wire; the caches that hold them are bounded in entries and in ports (MAX_CACHED_PORTS each, protocol 4).
    depth = net.depth_bound
    out["bounded_caches_bytes"] = float(
        MAX_LOOKUP_CACHE * (16 + 32 + 32 + 8)  # Pathfinder cache: address, root, key, expiry ...
        + 2 * min(MAX_LOOKUP_CACHE * 2 * depth, MAX_CACHED_PORTS)  # ... its path and ours when we asked
        + MAX_HOP_CACHE * 16 + 2 * min(MAX_HOP_CACHE * depth, MAX_CACHED_PORTS)  # next-hop cache: path -> hop
        + MAX_RELAY_ENTRIES * (40 + 16) + 2 * min(MAX_RELAY_ENTRIES * 2 * depth, MAX_CACHED_PORTS)  # relay fast path
        + MAX_VERIFIED_SIGNATURES * (64 + 32 + 8 + 32 + 8 + 32 + 32 + 2)  # Verifier: sig + key + statement
        + MAX_DEAD_ROOTS * (32 + 8))
    return out


def percentile(values: list[float] | npt.NDArray[np.float64], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
