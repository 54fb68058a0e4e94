"""End-to-end sessions: the node's IP traffic encrypted from source node to destination node (pure, no I/O).

Relays see only the routed header (axiomnet/routed.py); what it carries is an end-to-end datagram of the
same Noise XX session protocol the links use (axiomnet/session.py, axiomnet/responder.py: explicit counters,
replay window, rekey, bounded staging), between this node and the node that owns the destination address.

* **Outbound** (packets read from our TUN): a packet whose source is not our address never enters the overlay
  (counted). A destination with a session gets the packets sealed at once. A destination without one waits in a
  small bounded queue (oldest dropped, counted) while the router looks up its key and coordinates; the session
  is created pinned to the looked-up key (whose address the lookup already checked), so a handshake that
  authenticates any other key is aborted: the initiator knows it reached the address it asked for. Packets for a
  session whose handshake is still under way wait here too, not in the session, and the whole wait (key, then
  handshake) is bounded by QUEUE_MAX_WAIT from the moment the packet was read: past it they are dropped and
  counted (``queue_expired``), never sent late.
* **Inbound** (TRAFFIC payloads the router delivers, with the routed header's source address): a handshake
  initiation goes to the responder; a completed handshake is accepted only if the key it authenticated owns
  that source address. A session is keyed by its peer's address (the hash of its key): a datagram for a
  session's receiver index from any other routed source is dropped and counted (a relay rewrote the source),
  and everything a session sends goes to that address, never to a routed source. A decrypted packet is written to the TUN only if its IPv6 source is the address of the
  session's key and its destination is ours; anything else is dropped and counted.

Results come back as an :class:`E2EOutput`: datagrams to route per destination address, packets for the
TUN, and addresses whose key must be resolved.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from dataclasses import dataclass, field

from axiomnet.constants import (
    DEAD_PATH_AFTER,
    HEADER_SIZE,
    LOOKUP_GIVE_UP,
    MAX_QUEUED_PER_DESTINATION,
    MAX_SESSIONS,
    MAX_STAGED_PACKETS,
    QUEUE_MAX_WAIT,
)
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.identity import derive_address
from axiomnet.indices import IndexRetired, IndexTable
from axiomnet.responder import HandshakeResponder
from axiomnet.keypairs import FIRST_TRANSPORT, LAST_TRANSPORT
from axiomnet.lookup import expire_waiting, release_waiting
from axiomnet.ownership import IPV6_DESTINATION, IPV6_HEADER_SIZE as IPV6_HEADER, IPV6_SOURCE
from axiomnet.session import Established, Expired, Session
from axiomnet.wire import Header, PacketType, decode_header, peek_receiver

OVERLAY_PREFIX = 0xFC
RESOLVE_TIMEOUT = LOOKUP_GIVE_UP + 5.0  # packets waiting for a key the router never resolved are dropped
RESOLVE_RETRY = 1.0  # a destination still waiting for its key is asked for again this often
RESPONDER = b""  # the owner name of the responder's half-open handshakes in the index table
NUDGE_INTERVAL = 5.0  # at most one handshake per source per this, answering traffic for a session we lost
MAX_NUDGED = 1024  # sources remembered for that limit; the oldest is forgotten past this
# A session that received data and sent nothing for this long sends an empty KEEPALIVE (WireGuard's passive
# keepalive, sooner): the sender of a one-way flow (UDP streaming) hears back before its dead-path detector
# (DEAD_PATH_AFTER, axiomnet/lookup.py) would search for a route that works. A KEEPALIVE asks for nothing back.
E2E_KEEPALIVE_AFTER = DEAD_PATH_AFTER / 2
DATA = PacketType.DATA
CONTROL = PacketType.CONTROL
KEEPALIVE = PacketType.KEEPALIVE


@dataclass
class E2EOutput:
    """What handling some packets produced."""

    sends: dict[bytes, list[bytes]] = field(default_factory=dict)  # destination address -> datagrams to route
    tun: list[bytes] = field(default_factory=list)  # IPv6 packets for our TUN device
    resolve: list[bytes] = field(default_factory=list)  # addresses whose key the router must look up
    control: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # (source, its key, CONTROL plaintext)
    established: list[bytes] = field(default_factory=list)  # destinations whose session just got its first keys

    def send(self, dst: bytes, datagrams: list[bytes]) -> None:
        if datagrams:
            self.sends.setdefault(dst, []).extend(datagrams)


# Every inbound datagram the layer does not deliver is counted once, under a name that says why (docs/PROTOCOL.md
# §3.8): rx_dropped_* here, and rx_<ErrorClass> (rx_DecryptionFailed, rx_ReplayedPacket, rx_MalformedPacket, ...)
# for what the sessions and the responder refused, added as they happen.
_STATS = ("tx_packets", "rx_packets", "tx_dropped_foreign_source", "tx_dropped_not_overlay", "tx_dropped_not_ipv6",
          "queued", "queue_dropped", "unresolvable_dropped", "rx_dropped_spoofed_source", "rx_dropped_not_for_us",
          "rx_dropped_wrong_owner", "rx_dropped_wrong_source", "rx_dropped_unknown_index", "rx_dropped_session_limit",
          "nudges", "index_collisions", "sessions_created", "sessions_expired", "sessions_refused", "resolve_retries",
          "queue_expired", "queue_wait_max_ms")


@dataclass(slots=True)
class _Waiting:
    """Packets for a destination whose key the router was asked for: since when, when last asked."""

    since: float
    asked: float
    packets: deque[tuple[float, bytes]] = field(default_factory=deque)  # (queued at, IPv6 packet)


class EndToEnd:
    """Every end-to-end session of this node, keyed by the other node's overlay address."""

    def __init__(self, static_private: bytes, static_public: bytes, *, local_payload: HandshakePayload | None = None,
                 rng: random.Random | None = None, max_sessions: int = MAX_SESSIONS) -> None:
        self._private = static_private
        self._public = static_public
        self.address = derive_address(static_public).packed
        self._payload = local_payload or HandshakePayload(capabilities=("e2e",))
        self._rng = rng if rng is not None else random.Random()
        self._max_sessions = max_sessions
        self.sessions: dict[bytes, Session] = {}
        self._waiting: dict[bytes, _Waiting] = {}  # destinations whose key the router was asked for
        # Destinations whose session has no keys yet (its handshake under way): their packets, with the time each was
        # first queued (behind the key lookup, if it waited there), until the session is established.
        self._held: dict[bytes, deque[tuple[float, bytes]]] = {}
        self._nudged: dict[bytes, float] = {}  # source -> when we last answered its unknown session (bounded)
        # Our receiver indices -> owner (a session's address, or RESPONDER): picked by the sessions and the
        # responder themselves (axiomnet/indices.py), routed here because our datagrams arrive through the router.
        self._owners: IndexTable[bytes] = IndexTable()
        self._touched: set[bytes] = set()  # sessions used since next_deadline() last looked
        self.responder = HandshakeResponder(static_private, static_public, local_payload=self._payload,
                                            rng=self._rng)
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)

    def _sync(self, owner: bytes, out: E2EOutput, now: float) -> None:
        """Route the indices ``owner`` (a session's address, or RESPONDER) issued or retired since last time. A
        collision with another owner makes that owner pick again (its datagrams under the new index go out)."""
        source = self.responder if owner == RESPONDER else self.sessions.get(owner)
        while source is not None:
            commands = source.index_commands()
            if not commands:
                return
            for command in commands:
                if isinstance(command, IndexRetired):
                    self._owners.release(command.index, owner)
                elif not self._owners.bind(command.index, owner):
                    self.stats["index_collisions"] += 1
                    if isinstance(source, HandshakeResponder):
                        source.index_refused(command.index)
                    else:
                        out.send(owner, source.index_refused(command.index, now))

    def _session(self, dst: bytes, key: bytes | None) -> Session | None:
        session = self.sessions.get(dst)
        if session is None:
            if len(self.sessions) >= self._max_sessions:
                self.stats["sessions_refused"] += 1
                return None
            session = Session(self._private, self._public, local_payload=self._payload, expected_remote_key=key,
                              peer_name=str(ipaddress.IPv6Address(dst)), rng=self._rng,
                              keepalive_after=E2E_KEEPALIVE_AFTER)
            self.sessions[dst] = session
            self.stats["sessions_created"] += 1
        return session

    # --- outbound ------------------------------------------------------------------------------------
    def outbound(self, packets: list[bytes], now: float) -> E2EOutput:
        """IPv6 packets read from our TUN device."""
        out = E2EOutput()
        groups: dict[bytes, list[bytes]] = {}
        me = self.address
        for pkt in packets:
            if len(pkt) < IPV6_HEADER or pkt[0] >> 4 != 6:
                self.stats["tx_dropped_not_ipv6"] += 1
            elif pkt[IPV6_SOURCE] != me:
                self.stats["tx_dropped_foreign_source"] += 1  # only our own address enters the overlay
            elif pkt[24] != OVERLAY_PREFIX:
                self.stats["tx_dropped_not_overlay"] += 1
            else:
                groups.setdefault(pkt[IPV6_DESTINATION], []).append(pkt)
        for dst, group in groups.items():
            session = self.sessions.get(dst)
            if session is None:
                self._wait(dst, group, out, now)
            elif session.is_established:
                self.stats["tx_packets"] += len(group)
                out.send(dst, session.send_batch(DATA, group, now))
                self._collect(dst, session, out, now)
            else:
                self.stats["queued"] += len(group)
                self._hold(dst, session, deque((now, pkt) for pkt in group), out, now)
        return out

    def _wait(self, dst: bytes, packets: list[bytes], out: E2EOutput, now: float) -> None:
        entry = self._waiting.get(dst)
        if entry is None:
            entry = self._waiting[dst] = _Waiting(now, now)
            out.resolve.append(dst)
        queue = entry.packets
        for pkt in packets:
            if len(queue) >= MAX_QUEUED_PER_DESTINATION:
                queue.popleft()
                self.stats["queue_dropped"] += 1
            queue.append((now, pkt))
            self.stats["queued"] += 1

    def _release(self, entry: _Waiting | None, now: float) -> list[bytes]:
        """What waited for a key, to send now (what waited past QUEUE_MAX_WAIT is dropped, counted)."""
        return [] if entry is None else release_waiting(entry.packets, now, self.stats)

    def _hold(self, dst: bytes, session: Session, entries: deque[tuple[float, bytes]], out: E2EOutput,
              now: float) -> None:
        """Keep (queued at, packet) ``entries`` for ``dst`` until its session has keys (a handshake is started if
        none is under way): bounded in count (MAX_STAGED_PACKETS, oldest dropped) and in age (QUEUE_MAX_WAIT from
        when each was first queued), both counted."""
        held = self._held.setdefault(dst, deque())
        for entry in entries:
            if len(held) >= MAX_STAGED_PACKETS:
                held.popleft()
                self.stats["queue_dropped"] += 1
            held.append(entry)
        expire_waiting(held, now, self.stats)
        if not held:
            del self._held[dst]
        if not session.is_handshaking:
            out.send(dst, session.initiate(now))
        self._collect(dst, session, out, now)

    def _flush_held(self, dst: bytes, session: Session, out: E2EOutput, now: float) -> None:
        """The session to ``dst`` has keys: what waited for them goes now (but what waited past QUEUE_MAX_WAIT)."""
        held = self._held.pop(dst, None)
        if not held:
            return
        packets = release_waiting(held, now, self.stats)
        if packets:
            self.stats["tx_packets"] += len(packets)
            out.send(dst, session.send_batch(DATA, packets, now))

    def resolved(self, dst: bytes, key: bytes, now: float) -> E2EOutput:
        """The router found ``dst``'s (verified) Noise key: open the session and send what waited. A key nobody
        here asked for (the router looked ``dst`` up for its own reasons: to route our answer to a handshake it
        initiated) opens nothing: a second handshake beside the one in progress would only race it."""
        if derive_address(key).packed != dst:  # the lookup checked this; a mismatch here is a local bug
            raise ValueError("resolved key does not own the address")
        waiting = self._waiting.pop(dst, None)
        if waiting is None:
            return E2EOutput()
        return self._open(dst, key, waiting.packets, now)

    def dial(self, dst: bytes, key: bytes, now: float) -> E2EOutput:
        """Open a session to ``dst`` pinned to its (verified) Noise ``key`` and start the handshake now."""
        if derive_address(key).packed != dst:
            raise ValueError("the key does not own the address")
        self._waiting.pop(dst, None)
        return self._open(dst, key, deque(), now)

    def _open(self, dst: bytes, key: bytes, queued: deque[tuple[float, bytes]], now: float) -> E2EOutput:
        """The session to ``dst`` (pinned to ``key``), with what waited for its key as (queued at, packet)."""
        out = E2EOutput()
        session = self._session(dst, key)
        if session is None:
            self.stats["queue_dropped"] += len(queued)
            return out
        if session.is_established:
            packets = release_waiting(queued, now, self.stats)
            if packets:
                self.stats["tx_packets"] += len(packets)
                out.send(dst, session.send_batch(DATA, packets, now))
            self._collect(dst, session, out, now)
        else:
            self._hold(dst, session, queued, out, now)
        return out

    def send_control(self, dst: bytes, payload: bytes, now: float) -> E2EOutput:
        """One CONTROL message (PROTOCOL §8.2) to ``dst`` over its established session; nothing without one (a
        control message is worth its moment only: never staged behind a handshake)."""
        out = E2EOutput()
        session = self.sessions.get(dst)
        if session is not None and session.is_established:
            out.send(dst, session.send(CONTROL, payload, now))
            self._collect(dst, session, out, now)
        return out

    def established_sessions(self) -> list[bytes]:
        return [dst for dst, session in self.sessions.items() if session.is_established]

    def unresolvable(self, dst: bytes) -> None:
        """The router gave up looking ``dst`` up: drop what waited for it (counted)."""
        entry = self._waiting.pop(dst, None)
        if entry is not None:
            self.stats["unresolvable_dropped"] += len(entry.packets)

    # --- inbound -------------------------------------------------------------------------------------
    def inbound(self, items: list[tuple[bytes, bytes]], now: float) -> E2EOutput:
        """(source address, end-to-end datagram) pairs the router delivered to us.

        Consecutive transport datagrams from one source to its session are opened together
        (:meth:`Session.receive_batch`); everything else one by one, in order.
        """
        out = E2EOutput()
        run: list[bytes] = []
        run_src = b""
        for src, datagram in items:
            if len(datagram) >= HEADER_SIZE and FIRST_TRANSPORT <= datagram[4] & 0x0F <= LAST_TRANSPORT:
                owner = self._owners.owner(peek_receiver(datagram))
                if owner == src and owner in self.sessions:
                    if run and src != run_src:
                        self._open_run(run_src, run, out, now)
                        run = []
                    run_src = src
                    run.append(datagram)
                    continue
            if run:
                self._open_run(run_src, run, out, now)
                run = []
            self._inbound_one(src, datagram, out, now)
        if run:
            self._open_run(run_src, run, out, now)
        return out

    def _open_run(self, src: bytes, datagrams: list[bytes], out: E2EOutput, now: float) -> None:
        session = self.sessions[src]
        got = session.receive_batch(datagrams, now)
        for exc in got.errors:
            self._refused(exc)
        out.send(src, got.replies)
        for ptype, payload in got.payloads:
            if ptype is DATA:
                self._to_tun(src, payload, out)
            elif ptype is CONTROL and session.remote_static is not None:
                out.control.append((src, session.remote_static, payload))
        self._collect(src, session, out, now)

    def _inbound_one(self, src: bytes, datagram: bytes, out: E2EOutput, now: float) -> None:
        try:
            header = decode_header(datagram)
            if header.ptype is PacketType.HANDSHAKE_INIT:
                self._on_init(src, header, datagram, out, now)
                return
            owner = self._owners.owner(header.receiver)
            if owner == RESPONDER:  # a HANDSHAKE_FINAL for the responder
                self._on_final(src, header, datagram, out, now)
                return
            session = self.sessions.get(owner) if owner is not None else None
            if session is None:
                self.stats["rx_dropped_unknown_index"] += 1
                self._nudge(src, header.ptype, out, now)
                return
            if owner != src:
                # The index is the session of another address: a relay rewrote the routed source. The session's
                # peer address is the hash of its key, so neither the packet nor any answer follows the rewrite.
                self.stats["rx_dropped_wrong_source"] += 1
                return
            got = session.receive(header, datagram, now)
        except RemoteProtocolError as exc:
            self._refused(exc)
            return
        out.send(src, got.replies)
        if got.ptype is DATA:
            self._to_tun(src, got.payload, out)
        elif got.ptype is CONTROL and session.remote_static is not None:
            out.control.append((src, session.remote_static, got.payload))
        self._collect(src, session, out, now)

    def _refused(self, exc: RemoteProtocolError) -> None:
        """A datagram a session or the responder refused: counted under its error's metric name (rx_DecryptionFailed,
        ...; axiomnet/errors.py pins each, so renaming a class cannot rename a counter)."""
        name = "rx_" + exc.metric
        self.stats[name] = self.stats.get(name, 0) + 1

    def _nudge(self, src: bytes, ptype: PacketType, out: E2EOutput, now: float) -> None:
        """Transport traffic from ``src`` for a session we do not have: it kept keys we lost (we restarted). Start
        a handshake to it (after resolving its key), at most once per NUDGE_INTERVAL per source; the handshake is
        authenticated, so a forged datagram can cost us no more than that one lookup and handshake."""
        if ptype < PacketType.DATA or src in self.sessions or src in self._waiting:
            return
        last = self._nudged.get(src)
        if last is not None and now - last < NUDGE_INTERVAL:
            return
        self._nudged[src] = now
        if len(self._nudged) > MAX_NUDGED:
            self._nudged.pop(next(iter(self._nudged)))
        self.stats["nudges"] += 1
        self._waiting[src] = _Waiting(now, now)
        out.resolve.append(src)

    def _on_init(self, src: bytes, header: Header, datagram: bytes, out: E2EOutput, now: float) -> None:
        try:
            replies, _ = self.responder.receive(header, datagram, (str(ipaddress.IPv6Address(src)), 0), now)
        finally:
            self._sync(RESPONDER, out, now)  # route the index of a new half-open handshake before its reply goes
        out.send(src, replies)

    def _on_final(self, src: bytes, header: Header, datagram: bytes, out: E2EOutput, now: float) -> None:
        try:
            replies, result = self.responder.receive(header, datagram, (str(ipaddress.IPv6Address(src)), 0), now)
        finally:
            self._sync(RESPONDER, out, now)
        out.send(src, replies)
        if result is None:
            return
        if derive_address(result.remote_static).packed != src:
            # It proved a key, but not one that owns the source address it routed from: refuse it.
            self._owners.release(result.local_index, RESPONDER)
            self.stats["rx_dropped_wrong_owner"] += 1
            self.responder.refused(src, now)
            return
        session = self._session(src, result.remote_static)
        if session is None:
            self._owners.release(result.local_index, RESPONDER)
            self.stats["rx_dropped_session_limit"] += 1
            self.responder.refused(src, now)
            return
        self._owners.move(result.local_index, RESPONDER, src)
        out.send(src, session.install(result, now).replies)
        queued = self._release(self._waiting.pop(src, None), now)
        if queued:
            self.stats["tx_packets"] += len(queued)
            out.send(src, session.send_batch(DATA, queued, now))
        self._collect(src, session, out, now)

    def _to_tun(self, src: bytes, pkt: bytes, out: E2EOutput) -> None:
        if len(pkt) < IPV6_HEADER or pkt[0] >> 4 != 6 or pkt[IPV6_DESTINATION] != self.address:
            self.stats["rx_dropped_not_for_us"] += 1
        elif pkt[IPV6_SOURCE] != src:
            self.stats["rx_dropped_spoofed_source"] += 1  # the session's key does not own that source address
        else:
            self.stats["rx_packets"] += 1
            out.tun.append(pkt)

    # --- timers --------------------------------------------------------------------------------------
    def tick(self, now: float) -> E2EOutput:
        """Run every session's timers (retransmission, rekey, keepalive, expiry); expired sessions go."""
        out = E2EOutput()
        self.responder.expire(now)
        self._sync(RESPONDER, out, now)
        for dst, held in list(self._held.items()):
            expire_waiting(held, now, self.stats)
            if not held:
                del self._held[dst]
        for dst, waiting in list(self._waiting.items()):
            expire_waiting(waiting.packets, now, self.stats)
            if now >= waiting.since + RESOLVE_TIMEOUT:  # the router never answered (it gave up, or it restarted)
                self.unresolvable(dst)
            elif now >= waiting.asked + RESOLVE_RETRY:
                # Asked again: an answer lost on the way (a router restarting, or not yet wired) costs a second,
                # not the whole timeout. The router dedupes: a lookup in flight is not sent twice.
                waiting.asked = now
                self.stats["resolve_retries"] += 1
                out.resolve.append(dst)
        for dst, session in list(self.sessions.items()):
            out.send(dst, session.tick(now))
            self._collect(dst, session, out, now)
        return out

    def next_deadline(self, touched_only: bool = False) -> float | None:
        """The earliest time :meth:`tick` has work: a session's timer, a destination waiting too long for its key,
        a half-open handshake to expire; None when there is nothing to do until a packet comes. With
        ``touched_only``, only the sessions used since the last call count (cheap after a data batch; the caller
        keeps the earlier answer for the others)."""
        if touched_only:
            sessions = [self.sessions[dst] for dst in self._touched if dst in self.sessions]
        else:
            sessions = list(self.sessions.values())
        self._touched.clear()
        deadlines = [d for d in (session.next_deadline() for session in sessions) if d is not None]
        # A waiting destination is asked for again (RESOLVE_RETRY) until it is given up (RESOLVE_TIMEOUT).
        deadlines += [min(w.asked + RESOLVE_RETRY, w.since + RESOLVE_TIMEOUT) for w in self._waiting.values()]
        # What waits for a handshake is dropped (counted) when it has waited QUEUE_MAX_WAIT, handshake done or not.
        deadlines += [held[0][0] + QUEUE_MAX_WAIT for held in self._held.values() if held]
        expiry = self.responder.next_deadline()
        if expiry is not None:
            deadlines.append(expiry)
        return min(deadlines, default=None)

    def _collect(self, dst: bytes, session: Session, out: E2EOutput, now: float) -> None:
        """After any call into ``session``: route its indices, then act on its events."""
        self._touched.add(dst)
        self._sync(dst, out, now)
        for event in session.events():
            if isinstance(event, Established):
                out.established.append(dst)
            if isinstance(event, Established) and event.initiator and session.is_established:
                # Tell the responder at once that we send under these keys: it may hold them pending behind keys we
                # lost (we restarted), and would otherwise wait for data we may not have to send.
                out.send(dst, session.send(KEEPALIVE, b"", now))
            if isinstance(event, Established) and session.is_established:
                self._flush_held(dst, session, out, now)
            if isinstance(event, Expired):
                self.sessions.pop(dst, None)
                self._owners.release_owner(dst)
                self.stats["sessions_expired"] += 1
                held = self._held.pop(dst, None)
                if held:
                    self.stats["queue_expired"] += len(held)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """One row per end-to-end session for axiomnet-inspect."""
        rows = []
        for dst, session in self.sessions.items():
            core = session.snapshot(now)
            rows.append({"address": str(ipaddress.IPv6Address(dst)), **{k: core[k] for k in (
                "peer", "state", "initiator", "age", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "dropped")}})
        return rows
