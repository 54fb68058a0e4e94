"""PeerManagerActor: the node's front door for unknown senders and the registry of session actors.

It owns the core HandshakeResponder (mac1, cookies, rate limits, key probes, allowed_keys, bounded half-open
table) and the core Admission policy, creates one SessionActor per peer (static peers at start, inbound
peers when their handshake completes and admission gives them a slot: everyone while there is room, then
shared out by source, strangers of the source holding the most slots evicted first), restarts crashed session actors with backoff and,
through the supervisor, stops the node when sessions crash-loop. It drives the sessions' timers: each session
tells it its next deadline (WakeAt) and gets a TimerDue then, so an idle node sleeps instead of ticking every
session ten times a second.

It never waits on another actor: receiver indices are picked by the core and told to the socket actor, and
a collaborator that is slow, dead or restarting only loses tells that the restart replays (rewired).
"""

from __future__ import annotations

import heapq
import ipaddress
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import pykka
from loguru import logger

from axiomnet.admission import Admission, Refuse
from axiomnet.ops.config import PeerSpec
from axiomnet.constants import MAX_QUEUED_BATCHES, MAX_SESSIONS, MAX_UNPINNED_SESSIONS, SESSION_WORKERS
from axiomnet.control import HandshakePayload
from axiomnet.cookie import source_key
from axiomnet.punch import MAX_CANDIDATES, PUNCH_KEEPALIVE, PUNCH_SILENT_AFTER, PunchPlanner, encode_candidates
from axiomnet.reflexive import ReflexiveTable
from axiomnet.errors import RateLimited, RemoteProtocolError
from axiomnet.ownership import address_of
from axiomnet.responder import HandshakeResponder
from axiomnet.session import HandshakeResult
from axiomnet.supervision import RestartPolicy
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.base import ActorPool, DeadlineWheel, Later, SupervisedActor, bounded_tell, tell
from axiomnet.actors.discovery import Discovered, DiscoveredLive
from axiomnet.actors.session import SessionActor
from axiomnet.actors.socket import tell_indices

MAX_DISCOVERED_DIALS = 16  # discovered peers dialled at once whose session is not up (beacons cost bounded state)
FRONT_DOOR_QUEUED = 4 * MAX_QUEUED_BATCHES  # the socket's data lane may be this deep before a handshake answer is shed
SESSIONS_STOP_DEADLINE = 2.0  # the peer manager's stop waits this long for all its session actors together
REFUSAL_LOG_INTERVAL = 10.0  # one warning per this many seconds about refused peers; every refusal is counted
_FRONT_DOOR_TYPES = (PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_FINAL, PacketType.KEY_PROBE)


class _Due(m.Urgent):
    """The deadline timer's wake-up: the earliest session deadline or half-open handshake expiry has come (never
    leaves this actor)."""


def canonical_endpoint(host: str, port: int) -> m.Addr:
    """(host, port) with the host in canonical text form, so that equal addresses compare equal."""
    try:
        ip = ipaddress.ip_address(host)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return (str(ip), port)
    except ValueError:
        return (host, port)


