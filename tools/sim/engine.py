"""Every node's spanning-tree state machine (axiomnet/tree.py's Tree), run in synchronous heartbeat rounds over
numpy arrays, with axiomnet.tree.select_parents making the parent decision for all nodes at once.

A round is what tests/unit/overlay_net.py does with real Tree objects: at ``now = t x HEARTBEAT_INTERVAL``
every live node ticks (Tree.tick: expire a silent root, pick a parent among its candidates, advance its own
number if it is a root, announce), then every announcement arrives LINK_DELAY later (Tree.receive: refuse one
under a dead root, remember it, refresh the root's liveness, follow the parent). So a position travels one hop
per round, as on the network. What the core computes from the signed announcements (freshness, certificates,
the ancestry check, dead roots) is computed here from arrays; each such piece names the tree.py code it mirrors.
A failed node is silent, not removed: its neighbours notice it by NEIGHBOUR_TIMEOUT, as they would a crash.

Node ids double as keys: ``rank[v]`` orders the Ed25519 keys (the lowest is the root) and ``order[v]`` the
noise keys (Tree._reselect sorts candidates by noise key, which breaks cost ties); ports are given in
adjacency order unless the caller passes them (tests match a real overlay's ports).
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt

from axiomnet.constants import (
    DEFAULT_LINK_RTT,
    HEARTBEAT_INTERVAL,
    MAX_DEAD_ROOTS,
    MAX_TREE_DEPTH,
    NEIGHBOUR_TIMEOUT,
    ROOT_TIMEOUT,
)
from axiomnet.tree import select_parents

LINK_DELAY = 0.001  # announcements sent at a tick arrive this much later (as tests/unit/overlay_net.py)
NO_KEY = -1  # padding of the key matrices (node 0 is a key)
# Rounds an announcement stays usable (Tree._candidates and routing_neighbours drop it after
# NEIGHBOUR_TIMEOUT); the ring keeps one more so that the slot being written is never one still read.
RING = int(NEIGHBOUR_TIMEOUT // HEARTBEAT_INTERVAL) + 2
CHUNK = 1 << 16  # rows per chunk of the ancestry check (bounds its temporary memory)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Links:
    """The directed links: edge ``e`` carries ``src[e]``'s announcements to ``dst[e]``; edges are sorted by
    receiver, then by the sender's noise key, so a receiver's candidates come in Tree._reselect's order."""

    def __init__(self, n: int, u: IntArray, v: IntArray, order: IntArray,
                 ports: dict[tuple[int, int], int] | None = None, rtt: npt.NDArray[np.float64] | None = None):
        src = np.concatenate([u, v]).astype(np.int64)
        dst = np.concatenate([v, u]).astype(np.int64)
        perm = np.lexsort((order[src], dst))
        self.n = n
        self.src, self.dst = src[perm], dst[perm]
        self.offsets = np.searchsorted(self.dst, np.arange(n + 1))
        self.degree = np.diff(self.offsets)
        fwd = self.src * n + self.dst
        back = self.dst * n + self.src
        sorter = np.argsort(fwd)
        self.rev = sorter[np.searchsorted(fwd, back, sorter=sorter)]
        # Port the receiver gives the sender (Tree.add: 1, 2, ... in the order links come up).
        local = np.arange(len(self.src)) - self.offsets[self.dst] + 1
        if ports is not None:
            local = np.array([ports[(int(d), int(s))] for s, d in zip(self.src, self.dst)], dtype=np.int64)
        if len(local) and int(local.max()) > 0xFFFF:
            raise ValueError("a node has more than 65535 neighbours (ports are u16)")
        self.port_at_dst = local.astype(np.uint16)
        self.port_from_src = self.port_at_dst[self.rev]  # the port the sender gives the receiver
        base = np.full(len(u), DEFAULT_LINK_RTT) if rtt is None else np.asarray(rtt, dtype=np.float64)
        self.rtt = np.concatenate([base, base])[perm]  # smoothed RTT (symmetric), the cost factor

    def __len__(self) -> int:
        return len(self.src)

    def segment_max(self, values: IntArray, empty: int = -1) -> IntArray:
        """Per receiver, the max of ``values`` over its edges (``empty`` for a node without edges)."""
        out = np.full(self.n, empty, dtype=np.int64)
        np.maximum.at(out, self.dst, values)
        return out


