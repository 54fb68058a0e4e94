"""SessionActor: one per peer; owns that peer's core Session, so every access to it is serialised.

The seed's race on ``process_incoming`` cannot exist here: only the thread running this actor touches the Session,
one message at a time, holding its mailbox: a pool worker (a HostedActor: the peer manager's few threads run every
session, docs/ARCHITECTURE.md "How session actors are hosted"), or a thread that handed it a small batch while it
was idle and runs it in the worker's place (``run_or_tell``: the socket reader, the TUN reader, the router, a
relaying session). Datagrams arrive in batches from the socket reader (DATA on the data lane, every other
type on the control lane); the plaintext of DATA is a routed packet, handed to the router with the peer's key;
the plaintext of CONTROL is a tree announcement, handed to the router on the control lane. Routed packets to
send arrive in batches from the router; the peer manager ticks the session at its next deadline (WakeAt), not
more often.

Traffic between the two neighbours themselves skips the end-to-end layer (docs/PROTOCOL.md §6.6): when the peer
announced NEIGHBOUR_CAPABILITY, this actor tells the TUN actor that packets for the peer's address come straight
here (NeighbourRoute), seals them as link DATA behind the NEIGHBOUR_IP byte, and writes such packets from the
peer to the TUN device itself after the ownership checks (source: the peer's address; destination: ours).

It never waits on another actor: the core picks its receiver indices and this actor tells the socket
(BindIndex/ReleaseIndex, axiomnet/indices.py). The peer's endpoint moves only to the source of a datagram
the core says authenticated (WireGuard's roaming rule). Whose source address an IP packet may carry is checked
end to end (axiomnet/e2e.py), where the packet's key is known.
"""

from __future__ import annotations

import random
import time
from typing import Any

from loguru import logger

from axiomnet.constants import (
    DIAL_BACKOFF_INITIAL,
    DIAL_BACKOFF_MAX,
    LINK_KEEPALIVE,
    PEER_DEAD_AFTER,
    SESSION_ACTIVITY_REPORT,
)
from axiomnet import fastpath
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.ownership import IPV6_DESTINATION, IPV6_SOURCE, address_of, destined_to, source_is
from axiomnet.reflexive import OBSERVED_ENDPOINT, decode_observed, encode_observed
from axiomnet.routed import NEIGHBOUR_CAPABILITY, NEIGHBOUR_PREFIX
from axiomnet.session import Established, Expired, HandshakeGaveUp, KeyMismatch, KeyRefused, Rekeyed, Session
from axiomnet.wire import PacketType
from axiomnet.actors import messages as m
from axiomnet.actors.base import ActorPool, DeadlineWheel, HostedActor, bounded_tell, run_or_tell, tell
from axiomnet.actors.socket import SendPath, tell_indices

DATA = PacketType.DATA
CONTROL = PacketType.CONTROL
_OBSERVED = bytes([OBSERVED_ENDPOINT])  # the control type of "your endpoint as I see it" (PROTOCOL §8.1)
KEEPALIVE = PacketType.KEEPALIVE
DIRECT_SEND_BACKOFF = 1.0  # seconds the socket actor sends alone after a direct send failed
SHED_RETRY = 1.0  # a keepalive the socket's full lane shed is tried again this much later


