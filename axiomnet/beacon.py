"""LAN discovery beacons: the codec, the group MAC, and what a listener keeps (bounded) about who it heard.

A node with discovery on sends one 56-byte beacon per interval on each chosen interface (IPv6 link-local
multicast to ``BEACON_GROUP6``, IPv4 broadcast where the interface has no IPv6); it says what a neighbour
needs to dial it: its Noise static public key, its UDP port and its protocol version (docs/PROTOCOL.md §8).
A beacon is authenticated by a MAC keyed by the group secret (none configured: the empty secret, the "open"
group); a beacon whose MAC does not verify is of another group (or forged) and is ignored and counted.

What a listener keeps is bounded: at most ``MAX_BEACON_PEERS`` heard keys, at most ``MAX_BEACON_SOURCES``
per-source rate entries (one beacon per ``BEACON_MIN_GAP`` per source address; faster ones are dropped and
counted), and nothing else: no session, no handshake state, no reply. Dialling is the actors' business.

Pure: no sockets, no clock (``now`` is passed in), no files.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Hashable

from axiomnet.constants import PROTOCOL_VERSION
from axiomnet.errors import MalformedPacket

BEACON_MAGIC = b"AXNB"
BEACON_FORMAT = 1  # the beacon layout's own version (byte 4); the overlay protocol's version is byte 5
BEACON_SIZE = 56  # magic 4, format 1, protocol 1, port 2, public key 32, mac 16
BEACON_MAC_SIZE = 16
_BODY = struct.Struct("!4sBBH32s")  # the 40 bytes the MAC covers
BEACON_GROUP6 = "ff02::a7f1"  # link-local scope multicast group (IPv6)
BEACON_PORT = 7444  # UDP port beacons are sent to (the overlay's default port + 1)
DEFAULT_BEACON_INTERVAL = 1.0  # seconds between two beacons on one interface
MIN_BEACON_INTERVAL = 0.2
MAX_BEACON_INTERVAL = 60.0
BEACON_MIN_GAP = 0.1  # a source sending faster than one beacon per this many seconds is rate limited
BEACON_EXPIRY_INTERVALS = 5  # a key not heard for this many of our intervals is forgotten (not dialled again)
MAX_BEACON_PEERS = 64  # keys remembered at once (the oldest heard is dropped for a new one)
MAX_BEACON_SOURCES = 256  # per-source rate entries (least recently used dropped)
_GROUP_PERSON = b"axn-bgrp"
_MAC_PERSON = b"axn-bmac"


def group_key(secret: bytes | None) -> bytes:
    """The 32-byte MAC key of a discovery group: BLAKE2s-256(secret, person="axn-bgrp"); no secret is b""."""
    return hashlib.blake2s(secret or b"", digest_size=32, person=_GROUP_PERSON).digest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2s(body, digest_size=BEACON_MAC_SIZE, key=key, person=_MAC_PERSON).digest()


@dataclass(frozen=True)
class Beacon:
    """A decoded beacon: what the sender says one needs to dial it."""

    public_key: bytes
    port: int
    protocol: int


class WrongGroup(MalformedPacket):
    """The beacon's MAC does not verify under our group key: another group's beacon, or a forged one."""


def encode_beacon(public_key: bytes, port: int, key: bytes, protocol: int = PROTOCOL_VERSION) -> bytes:
    """Our beacon: the 40-byte body and its MAC under the group ``key``; ValueError for a bad argument (ours)."""
    if len(public_key) != 32:
        raise ValueError("a beacon carries a 32-byte public key")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if not 0 <= protocol <= 255:
        raise ValueError(f"protocol version {protocol} out of range")
    body = _BODY.pack(BEACON_MAGIC, BEACON_FORMAT, protocol, port, public_key)
    return body + _mac(key, body)


def decode_beacon(data: bytes, key: bytes) -> Beacon:
    """The beacon in ``data``; MalformedPacket (size, magic, format, port 0) or WrongGroup (MAC) otherwise.
    The MAC is checked before any field but the size is read (a forged beacon says nothing)."""
    if len(data) != BEACON_SIZE:
        raise MalformedPacket(f"beacon of {len(data)} bytes (expected {BEACON_SIZE})")
    body, mac = data[:_BODY.size], data[_BODY.size:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise WrongGroup("beacon MAC does not verify under our group key")
    magic, fmt, protocol, port, public_key = _BODY.unpack(body)
    if magic != BEACON_MAGIC:
        raise MalformedPacket("beacon magic is not AXNB")
    if fmt != BEACON_FORMAT:
        raise MalformedPacket(f"beacon format {fmt} (expected {BEACON_FORMAT})")
    if port == 0:
        raise MalformedPacket("beacon port 0")
    return Beacon(public_key, port, protocol)


@dataclass(frozen=True)
class Heard:
    """A neighbour worth dialling: its key, the endpoint to dial (the beacon's source host, its port) and the
    interface it was heard on."""

    public_key: bytes
    endpoint: tuple[str, int]
    interface: str


@dataclass
class _Entry:
    heard: Heard
    last: float


class BeaconListener:
    """What a node keeps about the beacons it hears: bounded, per-source rate limited, first endpoint wins.

    ``receive`` returns a :class:`Heard` the first time a key is heard (or when its endpoint changed after the
    old one was forgotten), None otherwise; ``live(now)`` is every key heard within the expiry. Each outcome is
    counted in ``stats`` (``beacons_accepted``, ``beacons_new``, ``beacons_other_group``, ``beacons_malformed``,
    ``beacons_wrong_version``, ``beacons_own``, ``beacons_rate_limited``, ``beacons_endpoint_conflict``,
    ``beacons_table_full_evicted``).
    """

    def __init__(self, own_key: bytes, key: bytes, *, interval: float = DEFAULT_BEACON_INTERVAL,
                 protocol: int = PROTOCOL_VERSION, max_peers: int = MAX_BEACON_PEERS,
                 max_sources: int = MAX_BEACON_SOURCES, min_gap: float = BEACON_MIN_GAP) -> None:
        self.own_key = own_key
        self.key = key
        self.protocol = protocol
        self.expiry = BEACON_EXPIRY_INTERVALS * interval
        self.max_peers = max_peers
        self.max_sources = max_sources
        self.min_gap = min_gap
        self.peers: OrderedDict[bytes, _Entry] = OrderedDict()  # by key, oldest heard first
        self._sources: OrderedDict[Hashable, float] = OrderedDict()  # source -> last accepted, LRU order
        self.stats: Counter[str] = Counter()

    def receive(self, data: bytes, host: str, interface: str, now: float) -> Heard | None:
        """One datagram from ``host`` on ``interface``; a Heard when a key is new (to dial), else None."""
        source = (host, interface)
        last = self._sources.get(source)
        if last is not None and now - last < self.min_gap:
            self.stats["beacons_rate_limited"] += 1
            return None
        self._sources[source] = now  # every datagram spends the source's budget, good or bad
        self._sources.move_to_end(source)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        try:
            beacon = decode_beacon(data, self.key)
        except WrongGroup:
            self.stats["beacons_other_group"] += 1
            return None
        except MalformedPacket:
            self.stats["beacons_malformed"] += 1
            return None
        if beacon.public_key == self.own_key:
            self.stats["beacons_own"] += 1
            return None
        if beacon.protocol != self.protocol:
            self.stats["beacons_wrong_version"] += 1
            return None
        self.stats["beacons_accepted"] += 1
        heard = Heard(beacon.public_key, (host, beacon.port), interface)
        entry = self.peers.get(beacon.public_key)
        if entry is not None and now - entry.last <= self.expiry:
            if entry.heard != heard:  # the same key from elsewhere while the first is fresh: keep the first
                self.stats["beacons_endpoint_conflict"] += 1
                return None
            entry.last = now
            self.peers.move_to_end(beacon.public_key)
            return None
        self.peers[beacon.public_key] = _Entry(heard, now)
        self.peers.move_to_end(beacon.public_key)
        while len(self.peers) > self.max_peers:
            self.peers.popitem(last=False)
            self.stats["beacons_table_full_evicted"] += 1
        self.stats["beacons_new"] += 1
        return heard

    def expire(self, now: float) -> list[Heard]:
        """Forget keys not heard within the expiry; returns them."""
        gone = [key for key, entry in self.peers.items() if now - entry.last > self.expiry]
        return [self.peers.pop(key).heard for key in gone]

    def live(self, now: float) -> tuple[Heard, ...]:
        """Every key heard within the expiry, oldest heard first."""
        return tuple(entry.heard for entry in self.peers.values() if now - entry.last <= self.expiry)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        return [{"public_key": e.heard.public_key.hex(), "endpoint": f"{e.heard.endpoint[0]}:{e.heard.endpoint[1]}",
                 "interface": e.heard.interface, "heard_ago": round(now - e.last, 3)} for e in self.peers.values()]