class Network:
    """Every node's Tree state, one round at a time (see the module docstring)."""

    def __init__(self, links: Links, rank: IntArray, seq_start: int = 1) -> None:
        n = links.n
        self.links = links
        self.rank = np.asarray(rank, dtype=np.int64)
        self.nodes = np.arange(n, dtype=np.int64)
        self.t = 0
        self.alive = np.ones(n, dtype=bool)
        self.link_up = np.ones(len(links), dtype=bool)
        # Tree.__init__: every node starts as its own root at seq_start.
        self.root = self.nodes.copy()  # after the receive phase; -1 only inside a tick (_expire_root)
        self.seq = np.full(n, seq_start, dtype=np.int64)
        self.own_seq = np.full(n, seq_start, dtype=np.int64)
        self.parent = np.full(n, -1, dtype=np.int64)
        self.pedge = np.full(n, -1, dtype=np.int64)  # the edge parent -> us
        self.depth = np.zeros(n, dtype=np.int64)
        self.rs_seq = np.full(n, seq_start, dtype=np.int64)  # Tree._root_seen
        self.rs_at = np.zeros(n)
        self.followed = np.zeros(n, dtype=bool)  # our chain = parent's latest announcement + us (receive phase)
        # What each node announced in each of the last RING rounds: chain keys and ports, padded.
        self.width = 8
        self.keys = np.full((RING, n, self.width), NO_KEY, dtype=np.int32)
        self.ports = np.zeros((RING, n, self.width), dtype=np.uint16)
        self.a_root = self.root.copy()
        self.a_seq = self.seq.copy()
        self.a_depth = self.depth.copy()
        self.a_parent = self.parent.copy()
        # Per directed edge, what the receiver holds of the sender (Neighbour: ann, ann_at, seq_at, key).
        m = len(links)
        self.st_heard = np.full(m, -1, dtype=np.int64)  # round of the stored announcement (-1: none)
        self.st_root = np.full(m, -1, dtype=np.int64)
        self.st_seq = np.zeros(m, dtype=np.int64)
        self.st_depth = np.zeros(m, dtype=np.int64)
        self.st_cert = np.zeros(m, dtype=bool)
        self.st_seq_at = np.full(m, -np.inf)
        self.key_known = np.zeros(m, dtype=bool)  # Neighbour.key: the receiver has accepted one announcement
        # Tree._dead_roots as columns (root, highest dead seq, when last touched); grows up to MAX_DEAD_ROOTS.
        self.dr_root = np.full((n, 0), -1, dtype=np.int64)
        self.dr_seq = np.zeros((n, 0), dtype=np.int64)
        self.dr_touch = np.zeros((n, 0))
        self.stats = {"parent_changes": 0, "roots_dead": 0, "rejected": 0}
        self.changed = n  # nodes whose announced position changed in the last round
        self._orphans = np.zeros(n, dtype=bool)  # no parent, keeping their position (Tree._reselect)
        self.a_orphan = self._orphans.copy()
        # "cost": Tree._reselect as it is. "shallower": a proposed change to it, measured here only (tree.py is not
        # changed): a node that has a parent moves only to a candidate under the same root that sits above its own
        # depth, so two neighbours can never take each other at the same tick (a two-node cycle needs one of them
        # to move to one at least as deep as itself).
        self.parent_rule = "cost"

    def clone(self) -> Network:
        """An independent copy (to run several failure scenarios from one converged state)."""
        return copy.deepcopy(self)

    # --- helpers -----------------------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self.width:
            return
        width = min(max(need, 2 * self.width), MAX_TREE_DEPTH)
        keys = np.full((RING, self.links.n, width), NO_KEY, dtype=np.int32)
        ports = np.zeros((RING, self.links.n, width), dtype=np.uint16)
        keys[:, :, : self.width] = self.keys
        ports[:, :, : self.width] = self.ports
        self.keys, self.ports, self.width = keys, ports, width

    def is_dead(self, who: IntArray, root: IntArray, seq: IntArray) -> BoolArray:
        """Tree._check / _candidates: ``root`` is dead for ``who`` at ``seq`` (at or below its dead number)."""
        out = np.zeros(len(who), dtype=bool)
        for k in range(self.dr_root.shape[1]):
            out |= (self.dr_root[who, k] == root) & (seq <= self.dr_seq[who, k])
        return out

    def _add_dead(self, who: IntArray, root: IntArray, seq: IntArray, now: float) -> None:
        """Tree._expire_root: _dead_roots[root] = max(seq, old); move_to_end; evict the oldest past the bound."""
        if who.size == 0:
            return
        if self.dr_root.shape[1] == 0:
            self._add_dead_column()
        same = self.dr_root[who] == root[:, None]
        has = same.any(axis=1)
        col = np.where(has, same.argmax(axis=1), -1)
        free = self.dr_root[who] < 0
        need = ~has & ~free.any(axis=1)
        if need.any() and self.dr_root.shape[1] < MAX_DEAD_ROOTS:
            self._add_dead_column()
            free = self.dr_root[who] < 0
        oldest = np.where(free, -np.inf, self.dr_touch[who]).argmin(axis=1)  # a free slot, else the LRU one
        col = np.where(has, col, oldest)
        old = np.where(has, self.dr_seq[who, col], -1)
        self.dr_root[who, col] = root
        self.dr_seq[who, col] = np.maximum(seq, old)
        self.dr_touch[who, col] = now

    def _add_dead_column(self) -> None:
        n = self.links.n
        self.dr_root = np.hstack([self.dr_root, np.full((n, 1), -1, dtype=np.int64)])
        self.dr_seq = np.hstack([self.dr_seq, np.zeros((n, 1), dtype=np.int64)])
        self.dr_touch = np.hstack([self.dr_touch, np.zeros((n, 1))])

    def contains(self, slot: IntArray, sender: IntArray, length: IntArray, key: IntArray) -> BoolArray:
        """Whether ``key`` is in the first ``length`` hops of ``sender``'s chain as announced in ring ``slot``
        (the `any(h.key == self.key for h in ann.chain)` of Tree._candidates and _follow_parent)."""
        out = np.zeros(len(slot), dtype=bool)
        by_length = np.argsort(length, kind="stable")  # chunks of similar length: read only what is there
        for lo in range(0, len(slot), CHUNK):
            sl = by_length[lo: lo + CHUNK]
            w = int(length[sl].max(initial=0))
            if w == 0:
                continue
            rows = self.keys[slot[sl], sender[sl], :w]
            hit = (rows == key[sl, None]) & (np.arange(w) < length[sl, None])
            out[sl] = hit.any(axis=1)
        return out

    # --- one round ---------------------------------------------------------------------------------------
    def step(self) -> None:
        """One heartbeat: every live node ticks, then every announcement arrives."""
        self.t += 1
        self._tick(self.t * HEARTBEAT_INTERVAL)
        self._receive(self.t * HEARTBEAT_INTERVAL + LINK_DELAY)

    def _expire_roots(self, now: float) -> None:
        # Tree._expire_root: the highest number any neighbour shows for our root; silent too long -> dead.
        lk = self.links
        nonroot = self.alive & (self.root != self.nodes)
        shown = np.where((self.st_heard >= 0) & (self.st_root == self.root[lk.dst]), self.st_seq, -1)
        best = lk.segment_max(shown)
        rose = nonroot & (best > self.rs_seq)
        self.rs_seq[rose] = best[rose]
        self.rs_at[rose] = now
        expired = np.flatnonzero(nonroot & (now - self.rs_at > ROOT_TIMEOUT))
        self._add_dead(expired, self.root[expired], self.rs_seq[expired], now)
        self.stats["roots_dead"] += len(expired)
        self.parent[expired] = -1
        self.pedge[expired] = -1
        self.root[expired] = -1
        self.depth[expired] = 0

    def candidates(self, now: float) -> IntArray:
        """Edges whose stored announcement makes the sender a valid parent for the receiver (Tree._candidates)."""
        lk = self.links
        h = self.st_heard
        ok = self.alive[lk.dst] & (h >= 0) & self.st_cert & (self.st_depth + 1 <= MAX_TREE_DEPTH)
        ok &= now - (h * HEARTBEAT_INTERVAL + LINK_DELAY) <= NEIGHBOUR_TIMEOUT
        ok &= now - self.st_seq_at <= ROOT_TIMEOUT
        ok &= self.st_root != lk.dst
        e = np.flatnonzero(ok)
        e = e[~self.is_dead(lk.dst[e], self.st_root[e], self.st_seq[e])]
        if self.parent_rule == "shallower":
            d = lk.dst[e]
            settled = (self.parent[d] >= 0) & (self.st_root[e] == self.root[d]) & (lk.src[e] != self.parent[d])
            e = e[~(settled & (self.st_depth[e] >= self.depth[d]))]
        return e[~self.contains(self.st_heard[e] % RING, lk.src[e], self.st_depth[e], lk.dst[e])]

    def _tick(self, now: float) -> None:
        lk = self.links
        self._expire_roots(now)
        # Tree._reselect: one select_parents call for every node.
        cand = self.candidates(now)
        choice = select_parents(lk.dst[cand], self.rank[self.st_root[cand]], (self.st_depth[cand] + 1) * lk.rtt[cand],
                                lk.src[cand] == self.parent[lk.dst[cand]], self.rank)
        pedge = np.full(lk.n, -1, dtype=np.int64)
        took = choice >= 0
        pedge[took] = cand[choice[took]]
        pedge[~self.alive] = -1
        parent = np.full(lk.n, -1, dtype=np.int64)
        parent[pedge >= 0] = lk.src[pedge[pedge >= 0]]
        self.stats["parent_changes"] += int(np.count_nonzero(self.alive & (parent != self.parent)))
        self.parent, self.pedge = parent, pedge
        # Tree._reselect: an orphan (no candidate, its root still better than itself and not known dead) keeps its
        # position; the others without a parent that are not root yet become root (Tree._become_root).
        lost = self.alive & (pedge < 0) & (self.root != self.nodes)
        orphan = lost & (self.root >= 0) & (self.rank[np.maximum(self.root, 0)] < self.rank)
        self._orphans = orphan
        become = lost & ~orphan
        self.own_seq[become] += 1
        self.seq[become] = self.own_seq[become]
        self.rs_seq[become], self.rs_at[become] = self.seq[become], now
        self.root[become] = self.nodes[become]
        self.depth[become] = 0
        # Tree._follow_parent from the chosen parent's stored announcement.
        f = np.flatnonzero(self.alive & (pedge >= 0))
        pe = pedge[f]
        new_root = self.st_root[pe]
        moved = new_root != self.root[f]
        self.rs_seq[f[moved]], self.rs_at[f[moved]] = self.st_seq[pe[moved]], now
        self.root[f], self.seq[f], self.depth[f] = new_root, self.st_seq[pe], self.st_depth[pe] + 1
        # Tree.tick: a root advances its number.
        roots = self.alive & (self.root == self.nodes)
        self.own_seq[roots] += 1
        self.seq[roots] = self.own_seq[roots]
        self.rs_seq[roots], self.rs_at[roots] = self.seq[roots], now
        self._announce(f, pe)

    def _announce(self, followers: IntArray, pe: IntArray) -> None:
        """Write this round's announcements (chain = the parent's stored chain + our hop) into the ring."""
        lk = self.links
        self._grow(int(self.depth[followers].max(initial=0)))
        slot = self.t % RING
        keys = np.full((lk.n, self.width), NO_KEY, dtype=np.int32)
        ports = np.zeros((lk.n, self.width), dtype=np.uint16)
        src_slot = self.st_heard[pe] % RING
        keys[followers] = self.keys[src_slot, lk.src[pe]]
        ports[followers] = self.ports[src_slot, lk.src[pe]]
        col = self.depth[followers] - 1
        keys[followers, col] = followers
        ports[followers, col] = lk.port_from_src[pe]
        prev = (self.t - 1) % RING
        orphans = np.flatnonzero(self._orphans)  # they announce their last chain again (Tree keeps self.chain)
        keys[orphans], ports[orphans] = self.keys[prev, orphans], self.ports[prev, orphans]
        moved = (self.root != self.a_root) | (self.parent != self.a_parent) | (self.depth != self.a_depth)
        moved |= (ports != self.ports[prev]).any(axis=1)
        self.changed = int(np.count_nonzero(moved & self.alive))
        self.keys[slot], self.ports[slot] = keys, ports
        self.a_root, self.a_seq = self.root.copy(), self.seq.copy()
        self.a_depth, self.a_parent = self.depth.copy(), self.parent.copy()
        self.a_orphan = self._orphans.copy()

    def _receive(self, now: float) -> None:
        lk = self.links
        e = np.flatnonzero(self.alive[lk.src] & self.alive[lk.dst] & self.link_up)
        u, v = lk.src[e], lk.dst[e]
        # Tree._check: an announcement under a root dead for the receiver is refused (nothing stored).
        refused = self.is_dead(v, self.a_root[u], self.a_seq[u])
        self.stats["rejected"] += int(np.count_nonzero(refused))
        e, u, v = e[~refused], u[~refused], v[~refused]
        # Tree._announcement_for: a certificate for every neighbour whose key we know, except our parent, unless
        # we are orphaned.
        cert = self.key_known[lk.rev[e]] & (self.a_parent[u] != v) & ~self.a_orphan[u]
        # Tree.receive: seq_at moves when the root changes or its number advances.
        advanced = (self.st_heard[e] < 0) | (self.st_root[e] != self.a_root[u]) | (self.a_seq[u] > self.st_seq[e])
        self.st_seq_at[e[advanced]] = now
        self.st_root[e], self.st_seq[e], self.st_depth[e] = self.a_root[u], self.a_seq[u], self.a_depth[u]
        self.st_cert[e] = cert
        self.st_heard[e] = self.t
        self.key_known[e] = True
        accepted = np.zeros(len(lk), dtype=bool)
        accepted[e] = True
        # Tree.receive -> _follow_parent, for the parent's announcement if it came and still certifies us.
        slot = self.t % RING
        f = np.flatnonzero(self.alive & (self.pedge >= 0))
        pe = self.pedge[f]
        ok = accepted[pe] & self.st_cert[pe] & (self.st_root[pe] != f) & (self.st_depth[pe] + 1 <= MAX_TREE_DEPTH)
        ok &= ~self.contains(np.full(len(f), slot), self.parent[f], self.st_depth[pe], f)
        f, pe = f[ok], pe[ok]
        self.followed[:] = False
        self.followed[f] = True
        old_root = self.root.copy()
        # Tree.receive's _root_seen update, in overlay_net's order (senders by id): anns under our root count;
        # if following the parent changes our root, only the parent's and those after it under the new root.
        moved = np.zeros(lk.n, dtype=bool)
        moved[f] = self.st_root[pe] != old_root[f]
        self.root[f], self.seq[f], self.depth[f] = self.st_root[pe], self.st_seq[pe], self.st_depth[pe] + 1
        counts = np.where(moved[v], (self.a_root[u] == self.root[v]) & (u >= self.parent[v]),
                          self.a_root[u] == old_root[v])
        best = np.full(lk.n, -1, dtype=np.int64)
        np.maximum.at(best, v[counts], self.a_seq[u[counts]])
        rs_seq = np.where(moved, -1, self.rs_seq)
        rose = self.alive & (best > rs_seq)
        self.rs_seq[rose], self.rs_at[rose] = best[rose], now

    # --- the state a packet sees between rounds ----------------------------------------------------------
    def positions(self) -> tuple[npt.NDArray[np.uint16], IntArray]:
        """Every node's own path (Tree.path) and depth after the last round."""
        self._grow(int(self.depth.max(initial=0)))
        slot = self.t % RING
        paths = self.ports[slot].copy()
        f = np.flatnonzero(self.followed)
        paths[f] = self.ports[slot, self.parent[f]]
        paths[f, self.depth[f] - 1] = self.links.port_from_src[self.pedge[f]]
        return paths, self.depth.copy()

    def routing_edges(self, now: float) -> IntArray:
        """Tree.routing_neighbours of every node: edges whose receiver holds a fresh announcement of the
        sender under the receiver's own root (sorted by receiver)."""
        h = self.st_heard
        fresh = (h >= 0) & (now - (h * HEARTBEAT_INTERVAL + LINK_DELAY) <= NEIGHBOUR_TIMEOUT)
        return np.flatnonzero(fresh & self.alive[self.links.dst] & (self.st_root == self.root[self.links.dst]))

    def neighbour_paths(self, e: IntArray) -> npt.NDArray[np.uint16]:
        """The paths the receivers of edges ``e`` hold for their senders (padded to the ring width)."""
        return self.ports[self.st_heard[e] % RING, self.links.src[e]]

    # --- failures ----------------------------------------------------------------------------------------
    def kill(self, nodes: IntArray) -> None:
        """Nodes stop (silently: their neighbours notice by NEIGHBOUR_TIMEOUT)."""
        self.alive[nodes] = False

    def cut(self, a: int, b: int) -> None:
        """The link a-b stops carrying anything (both directions)."""
        lk = self.links
        e = np.flatnonzero((lk.src == a) & (lk.dst == b))
        self.link_up[e] = False
        self.link_up[lk.rev[e]] = False