class SessionActor(HostedActor):
    """The link to one peer: handshakes, encryption, timers, endpoint roaming."""

    role = "session"

    def __init__(
        self,
        supervisor: Any,
        refs: dict[str, Any],
        *,
        static_private: bytes,
        static_public: bytes,
        self_address: bytes,
        endpoint: m.Addr,
        expected_key: bytes | None,
        dial: bool,
        local_payload: HandshakePayload,
        allowed_keys: frozenset[bytes] | None = None,
        candidates: tuple[m.Addr, ...] = (),
        keepalive: float | None = None,
        silent_after: float | None = None,
        host: ActorPool | None = None,
        timers: DeadlineWheel | None = None,
    ) -> None:
        super().__init__(supervisor, refs, host=host)
        self.timers = timers  # the peer manager's wheel; without one (a session started alone), WakeAt to "peers"
        self.self_address = self_address
        self.endpoint = endpoint
        # A punched session (docs/PROTOCOL.md §8.2): until it is established its handshake goes to every candidate
        # endpoint (the probe: nothing else is sent there); the endpoint becomes the one that authenticated.
        self.candidates = candidates
        # Send a KEEPALIVE after this long without sending: the peer hears us (the router's link liveness) and a
        # NAT's mapping stays open, with no per-second control traffic (docs/ROUTING.md §2.5).
        self.keepalive = LINK_KEEPALIVE if keepalive is None else keepalive
        self.silent_after = silent_after  # go down after this long without hearing the peer (a punched path died)
        self._last_tx = time.monotonic()
        self.dial = dial  # a static peer (or a restarted session): keeps re-dialling with backoff
        # The core is built here and used only by this actor from setup() on. Few attributes: an actor per peer,
        # and an instance dict of at most 30 keys is shared in layout between all of them.
        self.session: Session | None = Session(
            static_private,
            static_public,
            local_payload=local_payload,
            expected_remote_key=expected_key,
            peer_name=self.name,
            allowed_keys=allowed_keys,
        )
        self.created = time.monotonic()
        self.up = False
        self._redial_at: float | None = None
        self._dial_backoff = DIAL_BACKOFF_INITIAL
        self._last_skip_log = 0.0
        self._silent = False  # told the router PeerSilent: nothing heard for PEER_DEAD_AFTER (PeerSeen when heard)
        self._reported_heard: float | None = None
        self._report_at = 0.0
        self.neighbour_ip = False  # the peer takes IP packets for its own address over this link (§6.6)
        self._route_told = False  # the TUN actor routes the peer's address to us
        self._wake_told: float | None = None  # the deadline the peer manager will tick us at
        self._observed_answered = False  # since the last establishment, told the peer its endpoint again (§8.1)
        self._relays = fastpath.EMPTY  # the router's relay decisions (RelayDecisions), replaced whole
        self._send_path: SendPath | None = None  # the socket's, for sends from this thread (SendPathUpdate)
        self._direct_off_until = 0.0  # a direct send failed: the socket actor sends (breakers, logs) until then

    @property
    def name(self) -> str:
        host, port = self.endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        assert self.session is not None
        if self.dial:
            self._send(self.session.initiate(time.monotonic()))
        self._report_deadline()

    def teardown(self) -> None:
        tell(self.refs.get("socket"), m.ReleaseOwner(self.actor_ref))
        self._route(False)

    def rewired(self, role: str) -> None:
        if role == "socket" and self.session is not None:
            self._send_path = None  # the old socket is closed: ask the new actor for its path
            if self.up:
                tell(self.refs.get("socket"), m.WantSendPath(self.actor_ref))
            # The new socket actor starts with an empty table: route our indices to us again.
            for index in self.session.local_indices():
                tell(self.refs.get("socket"), m.BindIndex(index, self.actor_ref))
        if role == "router":
            # The new router knows nothing of a silence told to the old one: told again at the next tick (after the
            # peer manager's SessionUp replay, which comes first to the new router), if the peer is still silent.
            self._silent = False
        if role == "tun" and self._route_told:
            self._route_told = False
            self._route(True)  # the new TUN actor starts with no neighbour routes

    # --- messages --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, (m.Datagrams, m.ControlDatagrams)):
            self._receive(message.items)
        elif isinstance(message, m.RoutedToLink):
            self._send_data(message.packets)
            return self._sent()
        elif isinstance(message, m.RelayDecisions):
            self._relays = message.table
        elif isinstance(message, m.SendPathUpdate):
            self._send_path = message.path
        elif isinstance(message, m.NeighbourPackets):
            self._send_neighbour(message.packets)
        elif isinstance(message, m.Probe):
            self._probe()
        elif isinstance(message, m.SendControl):
            self._send_control(message.payload)
            return self._sent()
        elif isinstance(message, m.TimerDue):
            self._tick()
        elif isinstance(message, m.InstallKeys):
            assert self.session is not None
            got = self.session.install(message.result, time.monotonic())
            if got.authenticated:  # the handshake authenticated the peer from there; a refused one moves nothing
                self.candidates = ()
                self._roam(message.addr)
            self._send(got.replies)
            self._drain_events()
        elif isinstance(message, m.SetAllowedKeys):
            assert self.session is not None
            if message.keys != self.session.allowed_keys and self._redial_at is not None:
                # Waiting to dial again (refused, say): the new keys may let it in, so dial at once.
                self._redial_at = time.monotonic()
                self._dial_backoff = DIAL_BACKOFF_INITIAL
            self.session.allowed_keys = message.keys  # checked at this session's next handshake
        elif isinstance(message, m.IndexRefused):
            assert self.session is not None
            self._send(self.session.index_refused(message.index, time.monotonic()))
        elif isinstance(message, m.Snapshot):
            return self.snapshot()
        else:
            return super().handle(message)
        self._report_deadline()
        return None

    def _sent(self) -> None:
        """After a send: with keys and no handshake of ours in flight, a send only moves deadlines later (the
        keepalive's), so a booked deadline still to come stands and the recompute is skipped (it was a quarter of
        the cost of forwarding a beat to a child); anything else (staged behind a new handshake, say) books anew."""
        session, told = self.session, self._wake_told
        if (told is None or not self.up or session is None or not session.is_established or session.is_handshaking
                or told <= time.monotonic()):
            self._report_deadline()

    def _report_deadline(self) -> None:
        """Ask the peer manager to tick us at our next deadline (the core's timers, a re-dial), when it is earlier
        than the one asked for or that one has passed: an idle session is woken only when it has work."""
        session = self.session
        if session is None:
            return
        deadline = session.next_deadline()
        if self._redial_at is not None and (deadline is None or self._redial_at < deadline):
            deadline = self._redial_at
        if self.up:
            now = time.monotonic()
            heard = session.last_heard or self.created
            for due in (None if self.keepalive is None else self._last_tx + self.keepalive,
                        None if self.silent_after is None else heard + self.silent_after,
                        None if self._silent else heard + PEER_DEAD_AFTER):
                if due is not None:
                    if due <= now:
                        # Overdue after the tick that should have done it: the keepalive was shed (the socket's lane
                        # was full, so _last_tx did not move). Again in a while, not at once: booked at once, ten
                        # thousand sessions spun on their timers and kept the socket full (89% of a core idle).
                        due = now + SHED_RETRY
                    deadline = due if deadline is None else min(deadline, due)
        if deadline is None:
            return
        told = self._wake_told
        if told is None or deadline < told or told <= time.monotonic():
            self._wake_told = deadline
            if self.timers is not None:
                self.timers.at(self.actor_ref, deadline)
            else:
                tell(self.refs.get("peers"), m.WakeAt(self.actor_ref, deadline))

    def _receive(self, items: list[tuple[bytes, m.Addr]]) -> None:
        session = self.session
        assert session is not None
        now = time.monotonic()
        got = session.receive_batch([data for data, _ in items], now)
        for exc in got.errors:
            self.counters["rx_" + exc.metric] += 1
            logger.debug("{}: dropped datagram: {}", self.name, exc)
        if got.last_authentic >= 0:
            self.candidates = ()  # probing is over: the peer's key answered from this endpoint (§8.2)
            addr = items[got.last_authentic][1]
            if addr != self.endpoint:
                self._roam(addr)  # before the replies are sent: they go where the peer now is
        if got.replies:
            self._send(got.replies)
        key = session.remote_static
        routed: list[bytes] = []
        mine: list[bytes] = []
        prefix = NEIGHBOUR_PREFIX
        for ptype, payload in got.payloads:
            if ptype is DATA:
                if payload[:1] == prefix:
                    mine.append(payload[1:])
                else:
                    routed.append(payload)
            elif ptype is CONTROL:
                self._control(payload)
        if mine and key is not None:
            self._deliver(key, mine)
        if routed and key is not None and self._relays.hops:
            routed = self._relay(routed)
        if routed and key is not None:
            routed = self._deliver_e2e(routed)
        if routed and key is not None:
            if not bounded_tell(self.refs.get("router"), m.RoutedFromLink(key, routed)):
                self.counters["rx_dropped_relay"] += len(routed)
        if got.last_authentic >= 0 and self._silent and key is not None:
            # Heard again after a silence the router was told of: its routes come back (once, not per packet).
            self._silent = False
            tell(self.refs.get("router"), m.PeerSeen(key))
        self._drain_events()
        if now >= self._report_at:
            self._report_activity(now)

    def _relay(self, routed: list[bytes]) -> list[bytes]:
        """Relay what the router's published decisions cover straight to the next hop's session (the relay fast
        path, axiomnet/fastpath.py); the rest, for the router."""
        relayed, rest = fastpath.split(self._relays, routed)
        for ref, packets in relayed.items():
            if run_or_tell(ref, m.RoutedToLink(packets), len(packets)):  # a small batch: sealed on this thread
                self.counters["relayed_fast"] += len(packets)
            else:
                self.counters["rx_dropped_relay"] += len(packets)
        return rest

    def _deliver_e2e(self, routed: list[bytes]) -> list[bytes]:
        """TRAFFIC for our own address straight to the e2e actor, as the router would deliver it (the router's decision
        for it is always the same: deliver); the rest, for the router. The e2e actor tells the router what it heard
        (PathActivity), so the pathfinder's dead-path clocks run as before."""
        e2e = self.refs.get("e2e")
        if e2e is None:
            return routed
        delivered, rest = fastpath.deliverable(routed, self.self_address)
        if delivered:
            if bounded_tell(e2e, m.Delivered(delivered, via_router=False)):
                self.counters["delivered_fast"] += len(delivered)
            else:
                self.counters["rx_dropped_no_e2e"] += len(delivered)
        return rest

    def _deliver(self, key: bytes, packets: list[bytes]) -> None:
        """IP packets the peer sent to us over the link (§6.6): into the TUN device if the peer owns their source
        and we their destination; anything else is dropped and counted."""
        source, me = address_of(key), self.self_address
        dst, src = IPV6_DESTINATION, IPV6_SOURCE
        good = [pkt for pkt in packets if pkt[dst] == me and pkt[src] == source and pkt[0] >> 4 == 6]
        if len(good) < len(packets):  # the same checks, one by one, to count what was dropped and why
            good = []
            for pkt in packets:
                if not destined_to(pkt, me):
                    self.counters["rx_dropped_not_for_us"] += 1
                elif not source_is(pkt, source):
                    self.counters["rx_dropped_spoofed_source"] += 1
                else:
                    good.append(pkt)
        self.counters["rx_neighbour_packets"] += len(good)
        tun = self.refs.get("tun")
        if tun is None:
            self.counters["rx_dropped_no_tun"] += len(good)
        elif good and not bounded_tell(tun, m.TunWrite(good)):
            self.counters["rx_dropped_backpressure"] += len(good)

    def _control(self, payload: bytes) -> bool:
        """Hand a tree announcement to the router (whether it was told); our reflexive address to the peer manager."""
        key = self.session.remote_static if self.session is not None else None
        if key is None:
            return False
        if payload[:1] == _OBSERVED:
            self._observed(key, payload)
            return False
        if not bounded_tell(self.refs.get("router"), m.Announce(key, payload)):
            self.counters["rx_dropped_control"] += 1
            return False
        return True

    def _observed(self, key: bytes, payload: bytes) -> None:
        try:
            endpoint = decode_observed(payload)
        except RemoteProtocolError as exc:
            self.counters["rx_" + exc.metric] += 1
            return
        self.counters["rx_observed_endpoint"] += 1
        tell(self.refs.get("peers"), m.ObservedEndpoint(key, endpoint))
        if not self._observed_answered:
            # The peer's session is up now that it speaks: tell ours again, once. The one sent when we got our
            # keys may have arrived before the peer's session took its index (the initiator's usually does).
            self._observed_answered = True
            self._tell_observed()

    def _tell_observed(self) -> None:
        """Tell the peer the endpoint its datagrams come from (at establishment and whenever it moves)."""
        session = self.session
        payload = encode_observed(*self.endpoint)
        if session is None or payload is None or not session.is_established:
            return
        self._send(session.send(CONTROL, payload, time.monotonic()))
        self.counters["tx_observed_endpoint"] += 1

    def _probe(self) -> None:
        assert self.session is not None
        if self.session.is_established:
            self._send(self.session.send(KEEPALIVE, b"", time.monotonic()))
            self._drain_events()

    def _send_data(self, packets: list[bytes]) -> None:
        assert self.session is not None
        # Without keys the core stages the packets (bounded) and starts a handshake: nothing to catch here.
        self._send(self.session.send_batch(DATA, packets, time.monotonic()))
        self._drain_events()

    def _send_neighbour(self, packets: list[bytes]) -> None:
        """IP packets from our TUN for the peer's own address: sealed on the link behind NEIGHBOUR_IP, or, if the
        peer no longer takes them (it came back as another build), handed to the end-to-end layer instead."""
        assert self.session is not None
        if not self.neighbour_ip:
            self.counters["neighbour_to_e2e"] += len(packets)
            if not bounded_tell(self.refs.get("e2e"), m.TunPackets(packets)):
                self.counters["tx_dropped_backpressure"] += len(packets)
            return
        prefix = NEIGHBOUR_PREFIX
        self._send(self.session.send_batch(DATA, [prefix + p for p in packets], time.monotonic()))
        self.counters["tx_neighbour_packets"] += len(packets)
        self._drain_events()

    def _route(self, on: bool) -> None:
        """Tell the TUN actor to send packets for the peer's address here (``on``), or no longer."""
        session = self.session
        key = session.remote_static if session is not None else None
        if key is None or on == self._route_told:
            return
        self._route_told = on
        tun = self.refs.get("tun")
        if tun is not None:
            ref = self.actor_ref
            tell(tun, m.NeighbourRoute(address_of(key), ref if on else None, ref))

    def _peer_capabilities(self) -> tuple[str, ...]:
        payload = self.session.remote_payload if self.session is not None else None
        return payload.capabilities if payload is not None else ()

    def _send_control(self, payload: bytes) -> None:
        assert self.session is not None
        if not self.session.is_established:
            # An announcement is only worth its moment: never staged behind a handshake, but never silently lost.
            self.counters["announce_skipped"] += 1
            now = time.monotonic()
            if now - self._last_skip_log > 30.0:
                self._last_skip_log = now
                logger.warning("{}: announcement not sent: session not established", self.name)
            return
        self._send(self.session.send(CONTROL, payload, time.monotonic()))
        self._drain_events()

    def _tick(self) -> None:
        session = self.session
        assert session is not None
        now = time.monotonic()
        self._send(session.tick(now))
        if self.up and self.silent_after is not None and now >= (session.last_heard or self.created) + self.silent_after:
            # The peer sends at least a keepalive every LINK_KEEPALIVE (and beats, if it is our parent): this much silence means
            # the path is gone (a NAT forgot the mapping, the peer moved). Down now, not after a 90 s handshake:
            # traffic goes back to the overlay path (the peer manager closes a punched session when it goes down).
            self.counters["punched_link_silent"] += 1
            self._went_down("punched link silent")
            return
        peer_key = session.remote_static
        silent_since = (session.last_heard or self.created) + PEER_DEAD_AFTER
        if self.up and not self._silent and peer_key is not None and now >= silent_since:
            # Link liveness (docs/ROUTING.md §2.5): the peer keeps alive every LINK_KEEPALIVE; this much silence is
            # two lost keepalives and a margin. The router withdraws its routes; the keepalives below go on.
            self._silent = True
            self.counters["peer_silent"] += 1
            tell(self.refs.get("router"), m.PeerSilent(peer_key, self.actor_ref))
        if self.keepalive is not None and self.up:
            if now >= self._last_tx + self.keepalive:
                self.counters["tx_keepalives"] += 1
                self._probe()
        if self._redial_at is not None and now >= self._redial_at:
            self._redial_at = None
            logger.debug("{}: re-dialling", self.name)
            self._send(session.initiate(now))
        self._drain_events()
        self._report_activity(now)

    def _report_activity(self, now: float) -> None:
        session = self.session
        assert session is not None
        heard = session.last_heard
        if heard is not None and heard != self._reported_heard and now >= self._report_at:
            # The peer manager evicts the least recently active inbound session first (admission).
            self._reported_heard = heard
            self._report_at = now + SESSION_ACTIVITY_REPORT
            tell(self.refs.get("peers"), m.SessionActive(self.actor_ref, heard))

    def _roam(self, addr: m.Addr) -> None:
        if addr != self.endpoint:
            logger.info("{}: peer roamed to {}:{}", self.name, *addr)
            self.endpoint = addr
            self._tell_observed()

    def _send(self, datagrams: list[bytes]) -> None:
        """Send to the peer's endpoint, after telling the socket about the indices the core issued or retired."""
        session = self.session
        assert session is not None
        endpoint = self.endpoint
        if self.candidates and not self.up:  # probing: the handshake goes to each candidate (bounded, §8.2)
            items = [(d, candidate) for d in datagrams for candidate in self.candidates]
            self.counters["tx_probes"] += len(items)
        else:
            items = [(d, endpoint) for d in datagrams]
        commands = session.index_commands()
        if commands:
            items = tell_indices(self.refs.get("socket"), self.actor_ref, commands, items)
            self.counters["tx_datagrams"] += len(datagrams) - len(items)
        elif self._send_path is not None:
            items = self._send_direct(items)
        if not items:
            return
        if not bounded_tell(self.refs.get("socket"), m.SendDatagrams(items)):
            self.counters["tx_dropped_backpressure"] += len(items)
        else:
            self.counters["tx_datagrams"] += len(items)
            self._last_tx = time.monotonic()

    def _send_direct(self, items: list[tuple[bytes, m.Addr]]) -> list[tuple[bytes, m.Addr]]:
        """Send from this thread through the socket's published path (no hand-off); what it could not send, for
        the socket actor. After a failure the actor sends everything for DIRECT_SEND_BACKOFF seconds, so its
        circuit breaker, not this thread, decides how often a failing endpoint is tried."""
        path = self._send_path
        now = time.monotonic()
        if path is None or now < self._direct_off_until:
            return items
        if path.avoid and any(addr in path.avoid for _, addr in items):
            return items  # an endpoint that failed lately: the socket actor's breaker decides, and sees it heal
        sent, gso_sends, full, rest = path.send(items)
        counters = self.counters
        counters["tx_datagrams"] += sent
        counters["tx_direct"] += sent
        if gso_sends:
            counters["tx_gso_sends"] += gso_sends
        if full:
            counters["tx_dropped_full"] += full  # the socket buffer is full: dropped, as the socket actor would
        if sent:
            self._last_tx = now
        if rest:
            counters["tx_direct_failed"] += 1
            self._direct_off_until = now + DIRECT_SEND_BACKOFF
        return rest

    def _drain_events(self) -> None:
        session = self.session
        assert session is not None
        for event in session.events():
            match event:
                case Established():
                    self._established(session)
                case Rekeyed():
                    logger.debug("{}: rekeyed", self.name)
                    # A new handshake may come from another build of the peer (it restarted): follow what it says now.
                    self.neighbour_ip = NEIGHBOUR_CAPABILITY in self._peer_capabilities()
                    self._route(self.neighbour_ip and self.up)
                case KeyMismatch(message=message):
                    self._key_refused(message, "key_mismatches")
                case KeyRefused(message=message):
                    self._key_refused(message, "keys_refused")
                case HandshakeGaveUp(reason=reason):
                    logger.warning("{}: handshake gave up: {}", self.name, reason)
                    self._went_down("handshake gave up")
                    self._schedule_redial()
                case Expired():
                    self._went_down("expired")
                    if self.dial:
                        self._schedule_redial()
                    else:
                        logger.info("{}: idle session expired; stopping", self.name)
                        peers = self.refs.get("peers")
                        if peers is not None:
                            tell(peers, m.SessionGone(self.actor_ref, session.remote_static))
                        self.stop()
                case _:
                    logger.debug("{}: session event {}", self.name, event)

    def _key_refused(self, message: str, counter: str) -> None:
        """The peer authenticated with a key we may not talk to (not the pinned one, or not allowed): try later."""
        logger.error("{}: {}", self.name, message)
        self.counters[counter] += 1
        self._schedule_redial()

    def _established(self, session: Session) -> None:
        key = session.remote_static
        assert key is not None
        self.up = True
        self._silent = False  # SessionUp says it is alive
        self.candidates = ()  # the endpoint that authenticated is the one (§8.2)
        self._dial_backoff = DIAL_BACKOFF_INITIAL
        logger.info("{}: session established with {}", self.name, key.hex()[:16])
        caps = self._peer_capabilities()
        self.neighbour_ip = NEIGHBOUR_CAPABILITY in caps
        self._route(self.neighbour_ip)
        tell(self.refs.get("socket"), m.WantSendPath(self.actor_ref))  # sends from this thread from now on
        up = m.SessionUp(self.actor_ref, key, self.endpoint, self.dial, caps)
        for role in ("peers", "router"):
            ref = self.refs.get(role)
            if ref is not None:
                tell(ref, up)
        self._observed_answered = False
        self._tell_observed()

    def _went_down(self, reason: str) -> None:
        if not self.up:
            return
        self.up = False
        self._route(False)
        down = m.SessionDown(self.actor_ref, self.session.remote_static if self.session else None, reason)
        for role in ("peers", "router"):
            ref = self.refs.get(role)
            if ref is not None:
                tell(ref, down)

    def _schedule_redial(self, force: bool = False) -> None:
        if not (self.dial or force):
            return
        delay = self._dial_backoff * (1.0 + 0.25 * random.random())  # the module's Random: no state per session
        self._dial_backoff = min(DIAL_BACKOFF_MAX, self._dial_backoff * 2)
        self._redial_at = time.monotonic() + delay

    def snapshot(self) -> dict[str, Any]:
        """The session's row for axiomnet-inspect: the core's view plus this actor's drop counters."""
        now = time.monotonic()
        core: dict[str, Any] = self.session.snapshot(now) if self.session is not None else {}
        # The core counts every datagram it refused (its "dropped"; the rx_<Error> counters here name the same
        # datagrams by class); this actor adds only the drops that happen outside the core (rx_dropped_*, ...).
        actor_drops = sum(v for k, v in self.counters.items() if "dropped" in k)
        return {
            "peer": core.get("peer"),
            "endpoint": self.name,
            "state": core.get("state", "handshaking"),
            "initiator": core.get("initiator"),
            "age": round(now - self.created, 3),
            "rx_packets": int(core.get("rx_packets", 0)),
            "tx_packets": int(core.get("tx_packets", 0)),
            "rx_bytes": int(core.get("rx_bytes", 0)),
            "tx_bytes": int(core.get("tx_bytes", 0)),
            "dropped": int(core.get("dropped", 0)) + actor_drops,
            "static": self.dial,
            "counters": dict(self.counters),
        }
