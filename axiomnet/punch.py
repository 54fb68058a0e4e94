"""NAT traversal: the endpoint exchange and the punch plan (PROTOCOL §8.2). Pure: no sockets, no clock.

Two nodes that talk over the overlay hold an end-to-end session (§7): it authenticates the key that owns the
other's address. Each tells the other, as one end-to-end CONTROL message (CANDIDATES), the UDP endpoints it may be
reached at: its reflexive addresses (what its neighbours see, §8.1) and its local ones. The receiver then dials
those candidates with a link handshake pinned to that key, and the other side does the same at the same moment
(simultaneous open: each NAT sees traffic go out before the other's comes in).

A hostile peer can name any endpoint, so a candidate is **probed before it is trusted**: the only datagrams sent to
it are HANDSHAKE_INITs (mac1 keyed by the peer's key, 148 bytes), a bounded number of them
(:data:`PUNCH_ATTEMPT_TIME` of handshake retransmissions), to at most :data:`MAX_CANDIDATES` endpoints, at most one
attempt per peer per :data:`PUNCH_RETRY_INTERVAL` (doubling after each failure) and :data:`MAX_PUNCH_ATTEMPTS`
attempts at once. Nothing else goes there until a handshake from that endpoint authenticates the pinned key.
:class:`PunchPlanner` keeps those bounds and says, per peer, why traffic stays relayed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from axiomnet.constants import LINK_KEEPALIVE
from axiomnet.errors import MalformedPacket

CANDIDATES = 0x41  # end-to-end control type: "dial me at these endpoints" (PROTOCOL §8.2)
MAX_CANDIDATES = 4  # endpoints in one exchange, and dialled per attempt
PUNCH_ATTEMPT_TIME = 10.0  # s: a punch attempt's handshakes stop (and the attempt fails) after this
PUNCH_RETRY_INTERVAL = 30.0  # s: a peer's next attempt no sooner than this after the last one began (doubles)
PUNCH_RETRY_MAX = 600.0  # s: the cap of that backoff
MAX_PUNCH_ATTEMPTS = 8  # attempts in flight at once (each is one session actor)
MAX_PUNCH_PEERS = 256  # peers whose punch state is kept (the oldest forgotten first)
PUNCH_KEEPALIVE = LINK_KEEPALIVE  # s: a punched link sends a KEEPALIVE when it sent nothing for this long (NATs)
# s: a punched link that heard nothing this long goes down (traffic falls back). The peer sends at least a
# keepalive every LINK_KEEPALIVE (the tree no longer announces every tick): two may be lost.
PUNCH_SILENT_AFTER = 2.5 * LINK_KEEPALIVE
EXCHANGE_MIN_GAP = 5.0  # s: CANDIDATES to one end-to-end peer no more often than this
_FAMILY = {4: 4, 6: 16}

Endpoint = tuple[str, int]


def usable(host: str, port: int) -> bool:
    """Whether ``host:port`` may be a candidate: an IP literal, a real port, not unspecified, multicast, loopback
    or link-local (nothing that names a host of the receiver's own, or everyone)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (1 <= port <= 65535 and not (address.is_unspecified or address.is_multicast or address.is_loopback
                                        or address.is_link_local or address.is_reserved and address.version == 4))


def encode_candidates(endpoints: list[Endpoint]) -> bytes:
    """The CANDIDATES control message for the first :data:`MAX_CANDIDATES` usable ``endpoints`` (duplicates and
    unusable ones left out; IPv4-mapped IPv6 sent as IPv4)."""
    items: list[bytes] = []
    seen: set[Endpoint] = set()
    for host, port in endpoints:
        address = ipaddress.ip_address(host) if usable(host, port) else None
        if address is None:
            continue
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if (str(address), port) in seen:
            continue
        seen.add((str(address), port))
        items.append(struct.pack("!B", address.version) + address.packed + struct.pack("!H", port))
        if len(items) == MAX_CANDIDATES:
            break
    return struct.pack("!BB", CANDIDATES, len(items)) + b"".join(items)


def decode_candidates(payload: bytes) -> list[Endpoint]:
    """The endpoints of a CANDIDATES message; MalformedPacket for a wrong type, count, family, length or an
    endpoint that is not usable (see :func:`usable`)."""
    if len(payload) < 2 or payload[0] != CANDIDATES:
        raise MalformedPacket("not a CANDIDATES control message")
    count = payload[1]
    if count > MAX_CANDIDATES:
        raise MalformedPacket(f"CANDIDATES with {count} endpoints (at most {MAX_CANDIDATES})")
    out: list[Endpoint] = []
    at = 2
    for _ in range(count):
        size = _FAMILY.get(payload[at]) if at < len(payload) else None
        if size is None or len(payload) < at + 1 + size + 2:
            raise MalformedPacket("CANDIDATES truncated or of an unknown family")
        address = ipaddress.ip_address(payload[at + 1:at + 1 + size])
        port = struct.unpack("!H", payload[at + 1 + size:at + 3 + size])[0]
        at += 3 + size
        if not usable(str(address), port):
            raise MalformedPacket(f"CANDIDATES names {address} port {port}, not a dialable endpoint")
        if (str(address), port) not in out:
            out.append((str(address), port))
    if at != len(payload):
        raise MalformedPacket(f"CANDIDATES has {len(payload) - at} trailing bytes")
    return out


