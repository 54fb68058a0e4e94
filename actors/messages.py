"""The messages actors exchange: small frozen dataclasses holding only immutable values and refs.

Data-path messages carry lists of bytes built by the sender and never touched again after the tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Addr = tuple[str, int]


# --- supervision ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildFailed:
    role: str
    urn: str
    error: str


@dataclass(frozen=True)
class RestartChild:
    role: str


@dataclass(frozen=True)
class Rewire:
    """``role`` was restarted; ``ref`` is the new actor."""

    role: str
    ref: Any


@dataclass(frozen=True)
class InjectFault:
    """Fault injection (only reachable with the daemon flag --fault-injection and AXIOMNET_FAULT_INJECTION=1)."""

    reason: str = "injected"


@dataclass(frozen=True)
class ThreadCrashed:
    name: str
    error: str


@dataclass(frozen=True)
class GetCounters:
    """Ask any supervised actor for its counters (also how the supervisor waits for a child's start)."""


@dataclass(frozen=True)
class Fatal:
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
    """IP packets read from the TUN device (tun reader -> router), or to forward (router -> session)."""

    packets: list[bytes]


@dataclass(frozen=True)
class RelayPackets:
    """IP packets a session received whose destination is another node (session -> router)."""

    packets: list[bytes]


@dataclass(frozen=True)
class TunWrite:
    """IP packets to write into the TUN device (session -> tun)."""

    packets: list[bytes]


# --- control path --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    now: float = 0.0


@dataclass(frozen=True)
class InstallKeys:
    """A handshake the node completed as responder for this session's peer (peer manager -> session)."""

    result: Any  # axiomnet.session.HandshakeResult (frozen)
    addr: Addr


@dataclass(frozen=True)
class SendControl:
    payload: bytes


@dataclass(frozen=True)
class SessionUp:
    ref: Any
    peer_key: bytes
    endpoint: Addr
    static_peer: bool


@dataclass(frozen=True)
class SessionDown:
    ref: Any
    peer_key: bytes | None
    reason: str


@dataclass(frozen=True)
class SessionGone:
    """A session actor stopped for good (expired inbound peer)."""

    ref: Any
    peer_key: bytes | None


@dataclass(frozen=True)
class PeerHeartbeat:
    peer_key: bytes
    seq: int
    coords: Any  # axiomnet.geometry.Coords (frozen)
    load: float


@dataclass(frozen=True)
class HeartbeatInfo:
    """Ask the router for what a heartbeat carries and whom to send it to."""


@dataclass(frozen=True)
class CheckLiveness:
    now: float


@dataclass(frozen=True)
class ClaimIndex:
    owner: Any


@dataclass(frozen=True)
class BindIndex:
    index: int
    owner: Any


@dataclass(frozen=True)
class ReleaseIndex:
    index: int


@dataclass(frozen=True)
class Snapshot:
    """Ask an actor for its inspectable state (a JSON-ready dict)."""


@dataclass(frozen=True)
class ReleaseOwner:
    """Forget every receiver index routed to ``owner`` (it crashed or stopped)."""

    owner: Any


@dataclass(frozen=True)
class ListSessions:
    """Ask the peer manager for its session actors."""


@dataclass(frozen=True)
class GetRef:
    """Ask the supervisor for the current ref of ``role``."""

    role: str


# --- static peers at runtime (admin socket, SIGHUP) ---------------------------------------------
@dataclass(frozen=True)
class AddPeer:
    """Ask the peer manager to dial a new static peer (a literal IP; names are resolved before)."""

    host: str
    port: int
    public_key: bytes | None = None


@dataclass(frozen=True)
class RemovePeer:
    """Ask the peer manager to forget a static peer and close its session."""

    host: str
    port: int


@dataclass(frozen=True)
class ListStaticPeers:
    """Ask the peer manager for its static peers ("HOST:PORT[#KEY]" strings)."""
