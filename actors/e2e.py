"""EndToEndActor: the node's end-to-end sessions, between its TUN device and the router.

The thin shell around axiomnet/e2e.py: IP packets read from the TUN device come here, are sealed in the
session with the node that owns their destination address and handed to the router; TRAFFIC the router
delivers comes here, is opened, checked (its source must be the address of the session's key) and written to
the TUN device. A destination without a session waits (bounded) while the router resolves its key. The
sessions' timers are driven by a deadline timer: the actor sleeps until the earliest deadline of its sessions.

The router is skipped where it only repeats a decision (axiomnet/fastpath.py): datagrams for a destination in the
router's published OriginTable go, routed header in front, straight to the next hop's session, and the sessions
hand us the TRAFFIC they decrypted for our address themselves. What the router no longer sees, it is told in one
PathActivity at most every RING_TICK: the sources heard, the first send to each destination since it was last
heard (the pathfinder's dead-path clocks), and the counts.
"""

from __future__ import annotations

import time
from typing import Any

from axiomnet import fastpath
from axiomnet.constants import RING_TICK
from axiomnet.control import HandshakePayload
from axiomnet.e2e import E2EOutput, EndToEnd
from axiomnet.forward import _asks
from axiomnet.errors import RemoteProtocolError
from axiomnet.identity import Identity
from axiomnet.punch import CANDIDATES, EXCHANGE_MIN_GAP, decode_candidates
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell, run_or_tell, tell

ACTIVITY_REPORT = RING_TICK  # PathActivity goes to the router at most this often (the router steps dead paths as often)


