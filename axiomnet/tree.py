"""The spanning tree: root election, parent choice, our coordinates, and what we announce (pure, no I/O).

One :class:`Tree` per node, fed the control messages its neighbours send (axiomnet/announce.py) and the time,
asked every HEARTBEAT_INTERVAL (one tick) what to send. ironwood's router.go is the model (docs/ROUTING.md §2
says where we follow it and where not). The control plane is quiet when nothing changes: a full announcement
goes to a neighbour when our position, chain, certificate or (tree links) lookup filter changes and every
CERT_REFRESH heartbeats; what goes every tick is the root's ROOT_BEAT, down the tree links only.

* **Root**: the lowest Ed25519 key any valid candidate leads to (or ourselves); on a private network
  (``trusted_roots``) only the listed roots count, so a stranger's lower key changes nothing. The root signs a sequence
  number it advances every tick and sends it to its children as a ROOT_BEAT, which each node takes from its parent
  only, verifies once and forwards unchanged to its children; a root whose number has not advanced for
  ROOT_TIMEOUT is dead for every number up to the last one seen, so a lost root is noticed in bounded time, and it
  can come back only with a higher number (after a restart). A better root we leave for a worse one keeps its
  clock (``_left``): coming back under it at no newer number does not restart it (docs/ROUTING.md §2.6).
* **Parent**: among neighbours whose announcement is valid (signatures hold, certificates at most CERT_LIFETIME
  seqs old), live (under our root: our own beats say so, and our parent's beats must not stop for
  NEIGHBOUR_TIMEOUT; under another root: announced within CERT_LIFETIME heartbeats), whose chain does not
  contain us (no loop can form), who gave us a certificate, under the best root: the lowest cost, cost = (its
  depth + 1) x smoothed link RTT, the
  RTT measured by our own PROBEs on our own clock (a neighbour cannot make itself look closer). A
  valid parent is kept unless another costs under PARENT_SWITCH_RATIO of it, and while it is a candidate we move
  only to one above our own depth (no two neighbours take each other at one tick). With no candidate a node is
  its own root.
* **Coordinates**: (root, root seq, the ports of our chain). :func:`select_parents` is the whole decision, over
  numpy arrays, so the simulator (tools/simulate.py) runs exactly this code for 10^5 nodes at once.
* **Lookup filters** (axiomnet/bloom.py) ride on announcements over tree links, sent when they change.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from axiomnet.announce import (
    NO_SIGNATURE,
    PROBE,
    PROBE_REPLY,
    ROOT_BEAT,
    Announcement,
    Beat,
    Hop,
    Verifier,
    certificates_fresh,
    decode_announcement,
    decode_beat,
    decode_probe,
    encode_announcement,
    encode_beat,
    encode_probe,
    hop_statement,
    root_statement,
    sign,
)
from axiomnet.bloom import Bloom
from axiomnet.constants import (
    CERT_LIFETIME,
    CERT_REFRESH,
    DEFAULT_LINK_RTT,
    HEARTBEAT_INTERVAL,
    MAX_DEAD_ROOTS,
    MAX_PORT,
    MAX_TREE_DEPTH,
    MIN_ANNOUNCE_INTERVAL,
    MIN_LINK_RTT,
    NEIGHBOUR_TIMEOUT,
    PARENT_SWITCH_RATIO,
    PORT_REUSE_DELAY,
    PROBE_INTERVAL,
    PROBE_INTERVAL_MAX,
    ROOT_TIMEOUT,
    RTT_EWMA_WEIGHT,
    RTT_STABLE_ABS,
    RTT_STABLE_RATIO,
)
from axiomnet.errors import InvalidAnnouncement
from axiomnet.identity import derive_address, noise_key_of

_PROBE_TYPES = (bytes([PROBE]), bytes([PROBE_REPLY]))
_BEAT_TYPE = bytes([ROOT_BEAT])
PROBES_REMEMBERED = 4  # unanswered probes per neighbour whose reply still gives an RTT sample
# Our announcements to one neighbour are at least this far apart (the receiver drops ones closer than
# MIN_ANNOUNCE_INTERVAL; the margin absorbs jitter on the link).
ANNOUNCE_SPACING = MIN_ANNOUNCE_INTERVAL * 1.5
# How often our announcements to a neighbour are refreshed, and how old (in root seqs) its certificate may grow before
# it is renewed: as root the refresh wave starts here, every CERT_REFRESH; other nodes' timers are a safety net,
# half a period later (see Tree.tick).
ROOT_REFRESH, ROOT_CERT_AGE = CERT_REFRESH * HEARTBEAT_INTERVAL - HEARTBEAT_INTERVAL / 2, CERT_REFRESH
NODE_REFRESH, NODE_CERT_AGE = 1.5 * CERT_REFRESH * HEARTBEAT_INTERVAL, CERT_REFRESH + CERT_REFRESH // 2


def select_parents(owner: npt.NDArray[np.int64], root_rank: npt.NDArray[np.int64], cost: npt.NDArray[np.float64],
                   current: npt.NDArray[np.bool_], self_rank: npt.NDArray[np.int64],
                   switch_ratio: float = PARENT_SWITCH_RATIO) -> npt.NDArray[np.int64]:
    """For each node ``o`` (0..len(self_rank)-1): the row of its chosen parent among the candidate rows with
    ``owner == o``, or -1 when it is its own root.

    Rows are valid candidates only (the caller filtered out loops, stale and dead roots). A node roots itself if
    its own rank is below every candidate's root rank; otherwise it takes the best root's cheapest candidate,
    except that a current parent under that root is kept unless the cheapest costs under ``switch_ratio`` of it.
    Ties in cost go to the lower row (callers order rows by key to make that deterministic).
    """
    nodes = len(self_rank)
    choice = np.full(nodes, -1, dtype=np.int64)
    if len(owner) == 0:
        return choice
    order = np.lexsort((np.arange(len(owner)), cost, root_rank, owner))
    first = np.ones(len(order), dtype=bool)
    first[1:] = owner[order[1:]] != owner[order[:-1]]
    best = order[first]  # per owner with candidates: best root, then lowest cost
    best_owner = owner[best]
    takes = root_rank[best] < self_rank[best_owner]
    choice[best_owner[takes]] = best[takes]
    # Hysteresis: a current parent under the chosen root stays unless the best is much cheaper.
    cur = np.flatnonzero(current)
    if cur.size:
        o = owner[cur]
        chosen = choice[o]
        keep = (chosen >= 0) & (root_rank[cur] == root_rank[np.maximum(chosen, 0)])
        keep &= ~(cost[np.maximum(chosen, 0)] < switch_ratio * cost[cur])
        choice[o[keep]] = cur[keep]
    return choice


@dataclass(slots=True)
class Neighbour:
    """A peer with a link session, as the tree sees it."""

    noise_key: bytes  # X25519 key the link session authenticated (how the actors name it)
    port: int  # the port we give it
    added: float
    key: bytes | None = None  # its Ed25519 key, from its first valid announcement
    ann: Announcement | None = None  # its latest valid announcement
    ann_at: float = -1.0  # when that was accepted
    seq_at: float = -1.0  # when its root's number last advanced (or its root changed): its announcements, its beats
    beat_at: float = float("-inf")  # when we last accepted a beat from it (our parent)
    silent: bool = False  # our parent whose beats stopped: no candidate until it announces again
    cert: tuple[bytes, int, int, bytes] | None = None  # our certificate for it: (root, issue seq, port, signature)
    bloom_sent: Bloom | None = None  # the lookup filter we last sent it (tree links)
    rtt: float = DEFAULT_LINK_RTT  # smoothed, from our own probes only
    rtt_measured: bool = False
    bloom: Bloom | None = None  # what it says can be found through it (tree links only)
    last_sent: float = float("-inf")  # when we last sent it an announcement
    probes: dict[int, float] = field(default_factory=dict)  # our unanswered probes: nonce -> when sent (bounded)
    probe_due: float = float("-inf")  # when it gets our next probe
    probe_every: float = PROBE_INTERVAL  # stretches while the link is quiet and healthy (PROBE_INTERVAL_MAX)
    probe_sent: float = float("-inf")  # when we sent it our last probe
    booked: float | None = None  # its entry in Tree._due: when its next probe or refresh may be due
    cert_booked: int | None = None  # its entry in Tree._cert_due: the root seq its certificate may need renewing at
    probe_answered_at: float = float("-inf")  # when we last answered one of its probes
    rejected: int = 0


class Tree:
    """Our place in the spanning tree and our view of the neighbours' places."""

    def __init__(self, signing_secret: bytes, signing_key: bytes, address: bytes, *, now: float,
                 seq_start: int, between_ticks: bool = True, trusted_roots: frozenset[bytes] | None = None) -> None:
        self.key = signing_key
        self._secret = signing_secret
        self.address = address
        self.neighbours: dict[bytes, Neighbour] = {}  # by noise key
        self._by_address: dict[bytes, bytes] = {}  # overlay address -> noise key
        self._freed_ports: dict[int, float] = {}  # port -> when it may be given out again
        self._verifier = Verifier()
        # Probe nonces: a keyed hash of a counter, unpredictable to the neighbours (no randomness in the core).
        self._probe_key = hashlib.blake2b(signing_secret, digest_size=32, person=b"axn-prob").digest()
        self._probes = 0
        self._dead_roots: OrderedDict[bytes, int] = OrderedDict()  # root -> highest seq known to be dead
        self._own_seq = seq_start  # our number when we are root; never goes back
        self.root = signing_key
        self.seq = seq_start
        self._root_sig = sign(signing_secret, root_statement(signing_key, seq_start))
        self.parent: bytes | None = None  # noise key of our parent
        self.chain: tuple[Hop, ...] = ()
        self._root_seen: tuple[int, float] = (seq_start, now)  # (highest seq of our root seen, when it rose)
        # The better root we last left for a worse one without knowing it dead (our candidates under it went away):
        # (root, highest seq seen, when it rose). Its clock keeps running: if we come back under it at no newer seq
        # we come back with that clock, not a fresh one, and if it stalls for ROOT_TIMEOUT it is dead to us too.
        self._left: tuple[bytes, int, float] | None = None
        self.version = 0  # bumped whenever our coordinates or a routing neighbour's change
        self._dirty: set[bytes] = set()  # neighbours owed an announcement before the next tick (see urgent())
        self._parent_at = now  # when we took our current parent (its beats are due from then on)
        self._bloom_check = False  # a tree link or a tree neighbour's filter changed: see whether ours did
        self._blooms: dict[bytes, Bloom] | None = None  # what we tell each tree neighbour (see tree_blooms())
        self._own_bloom = Bloom.of([address])
        self._owed_beats: set[bytes] = set()  # new children owed our newest beat (see urgent())
        # When each neighbour may next owe a probe or a refresh (by time) or a renewed certificate (by root seq): a tick
        # looks only at those due, not at every neighbour (a hub of 10,000 walked them all every heartbeat). Each
        # heap holds a neighbour's earliest booking (superseded entries are skipped when popped, as DeadlineWheel's);
        # ties pop in key order.
        self._due: list[tuple[float, bytes]] = []  # (when, noise key); the neighbour's ``booked`` is its live entry
        self._cert_due: list[tuple[int, bytes]] = []  # (root seq, noise key); ``cert_booked`` likewise
        # Decide again on an announcement that shows a better root or comes from our parent, not only at ticks.
        # The daemon does; the simulator's synchronous rounds (one decision per node per heartbeat) do not.
        self.between_ticks = between_ticks
        self.stats: dict[str, int] = {"announcements": 0, "rejected": 0, "parent_changes": 0, "roots_dead": 0,
                                      "rate_limited": 0, "orphaned": 0, "untrusted_root": 0,
                                      "probe_replies_unmatched": 0, "announcements_sent": 0, "beats": 0,
                                      "beats_sent": 0, "beats_ignored": 0, "parents_silent": 0,
                                      "certificates_signed": 0, "tick_visits": 0}
        self._trusted_roots: frozenset[bytes] | None = None
        self._trust_cache: dict[bytes, bool] = {}
        self.trust(trusted_roots)

    # --- private networks: which roots we accept -----------------------------------------------------
    def trust(self, roots: frozenset[bytes] | None) -> None:
        """Accept only roots whose public (X25519) key is in ``roots``; None: any root (the lowest key wins).

        With a set, a root outside it is never a parent candidate however low its key, and a listed root beats
        every unlisted one (ourselves included); among listed roots the lowest key still wins."""
        self._trusted_roots = None if roots is None else frozenset(roots)
        self._trust_cache.clear()

    def trusted(self, root: bytes) -> bool:
        """True if the Ed25519 key ``root`` may be our root."""
        if self._trusted_roots is None:
            return True
        known = self._trust_cache.get(root)
        if known is None:
            try:
                known = noise_key_of(root) in self._trusted_roots
            except ValueError:
                known = False
            if len(self._trust_cache) >= MAX_DEAD_ROOTS * 16:  # bounded: roots seen, honest or not
                self._trust_cache.clear()
            self._trust_cache[root] = known
        return known

    def _root_order(self, root: bytes) -> tuple[bool, bytes]:
        """Sort key of roots, best first: trusted before untrusted, then the lowest key."""
        return (not self.trusted(root), root)

    def better_root(self, a: bytes, b: bytes) -> bool:
        """True if root ``a`` beats root ``b`` (b may be b"", no root: anything beats it)."""
        return not b or self._root_order(a) < self._root_order(b)

    # --- our position --------------------------------------------------------------------------------
    @property
    def path(self) -> tuple[int, ...]:
        """Our coordinates below the root (the ports of our chain)."""
        return tuple(h.port for h in self.chain)

    @property
    def depth(self) -> int:
        return len(self.chain)

    @property
    def is_root(self) -> bool:
        return self.root == self.key

    @property
    def orphaned(self) -> bool:
        """True while we have no parent but keep our position under a root not known dead (see _reselect)."""
        return self.parent is None and not self.is_root and bool(self.root)

    # --- neighbours ----------------------------------------------------------------------------------
    def add(self, noise_key: bytes, now: float) -> int:
        """A link session to ``noise_key`` is up; returns the port we give it."""
        nb = self.neighbours.get(noise_key)
        if nb is None:
            nb = Neighbour(noise_key, self._free_port(now), now)
            self.neighbours[noise_key] = nb
            self._by_address[derive_address(noise_key).packed] = noise_key
            self._dirty.add(noise_key)  # it learns our key (and can certify us) without waiting a tick
            self._book(nb)
        return nb.port

    def remove(self, noise_key: bytes, now: float) -> None:
        """The link to ``noise_key`` is gone: forget its announcement and free its port (after a delay)."""
        nb = self.neighbours.pop(noise_key, None)
        if nb is None:
            return
        self._by_address.pop(derive_address(noise_key).packed, None)
        self._freed_ports[nb.port] = now + PORT_REUSE_DELAY
        self._dirty.discard(noise_key)
        # Its heap entries are skipped when they come up (a new Neighbour of the same key has bookings of its own).
        self._filters_changed()
        if self.parent == noise_key:
            before = (self.root, self.chain)
            self._reselect(now)
            if (self.root, self.chain) != before:
                self._position_changed()  # our subtree must learn our new position at once
        self.version += 1

    def _free_port(self, now: float) -> int:
        used = {nb.port for nb in self.neighbours.values()}
        for port, free_at in list(self._freed_ports.items()):
            if free_at <= now:
                del self._freed_ports[port]
        for port in range(1, MAX_PORT + 1):
            if port not in used and port not in self._freed_ports:
                return port
        raise RuntimeError("no free port: more than 65535 neighbours")  # MAX_SESSIONS keeps us far below

    # --- receiving -----------------------------------------------------------------------------------
    def receive(self, noise_key: bytes, data: bytes, now: float) -> list[tuple[bytes, bytes]]:
        """Take a control message from the neighbour ``noise_key``: an announcement, a root beat (returns it for
        each of our children, to forward at once), a probe (returns the reply to send it back at once) or a probe
        reply (an RTT sample). What to send is (noise key, bytes); RemoteProtocolError if refused (counted)."""
        nb = self.neighbours.get(noise_key)
        if nb is None:
            raise InvalidAnnouncement("announcement from a peer that is not a neighbour")
        kind = data[:1]
        if kind in _PROBE_TYPES:
            reply = self._on_probe(nb, data, now)
            return [] if reply is None else [(noise_key, reply)]
        if kind == _BEAT_TYPE:
            return self._on_beat(nb, data, now)
        self._on_announcement(nb, data, now)
        return []

    def _on_beat(self, nb: Neighbour, data: bytes, now: float) -> list[tuple[bytes, bytes]]:
        """Our parent's ROOT_BEAT: the root is alive at a new seq, and so is the link to our parent. Verified once
        (each node takes beats from its parent only) and forwarded, the same bytes, to our children."""
        try:
            beat = decode_beat(data)
        except Exception:
            nb.rejected += 1
            self.stats["rejected"] += 1
            raise
        if nb.noise_key != self.parent or beat.root != self.root or beat.seq <= self.seq:
            if nb.noise_key == self.parent and beat.root == self.root and beat.seq == self.seq:
                nb.seq_at = now  # a beat we already had (from its announcement): the link is alive all the same
            self.stats["beats_ignored"] += 1  # not our parent (any more), another root, or an old seq
            return []
        if now - nb.beat_at < MIN_ANNOUNCE_INTERVAL:
            self.stats["rate_limited"] += 1  # a root cannot make its tree forward beats faster than this
            return []
        dead = self._dead_roots.get(beat.root)
        try:
            if dead is not None and beat.seq <= dead:
                raise InvalidAnnouncement("root beat under a root known to be dead")
            self._verifier.verify_beat(beat)
        except Exception:
            nb.rejected += 1
            self.stats["rejected"] += 1
            raise
        self.stats["beats"] += 1
        self.seq, self._root_sig = beat.seq, beat.sig
        self._root_seen = (beat.seq, now)
        nb.seq_at = nb.beat_at = now
        return self._beat_children(data)

    def _beat_children(self, data: bytes) -> list[tuple[bytes, bytes]]:
        out = [(nb.noise_key, data) for nb in self.neighbours.values()
               if nb.noise_key != self.parent and self.is_child(nb)]
        self.stats["beats_sent"] += len(out)
        return out

    def _on_announcement(self, nb: Neighbour, data: bytes, now: float) -> None:
        noise_key = nb.noise_key
        if nb.ann is not None and now - nb.ann_at < MIN_ANNOUNCE_INTERVAL:
            self.stats["rate_limited"] += 1
            raise InvalidAnnouncement("announcements arrive faster than MIN_ANNOUNCE_INTERVAL")
        try:
            ann = decode_announcement(data)
            self._check(nb, ann)
        except Exception:
            nb.rejected += 1
            self.stats["rejected"] += 1
            raise
        self.stats["announcements"] += 1
        if nb.key is None:
            nb.key = ann.sender
            self._dirty.add(noise_key)  # now we can give it a certificate
        old = nb.ann
        if old is None or old.root != ann.root or ann.seq > old.seq:
            nb.seq_at = now
        moved = old is None or old.root != ann.root or old.path != ann.path
        was_child = self.is_child(nb)
        nb.ann, nb.ann_at = ann, now
        nb.silent = False
        if ann.bloom != nb.bloom:
            self._filters_changed()  # a refresh repeats the same filter: nothing to recompute then
        nb.bloom = ann.bloom
        if ann.root == self.root and ann.seq > self._root_seen[0]:
            self._root_seen = (ann.seq, now)
        if moved:
            self.version += 1
            if self.root and self.better_root(self.root, ann.root):
                # It moved to a worse root than ours (it re-rooted after losing its branch, say): tell it ours now,
                # with our newest seq, rather than at our next refresh, so that it can come back at once.
                self._dirty.add(noise_key)
        if not ann.cert_port and not self.is_child(nb):
            # No certificate from a neighbour that is not our child: it does not know our key (it restarted with the
            # same key while our link stayed up, say) or is orphaned. Tell it ours now, or it could not certify us
            # before our next refresh.
            self._dirty.add(noise_key)
        if self.is_child(nb) != was_child:
            self._filters_changed()
            self._dirty.add(noise_key)  # a new tree link: it needs our lookup filter now
            if not was_child:
                # A new child gets our newest beat at once: one that left a parent whose beats stopped learns within a
                # link delay whether the root is alive through us (if it is not, our seq is no newer than its own).
                self._owed_beats.add(noise_key)
        before = (self.root, self.chain, self.parent)
        if self.parent == noise_key:
            self._follow_parent(now)
        if self.between_ticks and moved and (self.better_root(ann.root, self.root) or self.parent is None
                                             or self.parent == noise_key):
            self._reselect(now)  # a better root, or a change of our parent: decide now, not at the next tick
        if (self.root, self.chain, self.parent) != before:
            self._position_changed()  # a new position, or our chain's certificates renewed

    def _check(self, nb: Neighbour, ann: Announcement) -> None:
        sender = ann.sender
        if nb.key is not None:
            if sender != nb.key:
                raise InvalidAnnouncement("announcement speaks for another key than the peer's")
        else:
            try:
                owner = noise_key_of(sender)
            except ValueError as exc:
                raise InvalidAnnouncement(str(exc)) from None
            if owner != nb.noise_key:
                raise InvalidAnnouncement("announcement's key does not belong to the peer's session key")
        dead = self._dead_roots.get(ann.root)
        if dead is not None and ann.seq <= dead:
            raise InvalidAnnouncement("announcement under a root known to be dead")
        # Our own chain was verified hop by hop when we took it: what a neighbour's chain repeats of it is not checked
        # again (an orphan's chain too: it is the one we verified).
        ours = ann.root == self.root
        self._verifier.verify(ann, self.key, self.seq if ours else None, self.chain if ours else ())

    # --- link RTT: our own probes, our own clock ------------------------------------------------------
    def _probe_for(self, nb: Neighbour, now: float) -> bytes:
        """A new probe for ``nb``; the last PROBES_REMEMBERED unanswered ones stay answerable (a link slower
        than a tick is still measured)."""
        self._probes += 1
        nonce = int.from_bytes(hashlib.blake2b(self._probes.to_bytes(8, "big"), key=self._probe_key,
                                               digest_size=8).digest(), "big")
        nb.probes[nonce] = now
        while len(nb.probes) > PROBES_REMEMBERED:
            del nb.probes[next(iter(nb.probes))]
        return encode_probe(PROBE, nonce)

    def _on_probe(self, nb: Neighbour, data: bytes, now: float) -> bytes | None:
        try:
            kind, nonce = decode_probe(data)
        except Exception:
            nb.rejected += 1
            self.stats["rejected"] += 1
            raise
        if kind == PROBE:
            if now - nb.probe_answered_at < MIN_ANNOUNCE_INTERVAL:
                self.stats["rate_limited"] += 1  # a neighbour cannot make us reply faster than it may announce
                return None
            nb.probe_answered_at = now
            return encode_probe(PROBE_REPLY, nonce)
        sent_at = nb.probes.pop(nonce, None)
        if sent_at is None:
            self.stats["probe_replies_unmatched"] += 1  # too late, duplicated or made up: no sample
            return None
        # The whole sample is our own: the time we sent the probe and the time its nonce came back. A neighbour can
        # only delay its reply (look farther); it cannot answer a nonce it has not received (look closer).
        sample = max(MIN_LINK_RTT, now - sent_at)
        if nb.rtt_measured and abs(sample - nb.rtt) <= max(RTT_STABLE_RATIO * nb.rtt, RTT_STABLE_ABS):
            nb.probe_every = min(2.0 * nb.probe_every, PROBE_INTERVAL_MAX)  # quiet and healthy: probe less often
        else:
            nb.probe_every = PROBE_INTERVAL  # a first sample, or the link changed: measure it at the base rate
        if sent_at == nb.probe_sent:  # the answer to our last probe: the next one at the new interval from it
            nb.probe_due = sent_at + nb.probe_every - HEARTBEAT_INTERVAL / 2
            self._book(nb)
        nb.rtt = sample if not nb.rtt_measured else nb.rtt + RTT_EWMA_WEIGHT * (sample - nb.rtt)
        nb.rtt_measured = True
        return None

    # --- choosing ------------------------------------------------------------------------------------
    def _candidates(self, now: float) -> list[Neighbour]:
        out = []
        for nb in self.neighbours.values():
            ann = nb.ann
            if ann is None or not ann.cert_port or len(ann.chain) + 1 > MAX_TREE_DEPTH:
                continue
            if nb.silent:
                continue
            if ann.root == self.root:
                current = max(self.seq, ann.seq)  # our root: our own beats say it is alive
                if nb.noise_key == self.parent and now - max(nb.seq_at, self._parent_at) > NEIGHBOUR_TIMEOUT:
                    nb.silent = True  # our parent's beats stopped: its branch (or the link) is gone
                    self.stats["parents_silent"] += 1
                    continue
            else:
                if now - nb.ann_at > CERT_LIFETIME * HEARTBEAT_INTERVAL:
                    continue  # another root: alive as long as the neighbour's refreshes keep coming
                current = ann.seq
            if not certificates_fresh(ann, current):
                continue
            dead = self._dead_roots.get(ann.root)
            if dead is not None and ann.seq <= dead:
                continue
            if ann.root == self.key or any(h.key == self.key for h in ann.chain):
                continue  # we are its ancestor: taking it as parent would close a loop
            if not self.trusted(ann.root):
                self.stats["untrusted_root"] += 1
                continue  # a private network (trusted_roots): a stranger's tree is never ours, whatever its key
            out.append(nb)
        if any(nb.noise_key == self.parent for nb in out):
            # Settled (our parent is still a candidate): move only to a candidate under our root that sits above our
            # own depth. Two neighbours could otherwise take each other at the same tick when a cheap link joins
            # the ends of two branches (a two-node cycle, dropped at the next tick, taken again: every round, with
            # RTTs that differ); a cycle needs one of them to move to one at least as deep as itself.
            out = [nb for nb in out if nb.noise_key == self.parent or nb.ann is None or nb.ann.root != self.root
                   or len(nb.ann.chain) < self.depth]
        return out

    def _reselect(self, now: float) -> None:
        """Run the parent decision on the current candidates and take the result."""
        self._expire_root(now)
        cands = sorted(self._candidates(now), key=lambda nb: nb.noise_key)
        roots = sorted({nb.ann.root for nb in cands if nb.ann is not None} | {self.key}, key=self._root_order)
        rank = {root: i for i, root in enumerate(roots)}
        n = len(cands)
        choice = select_parents(
            np.zeros(n, dtype=np.int64),
            np.fromiter((rank[nb.ann.root] for nb in cands if nb.ann is not None), dtype=np.int64, count=n),
            np.fromiter(((len(nb.ann.chain) + 1) * nb.rtt for nb in cands if nb.ann is not None),
                        dtype=np.float64, count=n),
            np.fromiter((nb.noise_key == self.parent for nb in cands), dtype=bool, count=n),
            np.array([rank[self.key]], dtype=np.int64),
        )[0]
        new_parent = None if choice < 0 else cands[int(choice)].noise_key
        if new_parent != self.parent:
            self.stats["parent_changes"] += 1
            self.parent = new_parent
            self._parent_at = now
            self._filters_changed()
        if new_parent is not None:
            self._follow_parent(now)
        elif not self.is_root and self.root and self.better_root(self.root, self.key):
            # Orphaned: we lost every candidate, but our root (a better key than ours) is not known dead. Keep our
            # position (and our subtree's coordinates) rather than split the tree by rooting ourselves at once, and
            # certify nobody meanwhile; a candidate that turns up is taken at the next decision, and if none does,
            # _expire_root declares the root dead after ROOT_TIMEOUT and we root ourselves then (ironwood waits
            # likewise before self-rooting).
            self.stats["orphaned"] += 1
        else:
            self._become_root(now)

    def _become_root(self, now: float) -> None:
        if not self.is_root:
            self.root, self.chain = self.key, ()
            self._own_seq += 1
            self.seq = self._own_seq
            self._root_sig = sign(self._secret, root_statement(self.key, self.seq))
            self._root_seen = (self.seq, now)
            self.version += 1

    def _follow_parent(self, now: float) -> None:
        """Take our root, number and chain from our parent's latest announcement and its certificate for us."""
        nb = self.neighbours.get(self.parent) if self.parent is not None else None
        if nb is None or nb.ann is None or not nb.ann.cert_port:
            return
        ann = nb.ann
        if ann.root == self.key or any(h.key == self.key for h in ann.chain) or len(ann.chain) + 1 > MAX_TREE_DEPTH:
            return  # it took us (or a descendant) as its parent meanwhile: the next tick drops it as a candidate
        chain = ann.chain + (Hop(self.key, ann.cert_port, ann.cert_issued, ann.cert_sig),)
        moved = ann.root != self.root or tuple(h.port for h in chain) != self.path
        if ann.root != self.root:
            self._leave_root(ann.root)
            left = self._left
            if left is not None and left[0] == ann.root:
                self._left = None
                # Back under a root we left: its clock runs on unless this seq is newer than any we saw of it (else
                # a dead root's stale branches pass us back and forth, each time with a fresh ROOT_TIMEOUT).
                self._root_seen = (left[1], left[2]) if ann.seq <= left[1] else (ann.seq, now)
            else:
                self._root_seen = (ann.seq, now)
            self.seq, self._root_sig = ann.seq, ann.root_sig
        elif ann.seq > self.seq:  # its beats may have given us a newer seq than its announcement shows
            self.seq, self._root_sig = ann.seq, ann.root_sig
        self.root, self.chain = ann.root, chain
        if moved:
            self.version += 1

    def _leave_root(self, new_root: bytes) -> None:
        """Our root changes to ``new_root`` without being declared dead: remember a better one we leave."""
        old = self.root
        if not old or old == self.key or not self.better_root(old, new_root):
            return
        left = self._left
        if left is None or left[0] == old or self.better_root(old, left[0]):
            self._left = (old, *self._root_seen)

    def _declare_dead(self, root: bytes, seq: int) -> None:
        self._dead_roots[root] = max(seq, self._dead_roots.get(root, -1))
        self._dead_roots.move_to_end(root)
        while len(self._dead_roots) > MAX_DEAD_ROOTS:
            self._dead_roots.popitem(last=False)
        self.stats["roots_dead"] += 1

    def _expire_root(self, now: float) -> None:
        """A root (not us) whose number has not advanced for ROOT_TIMEOUT is dead up to that number: our own, and
        the better root we last left (see ``_left``)."""
        left = self._left
        if left is not None:
            root, seq, since = left
            for nb in self.neighbours.values():
                if nb.ann is not None and nb.ann.root == root and nb.ann.seq > seq:
                    seq, since = nb.ann.seq, now
            self._left = (root, seq, since)
            if now - since > ROOT_TIMEOUT:
                self._left = None
                self._declare_dead(root, seq)
        if self.is_root:
            return
        for nb in self.neighbours.values():  # the highest number any neighbour shows for our root
            if nb.ann is not None and nb.ann.root == self.root and nb.ann.seq > self._root_seen[0]:
                self._root_seen = (nb.ann.seq, now)
        seq, since = self._root_seen
        if now - since > ROOT_TIMEOUT:
            self._declare_dead(self.root, seq)
            self.parent = None
            self.chain = ()
            self.root = b""  # no root until the reselection that follows picks one (or us)

    # --- ticking -------------------------------------------------------------------------------------
    def _book(self, nb: Neighbour, every: float | None = None) -> None:
        """Book ``nb`` for the tick at which its next probe or refresh is due (if earlier than its booking)."""
        if every is None:
            every = ROOT_REFRESH if self.is_root else NODE_REFRESH
        when = min(nb.probe_due, nb.last_sent + every)
        if nb.booked is None or when < nb.booked:
            nb.booked = when
            heapq.heappush(self._due, (when, nb.noise_key))

    def _book_cert(self, nb: Neighbour, seq: int) -> None:
        """Book ``nb`` for the root seq at which its certificate must be renewed (if earlier than its booking)."""
        if nb.cert_booked is None or seq < nb.cert_booked:
            nb.cert_booked = seq
            heapq.heappush(self._cert_due, (seq, nb.noise_key))

    def tick(self, now: float) -> list[tuple[bytes, bytes]]:
        """One heartbeat: choose our parent; if we are root, advance our number and beat it to our children; and
        return what to send as (noise key, bytes): the beats, probes that are due, and announcements owed (a
        change, or CERT_REFRESH heartbeats since the last one to that neighbour; see :meth:`urgent`)."""
        self._verifier.tick()
        before = (self.root, self.chain, self.parent)
        self._reselect(now)
        if (self.root, self.chain, self.parent) != before:
            self._position_changed()
        out = []
        if self.is_root:
            self._own_seq += 1
            self.seq = self._own_seq
            self._root_sig = sign(self._secret, root_statement(self.key, self.seq))
            self._root_seen = (self.seq, now)
            out += self._beat_children(encode_beat(Beat(self.key, self.seq, self._root_sig)))
        # The root renews its certificates every CERT_REFRESH seqs; each renewal changes its children's chains, so
        # they announce at once (renewing theirs), and so on down: one wave through the tree per CERT_REFRESH, one
        # announcement per neighbour. The timers of other nodes are a safety net, half a period later.
        every, cert_age = (ROOT_REFRESH, ROOT_CERT_AGE) if self.is_root else (NODE_REFRESH, NODE_CERT_AGE)
        due, neighbours = self._due, self.neighbours
        while due and due[0][0] <= now:
            when, key = heapq.heappop(due)
            nb = neighbours.get(key)
            if nb is None or nb.booked != when:
                continue  # superseded by an earlier booking, or the neighbour is gone
            nb.booked = None
            self.stats["tick_visits"] += 1
            if now >= nb.probe_due:
                if nb.probes and next(reversed(nb.probes.values())) == nb.probe_sent:
                    # Our last probe went unanswered (a peer that does not answer them, or a lost one): liveness is the
                    # keepalives' job, and asking more often gains no RTT.
                    nb.probe_every = min(2.0 * nb.probe_every, PROBE_INTERVAL_MAX)
                nb.probe_due = now + nb.probe_every - HEARTBEAT_INTERVAL / 2  # the margin absorbs tick jitter
                nb.probe_sent = now
                out.append((key, self._probe_for(nb, now)))
            if now - nb.last_sent >= every:
                self._dirty.add(key)  # announcing it (urgent(), at once or after ANNOUNCE_SPACING) books it again
            else:
                self._book(nb, every)  # its next probe or refresh: both still to come
        cert_due = self._cert_due
        while cert_due and cert_due[0][0] <= self.seq:
            at, key = heapq.heappop(cert_due)
            nb = neighbours.get(key)
            if nb is None or nb.cert_booked != at:
                continue
            nb.cert_booked = None
            cert = nb.cert
            if cert is None or key == self.parent:
                continue  # our parent gets no certificate; if it stops being our parent, we announce to all anyway
            self.stats["tick_visits"] += 1
            if self.seq - cert[1] >= cert_age:
                self._dirty.add(key)
            else:
                self._book_cert(nb, cert[1] + cert_age)
        out += self.urgent(now)
        return out

    def urgent(self, now: float) -> list[tuple[bytes, bytes]]:
        """Announcements owed now, between ticks: to a new neighbour, to one whose key we just learned, to a new
        child, to a tree neighbour whose lookup filter from us changed, and to everyone when our position or chain
        changed (ironwood sends such updates at once). A neighbour sent one within ANNOUNCE_SPACING stays owed
        until it may be sent (or until the next tick)."""
        if self._bloom_check:
            self._bloom_check = False
            for key, bloom in self.tree_blooms().items():
                if bloom != self.neighbours[key].bloom_sent:
                    self._dirty.add(key)
        out = []
        if self._owed_beats:
            beat = encode_beat(Beat(self.root, self.seq, self._root_sig)) if self.root and not self.orphaned else None
            for key in self._owed_beats:
                nb = self.neighbours.get(key)
                if beat is not None and nb is not None and self.is_child(nb):
                    out.append((key, beat))
                    self.stats["beats_sent"] += 1
            self._owed_beats.clear()
        for key in list(self._dirty):
            nb = self.neighbours.get(key)
            if nb is None:
                self._dirty.discard(key)
            elif now - nb.last_sent >= ANNOUNCE_SPACING:
                self._dirty.discard(key)
                out.append((key, encode_announcement(self._announcement_for(nb, now))))
        return out

    def _announcement_for(self, nb: Neighbour, now: float) -> Announcement:
        nb.last_sent = now
        self._book(nb)
        self.stats["announcements_sent"] += 1
        cert_port, cert_issued, cert_sig = 0, 0, NO_SIGNATURE
        # No certificate while orphaned: our position is stale, so nobody may take us as parent now; our children
        # see that at once and re-attach through any other link instead of waiting for our root number to stall.
        if nb.key is not None and nb.noise_key != self.parent and not self.orphaned:
            cert = nb.cert
            # One certificate serves until it is CERT_REFRESH / 2 seqs old (any announcement renews an older one, so
            # the refreshes our parent's renewals set off keep our certificates young as well), or the root changes.
            if cert is None or cert[0] != self.root or cert[2] != nb.port or self.seq - cert[1] >= CERT_REFRESH // 2:
                statement = hop_statement(self.root, self.seq, self.key, nb.key, nb.port)
                cert = nb.cert = (self.root, self.seq, nb.port, sign(self._secret, statement))
                self.stats["certificates_signed"] += 1
            _, cert_issued, cert_port, cert_sig = cert
            self._book_cert(nb, cert_issued + (ROOT_CERT_AGE if self.is_root else NODE_CERT_AGE))
        bloom = nb.bloom_sent = self.tree_blooms().get(nb.noise_key)
        return Announcement(self.root, self.seq, self._root_sig, self.chain, cert_port, cert_issued, cert_sig, bloom)

    # --- tree links and lookup filters ---------------------------------------------------------------
    def is_child(self, nb: Neighbour) -> bool:
        """True if ``nb`` announces us as its parent under our root."""
        ann = nb.ann
        if ann is None or not ann.chain or ann.root != self.root:
            return False
        parent = ann.chain[-2].key if len(ann.chain) >= 2 else ann.root
        return parent == self.key

    def is_tree_link(self, noise_key: bytes) -> bool:
        """True if the link to ``noise_key`` is a tree edge (our parent or one of our children)."""
        if noise_key == self.parent:
            return True
        nb = self.neighbours.get(noise_key)
        return nb is not None and self.is_child(nb)

    def _position_changed(self) -> None:
        """Our root, chain or parent changed: every neighbour is owed an announcement, and which links are tree
        links may have changed with it."""
        self._dirty.update(self.neighbours)
        self._filters_changed()

    def _filters_changed(self) -> None:
        self._bloom_check = True
        self._blooms = None

    def tree_blooms(self) -> dict[bytes, Bloom]:
        """:meth:`bloom_for` of every tree neighbour, computed together (prefix and suffix unions: O(tree degree)
        numpy operations, where one call per neighbour costs its square: 15 ms a time on a hub of 100 children) and
        kept until a tree link or a tree neighbour's filter changes."""
        if self._blooms is not None:
            return self._blooms
        links = [nb for nb in self.neighbours.values() if self.is_tree_link(nb.noise_key)]
        out: dict[bytes, Bloom] = {}
        if links:
            words = np.stack([nb.bloom.words if nb.bloom is not None else self._own_bloom.words * 0 for nb in links])
            before = np.bitwise_or.accumulate(words, axis=0)
            after = np.bitwise_or.accumulate(words[::-1], axis=0)[::-1]
            for i, nb in enumerate(links):
                union = self._own_bloom.words.copy()
                if i > 0:
                    union |= before[i - 1]
                if i + 1 < len(links):
                    union |= after[i + 1]
                out[nb.noise_key] = Bloom(union)
        self._blooms = out
        return out

    def bloom_for(self, noise_key: bytes) -> Bloom:
        """What we tell the tree neighbour ``noise_key`` can be found through us: our address and every filter
        our other tree neighbours told us."""
        bloom = Bloom.of([self.address])
        for nb in self.neighbours.values():
            if nb.noise_key != noise_key and nb.bloom is not None and self.is_tree_link(nb.noise_key):
                bloom |= nb.bloom
        return bloom

    def lookup_targets(self, address: bytes, exclude: bytes | None = None) -> list[bytes]:
        """Tree neighbours (noise keys) whose filter holds ``address``, except ``exclude``."""
        return [nb.noise_key for nb in self.neighbours.values()
                if nb.noise_key != exclude and nb.bloom is not None and address in nb.bloom
                and self.is_tree_link(nb.noise_key)]

    # --- for routing and inspection ------------------------------------------------------------------
    def neighbour_by_address(self, address: bytes) -> bytes | None:
        """The noise key of the neighbour whose overlay address is ``address``, if any."""
        return self._by_address.get(address)

    def routing_neighbours(self, now: float) -> list[tuple[bytes, tuple[int, ...], float]]:
        """(noise key, path, cost) of the neighbours in our tree whose announcement is within CERT_LIFETIME (they
        announce on change and every CERT_REFRESH; the router withdraws a neighbour whose link falls silent)."""
        out = []
        lifetime = CERT_LIFETIME * HEARTBEAT_INTERVAL
        for nb in self.neighbours.values():
            ann = nb.ann
            if ann is not None and ann.root == self.root and now - nb.ann_at <= lifetime:
                out.append((nb.noise_key, ann.path, nb.rtt))
        return out

    def snapshot(self, now: float) -> dict[str, object]:
        """JSON-ready view for axiomnet-inspect."""
        parent = self.neighbours.get(self.parent) if self.parent is not None else None
        return {
            "root": self.root.hex(),
            "root_seq": self.seq,
            "is_root": self.is_root,
            "parent": parent.noise_key.hex() if parent is not None else None,
            "depth": self.depth,
            "coords": list(self.path),
            "key": self.key.hex(),
            "neighbours": [
                {
                    "peer": nb.noise_key.hex(),
                    "port": nb.port,
                    "root": nb.ann.root.hex() if nb.ann else None,
                    "coords": list(nb.ann.path) if nb.ann else None,
                    "tree_link": self.is_tree_link(nb.noise_key),
                    "rtt_ms": round(nb.rtt * 1000, 3) if nb.rtt_measured else None,
                    "announced": round(now - nb.ann_at, 3) if nb.ann else None,
                    "rejected": nb.rejected,
                }
                for nb in self.neighbours.values()
            ],
            "dead_roots": len(self._dead_roots),
            "trusted_roots": None if self._trusted_roots is None else len(self._trusted_roots),
            "signatures_verified": self._verifier.verifications,
            "signatures_cached": len(self._verifier),
            **self.stats,
        }
