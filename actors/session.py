"""SessionActor: one per peer; owns that peer's core Session, so every access to it is serialised.

The seed's race on ``process_incoming`` cannot exist here: only this actor's thread touches the Session,
one message at a time. Datagrams arrive in batches from the socket reader (DATA on the data lane, every other
type on the control lane); the plaintext of DATA is a routed packet, handed to the router with the peer's key;
the plaintext of CONTROL is a tree announcement, handed to the router on the control lane. Routed packets to
send arrive in batches from the router; the peer manager's ticker drives the session's timers.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pykka
from loguru import logger

from axiomnet.constants import DIAL_BACKOFF_INITIAL, DIAL_BACKOFF_MAX, PEER_SEEN_INTERVAL
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, tell, bounded_tell
from axiomnet.actors.socket import claim_index

DATA = PacketType.DATA
CONTROL = PacketType.CONTROL
KEEPALIVE = PacketType.KEEPALIVE
_ROAMING_TYPES = frozenset({PacketType.DATA, PacketType.CONTROL, PacketType.KEEPALIVE, PacketType.HANDSHAKE_RESP})


class SessionActor(SupervisedActor):
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
    ) -> None:
        super().__init__(supervisor, refs)
        self.static_private = static_private
        self.static_public = static_public
        self.self_address = self_address
        self.endpoint = endpoint
        self.expected_key = expected_key
        self.dial = dial  # a static peer (or a restarted session): keeps re-dialling with backoff
        self.local_payload = local_payload
        self.session: Session | None = None
        self.created = time.monotonic()
        self.up = False
        self._redial_at: float | None = None
        self._dial_backoff = DIAL_BACKOFF_INITIAL
        self._rng = random.Random()
        self._last_skip_log = 0.0
        self._seen_told = -1e9  # when the router was last told PeerSeen

    @property
    def name(self) -> str:
        host, port = self.endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        me = self.actor_ref
        self.session = Session(
            self.static_private,
            self.static_public,
            allocate_index=lambda: claim_index(self.refs["socket"], me),
            release_index=self._release_index,
            local_payload=self.local_payload,
            expected_remote_key=self.expected_key,
            peer_name=self.name,
        )
        if self.dial:
            try:
                self._send(self.session.initiate(time.monotonic()))
            except (pykka.ActorDeadError, pykka.Timeout):
                self._schedule_redial(force=True)

    def _release_index(self, index: int) -> None:
        tell(self.refs.get("socket"), m.ReleaseIndex(index))

    def teardown(self) -> None:
        tell(self.refs.get("socket"), m.ReleaseOwner(self.actor_ref))

    def rewired(self, role: str) -> None:
        if role == "socket" and self.session is not None:
            for index in self.session.local_indices():
                tell(self.refs.get("socket"), m.BindIndex(index, self.actor_ref))

    # --- messages --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            # The socket actor is being restarted and could not hand us a receiver index: not our crash.
            self.counters["socket_unavailable"] += 1
            logger.warning("{}: socket actor unavailable ({}); retrying the handshake shortly", self.name,
                           type(exc).__name__)
            self._schedule_redial(force=True)
            return None

    def _handle(self, message: Any) -> Any:
        if isinstance(message, (m.Datagrams, m.ControlDatagrams)):
            self._receive(message.items)
        elif isinstance(message, m.LinkPackets):
            self._send_data(message.packets)
        elif isinstance(message, m.Probe):
            self._probe()
        elif isinstance(message, m.SendControl):
            self._send_control(message.payload)
        elif isinstance(message, m.Tick):
            self._tick()
        elif isinstance(message, m.InstallKeys):
            assert self.session is not None
            self.endpoint = message.addr
            self._send(self.session.install(message.result, time.monotonic()))
            self._drain_events()
        elif isinstance(message, m.Snapshot):
            return self.snapshot()
        else:
            return super().handle(message)
        return None

    def _receive(self, items: list[tuple[bytes, m.Addr]]) -> None:
        session = self.session
        assert session is not None
        now = time.monotonic()
        out: list[bytes] = []
        routed: list[bytes] = []
        authentic = False
        for data, addr in items:
            try:
                header = decode_header(data)
                got = session.receive(header, data, now)
            except RemoteProtocolError as exc:
                self.counters["rx_" + type(exc).__name__] += 1
                logger.debug("{}: dropped datagram: {}", self.name, exc)
                continue
            if got.replies:
                out.extend(got.replies)
            if header.ptype in _ROAMING_TYPES and addr != self.endpoint:
                logger.info("{}: peer roamed to {}:{}", self.name, *addr)
                self.endpoint = addr
            ptype = got.ptype
            if ptype is None:
                continue
            authentic = True
            if ptype is DATA:
                routed.append(got.payload)
            elif ptype is CONTROL:
                self._control(got.payload)
        if out:
            self._send(out)
        key = session.remote_static
        if routed and key is not None:
            if not bounded_tell(self.refs.get("router"), m.RoutedPackets(key, routed)):
                self.counters["rx_dropped_relay"] += len(routed)
        elif authentic and key is not None and now - self._seen_told >= PEER_SEEN_INTERVAL:
            # Liveness comes from any authenticated packet; routed packets already tell the router so.
            self._seen_told = now
            tell(self.refs.get("router"), m.PeerSeen(key))
        self._drain_events()

    def _control(self, payload: bytes) -> None:
        key = self.session.remote_static if self.session is not None else None
        if key is not None and not bounded_tell(self.refs.get("router"), m.Announce(key, payload)):
            self.counters["rx_dropped_control"] += 1

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
        if self._redial_at is not None and now >= self._redial_at:
            self._redial_at = None
            logger.debug("{}: re-dialling", self.name)
            self._send(session.initiate(now))
        self._drain_events()

    def _send(self, datagrams: list[bytes]) -> None:
        if not datagrams:
            return
        endpoint = self.endpoint
        if not bounded_tell(self.refs.get("socket"), m.SendDatagrams([(d, endpoint) for d in datagrams])):
            self.counters["tx_dropped_backpressure"] += len(datagrams)
        else:
            self.counters["tx_datagrams"] += len(datagrams)

    def _drain_events(self) -> None:
        session = self.session
        assert session is not None
        for event in session.events():
            kind = type(event).__name__
            if kind == "Established":
                key = session.remote_static
                assert key is not None
                self.up = True
                self._dial_backoff = DIAL_BACKOFF_INITIAL
                logger.info("{}: session established with {}", self.name, key.hex()[:16])
                up = m.SessionUp(self.actor_ref, key, self.endpoint, self.dial)
                for role in ("peers", "router"):
                    ref = self.refs.get(role)
                    if ref is not None:
                        tell(ref, up)
            elif kind == "Rekeyed":
                logger.debug("{}: rekeyed", self.name)
            elif kind == "KeyMismatch":
                logger.error("{}: {}", self.name, getattr(event, "message", event))
                self._schedule_redial()
            elif kind == "HandshakeGaveUp":
                logger.warning("{}: handshake gave up: {}", self.name, getattr(event, "reason", event))
                self._went_down("handshake gave up")
                self._schedule_redial()
            elif kind == "Expired":
                self._went_down("expired")
                if self.dial:
                    self._schedule_redial()
                else:
                    logger.info("{}: idle session expired; stopping", self.name)
                    peers = self.refs.get("peers")
                    if peers is not None:
                        tell(peers, m.SessionGone(self.actor_ref, session.remote_static))
                    self.stop()
            else:
                logger.debug("{}: session event {}", self.name, event)

    def _went_down(self, reason: str) -> None:
        if not self.up:
            return
        self.up = False
        down = m.SessionDown(self.actor_ref, self.session.remote_static if self.session else None, reason)
        for role in ("peers", "router"):
            ref = self.refs.get(role)
            if ref is not None:
                tell(ref, down)

    def _schedule_redial(self, force: bool = False) -> None:
        if not (self.dial or force):
            return
        delay = self._dial_backoff * (1.0 + 0.25 * self._rng.random())
        self._dial_backoff = min(DIAL_BACKOFF_MAX, self._dial_backoff * 2)
        self._redial_at = time.monotonic() + delay

    def snapshot(self) -> dict[str, Any]:
        """The session's row for axiomnet-inspect: the core's view plus this actor's drop counters."""
        now = time.monotonic()
        core: dict[str, Any] = self.session.snapshot(now) if self.session is not None else {}
        actor_drops = sum(v for k, v in self.counters.items() if "dropped" in k or k.startswith("rx_"))
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