class EndToEndActor(SupervisedActor):
    """End-to-end Noise sessions keyed by overlay address."""

    role = "e2e"

    def __init__(self, supervisor: Any, refs: dict[str, Any], identity: Identity,
                 local_payload: HandshakePayload | None = None) -> None:
        super().__init__(supervisor, refs)
        self.core = EndToEnd(identity.private_key, identity.public_key, local_payload=local_payload)
        self.candidates: bytes | None = None  # our CANDIDATES message (PROTOCOL §8.2), from the peer manager
        self._told: dict[bytes, float] = {}  # destination -> when we last sent it our candidates
        self._origins = fastpath.NO_ORIGINS  # the router's origin decisions (OriginRoutes), replaced whole
        # Not yet told the router (PathActivity): source -> when last heard past it; destination -> our first send
        # past it since we last heard it; datagrams sent and delivered past it.
        self._heard: dict[bytes, float] = {}
        self._unanswered: dict[bytes, float] = {}
        self._past_router = [0, 0]
        self._activity_at = 0.0  # the next PathActivity no earlier than this

    def setup(self) -> None:
        self._timer = self.start_deadline_timer(m.TimerDue())
        self._wake_told: float | None = None

    def handle(self, message: Any) -> Any:
        now = time.monotonic()
        result = self._handle(message, now)
        # After a tick every session's deadline counts; after anything else, only the sessions it used (the
        # others' are at or after the deadline already set).
        told = self._wake_told
        full = isinstance(message, m.TimerDue) or told is None or told <= now
        deadline = self.core.next_deadline(touched_only=not full)
        if deadline is not None and (full or deadline < told):  # type: ignore[operator]
            self._wake_told = deadline
            self._timer.at(deadline)
        elif full:
            self._wake_told = None
        if self._heard or self._unanswered or self._past_router[0] or self._past_router[1]:
            if now >= self._activity_at:
                self._report_activity(now)
            else:  # told at the earliest ACTIVITY_REPORT after the last report, even if nothing else comes
                told = self._wake_told
                if told is None or self._activity_at < told:
                    self._wake_told = self._activity_at
                    self._timer.at(self._activity_at)
        return result

    def rewired(self, role: str) -> None:
        if role == "router":  # the new router decides afresh, and tells us (OriginRoutes)
            self._origins = fastpath.NO_ORIGINS

    def _report_activity(self, now: float) -> None:
        """Tell the router what it did not see (PathActivity): heard first, then the sends still unanswered."""
        originated, delivered = self._past_router
        tell(self.refs.get("router"), m.PathActivity(tuple(self._heard.items()), tuple(self._unanswered.items()),
                                                     originated, delivered))
        self._heard = {}
        self._unanswered = {}
        self._past_router = [0, 0]
        self._activity_at = now + ACTIVITY_REPORT

    def _handle(self, message: Any, now: float) -> Any:
        if isinstance(message, m.TunPackets):
            self._dispatch(self.core.outbound(message.packets, now))
        elif isinstance(message, m.Delivered):
            self._heard_from(message, now)
            self._dispatch(self.core.inbound(message.items, now))
        elif isinstance(message, m.OriginRoutes):
            self._origins = message.table
        elif isinstance(message, m.Resolved):
            self._dispatch(self.core.resolved(message.dst, message.key, now))
        elif isinstance(message, m.Unresolvable):
            self.core.unresolvable(message.dst)
        elif isinstance(message, m.TimerDue):
            self._dispatch(self.core.tick(now))
        elif isinstance(message, m.ExchangeAgain):
            self._tell_candidates(message.address, now)
        elif isinstance(message, m.LocalCandidates):
            if message.payload != self.candidates:
                self.candidates = message.payload
                for dst in self.core.established_sessions():
                    self._tell_candidates(dst, now)
        elif isinstance(message, m.Snapshot):
            return {"sessions": self.core.snapshot(now), "counters": {**self.counters, **self.core.stats}}
        else:
            return super().handle(message)
        return None

    def _heard_from(self, message: m.Delivered, now: float) -> None:
        """Every source heard ends its dead-path clock here; those the router did not see are remembered for it."""
        unanswered = self._unanswered
        sources = {src for src, _ in message.items}
        for src in sources:
            unanswered.pop(src, None)
        if not message.via_router:
            for src in sources:
                self._heard[src] = now
            self._past_router[1] += len(message.items)

    def _dispatch(self, out: E2EOutput) -> None:
        router = self.refs.get("router")
        routes = self._origins.routes
        for dst, datagrams in out.sends.items():
            origin = routes.get(dst) if routes else None
            if origin is not None:
                self._send_past_router(dst, datagrams, origin)
            elif not bounded_tell(router, m.RouteOut(dst, datagrams)):
                self.counters["tx_dropped_backpressure"] += len(datagrams)
        if out.tun and not bounded_tell(self.refs.get("tun"), m.TunWrite(out.tun)):
            self.counters["rx_dropped_no_tun"] += len(out.tun)
        for dst in out.resolve:
            tell(router, m.Resolve(dst))
        now = time.monotonic() if out.established or out.control else 0.0
        for dst in out.established:
            self._tell_candidates(dst, now)
        for src, key, payload in out.control:
            self._control(src, key, payload, now)

    def _send_past_router(self, dst: bytes, datagrams: list[bytes], origin: fastpath.Origin) -> None:
        """Datagrams under a published origin decision: routed header in front, to the next hop's session (a small
        batch sealed and sent on this thread); the destination's dead-path clock starts as Forwarder.send starts it."""
        ref, head, clocked = origin
        if not run_or_tell(ref, m.RoutedToLink([head + d for d in datagrams]), len(datagrams)):
            self.counters["tx_dropped_backpressure"] += len(datagrams)
            return
        self.counters["tx_routed_fast"] += len(datagrams)
        self._past_router[0] += len(datagrams)
        if clocked and dst not in self._unanswered and _asks(datagrams):
            self._unanswered[dst] = time.monotonic()

    def _control(self, src: bytes, key: bytes, payload: bytes, now: float) -> None:
        """An end-to-end CONTROL message: CANDIDATES go to the peer manager (which probes before trusting), and
        we answer with ours if we have not told that node lately."""
        if payload[:1] != bytes([CANDIDATES]):
            self.counters["rx_control_unknown"] += 1
            return
        try:
            endpoints = decode_candidates(payload)
        except RemoteProtocolError as exc:
            self.counters["rx_candidates_" + exc.metric] += 1
            return
        self.counters["rx_candidates"] += 1
        tell(self.refs.get("peers"), m.PeerCandidates(key, tuple(endpoints)))
        told = self._told.get(src)
        if told is None or now - told >= EXCHANGE_MIN_GAP:
            self._tell_candidates(src, now)

    def _tell_candidates(self, dst: bytes, now: float) -> None:
        """Our candidates to ``dst`` (at most once per EXCHANGE_MIN_GAP), if we know any."""
        told = self._told.get(dst)
        if self.candidates is None or (told is not None and now - told < EXCHANGE_MIN_GAP):
            return
        if len(self._told) > 2 * len(self.core.sessions) + 64:  # forget the destinations whose session went
            self._told = {d: t for d, t in self._told.items() if d in self.core.sessions}
        self._told[dst] = now
        out = self.core.send_control(dst, self.candidates, now)
        if out.sends:
            self.counters["tx_candidates"] += 1
            self._dispatch(out)
