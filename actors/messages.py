"""The messages actors exchange: small frozen dataclasses holding only immutable values and refs.

Data-path messages carry lists of bytes built by the sender and never touched again after the tell.
Messages of the control lane derive from :class:`Urgent`: every actor's mailbox serves them before any data
batch (actors/base.py), so heartbeats, announcements and session changes are never stuck or shed behind a
saturated data path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Addr = tuple[str, int]


class Urgent:
    """Marker: this message rides the control lane (served before data batches, bounded separately)."""

    __slots__ = ()


# --- supervision ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildFailed(Urgent):
    role: str
    urn: str
    error: str


@dataclass(frozen=True)
class RestartChild(Urgent):
    role: str


@dataclass(frozen=True)
class Rewire(Urgent):
    """``role`` was restarted; ``ref`` is the new actor."""

    role: str
    ref: Any


@dataclass(frozen=True)
class InjectFault:
    """Fault injection (only reachable with the daemon flag --fault-injection and AXIOMNET_FAULT_INJECTION=1)."""

    reason: str = "injected"


@dataclass(frozen=True)
class CorruptRelayed(Urgent):
    """Fault injection: flip one payload bit of the next ``count`` TRAFFIC packets this node relays."""

    count: int


@dataclass(frozen=True)
class ThreadCrashed(Urgent):
    name: str
    error: str


@dataclass(frozen=True)
class GetCounters(Urgent):
    """Ask any supervised actor for its counters (also how the supervisor waits for a child's start)."""


@dataclass(frozen=True)
class Fatal(Urgent):
    """Stop the daemon and exit non-zero."""

    reason: str


# --- data path -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Datagrams:
    """UDP datagrams received (socket reader -> session or peer manager)."""

    items: list[tuple[bytes, Addr]]


@dataclass(frozen=True)
class SendDatagrams:
    """UDP datagrams to send (session / peer manager -> socket)."""

    items: list[tuple[bytes, Addr]]


@dataclass(frozen=True)
class TunPackets:
    """IP packets read from the TUN device (tun reader -> e2e)."""

    packets: list[bytes]


@dataclass(frozen=True)
class ControlDatagrams(Urgent):
    """UDP datagrams of every type but DATA for one session (socket reader -> session), on the control lane."""

    items: list[tuple[bytes, Addr]]


@dataclass(frozen=True)
class RoutedToLink:
    """Routed packets to send over one link (router -> that peer's session)."""

    packets: list[bytes]


@dataclass(frozen=True)
class RelayDecisions(Urgent):
    """The router's relay decisions (axiomnet/fastpath.py RelayTable, immutable: a new one per change), router ->
    every link session: routed packets whose header it holds go from the session straight to the next hop's."""

    table: Any


@dataclass(frozen=True)
class WantSendPath(Urgent):
    """session -> socket: publish your SendPath to ``ref`` (now and whenever it changes), so that its datagrams
    leave from its own thread (actors/socket.py SendPath); forgotten at ReleaseOwner."""

    ref: Any


@dataclass(frozen=True)
class SendPathUpdate(Urgent):
    """socket -> a session that asked (WantSendPath): the socket's current SendPath (immutable; a new one per
    change), swapped in one assignment."""

    path: Any


@dataclass(frozen=True)
class RoutedFromLink:
    """Routed packets that arrived over the link to ``peer_key`` (session -> router)."""

    peer_key: bytes
    packets: list[bytes]


@dataclass(frozen=True)
class RouteOut:
    """End-to-end datagrams for the node that owns ``dst`` (e2e -> router)."""

    dst: bytes
    datagrams: list[bytes]


@dataclass(frozen=True)
class Delivered:
    """End-to-end datagrams routed to us, each with the routed header's source address (router -> e2e; or the
    session that decrypted them -> e2e, ``via_router`` False: the router has not heard of them, PathActivity)."""

    items: list[tuple[bytes, bytes]]
    via_router: bool = True


@dataclass(frozen=True)
class OriginRoutes(Urgent):
    """The router's origin decisions (axiomnet/fastpath.py OriginTable, immutable: a new one per change), router ->
    e2e: datagrams for a destination it holds go from the e2e actor straight to the next hop's session."""

    table: Any


@dataclass(frozen=True)
class PathActivity(Urgent):
    """What the router did not see of our end-to-end traffic (e2e -> router, at most every RING_TICK): sources we
    heard from (their latest time), destinations we sent to since we last heard them (the first such send), and
    how many datagrams went out and came in past it. It keeps the pathfinder's dead-path clocks (``sent``, ``heard``)
    and the forwarder's counters as if every datagram had crossed the router."""

    heard: tuple[tuple[bytes, float], ...]
    sent: tuple[tuple[bytes, float], ...]
    originated: int
    delivered: int


@dataclass(frozen=True)
class Resolve(Urgent):
    """Find the key of the node that owns ``dst`` (e2e -> router)."""

    dst: bytes


@dataclass(frozen=True)
class Resolved(Urgent):
    """``key`` (a verified Noise key) owns ``dst`` (router -> e2e)."""

    dst: bytes
    key: bytes


@dataclass(frozen=True)
class Unresolvable(Urgent):
    """The lookup of ``dst`` was given up (router -> e2e)."""

    dst: bytes


@dataclass(frozen=True)
class TunWrite:
    """IP packets to write into the TUN device (session -> tun)."""

    packets: list[bytes]


# --- control path --------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatTick(Urgent):
    """One heartbeat has passed: refresh the tree, expire silent neighbours (heartbeat -> router)."""

    now: float = 0.0


@dataclass(frozen=True)
class TimerDue(Urgent):
    """A deadline the receiver asked for has come: run its timers (deadline timer -> its owner; peer manager ->
    a session; told from outside, it runs every timer at once)."""


@dataclass(frozen=True)
class InstallKeys(Urgent):
    """A handshake the node completed as responder for this session's peer (peer manager -> session)."""

    result: Any  # axiomnet.session.HandshakeResult (frozen)
    addr: Addr


@dataclass(frozen=True)
class SendControl(Urgent):
    payload: bytes


@dataclass(frozen=True)
class SessionUp(Urgent):
    ref: Any
    peer_key: bytes
    endpoint: Addr
    static_peer: bool
    capabilities: tuple[str, ...] = ()  # what the peer announced in its handshake payload


@dataclass(frozen=True)
class SessionDown(Urgent):
    ref: Any
    peer_key: bytes | None
    reason: str


@dataclass(frozen=True)
class SessionGone(Urgent):
    """A session actor stopped for good (expired inbound peer)."""

    ref: Any
    peer_key: bytes | None


@dataclass(frozen=True)
class Announce(Urgent):
    """A tree announcement from the peer ``peer_key`` (session -> router)."""

    peer_key: bytes
    data: bytes


@dataclass(frozen=True)
class PeerSeen(Urgent):
    """An authenticated packet arrived from ``peer_key`` after the session told the router PeerSilent (session ->
    router, once per silence): its routes come back."""

    peer_key: bytes


@dataclass(frozen=True)
class PeerSilent(Urgent):
    """Nothing authenticated arrived from ``peer_key`` for PEER_DEAD_AFTER (session ``ref`` -> router, once per
    silence): the router withdraws its routes until it is heard again. Liveness is the session's timer, so a live
    link costs the router nothing (no message per packet heard, no scan of every neighbour per heartbeat)."""

    peer_key: bytes
    ref: Any


@dataclass(frozen=True)
class Probe(Urgent):
    """Send the peer an authenticated keepalive (router -> session of a neighbour marked dead)."""


@dataclass(frozen=True)
class BindIndex(Urgent):
    """Route receiver ``index`` to ``owner`` (who picked it), then send ``send``; if another owner holds the index,
    nothing is sent and ``owner`` is told IndexRefused (axiomnet/indices.py)."""

    index: int
    owner: Any
    send: tuple[tuple[bytes, Addr], ...] = ()


@dataclass(frozen=True)
class ReleaseIndex(Urgent):
    """Stop routing ``index`` (only if ``owner`` holds it; ``owner=None``: whoever holds it)."""

    index: int
    owner: Any = None


@dataclass(frozen=True)
class PenaltyBox(Urgent):
    """Drop HANDSHAKE_INITs from ``source`` (cookie.source_key) until ``until`` (time.monotonic()) in the reader:
    it met its rate limit after proving its address (peer manager -> socket; axiomnet/cookie.py penalised)."""

    source: bytes
    until: float


@dataclass(frozen=True)
class Snapshot(Urgent):
    """Ask an actor for its inspectable state (a JSON-ready dict)."""


@dataclass(frozen=True)
class ReleaseOwner(Urgent):
    """Forget every receiver index routed to ``owner`` (it crashed or stopped)."""

    owner: Any


@dataclass(frozen=True)
class ListSessions(Urgent):
    """Ask the peer manager for its session actors."""


@dataclass(frozen=True)
class GetRef(Urgent):
    """Ask the supervisor for the current ref of ``role``."""

    role: str


# --- receiver indices and admission (the front door) ---------------------------------------------
@dataclass(frozen=True)
class MoveIndex(Urgent):
    """Route ``index`` to ``new`` instead of ``old`` (a completed responder handshake changes hands); if a third
    owner holds it, ``new`` is told IndexRefused."""

    index: int
    old: Any
    new: Any


@dataclass(frozen=True)
class IndexRefused(Urgent):
    """The socket actor routes ``index`` to another owner: drop what was built on it, pick again."""

    index: int


@dataclass(frozen=True)
class SessionActive(Urgent):
    """A session heard its peer at ``heard_at`` (monotonic): the peer manager's least-recently-active order."""

    ref: Any
    heard_at: float


@dataclass(frozen=True)
class ObservedEndpoint(Urgent):
    """Session -> peer manager: the peer (``peer_key``) says it sees us at ``endpoint`` (our reflexive address,
    docs/PROTOCOL.md §8.1)."""

    peer_key: bytes
    endpoint: Addr


@dataclass(frozen=True)
class LocalCandidates(Urgent):
    """Peer manager -> end-to-end actor: our CANDIDATES control message (docs/PROTOCOL.md §8.2), to tell every
    node we hold an end-to-end session with."""

    payload: bytes


@dataclass(frozen=True)
class ExchangeAgain(Urgent):
    """Peer manager -> end-to-end actor: send our CANDIDATES to ``address`` again (a punch retry is due)."""

    address: bytes


@dataclass(frozen=True)
class PeerCandidates(Urgent):
    """End-to-end actor -> peer manager: the node whose key (authenticated end to end) is ``peer_key`` says it
    may be dialled at ``endpoints`` (docs/PROTOCOL.md §8.2)."""

    peer_key: bytes
    endpoints: tuple[Addr, ...]


# --- traffic between neighbours (docs/PROTOCOL.md §6.6) ----------------------------------------
@dataclass(frozen=True)
class NeighbourPackets:
    """IP packets from our TUN device for the address of this session's peer itself (tun reader -> session)."""

    packets: list[bytes]


@dataclass(frozen=True)
class NeighbourRoute(Urgent):
    """Packets for ``address`` may go straight to the session ``ref`` (its peer owns the address and takes IP
    packets over the link); ``ref=None``: not any more through ``via`` (session -> tun)."""

    address: bytes
    ref: Any
    via: Any = None


@dataclass(frozen=True)
class WakeAt(Urgent):
    """Run the timers of session ``ref`` at ``when`` (monotonic seconds): its next timer deadline (session -> peer manager)."""

    ref: Any
    when: float


# --- static peers at runtime (admin socket, SIGHUP) ---------------------------------------------
@dataclass(frozen=True)
class AddPeer(Urgent):
    """Ask the peer manager to dial a new static peer (a literal IP; names are resolved before)."""

    host: str
    port: int
    public_key: bytes | None = None
    origin: str = "runtime"  # how inspect says it was found: "runtime" (axiomnet peers add) or "static" (SIGHUP)


@dataclass(frozen=True)
class RemovePeer(Urgent):
    """Ask the peer manager to forget a static peer and close its session."""

    host: str
    port: int


@dataclass(frozen=True)
class SetAllowedKeys(Urgent):
    """Replace ``allowed_keys`` at runtime (SIGHUP): None lets any key in. Peer manager -> each session too."""

    keys: frozenset[bytes] | None


@dataclass(frozen=True)
class ListStaticPeers(Urgent):
    """Ask the peer manager for its static peers ("HOST:PORT[#KEY]" strings)."""
