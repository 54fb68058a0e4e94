"""Every node's spanning-tree state machine (axiomnet/tree.py's Tree, protocol 3), run in synchronous heartbeat
rounds over numpy arrays, with axiomnet.tree.select_parents making the parent decision for all nodes at once.

A round is what tests/unit/overlay_net.py does with real Tree objects that decide only at ticks
(``between_ticks=False``). At ``now = t x HEARTBEAT_INTERVAL`` every live node ticks (Tree.tick: expire a silent
root, leave a parent whose beats stopped, pick a parent among its candidates, advance its own number and beat it
to its children if it is a root, and send the announcements it owes: on a change, to a new neighbour or child,
or its CERT_REFRESH refresh). Then, LINK_DELAY later, what was sent arrives: first the ROOT_BEATs its parent
forwarded in the last round, then this tick's messages in the senders' order (Tree.receive: a beat from the
parent gives the node its root seq and is forwarded to its children, to arrive next round; an announcement is
refused under a dead root, else remembered, refreshes the root's liveness and, from the parent, is followed).
So a beat and a position travel one hop per round, down tree links only for the beat, as on the network. What
the core computes from signed messages (freshness, certificates and their issue seqs, the ancestry check, dead
roots) is computed here from arrays; each such piece names the tree.py code it mirrors. A failed node is silent,
not removed: its children notice it by its beats stopping (NEIGHBOUR_TIMEOUT), as they would a crash.

Node ids double as keys: ``rank[v]`` orders the Ed25519 keys (the lowest is the root) and ``order[v]`` the
noise keys (Tree._reselect sorts candidates by noise key, which breaks cost ties); ports are given in
adjacency order unless the caller passes them (tests match a real overlay's ports).

Lookup filters ride on tree-link announcements, and a change of the filter a node owes a tree neighbour makes
it announce to that neighbour (Tree.urgent), which matters for timing (an announcement renews an aging
certificate, refreshes a root's liveness). They are modelled bit for bit when the caller passes the addresses'
bloom bits (``bits``; they cost two filters of BLOOM_BITS per directed link, so tools/sim/scenarios.py passes them
up to FILTER_LINKS_MAX links); without them those announcements are not sent. tools/sim/measure.py computes the
filters the lookups use at their fixed point either way.
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt

from axiomnet.bloom import WORDS
from axiomnet.constants import (
    CERT_LIFETIME,
    CERT_REFRESH,
    DEFAULT_LINK_RTT,
    HEARTBEAT_INTERVAL,
    MAX_DEAD_ROOTS,
    MAX_TREE_DEPTH,
    MIN_ANNOUNCE_INTERVAL,
    NEIGHBOUR_TIMEOUT,
    PEER_DEAD_AFTER,
    ROOT_TIMEOUT,
)
from axiomnet.tree import ANNOUNCE_SPACING, select_parents

LINK_DELAY = 0.001  # what is sent at a tick arrives this much later (as tests/unit/overlay_net.py)
NO_KEY = -1  # padding of the key matrices (node 0 is a key)
NO_ISSUE = np.iinfo(np.int64).max  # the oldest issue seq of an empty chain (nothing ages)
CHUNK = 1 << 16  # rows per chunk of the ancestry check (bounds its temporary memory)
HEADROOM_CELLS = 1 << 25  # free chain-pool cells kept between rounds (at most 2 rows per node): bounds the pool
# Tree.tick's refresh timers: the root renews its certificates every CERT_REFRESH seqs, the others are a safety net.
ROOT_EVERY, ROOT_CERT_AGE = CERT_REFRESH * HEARTBEAT_INTERVAL - HEARTBEAT_INTERVAL / 2, CERT_REFRESH
NODE_EVERY, NODE_CERT_AGE = 1.5 * CERT_REFRESH * HEARTBEAT_INTERVAL, CERT_REFRESH + CERT_REFRESH // 2

FILTER_LINKS_MAX = 300_000  # directed links up to which tools/sim/scenarios.py models the filters (~600 MB)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
WordArray = npt.NDArray[np.uint64]


def filters_of(bits: IntArray) -> WordArray:
    """One filter per node holding its own address, in Bloom's word layout (bit b: word b >> 6, bit b & 63)."""
    words = np.zeros((len(bits), WORDS), dtype=np.uint64)
    rows = np.repeat(np.arange(len(bits)), bits.shape[1])
    flat = bits.ravel()
    np.bitwise_or.at(words, (rows, flat >> 6), np.left_shift(np.uint64(1), (flat & 63).astype(np.uint64)))
    return words


def segmented_or(values: WordArray, group: IntArray) -> WordArray:
    """Inclusive OR-scan of ``values`` within runs of equal ``group`` (Hillis-Steele doubling)."""
    out = values.copy()
    step = 1
    while step < len(out):
        same = np.zeros(len(out), dtype=bool)
        same[step:] = group[step:] == group[:-step]
        if not same.any():
            break
        idx = np.flatnonzero(same)
        out[idx] |= out[idx - step]  # reads the previous pass's values: fancy indexing copies first
        step *= 2
    return out


