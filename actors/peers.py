"""PeerManagerActor: the node's front door for unknown senders and the registry of session actors.

It owns the core HandshakeResponder (cookies, rate limits, bounded half-open table), creates one
SessionActor per peer (static peers at start, inbound peers when their handshake completes), keeps the
registry bounded by MAX_SESSIONS (seed failure #8), restarts crashed session actors with backoff and,
through the supervisor, stops the node when sessions crash-loop. Its ticker drives every session's timers.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka
from loguru import logger

from axiomnet.config import PeerSpec
from axiomnet.constants import MAX_SESSIONS
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.responder import HandshakeResponder
from axiomnet.supervision import RestartPolicy
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell, schedule_tell, tell
from axiomnet.actors.session import SessionActor
from axiomnet.actors.socket import claim_index

TICK_INTERVAL = 0.1  # how often session timers are driven; finer than any protocol timer needs


def canonical_endpoint(host: str, port: int) -> m.Addr:
    """(host, port) with the host in canonical text form, so that equal addresses compare equal."""
    try:
        ip = ipaddress.ip_address(host)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return (str(ip), port)
    except ValueError:
        return (host, port)


@dataclass
class SessionSpec:
    """What it takes to (re)create one peer's session actor."""

    ref: Any
    endpoint: m.Addr
    expected_key: bytes | None
    dial: bool
    known_key: bytes | None = None
    up: bool = False