@dataclass
class PeerPunch:
    """One peer's punch state."""

    state: str = "idle"  # idle, probing, direct, relayed
    reason: str = ""  # why relayed (or what was last tried)
    candidates: tuple[Endpoint, ...] = ()
    started: float = 0.0
    next_try: float = 0.0
    backoff: float = field(default_factory=lambda: PUNCH_RETRY_INTERVAL)
    attempts: int = 0
    failures: int = 0
    asked: float = -1.0  # the next_try we already asked the peer for a new exchange at (once per value)


class PunchPlanner:
    """Decides which candidate exchanges become punch attempts, within the bounds of the module docstring."""

    def __init__(self, max_attempts: int = MAX_PUNCH_ATTEMPTS, max_peers: int = MAX_PUNCH_PEERS) -> None:
        self.max_attempts = max_attempts
        self.max_peers = max_peers
        self.peers: dict[bytes, PeerPunch] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            ("punch_candidates_heard", "punch_attempts", "punch_succeeded", "punch_failed", "punch_rate_limited",
             "punch_over_limit", "punch_no_candidate", "punch_already_direct", "punch_retries"), 0)

    def _peer(self, key: bytes) -> PeerPunch:
        peer = self.peers.pop(key, None) or PeerPunch()
        self.peers[key] = peer  # most recently used last
        while len(self.peers) > self.max_peers:
            oldest = next(iter(self.peers))
            if self.peers[oldest].state == "probing":  # never forget an attempt in flight: it would never end
                break
            del self.peers[oldest]
        return peer

    def heard(self, key: bytes, candidates: list[Endpoint], own: set[Endpoint], direct: bool,
              now: float) -> tuple[Endpoint, ...]:
        """The peer ``key`` (authenticated end to end) says it is at ``candidates``: the endpoints to dial now, or
        () (already direct, an attempt in flight or too recent, too many attempts at once, nothing usable)."""
        self.stats["punch_candidates_heard"] += 1
        peer = self._peer(key)
        # A little early is fine: the two sides' backoffs end together, and the one asked must not refuse the asker.
        if peer.state == "probing" or now < peer.next_try - EXCHANGE_MIN_GAP:
            self.stats["punch_rate_limited"] += 1
            return ()
        if direct:
            self.stats["punch_already_direct"] += 1
            return ()
        dial = tuple(c for c in candidates if c not in own and usable(*c))[:MAX_CANDIDATES]
        if not dial:
            self.stats["punch_no_candidate"] += 1
            peer.state, peer.reason = "relayed", "the peer named no endpoint we could dial"
            return ()
        if self.in_flight() >= self.max_attempts:
            self.stats["punch_over_limit"] += 1
            return ()
        peer.state, peer.candidates, peer.started = "probing", dial, now
        peer.next_try = now + peer.backoff
        peer.attempts += 1
        peer.reason = f"probing {len(dial)} candidate(s)"
        self.stats["punch_attempts"] += 1
        return dial

    def in_flight(self) -> int:
        return sum(1 for peer in self.peers.values() if peer.state == "probing")

    def expired(self, now: float) -> list[bytes]:
        """Peers whose attempt ran past :data:`PUNCH_ATTEMPT_TIME` without a direct session: now relayed."""
        gone = []
        for key, peer in list(self.peers.items()):
            if peer.state == "probing" and now >= peer.started + PUNCH_ATTEMPT_TIME:
                self.failed(key, now, f"no candidate answered within {PUNCH_ATTEMPT_TIME:.0f} s "
                                      f"({peer.failures + 1} attempt(s)): a NAT that maps each destination to "
                                      f"another port (symmetric) or filters, on either side")
                gone.append(key)
        return gone

    def failed(self, key: bytes, now: float, reason: str) -> None:
        peer = self._peer(key)
        peer.state, peer.reason = "relayed", reason
        peer.failures += 1  # the next attempt waits for next_try, set when this one began; the one after, longer
        peer.backoff = min(PUNCH_RETRY_MAX, peer.backoff * 2)
        self.stats["punch_failed"] += 1

    def retries_due(self, now: float) -> list[bytes]:
        """Relayed peers whose backoff has passed: ask each (once per backoff) for a new exchange, so that both
        sides try again together (the answer to our CANDIDATES brings theirs)."""
        due = []
        for key, peer in self.peers.items():
            if peer.state == "relayed" and now >= peer.next_try and peer.asked != peer.next_try:
                peer.asked = peer.next_try
                due.append(key)
        self.stats["punch_retries"] += len(due)
        return due

    def next_deadline(self) -> float | None:
        ends = [peer.started + PUNCH_ATTEMPT_TIME if peer.state == "probing" else peer.next_try
                for peer in self.peers.values()
                if peer.state == "probing" or (peer.state == "relayed" and peer.asked != peer.next_try)]
        return min(ends, default=None)

    def up(self, key: bytes, endpoint: Endpoint) -> None:
        """A punched link session to ``key`` is up at ``endpoint``."""
        peer = self._peer(key)
        if peer.state != "direct":
            self.stats["punch_succeeded"] += 1
        peer.state, peer.reason, peer.backoff = "direct", f"direct at {_text(endpoint)}", PUNCH_RETRY_INTERVAL

    def down(self, key: bytes, now: float, why: str) -> None:
        """The punched link session went down: traffic is relayed again (a new exchange may punch again later)."""
        peer = self.peers.get(key)
        if peer is not None and peer.state == "direct":
            peer.state, peer.reason = "relayed", f"direct session lost ({why}); relayed until the next exchange"
            peer.next_try = now + EXCHANGE_MIN_GAP

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {key.hex(): {"state": peer.state, "reason": peer.reason, "attempts": peer.attempts,
                            "candidates": [_text(c) for c in peer.candidates]}
                for key, peer in self.peers.items()}


def _text(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