class Links:
    """The directed links: edge ``e`` carries ``src[e]``'s messages to ``dst[e]``; edges are sorted by receiver,
    then by the sender's noise key, so a receiver's candidates come in Tree._reselect's order."""

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

    def __init__(self, links: Links, rank: IntArray, seq_start: int = 1, bits: IntArray | None = None,
                 peer_dead_after: float | None = PEER_DEAD_AFTER, depth_bound: int = MAX_TREE_DEPTH) -> None:
        n, m = links.n, len(links)
        self.links = links
        # MAX_TREE_DEPTH as deployed (protocol 4: the routed header's bound, announcements in parts); a smaller one
        # shows what a bound does to a deep graph (docs/ROUTING.md "Any depth").
        self.depth_bound = depth_bound
        self.rank = np.asarray(rank, dtype=np.int64)
        self.nodes = np.arange(n, dtype=np.int64)
        self.t = 0
        self.alive = np.ones(n, dtype=bool)
        self.link_up = np.ones(m, dtype=bool)
        # Link liveness is the sessions' (keepalives every LINK_KEEPALIVE): a neighbour silent for peer_dead_after
        # (a dead node, a cut link) is removed from the tree (Tree.remove). None: never (an overlay without sessions).
        self.peer_dead_after = peer_dead_after
        self.silent_since = np.full(m, np.inf)  # per edge u -> v: when u stopped reaching v
        self.removed = np.zeros(m, dtype=bool)  # v removed u
        # Chains live in a pool of rows (keys, ports, issue seqs, padded): a node's own chain and every chain a
        # receiver holds of a sender point into it. A row keeps its number for life; rows nobody points to go
        # back to the free list when it runs short (no copying: a deep chain's rows are wide).
        self.width = 8
        self.capacity = 0
        self.free = np.zeros(0, dtype=np.int64)
        self.pk = np.zeros((0, self.width), dtype=np.int32)
        self.pp = np.zeros((0, self.width), dtype=np.uint16)
        self.pi = np.zeros((0, self.width), dtype=np.int64)
        self.pmin = np.zeros(0, dtype=np.int64)  # Announcement.oldest_issue of the chain alone
        self.pmax = np.zeros(0, dtype=np.int64)  # the newest issue seq of the chain (-1: empty)
        # Tree.__init__: every node starts as its own root at seq_start.
        self.root = self.nodes.copy()  # -1 only inside a tick (_expire_root)
        self.seq = np.full(n, seq_start, dtype=np.int64)
        self.own_seq = np.full(n, seq_start, dtype=np.int64)
        self.parent = np.full(n, -1, dtype=np.int64)
        self.pedge = np.full(n, -1, dtype=np.int64)  # the edge parent -> us
        self.depth = np.zeros(n, dtype=np.int64)
        self.chain = self._alloc(n)  # pool row of our chain (Tree.chain)
        self.rs_seq = np.full(n, seq_start, dtype=np.int64)  # Tree._root_seen
        self.rs_at = np.zeros(n)
        self.parent_at = np.zeros(n)  # Tree._parent_at
        # Tree._left: the better root a node last left for a worse one, its highest seq seen and when it rose.
        self.lf_root = np.full(n, -1, dtype=np.int64)
        self.lf_seq = np.zeros(n, dtype=np.int64)
        self.lf_at = np.zeros(n)
        self._orphans = np.zeros(n, dtype=bool)  # no parent, keeping their position (Tree._reselect)
        # Per directed edge u -> v, what v holds of u (Neighbour: ann, ann_at, seq_at, beat_at, silent, key).
        self.st_has = np.zeros(m, dtype=bool)
        self.st_root = np.full(m, -1, dtype=np.int64)
        self.st_seq = np.zeros(m, dtype=np.int64)
        self.st_depth = np.zeros(m, dtype=np.int64)
        self.st_chain = np.zeros(m, dtype=np.int64)  # pool row of the announced chain
        self.st_loop = np.zeros(m, dtype=bool)  # the receiver's key is in that chain (rows never change: kept)
        self.st_up = np.full(m, -1, dtype=np.int64)  # the sender's parent as its chain names it (Tree.is_child)
        self.st_cert = np.zeros(m, dtype=bool)  # it gave v a certificate ...
        self.st_cert_issued = np.zeros(m, dtype=np.int64)  # ... issued at this seq
        self.st_at = np.full(m, -np.inf)
        self.st_seq_at = np.full(m, -np.inf)
        self.st_beat_at = np.full(m, -np.inf)
        self.st_silent = np.zeros(m, dtype=bool)
        self.key_known = np.zeros(m, dtype=bool)  # Neighbour.key: v has accepted one announcement of u
        # Per directed edge u -> v, u's side (Neighbour of v at u: last_sent, cert, _dirty, _owed_beats).
        self.last_sent = np.full(m, -np.inf)
        self.cert_has = np.zeros(m, dtype=bool)
        self.cert_root = np.full(m, -1, dtype=np.int64)
        self.cert_issued = np.zeros(m, dtype=np.int64)
        self.dirty = np.ones(m, dtype=bool)  # Tree.add: a new neighbour is owed an announcement at once
        self.owed_beat = np.zeros(m, dtype=bool)
        # Beats forwarded in the last round, arriving in this one: (edge, root, seq).
        self.fwd_edge = np.zeros(0, dtype=np.int64)
        self.fwd_root = np.zeros(0, dtype=np.int64)
        self.fwd_seq = np.zeros(0, dtype=np.int64)
        # Lookup filters (only with ``bits``): our own, what v holds of u (Neighbour.bloom), what u last sent v
        # (Neighbour.bloom_sent); a row without its flag is None.
        self.own_filter = None if bits is None else filters_of(np.asarray(bits, dtype=np.int64))
        if self.own_filter is not None:
            self.st_filter = np.zeros((m, WORDS), dtype=np.uint64)
            self.st_filter_has = np.zeros(m, dtype=bool)
            self.sent_filter = np.zeros((m, WORDS), dtype=np.uint64)
            self.sent_filter_has = np.zeros(m, dtype=bool)
        # Tree._dead_roots as columns (root, highest dead seq, when last touched); grows up to MAX_DEAD_ROOTS.
        self.dr_root = np.full((n, 0), -1, dtype=np.int64)
        self.dr_seq = np.zeros((n, 0), dtype=np.int64)
        self.dr_touch = np.zeros((n, 0))
        self.stats = {"parent_changes": 0, "roots_dead": 0, "rejected": 0, "parents_silent": 0,
                      "announcements": 0, "beats": 0}
        self.sent = {"announcements": 0, "beats": 0}  # in the last round
        self.changed = n  # nodes whose root, parent or path changed (or that removed a neighbour) in the last round
        self.changed_extra = 0
        # "shallower": Tree._candidates as it is: a node whose parent is still a candidate moves only to a candidate
        # under the same root that sits above its own depth, so two neighbours can never take each other at the
        # same tick (a two-node cycle needs one of them to move to one at least as deep as itself). "cost": the
        # rule before it (any candidate, by cost alone), kept to measure what it did with RTTs that differ.
        self.parent_rule = "shallower"

    def clone(self) -> Network:
        """An independent copy (to run several failure scenarios from one converged state)."""
        return copy.deepcopy(self)

    # --- the chain pool ----------------------------------------------------------------------------------
    def _alloc(self, count: int) -> IntArray:
        """``count`` fresh empty rows of the pool (grown when the free list runs out)."""
        if len(self.free) < count:
            self._resize(max(2 * self.capacity, self.capacity + count, 64))
        rows, self.free = self.free[:count], self.free[count:]
        self.pk[rows] = NO_KEY
        self.pp[rows] = 0
        self.pi[rows] = 0
        self.pmin[rows] = NO_ISSUE
        self.pmax[rows] = -1
        return rows

    def _resize(self, capacity: int) -> None:
        """A pool of ``capacity`` rows: every row keeps its number, the new ones are free."""
        old = self.capacity
        pk = np.full((capacity, self.width), NO_KEY, dtype=np.int32)
        pp = np.zeros((capacity, self.width), dtype=np.uint16)
        pi = np.zeros((capacity, self.width), dtype=np.int64)
        pmin = np.full(capacity, NO_ISSUE, dtype=np.int64)
        pmax = np.full(capacity, -1, dtype=np.int64)
        pk[:old], pp[:old], pi[:old], pmin[:old], pmax[:old] = self.pk, self.pp, self.pi, self.pmin, self.pmax
        self.pk, self.pp, self.pi, self.pmin, self.pmax = pk, pp, pi, pmin, pmax
        self.free = np.concatenate([self.free, np.arange(old, capacity, dtype=np.int64)])
        self.capacity = capacity

    def _compact(self) -> None:
        """Between rounds: free the rows nobody points to when fewer are free than a round may need (at most two
        new chains per node: one at the tick, one on receiving; fewer rows once the chains are wide, _alloc grows
        the pool if a round needs more). When far more are free than that (the rows grew wider), the live rows are
        renumbered into a smaller pool: only here, between rounds, do rows change numbers."""
        n = self.links.n
        headroom = max(64, min(2 * n, HEADROOM_CELLS // self.width))
        if headroom <= len(self.free) <= 4 * headroom:
            return
        live = np.zeros(self.capacity, dtype=bool)
        live[self.chain] = True
        live[self.st_chain[self.st_has]] = True
        self.free = np.flatnonzero(~live)
        if len(self.free) > 4 * headroom:
            keep = np.flatnonzero(live)
            remap = np.full(self.capacity, -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            self.chain = remap[self.chain]
            self.st_chain = np.where(self.st_has, remap[self.st_chain], 0)
            self.pk, self.pp, self.pi = self.pk[keep], self.pp[keep], self.pi[keep]
            self.pmin, self.pmax = self.pmin[keep], self.pmax[keep]
            self.capacity, self.free = len(keep), np.zeros(0, dtype=np.int64)
        if len(self.free) < 2 * headroom:
            self._resize(self.capacity + 2 * headroom - len(self.free))

    def _grow(self, need: int) -> None:
        if need <= self.width:
            return
        width = min(max(need, 2 * self.width), self.depth_bound)
        for name, fill in (("pk", NO_KEY), ("pp", 0), ("pi", 0)):
            old = getattr(self, name)
            new = np.full((old.shape[0], width), fill, dtype=old.dtype)
            new[:, : self.width] = old
            setattr(self, name, new)
        self.width = width

    def contains(self, rows: IntArray, length: IntArray, key: IntArray) -> BoolArray:
        """Whether ``key`` is in the first ``length`` hops of the pool rows ``rows`` (the
        `any(h.key == self.key for h in ann.chain)` of Tree._candidates and _follow_parent)."""
        out = np.zeros(len(rows), dtype=bool)
        by_length = np.argsort(length, kind="stable")  # chunks of similar length: read only what is there
        for lo in range(0, len(rows), CHUNK):
            sl = by_length[lo: lo + CHUNK]
            w = int(length[sl].max(initial=0))
            if w == 0:
                continue
            hit = (self.pk[rows[sl], :w] == key[sl, None]) & (np.arange(w) < length[sl, None])
            out[sl] = hit.any(axis=1)
        return out

    # --- dead roots --------------------------------------------------------------------------------------
    def is_dead(self, who: IntArray, root: IntArray, seq: IntArray) -> BoolArray:
        """Tree._check / _candidates / _on_beat: ``root`` is dead for ``who`` at ``seq`` (at or below its dead
        number)."""
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

    # --- helpers over edges ------------------------------------------------------------------------------
    def _out_edges_of(self, nodes: BoolArray) -> BoolArray:
        """Edges whose sender is in the mask ``nodes``."""
        return nodes[self.links.src]

    def _is_child(self, e: IntArray, root_of_dst: IntArray) -> BoolArray:
        """Tree.is_child at the receiver of ``e``: its stored announcement of the sender names it as parent under
        ``root_of_dst`` (the receiver's root)."""
        return self.st_has[e] & (self.st_root[e] == root_of_dst) & (self.st_depth[e] > 0) & \
            (self.st_up[e] == self.links.dst[e])

    def _issues_ok(self, chain: IntArray, cert: BoolArray, cert_issued: IntArray, seq: IntArray,
                   current: IntArray) -> BoolArray:
        """announce.certificates_fresh: every hop and the certificate issued at most CERT_LIFETIME seqs before
        ``current`` and none after the announcement's ``seq``."""
        oldest = np.where(cert, np.minimum(self.pmin[chain], cert_issued), self.pmin[chain])
        newest = np.where(cert, np.maximum(self.pmax[chain], cert_issued), self.pmax[chain])
        return (current - oldest <= CERT_LIFETIME) & (newest <= seq)

    # --- one round ---------------------------------------------------------------------------------------
    def step(self) -> None:
        """One heartbeat: every live node ticks, then what was sent arrives."""
        self.t += 1
        now = self.t * HEARTBEAT_INTERVAL
        self._compact()
        self.changed_extra = 0  # nodes that removed a silent neighbour (their routing tables changed)
        before = (self.root.copy(), self.parent.copy(), self.depth.copy(), self.chain.copy())
        self._tick(now)
        self._receive(now + LINK_DELAY)
        self._grow(int(self.depth.max(initial=0)))
        moved = (self.root != before[0]) | (self.parent != before[1]) | (self.depth != before[2])
        other = np.flatnonzero(self.chain != before[3])  # a new row: did the path change (or only issue seqs)?
        moved[other] |= (self.pp[self.chain[other]] != self.pp[before[3][other]]).any(axis=1)
        self.changed = int(np.count_nonzero(moved & self.alive)) + self.changed_extra

    def _remove_silent(self, now: float) -> None:
        """Tree.remove of every neighbour whose session fell silent PEER_DEAD_AFTER ago (the router drops it): its
        announcement, filter and our state for it are forgotten; nothing more goes either way."""
        if self.peer_dead_after is None:
            return
        gone = np.flatnonzero(~self.removed & (now - self.silent_since >= self.peer_dead_after))
        if gone.size == 0:
            return
        self.removed[gone] = True
        self.st_has[gone] = self.key_known[gone] = self.st_silent[gone] = False
        back = self.links.rev[gone]
        self.dirty[back] = self.owed_beat[back] = self.cert_has[back] = False
        if self.own_filter is not None:
            self.st_filter_has[gone] = self.sent_filter_has[back] = False
        self.changed_extra = int(np.unique(self.links.dst[gone]).size)

    def removals_pending(self) -> bool:
        """True while a live node still holds a neighbour whose session fell silent (it will remove it)."""
        if self.peer_dead_after is None:
            return False
        return bool((~self.removed & np.isfinite(self.silent_since) & self.alive[self.links.dst]).any())

    def _expire_roots(self, now: float) -> None:
        # Tree._expire_root: the highest number any neighbour's announcement shows for our root; stalled too
        # long -> dead.
        lk = self.links
        # The root left (Tree._left) first: its clock, moved on by any neighbour's newer seq of it.
        shown = np.where(self.st_has & (self.st_root == self.lf_root[lk.dst]), self.st_seq, -1)
        best = lk.segment_max(shown)
        slot = self.alive & (self.lf_root >= 0)
        rose = slot & (best > self.lf_seq)
        self.lf_seq[rose], self.lf_at[rose] = best[rose], now
        gone = np.flatnonzero(slot & (now - self.lf_at > ROOT_TIMEOUT))
        self._add_dead(gone, self.lf_root[gone], self.lf_seq[gone], now)
        self.stats["roots_dead"] += len(gone)
        self.lf_root[gone] = -1
        nonroot = self.alive & (self.root != self.nodes)
        shown = np.where(self.st_has & (self.st_root == self.root[lk.dst]), self.st_seq, -1)
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
        """Edges whose stored announcement makes the sender a valid parent for the receiver (Tree._candidates);
        marks a parent whose beats stopped for NEIGHBOUR_TIMEOUT silent, as Tree._candidates does."""
        lk = self.links
        d = lk.dst
        e = np.flatnonzero(self.alive[d] & self.st_has & self.st_cert & (self.st_depth + 1 <= self.depth_bound)
                           & ~self.st_silent)
        d = d[e]
        same = self.st_root[e] == self.root[d]
        gone = same & (self.pedge[d] == e) & (now - np.maximum(self.st_seq_at[e], self.parent_at[d]) > NEIGHBOUR_TIMEOUT)
        self.st_silent[e[gone]] = True
        self.stats["parents_silent"] += int(np.count_nonzero(gone))
        ok = ~gone & (same | (now - self.st_at[e] <= CERT_LIFETIME * HEARTBEAT_INTERVAL))
        current = np.where(same, np.maximum(self.seq[d], self.st_seq[e]), self.st_seq[e])
        ok &= self._issues_ok(self.st_chain[e], self.st_cert[e], self.st_cert_issued[e], self.st_seq[e], current)
        ok &= self.st_root[e] != d
        e, d = e[ok], d[ok]
        keep = ~self.is_dead(d, self.st_root[e], self.st_seq[e])
        e, d = e[keep], d[keep]
        e = e[~self.st_loop[e]]
        if self.parent_rule == "shallower":
            d = lk.dst[e]
            settled = np.zeros(lk.n, dtype=bool)  # its parent is still a candidate
            settled[d[e == self.pedge[d]]] = True
            deeper = (self.st_root[e] == self.root[d]) & (e != self.pedge[d]) & (self.st_depth[e] >= self.depth[d])
            e = e[~(settled[d] & deeper)]
        return e

    def _follow(self, f: IntArray, pe: IntArray, now: float) -> BoolArray:
        """Tree._follow_parent for nodes ``f`` from the stored announcement of their parent on edge ``pe`` (the
        caller checked certificate, loop and depth): our chain is its chain plus its certificate for us. Returns
        which of them changed root or chain."""
        lk = self.links
        need = int(self.st_depth[pe].max(initial=-1)) + 1
        self._grow(need)
        w = self.width
        src = self.st_chain[pe]
        keys, ports, issued = self.pk[src].copy(), self.pp[src].copy(), self.pi[src].copy()
        col = self.st_depth[pe]
        keys[np.arange(len(f)), col] = f
        ports[np.arange(len(f)), col] = lk.port_from_src[pe]
        issued[np.arange(len(f)), col] = self.st_cert_issued[pe]
        old = self.chain[f]
        depth = col + 1
        same_chain = (self.depth[f] == depth) & (self.pk[old, :w] == keys).all(axis=1) & \
            (self.pp[old, :w] == ports).all(axis=1) & (self.pi[old, :w] == issued).all(axis=1)
        new_root = self.st_root[pe]
        moved_root = new_root != self.root[f]
        newer = ~moved_root & (self.st_seq[pe] > self.seq[f])
        take = moved_root | newer
        # Tree._leave_root: a better root left for a worse one is remembered with its clock (one slot, the best).
        m, old_root, nr = f[moved_root], self.root[f[moved_root]], new_root[moved_root]
        safe = np.maximum(old_root, 0)
        leave = (old_root >= 0) & (old_root != m) & (self.rank[safe] < self.rank[nr])
        slot = self.lf_root[m]
        leave &= (slot < 0) | (slot == old_root) | (self.rank[safe] < self.rank[np.maximum(slot, 0)])
        lm = m[leave]
        self.lf_root[lm], self.lf_seq[lm], self.lf_at[lm] = old_root[leave], self.rs_seq[lm], self.rs_at[lm]
        # Back under the root it left: its clock runs on unless the parent's seq is newer than any it saw.
        seq_in = self.st_seq[pe[moved_root]]
        back = self.lf_root[m] == nr
        keep = back & (seq_in <= self.lf_seq[m])
        self.rs_seq[m] = np.where(keep, self.lf_seq[m], seq_in)
        self.rs_at[m] = np.where(keep, self.lf_at[m], now)
        self.lf_root[m[back]] = -1
        self.seq[f[take]] = self.st_seq[pe[take]]
        self.root[f] = new_root
        fresh = ~same_chain
        if fresh.any():
            rows = self._alloc(int(np.count_nonzero(fresh)))
            self.pk[rows], self.pp[rows], self.pi[rows] = keys[fresh], ports[fresh], issued[fresh]
            self.pmin[rows] = np.minimum(self.pmin[src[fresh]], self.st_cert_issued[pe[fresh]])
            self.pmax[rows] = np.maximum(self.pmax[src[fresh]], self.st_cert_issued[pe[fresh]])
            self.chain[f[fresh]] = rows
        self.depth[f] = depth
        return moved_root | fresh

    def _tick(self, now: float) -> None:
        lk = self.links
        root0, chain0, parent0 = self.root.copy(), self.chain.copy(), self.parent.copy()
        self._remove_silent(now)
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
        switched = self.alive & (parent != self.parent)
        self.stats["parent_changes"] += int(np.count_nonzero(switched))
        self.parent_at[switched] = now
        self.parent, self.pedge = parent, pedge
        # Tree._reselect: an orphan (no candidate, its root still better than itself and not known dead) keeps its
        # position; the others without a parent that are not root yet become root (Tree._become_root).
        lost = self.alive & (pedge < 0) & (self.root != self.nodes)
        orphan = lost & (self.root >= 0) & (self.rank[np.maximum(self.root, 0)] < self.rank)
        self._orphans = orphan
        become = np.flatnonzero(lost & ~orphan)
        self.own_seq[become] += 1
        self.seq[become] = self.own_seq[become]
        self.rs_seq[become], self.rs_at[become] = self.seq[become], now
        self.root[become] = become
        self.depth[become] = 0
        self.chain[become] = self._alloc(len(become))
        f = np.flatnonzero(self.alive & (pedge >= 0))
        self._follow(f, pedge[f], now)
        # Tree.tick -> _position_changed: every neighbour is owed an announcement.
        changed = self.alive & ((self.root != root0) | (self.chain != chain0) | (self.parent != parent0))
        self.dirty |= self._out_edges_of(changed)
        # Tree.tick: a root advances its number and beats it to its children.
        roots = self.alive & (self.root == self.nodes)
        self.own_seq[roots] += 1
        self.seq[roots] = self.own_seq[roots]
        self.rs_seq[roots], self.rs_at[roots] = self.seq[roots], now
        child_at_sender = np.zeros(len(lk), dtype=bool)  # per edge u -> v: u holds v as its child
        child_at_sender[lk.rev] = self._is_child(np.arange(len(lk)), self.root[lk.dst])
        beats = roots[lk.src] & child_at_sender
        # Tree.tick's refresh timers (the root's wave every CERT_REFRESH, the others' safety net).
        u, v = lk.src, lk.dst
        is_root = self.root[u] == u
        every = np.where(is_root, ROOT_EVERY, NODE_EVERY)
        age = np.where(is_root, ROOT_CERT_AGE, NODE_CERT_AGE)
        due = (now - self.last_sent >= every) | (self.cert_has & (self.parent[u] != v) &
                                                  (self.seq[u] - self.cert_issued >= age))
        self.dirty |= due & self.alive[u]
        # Tree.urgent: the newest beat to a new child, then the announcements owed.
        orphaned = self.parent < 0
        orphaned &= (self.root != self.nodes) & (self.root >= 0)
        owed = self.owed_beat & self.alive[u]
        self.owed_beat[owed] = False
        beats |= owed & (self.root[u] >= 0) & ~orphaned[u] & child_at_sender
        self.b2_edge = np.flatnonzero(beats)
        self.b2_root, self.b2_seq = self.root[u[self.b2_edge]], self.seq[u[self.b2_edge]]
        filters = self._tree_filters(child_at_sender) if self.own_filter is not None else None
        send = np.flatnonzero(self.dirty & self.alive[u] & (now - self.last_sent >= ANNOUNCE_SPACING))
        self.dirty[send] = False
        self.last_sent[send] = now
        su, sv = u[send], v[send]
        give = self.key_known[lk.rev[send]] & (self.parent[su] != sv) & ~orphaned[su]
        renew = give & (~self.cert_has[send] | (self.cert_root[send] != self.root[su]) |
                        (self.seq[su] - self.cert_issued[send] >= CERT_REFRESH // 2))
        r = send[renew]
        self.cert_has[r], self.cert_root[r], self.cert_issued[r] = True, self.root[u[r]], self.seq[u[r]]
        # What each announcement says (Tree._announcement_for), read when it arrives.
        chain = self.chain[su]
        up = np.where(self.depth[su] >= 2, self.pk[chain, np.maximum(self.depth[su] - 2, 0)], self.root[su])
        self.ann = {"edge": send, "root": self.root[su].copy(), "seq": self.seq[su].copy(), "chain": chain,
                    "depth": self.depth[su].copy(), "up": np.where(self.depth[su] >= 1, up, -1),
                    "cert": give, "cert_issued": self.cert_issued[send].copy()}
        if filters is not None:
            where, words = filters
            tree = where[send] >= 0
            self.sent_filter_has[send] = tree
            sent = np.zeros((len(send), WORDS), dtype=np.uint64)
            sent[tree] = words[where[send[tree]]]
            self.sent_filter[send] = sent
            self.ann["filter_has"], self.ann["filter"] = tree, sent
        self.sent = {"announcements": len(send), "beats": len(self.b2_edge)}
        self.stats["announcements"] += len(send)

    def _tree_filters(self, child_at_sender: BoolArray) -> tuple[IntArray, WordArray]:
        """Tree.tree_blooms of every node (what it tells each tree neighbour: its own address and every filter its
        other tree neighbours told it), and Tree.urgent's check: a tree neighbour whose filter from us changed is
        owed an announcement. Returns, per edge u -> v, the row of its filter (-1: not a tree link) and the rows."""
        lk = self.links
        u, v = lk.src, lk.dst
        tree = np.flatnonzero(self.alive[u] & ((self.parent[u] == v) | child_at_sender))
        order = tree[np.argsort(u[tree], kind="stable")]
        group = u[order]
        held = lk.rev[order]
        recv = self.st_filter[held]
        recv[~self.st_filter_has[held]] = 0
        pre = segmented_or(recv, group)
        suf = segmented_or(recv[::-1], group[::-1])[::-1]
        first = np.ones(len(order), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = group[:-1] != group[1:]
        words = self.own_filter[group]
        words[~first] |= pre[np.flatnonzero(~first) - 1]
        words[~last] |= suf[np.flatnonzero(~last) + 1]
        where = np.full(len(lk), -1, dtype=np.int64)
        where[order] = np.arange(len(order))
        changed = ~self.sent_filter_has[order] | (words != self.sent_filter[order]).any(axis=1)
        self.dirty[order[changed]] = True
        return where, words

    def _accept_beats(self, e: IntArray, root: IntArray, seq: IntArray, at: float) -> IntArray:
        """Tree._on_beat for beats on edges ``e`` (at most one per receiver): the receivers that took one."""
        lk = self.links
        c, p = lk.dst[e], lk.src[e]
        from_parent = (self.parent[c] == p) & (root == self.root[c])
        self.st_seq_at[e[from_parent & (seq == self.seq[c])]] = at  # one we had: the link lives all the same
        ok = from_parent & (seq > self.seq[c]) & (at - self.st_beat_at[e] >= MIN_ANNOUNCE_INTERVAL)
        dead = ok & self.is_dead(c, root, seq)
        self.stats["rejected"] += int(np.count_nonzero(dead))
        ok &= ~dead
        e, c = e[ok], c[ok]
        self.seq[c] = seq[ok]
        self.rs_seq[c], self.rs_at[c] = seq[ok], at
        self.st_seq_at[e] = self.st_beat_at[e] = at
        self.stats["beats"] += len(e)
        return c

    def _forward(self, nodes: IntArray, child: BoolArray) -> None:
        """Tree._beat_children: each of ``nodes`` sends the beat it just took to its children (``child``, per
        edge c -> v: v holds c as its child), to arrive next round."""
        lk = self.links
        took = np.zeros(lk.n, dtype=bool)
        took[nodes] = True
        e = np.flatnonzero(child & took[lk.dst])
        out = lk.rev[e]
        self._next_edge.append(out)
        self._next_root.append(self.root[lk.src[out]])
        self._next_seq.append(self.seq[lk.src[out]])

    def _receive(self, at: float) -> None:
        lk = self.links
        m = len(lk)
        self._next_edge: list[IntArray] = []
        self._next_root: list[IntArray] = []
        self._next_seq: list[IntArray] = []
        every = np.arange(m)
        # 1. The beats our parents forwarded last round (overlay_net queues them before this round's messages).
        live = self.alive[lk.src[self.fwd_edge]] & self.alive[lk.dst[self.fwd_edge]] & self.link_up[self.fwd_edge]
        took = self._accept_beats(self.fwd_edge[live], self.fwd_root[live], self.fwd_seq[live], at)
        self._forward(took, self._is_child(every, self.root[lk.dst]))
        # 2. This tick's messages, by sender: a sender's beat comes before its announcement.
        b = self.b2_edge
        live = self.alive[lk.dst[b]] & self.link_up[b]
        b, b_root, b_seq = b[live], self.b2_root[live], self.b2_seq[live]
        from_parent = self.parent[lk.dst[b]] == lk.src[b]
        b, b_root, b_seq = b[from_parent], b_root[from_parent], b_seq[from_parent]
        _, first = np.unique(lk.dst[b], return_index=True)  # a root beat and a new child's beat: one seq
        b, b_root, b_seq = b[first], b_root[first], b_seq[first]
        ann = self.ann
        e = ann["edge"]
        live = self.alive[lk.dst[e]] & self.link_up[e]
        sel = {k: val[live] for k, val in ann.items()}
        e = sel["edge"]
        u, v = lk.src[e], lk.dst[e]
        # Tree._check: refused under a root dead for the receiver, or with a certificate past CERT_LIFETIME.
        current = np.where(sel["root"] == self.root[v], np.maximum(sel["seq"], self.seq[v]), sel["seq"])
        refused = self.is_dead(v, sel["root"], sel["seq"])
        refused |= ~self._issues_ok(sel["chain"], sel["cert"], sel["cert_issued"], sel["seq"], current)
        self.stats["rejected"] += int(np.count_nonzero(refused))
        sel = {k: val[~refused] for k, val in sel.items()}
        e = sel["edge"]
        u, v = lk.src[e], lk.dst[e]
        root_before = self.root.copy()
        child_old = self._is_child(every, root_before[lk.dst])
        old_path = self.pp[self.st_chain[e]]
        old_has, old_root, old_depth = self.st_has[e].copy(), self.st_root[e].copy(), self.st_depth[e].copy()
        new_key = ~self.key_known[e]
        self.dirty[lk.rev[e[new_key]]] = True  # now it can certify the sender
        self.key_known[e] = True
        advanced = ~old_has | (old_root != sel["root"]) | (sel["seq"] > self.st_seq[e])
        self.st_seq_at[e[advanced]] = at
        self.st_has[e] = True
        self.st_root[e], self.st_seq[e], self.st_depth[e] = sel["root"], sel["seq"], sel["depth"]
        self.st_chain[e], self.st_up[e] = sel["chain"], sel["up"]
        self.st_loop[e] = self.contains(sel["chain"], sel["depth"], v)  # Tree._candidates' ancestry check, once
        self.st_cert[e], self.st_cert_issued[e] = sel["cert"], sel["cert_issued"]
        self.st_at[e] = at
        self.st_silent[e] = False
        if self.own_filter is not None:
            self.st_filter_has[e], self.st_filter[e] = sel["filter_has"], sel["filter"]
        w = min(old_path.shape[1], self.width)
        moved = ~old_has | (old_root != sel["root"]) | (old_depth != sel["depth"])
        moved |= (old_path[:, :w] != self.pp[sel["chain"], :w]).any(axis=1)
        child_new = self._is_child(every, root_before[lk.dst])
        # The parent's beat meets the children as the announcements before it (lower senders) left them.
        earlier = np.zeros(m, dtype=bool)
        earlier[e] = lk.src[e] < self.parent[lk.dst[e]]
        took = self._accept_beats(b, b_root, b_seq, at)
        self._forward(took, np.where(earlier, child_new, child_old))
        # Tree._on_announcement: the parent's is followed (below); the rest marks what we owe the sender.
        follow = (u == self.parent[v]) & sel["cert"] & (sel["root"] != v) & (sel["depth"] + 1 <= self.depth_bound)
        follow &= ~self.st_loop[e]
        f, pe = v[follow], e[follow]
        moved_root = np.zeros(lk.n, dtype=bool)
        moved_root[f] = self.st_root[pe] != self.root[f]
        changed = np.zeros(lk.n, dtype=bool)
        changed[f] = self._follow(f, pe, at)
        self.dirty |= self._out_edges_of(changed & self.alive)
        # Tree.receive's _root_seen update, in overlay_net's order (senders by id): announcements under our root
        # count; if following the parent changed our root, only the parent's and those after it under the new one.
        counts = np.where(moved_root[v], (sel["root"] == self.root[v]) & (u >= self.parent[v]),
                          sel["root"] == root_before[v])
        best = np.full(lk.n, -1, dtype=np.int64)
        np.maximum.at(best, v[counts], sel["seq"][counts])
        rose = self.alive & (best > self.rs_seq)  # (a node that moved root: over the clock _follow gave it)
        self.rs_seq[rose], self.rs_at[rose] = best[rose], at
        # It moved under a worse root than ours; it gave us no certificate and is not our child; it became (or
        # stopped being) our child: each is owed an announcement now, a new child our newest beat as well.
        rootv = np.where(u > self.parent[v], self.root[v], root_before[v])
        worse = moved & (rootv >= 0) & (self.rank[np.maximum(rootv, 0)] < self.rank[sel["root"]])
        is_child_now = self.st_has[e] & (self.st_root[e] == rootv) & (self.st_depth[e] > 0) & (self.st_up[e] == v)
        was_child = child_old[e]
        self.dirty[lk.rev[e[worse | (~sel["cert"] & ~is_child_now) | (is_child_now != was_child)]]] = True
        self.owed_beat[lk.rev[e[is_child_now & ~was_child]]] = True
        self.fwd_edge = np.concatenate(self._next_edge) if self._next_edge else np.zeros(0, dtype=np.int64)
        self.fwd_root = np.concatenate(self._next_root) if self._next_root else np.zeros(0, dtype=np.int64)
        self.fwd_seq = np.concatenate(self._next_seq) if self._next_seq else np.zeros(0, dtype=np.int64)

    # --- the state a packet sees between rounds ----------------------------------------------------------
    def positions(self) -> tuple[npt.NDArray[np.uint16], IntArray]:
        """Every node's own path (Tree.path) and depth after the last round."""
        return self.pp[self.chain].copy(), self.depth.copy()

    def routing_edges(self, now: float) -> IntArray:
        """Tree.routing_neighbours of every node: edges whose receiver holds an announcement of the sender under
        the receiver's own root, accepted within CERT_LIFETIME (sorted by receiver)."""
        fresh = self.st_has & (now - self.st_at <= CERT_LIFETIME * HEARTBEAT_INTERVAL)
        return np.flatnonzero(fresh & self.alive[self.links.dst] & (self.st_root == self.root[self.links.dst]))

    def neighbour_paths(self, e: IntArray) -> npt.NDArray[np.uint16]:
        """The paths the receivers of edges ``e`` hold for their senders (padded to the pool width)."""
        return self.pp[self.st_chain[e]]

    # --- failures ----------------------------------------------------------------------------------------
    def kill(self, nodes: IntArray) -> None:
        """Nodes stop (silently: their children notice by their beats stopping, every neighbour by their
        session's silence after PEER_DEAD_AFTER)."""
        self.alive[nodes] = False
        out = np.isin(self.links.src, nodes)
        self.silent_since[out] = np.minimum(self.silent_since[out], self.t * HEARTBEAT_INTERVAL)

    def cut(self, a: int, b: int) -> None:
        """The link a-b stops carrying anything (both directions)."""
        lk = self.links
        e = np.flatnonzero((lk.src == a) & (lk.dst == b))
        self.link_up[e] = False
        self.link_up[lk.rev[e]] = False
        both = np.concatenate([e, lk.rev[e]])
        self.silent_since[both] = np.minimum(self.silent_since[both], self.t * HEARTBEAT_INTERVAL)