@dataclass(slots=True)
class SessionSpec:
    """What it takes to (re)create one peer's session actor (slots: a hub keeps ten thousand)."""

    ref: Any
    endpoint: m.Addr
    expected_key: bytes | None
    dial: bool
    known_key: bytes | None = None
    up: bool = False
    named: bool = True  # configured, pinned or listed in allowed_keys (admission)
    inbound: bool = False  # created by a handshake the peer started (evictable when unnamed)
    found: str = "static"  # how we know the peer: static, runtime, discovered or inbound (inspect's FOUND)


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
        max_unpinned_sessions: int = MAX_UNPINNED_SESSIONS,
        allowed_keys: frozenset[bytes] | None = None,
        discoverable: bool = True,
        listen: m.Addr | None = None,
    ) -> None:
        super().__init__(supervisor, refs)
        self.static_private = static_private
        self.static_public = static_public
        self.self_address = self_address
        self.static_peers = static_peers
        self.local_payload = local_payload or HandshakePayload()
        self.max_sessions = max_sessions
        self.responder: HandshakeResponder | None = None
        self.configured_allowed = allowed_keys  # as configured; allowed_keys below adds the pinned peers' keys
        self.named_keys: frozenset[bytes] = frozenset()
        self.allowed_keys: frozenset[bytes] | None = None
        self._name_keys()
        self.discoverable = discoverable
        self.admission = Admission(max_sessions, max_unpinned_sessions)
        self.specs: dict[str, SessionSpec] = {}  # by actor urn
        self.by_key: dict[bytes, str] = {}
        # The sessions that dial (static, discovered, punched, restarted): only they can be waiting for a key at an
        # endpoint, so a completed inbound handshake looks through these, not through every session (a hub's are
        # inbound: the scan of all of them made each handshake O(sessions), the 10,000th 10,000 comparisons).
        self.dialling: set[str] = set()
        self.policy = RestartPolicy()
        self._restarts: Later | None = None  # RestartChild messages, each due after its backoff
        self._refusal_logged = -REFUSAL_LOG_INTERVAL
        self._wakes: list[tuple[float, str]] = []  # heap of (deadline, session urn) to tick
        self.reflexive = ReflexiveTable()  # the endpoint each neighbour says it sees us at (PROTOCOL §8.1)
        self.listen = listen
        self.punch = PunchPlanner()  # NAT traversal: which exchanged candidates we dial (PROTOCOL §8.2)
        self._candidates_told: bytes | None = None
        self._deadline_timer: Any = None
        self._host: ActorPool | None = None  # the few threads every session actor runs on
        self.session_timers: DeadlineWheel | None = None
        self._refs_view: Mapping[str, Any] | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        self.responder = HandshakeResponder(
            self.static_private,
            self.static_public,
            local_payload=self.local_payload,
            allowed_keys=self.allowed_keys,
            discoverable=self.discoverable,
        )
        self._deadline_timer = self.start_deadline_timer(_Due())
        self._host = self.start_pool("sessions", SESSION_WORKERS)
        self.session_timers = self.start_wheel(m.TimerDue())  # every session's timers: one heap, one thread, no messages
        self._restarts = Later(self._deadline_timer)
        for peer in self.static_peers:  # configured peers always get their slot
            self._spawn(canonical_endpoint(peer.host, peer.port), peer.public_key, dial=True)
        self._tell_candidates()

    def _send(self, items: list[tuple[bytes, m.Addr]]) -> None:
        """Send the responder's answers, after telling the socket the indices it issued or retired."""
        assert self.responder is not None
        commands = self.responder.index_commands()
        if commands:
            items = tell_indices(self.refs.get("socket"), self.actor_ref, commands, items)
        # The front door's answers may queue deeper than a data batch: a hub's sessions, each told an announcement
        # at the same heartbeat, fill the socket's data lane in a burst, and answers shed then are handshakes lost,
        # retried, and lost again (the 10,000-session bench stalled so). Still bounded: FRONT_DOOR_QUEUED.
        if items and not bounded_tell(self.refs.get("socket"), m.SendDatagrams(items), limit=FRONT_DOOR_QUEUED):
            self.counters["tx_dropped_backpressure"] += len(items)

    def teardown(self) -> None:
        if self._restarts is not None:
            self._restarts.clear()
        # Every session asked at once, then each awaited under one deadline: ten thousand of them stop in the time
        # their pool takes to run each stop once, not ten thousand round trips in a row.
        stopping = [(spec, spec.ref.stop(block=False)) for spec in self.specs.values()]
        deadline = time.monotonic() + SESSIONS_STOP_DEADLINE
        late = 0
        for spec, future in stopping:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                late += 1
        if late:
            logger.error("{} session actors did not stop within {} s", late, SESSIONS_STOP_DEADLINE)
        self.specs.clear()

    def rewired(self, role: str) -> None:
        for spec in self.specs.values():
            bounded_tell(spec.ref, m.Rewire(role, self.refs[role]))
        if role == "socket" and self.responder is not None:
            for index in self.responder.pending_indices():
                tell(self.refs.get("socket"), m.BindIndex(index, self.actor_ref))
        if role == "e2e":
            self._candidates_told = None
            self._tell_candidates()
        if role == "router":  # the new router starts empty: tell it what is up
            for spec in self.specs.values():
                if spec.up and spec.known_key is not None:
                    tell(self.refs.get("router"), m.SessionUp(spec.ref, spec.known_key, spec.endpoint, spec.dial))

    def _session_refs(self) -> Mapping[str, Any]:
        """One read-only view for every session started until the next rewire (they share it, never change it)."""
        refs = {**self.refs, "peers": self.actor_ref}
        if self._refs_view is None or dict(self._refs_view) != refs:
            self._refs_view = MappingProxyType(refs)
        return self._refs_view

    def _spawn(
        self, endpoint: m.Addr, expected_key: bytes | None, dial: bool, named: bool = True, inbound: bool = False,
        found: str = "static", candidates: tuple[m.Addr, ...] = (), keepalive: float | None = None,
        silent_after: float | None = None,
    ) -> Any:
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
            allowed_keys=self.allowed_keys,
            candidates=candidates,
            keepalive=keepalive,
            silent_after=silent_after,
            host=self._host,
            timers=self.session_timers,
        )
        self.specs[ref.actor_urn] = SessionSpec(ref, endpoint, expected_key, dial, known_key=expected_key,
                                                named=named, inbound=inbound, found=found)
        if dial:
            self.dialling.add(ref.actor_urn)
        self.admission.add(ref.actor_urn, named=named, source=source_key(endpoint), inbound=inbound,
                           now=time.monotonic())
        if expected_key is not None:
            self.by_key.setdefault(expected_key, ref.actor_urn)
        return ref

    # --- messages --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Datagrams):
            self._front_door(message.items)
            self._schedule()  # the expiry of a handshake it left half-open
        elif isinstance(message, m.WakeAt):
            heapq.heappush(self._wakes, (message.when, message.ref.actor_urn))
            self._deadline_timer.at(message.when)
        elif isinstance(message, _Due):
            self._tick()
        elif isinstance(message, m.TimerDue):
            self._tick(every=True)
        elif isinstance(message, m.SessionUp):
            self._session_up(message)
        elif isinstance(message, m.SessionDown):
            spec = self.specs.get(message.ref.actor_urn)
            if spec is not None:
                spec.up = False
                if spec.found == "punched":
                    self._punched_down(message.ref.actor_urn, spec, message.reason)
        elif isinstance(message, m.PeerCandidates):
            self._peer_candidates(message)
        elif isinstance(message, m.SessionGone):
            self._forget(message.ref.actor_urn)
        elif isinstance(message, m.ChildFailed):
            self._session_crashed(message)
        elif isinstance(message, m.RestartChild):
            self._restart(message.role)
        elif isinstance(message, m.IndexRefused):
            assert self.responder is not None
            self.responder.index_refused(message.index)
            self.counters["index_collisions"] += 1
        elif isinstance(message, m.ObservedEndpoint):
            self._observed(message)
        elif isinstance(message, Discovered):
            self._discovered(message)
        elif isinstance(message, DiscoveredLive):
            self._discovered_live(message.keys)
        elif isinstance(message, m.SessionActive):
            self.admission.touch(message.ref.actor_urn, message.heard_at)
        elif isinstance(message, m.ListSessions):
            return [spec.ref for spec in self.specs.values()]
        elif isinstance(message, (m.AddPeer, m.RemovePeer, m.ListStaticPeers, m.SetAllowedKeys)):
            return self._static_peer_command(message)
        elif isinstance(message, m.Snapshot):
            assert self.responder is not None
            return {"sessions": len(self.specs), "unnamed_sessions": self.admission.unnamed,
                    "pending_handshakes": self.responder.pending_count,
                    "responder": dict(self.responder.stats), "found": self._found(),
                    "reflexive": self.reflexive.snapshot(), "punch": self.punch.snapshot(),
                    **self.counters, **self.punch.stats}
        else:
            return super().handle(message)
        return None

    def _tick(self, every: bool = False) -> None:
        """Run the timers of the sessions whose deadline has come (``every``: all of them, as a TimerDue told from outside asks),
        expire half-open handshakes, restart crashed sessions whose backoff has passed; then sleep until the next deadline."""
        assert self.responder is not None
        now = time.monotonic()
        self.responder.expire(now)
        self._send([])  # the indices of expired half-open handshakes
        wakes, tick, due = self._wakes, m.TimerDue(), set()
        while wakes and wakes[0][0] <= now:
            due.add(heapq.heappop(wakes)[1])
        if every:
            due.update(self.specs)
        for urn in due:
            spec = self.specs.get(urn)
            if spec is not None:
                bounded_tell(spec.ref, tick, limit=64)
        for key in self.punch.expired(now):  # punch attempts that ran out: their probing sessions stop
            self._punch_gave_up(key)
        for key in self.punch.retries_due(now):  # relayed peers whose backoff passed: exchange again
            tell(self.refs.get("e2e"), m.ExchangeAgain(address_of(key)))
        if self._restarts is not None:
            for restart in self._restarts.due(now):  # crashed sessions whose backoff has passed
                self.handle(restart)
        if len(wakes) > 4 * len(self.specs) + 64:  # superseded deadlines pile up only if sessions keep moving theirs
            earliest: dict[str, float] = {}
            for when, urn in wakes:
                if urn in self.specs and when < earliest.get(urn, float("inf")):
                    earliest[urn] = when
            self._wakes = wakes = [(when, urn) for urn, when in earliest.items()]
            heapq.heapify(wakes)
        self._schedule()

    def _schedule(self) -> None:
        """Wake at the earliest session deadline, and while handshakes are half-open, when the oldest expires."""
        assert self.responder is not None and self._deadline_timer is not None
        expiry = self.responder.next_deadline()
        punch = self.punch.next_deadline()
        if punch is not None:
            expiry = punch if expiry is None else min(expiry, punch)
        if self._wakes:
            self._deadline_timer.at(self._wakes[0][0] if expiry is None else min(expiry, self._wakes[0][0]))
        elif expiry is not None:
            self._deadline_timer.at(expiry)

    def _front_door(self, items: list[tuple[bytes, m.Addr]]) -> None:
        responder = self.responder
        assert responder is not None
        now = time.monotonic()
        out: list[tuple[bytes, m.Addr]] = []
        for data, addr in items:
            try:
                header = decode_header(data)
                if header.ptype not in _FRONT_DOOR_TYPES:
                    self.counters["rx_unknown_receiver"] += 1
                    continue
                replies, result = responder.receive(header, data, addr, now)
            except RemoteProtocolError as exc:
                self.counters["rx_" + exc.metric] += 1
                if isinstance(exc, RateLimited):  # a source that proved its address: the reader drops its INITs
                    tell(self.refs.get("socket"), m.PenaltyBox(source_key(addr), responder.penalty_until(addr, now)))
                logger.debug("front door: dropped datagram from {}:{}: {}", addr[0], addr[1], exc)
                continue
            out.extend((r, addr) for r in replies)
            if result is not None:
                self._completed(result, canonical_endpoint(*addr), now)
        self._send(out)

    def _completed(self, result: HandshakeResult, addr: m.Addr, now: float) -> None:
        """A handshake we answered finished: give its keys to the peer's session, creating one if admitted."""
        key = result.remote_static
        urn = self.by_key.get(key)
        if urn is None:
            # Only a dialled session has no key yet or expects one (an inbound one learns its key right here).
            for spec_urn in self.dialling:
                spec = self.specs[spec_urn]
                if spec.endpoint == addr and spec.known_key is None:
                    urn = spec_urn
                    break
                if spec.endpoint == addr and spec.expected_key is not None and spec.expected_key != key:
                    logger.error(
                        "peer at {}:{} authenticated as {} but is configured with key {}: refused",
                        addr[0], addr[1], key.hex()[:16], spec.expected_key.hex()[:16],
                    )
                    self._refuse(result, "refused_key_mismatch", addr, now)
                    return
        if urn is None:
            named = key in self.named_keys
            decision = self.admission.decide(named=named, source=source_key(addr), now=now)
            if isinstance(decision, Refuse):
                self._refuse(result, decision.reason, addr, now)
                return
            if decision.evict is not None:
                self._evict(str(decision.evict), key, named)
            try:
                ref = self._spawn(addr, None, dial=False, named=named, inbound=True, found="inbound")
            except Exception as exc:  # no thread left, say: refuse this peer, keep the node
                logger.error("cannot start a session for {} at {}:{}: {!r}", key.hex()[:16], addr[0], addr[1], exc)
                self._refuse(result, "refused_spawn_failed")
                return
            urn = ref.actor_urn
        spec = self.specs[urn]
        spec.known_key = key
        self.by_key[key] = urn
        tell(self.refs.get("socket"), m.MoveIndex(result.local_index, self.actor_ref, spec.ref))
        tell(spec.ref, m.InstallKeys(result, addr))

    def _refuse(self, result: HandshakeResult, reason: str, addr: m.Addr | None = None, now: float = 0.0) -> None:
        """No session for this completed handshake: its index goes back, the refusal is counted (and logged,
        at most every REFUSAL_LOG_INTERVAL: a host minting keys must not flood the log)."""
        tell(self.refs.get("socket"), m.ReleaseIndex(result.local_index, self.actor_ref))
        self.counters[reason] += 1
        if addr is not None and self.responder is not None:
            self.responder.refused(addr, now)  # refusals are load: past a few, that source must earn cookies
        if addr is not None and now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged = now
            logger.warning("refusing peer {} at {}:{} ({}; {} sessions, {} of unnamed keys; counted in {})",
                           result.remote_static.hex()[:16], addr[0], addr[1], reason.replace("_", " "),
                           len(self.specs), self.admission.unnamed, reason)

    def _evict(self, urn: str, newcomer: bytes, named: bool) -> None:
        """Make room for a newcomer: stop the least recently active stranger of the source holding the most."""
        spec = self._forget(urn)
        if spec is None:
            return
        self.counters["evicted_for_named_peer" if named else "evicted_for_fair_share"] += 1
        logger.debug("evicting session {} at {}:{} to make room for {} {}", (spec.known_key or b"").hex()[:16],
                     spec.endpoint[0], spec.endpoint[1], "named peer" if named else "stranger", newcomer.hex()[:16])
        spec.ref.stop(block=False)
        if spec.known_key is not None:
            tell(self.refs.get("router"), m.SessionDown(spec.ref, spec.known_key, "evicted"))

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
        kept = self.specs.get(urn)
        if kept is not None and kept.found == "punched":
            self.punch.up(msg.peer_key, kept.endpoint)
            logger.info("direct session to {} at {}:{} (NAT traversal): traffic between us moves to it",
                        msg.peer_key.hex()[:16], *kept.endpoint)

    def _forget(self, urn: str) -> SessionSpec | None:
        spec = self.specs.pop(urn, None)
        self.dialling.discard(urn)
        self.admission.remove(urn)
        if spec is not None:
            if spec.known_key is not None and self.by_key.get(spec.known_key) == urn:
                del self.by_key[spec.known_key]
                self.reflexive.forget(spec.known_key)
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
        assert self._restarts is not None
        self._restarts.after(delay, m.RestartChild(msg.urn))

    def _restart(self, urn: str) -> None:
        spec = self._forget(urn)
        if spec is None:
            return
        # A restarted session lost its keys: it dials the peer it knew, expecting the key it had seen.
        self._spawn(spec.endpoint, spec.expected_key or spec.known_key, dial=True, named=spec.named,
                    inbound=spec.inbound, found=spec.found)
        logger.info("session to {}:{} restarted", *spec.endpoint)
        self.counters["session_restarts"] += 1

    def _observed(self, message: m.ObservedEndpoint) -> None:
        """A neighbour told us the endpoint it sees us at: kept (one report per neighbour with a session)."""
        if message.peer_key not in self.by_key:
            self.counters["observed_without_session"] += 1
            return
        previous = self.reflexive.reports.get(message.peer_key)
        self.reflexive.record(message.peer_key, message.endpoint, time.monotonic())
        if previous is None or previous.endpoint != message.endpoint:
            logger.info("peer {} sees us at {}:{}", message.peer_key.hex()[:16], *message.endpoint)
            self._tell_candidates()

    # --- NAT traversal (docs/PROTOCOL.md §8.2, axiomnet/punch.py) ------------------------------------------
    def _own_candidates(self) -> list[m.Addr]:
        """Where other nodes may dial us: what our neighbours see (most reported first), then our listen address,
        or, listening on a wildcard, the addresses of our interfaces (never the overlay's fc00::/8 ones)."""
        own = [endpoint for endpoint, _ in self.reflexive.endpoints()]
        if self.listen is None:
            return own
        host, port = self.listen
        if host not in ("::", "0.0.0.0", ""):
            return own + [canonical_endpoint(host, port)]
        import psutil  # only here: the core and most actors need no interface list

        v4 = host == "0.0.0.0"
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                ip = address.address.split("%", 1)[0]
                try:
                    parsed = ipaddress.ip_address(ip)
                except ValueError:
                    continue
                if (v4 and parsed.version != 4) or (parsed.version == 6 and parsed.packed[0] == 0xFC):
                    continue
                own.append((str(parsed), port))
        return own

    def _tell_candidates(self) -> None:
        """Tell the end-to-end actor our CANDIDATES message when it changed (it sends it to the nodes it talks to)."""
        payload = encode_candidates(self._own_candidates())
        if payload != self._candidates_told and payload[1] > 0:
            self._candidates_told = payload
            tell(self.refs.get("e2e"), m.LocalCandidates(payload))

    def _peer_candidates(self, message: m.PeerCandidates) -> None:
        """A node we hold an end-to-end session with says where it may be dialled: probe those endpoints with a link
        handshake pinned to its key (both sides do it at once: each NAT sees our datagrams go out first)."""
        key = message.peer_key
        if key == self.static_public:
            return
        if self.allowed_keys is not None and key not in self.allowed_keys:
            self.counters["punch_not_allowed"] += 1
            return
        now = time.monotonic()
        own = set(self._own_candidates())
        dial = self.punch.heard(key, list(message.endpoints), own, key in self.by_key, now)
        if not dial:
            return
        decision = self.admission.decide(named=False, source=source_key(dial[0]), now=now)
        if isinstance(decision, Refuse) or len(self.specs) >= self.max_sessions:
            reason = decision.reason if isinstance(decision, Refuse) else "refused_session_limit"
            self.punch.failed(key, now, f"admission refused a direct session ({reason})")
            return
        try:
            self._spawn(dial[0], key, dial=True, named=False, found="punched", candidates=dial[:MAX_CANDIDATES],
                        keepalive=PUNCH_KEEPALIVE, silent_after=PUNCH_SILENT_AFTER)
        except Exception as exc:  # no thread left, say: stay relayed, keep the node
            logger.error("cannot start a punch session for {}: {!r}", key.hex()[:16], exc)
            self.punch.failed(key, now, "could not start a session actor")
            return
        logger.info("NAT traversal: probing {} at {}", key.hex()[:16], ", ".join(f"{h}:{p}" for h, p in dial))
        self._schedule()

    def _punch_gave_up(self, key: bytes) -> None:
        """The attempt for ``key`` ran out: its probing session stops (no endless dial), traffic stays relayed."""
        urn = self.by_key.get(key)
        spec = self.specs.get(urn) if urn is not None else None
        if spec is not None and spec.found == "punched" and not spec.up:
            self._close(urn, "punch attempt timed out")  # type: ignore[arg-type]
        logger.info("NAT traversal to {}: {}; traffic stays relayed", key.hex()[:16], self.punch.peers[key].reason)

    def _punched_down(self, urn: str, spec: SessionSpec, reason: str) -> None:
        """A punched link died: closed (not re-dialled); the router and the TUN fall back to the overlay path."""
        if spec.known_key is not None:
            self.punch.down(spec.known_key, time.monotonic(), reason)
        logger.info("direct session to {} lost ({}): back to the overlay path",
                    (spec.known_key or b"").hex()[:16], reason)
        self._close(urn, reason)

    # --- discovered peers (actors/discovery.py) ------------------------------------------------------------
    def _discovered(self, message: Discovered) -> None:
        """A neighbour heard on the LAN for the first time: dial it (both sides do, as two static peers do; the
        simultaneous open of docs/PROTOCOL.md §3.2 makes one session of it), unless we already have a session
        for its key, its key is not allowed, or too many discovered dials are still unanswered."""
        heard = message.heard
        key = heard.public_key
        if key in self.by_key:
            spec = self.specs.get(self.by_key[key])
            if spec is not None and spec.found == "inbound":
                spec.found = "discovered"  # it dialled us first; it is the neighbour the beacon names
            self.counters["discovered_known"] += 1
            return
        if self.allowed_keys is not None and key not in self.allowed_keys:
            self.counters["discovered_not_allowed"] += 1
            return
        pending = sum(1 for spec in self.specs.values() if spec.found == "discovered" and not spec.up)
        if pending >= MAX_DISCOVERED_DIALS or len(self.specs) >= self.max_sessions:
            self.counters["discovered_over_limit"] += 1
            return
        endpoint = canonical_endpoint(*heard.endpoint)
        try:
            self._spawn(endpoint, key, dial=True, named=False, found="discovered")
        except Exception as exc:  # no thread left, say: not this neighbour, keep the node
            logger.error("cannot start a session for discovered {} at {}:{}: {!r}", key.hex()[:16], *endpoint, exc)
            self.counters["discovered_spawn_failed"] += 1
            return
        self.counters["discovered_dialled"] += 1
        logger.info("dialling discovered peer {} at {}:{}", key.hex()[:16], *endpoint)

    def _discovered_live(self, keys: frozenset[bytes]) -> None:
        """Stop dialling discovered peers whose beacons stopped and whose session is not up (an up session stays
        while it lives: its keepalives, not beacons, say whether the peer is there)."""
        for urn, spec in list(self.specs.items()):
            if spec.found == "discovered" and not spec.up and spec.expected_key not in keys:
                self._close(urn, "no longer discovered")
                self.counters["discovered_forgotten"] += 1

    def _found(self) -> dict[str, str]:
        """How each peer with a known key was found (public key hex -> static, runtime, discovered, inbound)."""
        return {spec.known_key.hex(): spec.found for spec in self.specs.values() if spec.known_key is not None}

    # --- which keys are named and allowed (configuration, static peers, SIGHUP) -----------------------
    def _name_keys(self) -> None:
        """Named keys get a slot whatever the bounds: every pinned static peer's and every key in allowed_keys.
        With allowed_keys set, nobody else gets a session at all (a pinned static peer always does)."""
        pinned = frozenset(p.public_key for p in self.static_peers if p.public_key is not None)
        self.named_keys = pinned | (self.configured_allowed or frozenset())
        self.allowed_keys = None if self.configured_allowed is None else self.named_keys
        if self.responder is not None:
            self.responder.allowed_keys = self.allowed_keys

    def _apply_named_keys(self) -> int:
        """After the named keys changed: tell every session the allowed keys (each checks them on its next
        handshake), reclassify sessions for admission, and close those whose key is no longer allowed (a
        static peer's session starts again, as at start-up: it dials, and is refused until its key is allowed).
        Returns how many sessions were closed."""
        self._name_keys()
        closed = 0
        now = time.monotonic()
        for urn, spec in list(self.specs.items()):
            key = spec.known_key or spec.expected_key
            if key is not None and self.allowed_keys is not None and key not in self.allowed_keys:
                logger.warning("closing the session of {} at {}:{}: its key is no longer allowed",
                               key.hex()[:16], *spec.endpoint)
                self._close(urn, "key no longer allowed")
                closed += 1
                if spec.dial and spec.found != "discovered":  # a configured peer stays configured: dialled again
                    self._spawn(spec.endpoint, spec.expected_key, dial=True, found=spec.found)
                continue
            tell(spec.ref, m.SetAllowedKeys(self.allowed_keys))
            named = (spec.dial and spec.found != "discovered") or (key is not None and key in self.named_keys)
            if named != spec.named:
                spec.named = named
                self.admission.add(urn, named=named, source=source_key(spec.endpoint), inbound=spec.inbound,
                                   now=now)
        self.counters["sessions_closed_not_allowed"] += closed
        return closed

    def _close(self, urn: str, reason: str) -> None:
        """Stop session ``urn`` for good (not restarted): forgotten, its routes withdrawn, its actor stopped."""
        removed = self._forget(urn)
        assert removed is not None
        if removed.up and removed.known_key is not None:
            tell(self.refs.get("router"), m.SessionDown(removed.ref, removed.known_key, reason))
        removed.ref.stop(block=False)

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
                self._name_keys()  # its pinned key is allowed before its session starts
                self._spawn(endpoint, spec.public_key, dial=True, found=message.origin)
            result["added"] = not known
        elif isinstance(message, m.RemovePeer):
            endpoint = canonical_endpoint(message.host, message.port)
            gone = [p for p in self.static_peers if canonical_endpoint(p.host, p.port) == endpoint]
            keys = {p.public_key for p in gone if p.public_key is not None}
            self.static_peers = tuple(p for p in self.static_peers if p not in gone)
            # The session may have roamed to another endpoint since: its pinned key still names it.
            urns = [urn for urn, spec in self.specs.items()
                    if spec.dial and spec.found != "discovered"
                    and (spec.endpoint == endpoint or spec.expected_key in keys)]
            for urn in urns:
                self._close(urn, "peer removed")
            result["removed"] = len(gone)
            result["sessions_closed"] = len(urns)
        elif isinstance(message, m.SetAllowedKeys):
            self.configured_allowed = message.keys
            result["sessions_closed"] = self._apply_named_keys()
            result["allowed_keys"] = None if message.keys is None else len(message.keys)
            return {**result, "peers": [str(p) for p in self.static_peers]}
        # A pinned static peer's key is named (and, under allowed_keys, allowed) while it is configured: adding
        # one closes nothing, removing one closes the other sessions of its key that allowed_keys does not list.
        if isinstance(message, m.AddPeer):
            self._apply_named_keys()
        elif isinstance(message, m.RemovePeer):
            result["sessions_closed"] += self._apply_named_keys()
        return {**result, "peers": [str(p) for p in self.static_peers]}