class PeerManagerActor(SupervisedActor):
    """Handshake responder + session registry + session supervision."""

    role = "peers"

    def __init__(
        self,
        supervisor: Any,
        refs: dict[str, Any],
        *,
        static_private: bytes,
        static_public: bytes,
        self_address: bytes,
        static_peers: tuple[PeerSpec, ...],
        local_payload: HandshakePayload | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        super().__init__(supervisor, refs)
        self.static_private = static_private
        self.static_public = static_public
        self.self_address = self_address
        self.static_peers = static_peers
        self.local_payload = local_payload or HandshakePayload()
        self.max_sessions = max_sessions
        self.specs: dict[str, SessionSpec] = {}  # by actor urn
        self.by_key: dict[bytes, str] = {}
        self.policy = RestartPolicy()
        self.responder: HandshakeResponder | None = None
        self._timers: list[threading.Timer] = []

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        me = self.actor_ref
        self.responder = HandshakeResponder(
            self.static_private,
            self.static_public,
            allocate_index=lambda: claim_index(self.refs["socket"], me),
            release_index=self._release_index,
            local_payload=self.local_payload,
        )
        for peer in self.static_peers:
            self._spawn(canonical_endpoint(peer.host, peer.port), peer.public_key, dial=True)
        self.start_ticker(TICK_INTERVAL, m.Tick())

    def _release_index(self, index: int) -> None:
        tell(self.refs.get("socket"), m.ReleaseIndex(index))

    def teardown(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for spec in list(self.specs.values()):
            try:
                spec.ref.stop(block=True, timeout=2.0)
            except pykka.Timeout:
                logger.error("session {} did not stop within 2 s", spec.endpoint)
        self.specs.clear()

    def rewired(self, role: str) -> None:
        for spec in self.specs.values():
            bounded_tell(spec.ref, m.Rewire(role, self.refs[role]))
        if role == "socket" and self.responder is not None:
            for index in self.responder.pending_indices():
                tell(self.refs.get("socket"), m.BindIndex(index, self.actor_ref))
        if role == "router":  # the new router starts empty: tell it what is up
            for spec in self.specs.values():
                if spec.up and spec.known_key is not None:
                    tell(self.refs.get("router"), m.SessionUp(spec.ref, spec.known_key, spec.endpoint, spec.dial))

    def _session_refs(self) -> dict[str, Any]:
        return {**self.refs, "peers": self.actor_ref}

    def _spawn(self, endpoint: m.Addr, expected_key: bytes | None, dial: bool) -> Any:
        ref = SessionActor.start(
            self.actor_ref,
            self._session_refs(),
            static_private=self.static_private,
            static_public=self.static_public,
            self_address=self.self_address,
            endpoint=endpoint,
            expected_key=expected_key,
            dial=dial,
            local_payload=self.local_payload,
        )
        self.specs[ref.actor_urn] = SessionSpec(ref, endpoint, expected_key, dial, known_key=expected_key)
        if expected_key is not None:
            self.by_key.setdefault(expected_key, ref.actor_urn)
        return ref

    # --- messages --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Datagrams):
            self._front_door(message.items)
        elif isinstance(message, m.Tick):
            self._tick()
        elif isinstance(message, m.SessionUp):
            self._session_up(message)
        elif isinstance(message, m.SessionDown):
            spec = self.specs.get(message.ref.actor_urn)
            if spec is not None:
                spec.up = False
        elif isinstance(message, m.SessionGone):
            self._forget(message.ref.actor_urn)
        elif isinstance(message, m.ChildFailed):
            self._session_crashed(message)
        elif isinstance(message, m.RestartChild):
            self._restart(message.role)
        elif isinstance(message, m.ListSessions):
            return [spec.ref for spec in self.specs.values()]
        elif isinstance(message, (m.AddPeer, m.RemovePeer, m.ListStaticPeers)):
            return self._static_peer_command(message)
        elif isinstance(message, m.Snapshot):
            assert self.responder is not None
            return {"sessions": len(self.specs), "pending_handshakes": self.responder.pending_count,
                    "responder": dict(self.responder.stats), **self.counters}
        else:
            return super().handle(message)
        return None

    def _tick(self) -> None:
        assert self.responder is not None
        self.responder.expire(time.monotonic())
        tick = m.Tick()
        for spec in self.specs.values():
            bounded_tell(spec.ref, tick, limit=64)

    def _front_door(self, items: list[tuple[bytes, m.Addr]]) -> None:
        responder = self.responder
        assert responder is not None
        now = time.monotonic()
        out: list[tuple[bytes, m.Addr]] = []
        for data, addr in items:
            try:
                header = decode_header(data)
                if header.ptype not in (PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_FINAL):
                    self.counters["rx_unknown_receiver"] += 1
                    continue
                replies, result = responder.receive(header, data, addr, now)
            except RemoteProtocolError as exc:
                self.counters["rx_" + type(exc).__name__] += 1
                logger.debug("front door: dropped datagram from {}:{}: {}", addr[0], addr[1], exc)
                continue
            out.extend((r, addr) for r in replies)
            if result is not None:
                self._completed(result, canonical_endpoint(*addr))
        if out:
            bounded_tell(self.refs.get("socket"), m.SendDatagrams(out))

    def _completed(self, result: Any, addr: m.Addr) -> None:
        """A handshake we answered finished: give its keys to the peer's session, creating one if new."""
        key = result.remote_static
        urn = self.by_key.get(key)
        if urn is None:
            for spec_urn, spec in self.specs.items():
                if spec.endpoint == addr and spec.known_key is None:
                    urn = spec_urn
                    break
                if spec.endpoint == addr and spec.expected_key is not None and spec.expected_key != key:
                    logger.error(
                        "peer at {}:{} authenticated as {} but is configured with key {}: refused",
                        addr[0], addr[1], key.hex()[:16], spec.expected_key.hex()[:16],
                    )
                    tell(self.refs.get("socket"), m.ReleaseIndex(result.local_index))
                    self.counters["refused_key_mismatch"] += 1
                    return
        if urn is None:
            if len(self.specs) >= self.max_sessions:
                self.counters["refused_session_limit"] += 1
                logger.warning("refusing peer {} at {}:{}: {} sessions already (MAX_SESSIONS)",
                               key.hex()[:16], addr[0], addr[1], len(self.specs))
                tell(self.refs.get("socket"), m.ReleaseIndex(result.local_index))
                return
            ref = self._spawn(addr, None, dial=False)
            urn = ref.actor_urn
        spec = self.specs[urn]
        spec.known_key = key
        self.by_key[key] = urn
        tell(self.refs.get("socket"), m.BindIndex(result.local_index, spec.ref))
        tell(spec.ref, m.InstallKeys(result, addr))

    def _session_up(self, msg: m.SessionUp) -> None:
        urn = msg.ref.actor_urn
        spec = self.specs.get(urn)
        if spec is None:
            return
        spec.up = True
        spec.known_key = msg.peer_key
        spec.endpoint = msg.endpoint
        other = self.by_key.get(msg.peer_key)
        if other is not None and other != urn and other in self.specs:
            # Two actors reached the same peer (e.g. it dialled us from another address while we dialled
            # it): keep the one that dials (static), stop the other so there is one session per peer.
            keep, drop = (urn, other) if spec.dial or not self.specs[other].dial else (other, urn)
            logger.info("duplicate session to {}: keeping one", msg.peer_key.hex()[:16])
            dropped = self.specs[drop]
            self._forget(drop)
            dropped.ref.stop(block=False)
            tell(self.refs.get("router"), m.SessionDown(dropped.ref, msg.peer_key, "duplicate"))
            urn = keep
        self.by_key[msg.peer_key] = urn

    def _forget(self, urn: str) -> SessionSpec | None:
        spec = self.specs.pop(urn, None)
        if spec is not None:
            if spec.known_key is not None and self.by_key.get(spec.known_key) == urn:
                del self.by_key[spec.known_key]
            tell(self.refs.get("socket"), m.ReleaseOwner(spec.ref))
        return spec

    def _session_crashed(self, msg: m.ChildFailed) -> None:
        spec = self.specs.get(msg.urn)
        if spec is None:
            return
        key_name = (spec.known_key or b"").hex()[:16] or f"{spec.endpoint[0]}:{spec.endpoint[1]}"
        logger.error("session actor for {} crashed: {}", key_name, msg.error)
        self.counters["session_crashes"] += 1
        if spec.known_key is not None and spec.up:
            tell(self.refs.get("router"), m.SessionDown(spec.ref, spec.known_key, "crashed"))
        spec.up = False
        delay = self.policy.record_failure("session", time.monotonic())
        if delay is None:
            reason = f"session actors crashed more than {self.policy.intensity} times in {self.policy.window:.0f} s"
            logger.critical(reason)
            if self.supervisor is not None:
                tell(self.supervisor, m.Fatal(reason))
            return
        timer = schedule_tell(self.actor_ref, m.RestartChild(msg.urn), delay)
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]

    def _restart(self, urn: str) -> None:
        spec = self._forget(urn)
        if spec is None:
            return
        # A restarted session lost its keys: it dials the peer it knew, expecting the key it had seen.
        self._spawn(spec.endpoint, spec.expected_key or spec.known_key, dial=True)
        logger.info("session to {}:{} restarted", *spec.endpoint)
        self.counters["session_restarts"] += 1

    # --- static peers at runtime (admin socket `axiomnet peers`, SIGHUP) ---------------------------
    def _static_peer_command(self, message: Any) -> dict[str, Any]:
        """Add or remove a static peer, or list them; the reply always carries the list after the change."""
        result: dict[str, Any] = {}
        if isinstance(message, m.AddPeer):
            spec = PeerSpec(message.host, message.port, message.public_key)
            endpoint = canonical_endpoint(spec.host, spec.port)
            known = any(canonical_endpoint(p.host, p.port) == endpoint for p in self.static_peers)
            if not known and len(self.specs) >= self.max_sessions:
                return {"error": f"{len(self.specs)} sessions already (MAX_SESSIONS): not adding {spec}"}
            if not known:
                self.static_peers += (spec,)
                self._spawn(endpoint, spec.public_key, dial=True)
            result["added"] = not known
        elif isinstance(message, m.RemovePeer):
            endpoint = canonical_endpoint(message.host, message.port)
            gone = [p for p in self.static_peers if canonical_endpoint(p.host, p.port) == endpoint]
            keys = {p.public_key for p in gone if p.public_key is not None}
            self.static_peers = tuple(p for p in self.static_peers if p not in gone)
            # The session may have roamed to another endpoint since: its pinned key still names it.
            urns = [urn for urn, spec in self.specs.items()
                    if spec.dial and (spec.endpoint == endpoint or spec.expected_key in keys)]
            for urn in urns:
                removed = self._forget(urn)
                assert removed is not None
                if removed.up and removed.known_key is not None:
                    tell(self.refs.get("router"), m.SessionDown(removed.ref, removed.known_key, "peer removed"))
                removed.ref.stop(block=False)
            result["removed"] = len(gone)
            result["sessions_closed"] = len(urns)
        return {**result, "peers": [str(p) for p in self.static_peers]}
