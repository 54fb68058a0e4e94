"""Address -> coordinates: lookups, their signed replies, the cache and the packets waiting (pure, no I/O).

A source knows only a destination's fc00::/8 address. The :class:`Pathfinder` (ironwood's pathfinder.go) keeps
a bounded cache of destinations' coordinates; a packet for a destination not in it waits in a small bounded
queue (oldest dropped, counted) while a LOOKUP travels down the tree links whose bloom filters hold the address
(axiomnet/tree.py). The owner answers with a LOOKUP_REPLY routed greedily back: its Ed25519 key, its root and
a signature over (root, its path, its address, the lookup's nonce). The asker accepts a reply only for a nonce
it sent, only if the key hashes to the address it asked for and only if the signature holds; then the queue is
flushed. A PATH_BROKEN from a relay drops the cached entry and starts a new lookup. Payloads (docs/PROTOCOL.md
§6.2)::

    LOOKUP        u32 nonce
    LOOKUP_REPLY  32B owner Ed25519 key | 32B root key | u32 nonce | 64B signature over
                  COORDS_STATEMENT || root || u16 path length || path (u16 each) || owner address || nonce
    PATH_BROKEN   16B the address that could not be reached
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions

from axiomnet.announce import sign
from axiomnet.constants import (
    LOOKUP_CACHE_TTL,
    LOOKUP_GIVE_UP,
    LOOKUP_RETRY,
    MAX_LOOKUP_CACHE,
    MAX_PENDING_LOOKUPS,
    MAX_QUEUED_PER_DESTINATION,
)
from axiomnet.errors import InvalidAnnouncement, MalformedPacket
from axiomnet.identity import derive_address, noise_key_of
from axiomnet.routed import RoutedHeader, root_tag

COORDS_STATEMENT = b"axn-crds"
_NONCE = struct.Struct(">I")
_REPLY = struct.Struct(">32s32sI64s")
ADDRESS_SIZE = 16


@dataclass(frozen=True, slots=True)
class Coords:
    """Where a node sits: its tree's root key and its path of ports."""

    root: bytes
    path: tuple[int, ...]


def coords_statement(root: bytes, path: tuple[int, ...], address: bytes, nonce: int) -> bytes:
    """What a node signs to answer a lookup for its address."""
    return (COORDS_STATEMENT + root + struct.pack(f">H{len(path)}H", len(path), *path) + address
            + _NONCE.pack(nonce))


def encode_lookup(nonce: int) -> bytes:
    """LOOKUP payload."""
    return _NONCE.pack(nonce)


def decode_lookup(payload: bytes) -> int:
    """The nonce of a LOOKUP payload; MalformedPacket if it is not 4 bytes."""
    if len(payload) != _NONCE.size:
        raise MalformedPacket(f"lookup payload of {len(payload)} bytes (expected 4)")
    return int(_NONCE.unpack(payload)[0])


def encode_reply(signing_secret: bytes, signing_key: bytes, coords: Coords, address: bytes, nonce: int) -> bytes:
    """LOOKUP_REPLY payload: our key, root, the nonce and our signature over our coordinates."""
    sig = sign(signing_secret, coords_statement(coords.root, coords.path, address, nonce))
    return _REPLY.pack(signing_key, coords.root, nonce, sig)


def encode_path_broken(address: bytes) -> bytes:
    """PATH_BROKEN payload: the address a relay could not make progress towards."""
    return address


def decode_path_broken(payload: bytes) -> bytes:
    """The unreachable address of a PATH_BROKEN payload; MalformedPacket if it is not 16 bytes."""
    if len(payload) != ADDRESS_SIZE:
        raise MalformedPacket(f"path-broken payload of {len(payload)} bytes (expected 16)")
    return bytes(payload)


@dataclass
class _Entry:
    coords: Coords
    key: bytes
    expires: float


@dataclass
class _Pending:
    nonce: int
    started: float
    sent_at: float
    queue: deque[bytes] = field(default_factory=lambda: deque())


_STATS = ("lookups_sent", "lookup_retries", "replies_accepted", "replies_rejected", "queued", "queue_dropped",
          "gave_up", "gave_up_dropped", "pending_refused", "path_broken", "cache_expired")


class Pathfinder:
    """The lookup cache, the lookups in flight and the packets waiting for them."""

    def __init__(self, address: bytes, signing_secret: bytes, signing_key: bytes,
                 rng: random.Random | None = None) -> None:
        self.address = address
        self._secret = signing_secret
        self._key = signing_key
        self._rng = rng if rng is not None else random.Random()
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, _Pending] = {}
        self.given_up: list[bytes] = []  # destinations given up since the owner last drained this
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)

    # --- the asker's side ----------------------------------------------------------------------------
    def route(self, dst: bytes, now: float) -> Coords | None:
        """Cached coordinates of ``dst`` if fresh (an expired entry is dropped)."""
        entry = self._cache.get(dst)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._cache[dst]
            self.stats["cache_expired"] += 1
            return None
        self._cache.move_to_end(dst)
        return entry.coords

    def wait(self, dst: bytes, payloads: Iterable[bytes], now: float) -> int | None:
        """Queue ``payloads`` for ``dst`` until its coordinates are known; the nonce of a LOOKUP to send now,
        or None (one is in flight, or the pending table is full and the payloads were dropped)."""
        pending = self._pending.get(dst)
        start = pending is None
        if pending is None:
            if len(self._pending) >= MAX_PENDING_LOOKUPS:
                dropped = sum(1 for _ in payloads)
                self.stats["pending_refused"] += 1
                self.stats["queue_dropped"] += dropped
                return None
            pending = _Pending(self._rng.getrandbits(32), now, now)
            self._pending[dst] = pending
        queue = pending.queue
        for payload in payloads:
            if len(queue) >= MAX_QUEUED_PER_DESTINATION:
                queue.popleft()
                self.stats["queue_dropped"] += 1
            queue.append(payload)
            self.stats["queued"] += 1
        if start:
            self.stats["lookups_sent"] += 1
            return pending.nonce
        return None

    def due(self, now: float) -> list[tuple[bytes, int]]:
        """Lookups to send again (no reply within LOOKUP_RETRY) as (address, nonce); destinations unanswered
        for LOOKUP_GIVE_UP are given up and their queued packets dropped (counted)."""
        out = []
        for dst, pending in list(self._pending.items()):
            if now - pending.started >= LOOKUP_GIVE_UP:
                del self._pending[dst]
                self.given_up.append(dst)
                self.stats["gave_up"] += 1
                self.stats["gave_up_dropped"] += len(pending.queue)
            elif now - pending.sent_at >= LOOKUP_RETRY:
                pending.sent_at = now
                self.stats["lookup_retries"] += 1
                out.append((dst, pending.nonce))
        return out

    def accept(self, header: RoutedHeader, payload: bytes, now: float) -> tuple[bytes, list[bytes]]:
        """Take a LOOKUP_REPLY addressed to us: (the destination, its queued payloads to send now).

        Raises a RemoteProtocolError unless it answers a lookup in flight with a valid signature by a key that
        owns the address asked for.
        """
        try:
            return self._accept(header, payload, now)
        except (MalformedPacket, InvalidAnnouncement):
            self.stats["replies_rejected"] += 1
            raise

    def _accept(self, header: RoutedHeader, payload: bytes, now: float) -> tuple[bytes, list[bytes]]:
        if len(payload) != _REPLY.size:
            raise MalformedPacket(f"lookup reply payload of {len(payload)} bytes (expected {_REPLY.size})")
        key, root, nonce, sig = _REPLY.unpack(payload)
        owner = header.src
        pending = self._pending.get(owner)
        if pending is None or pending.nonce != nonce:
            raise InvalidAnnouncement("lookup reply for no lookup in flight")
        try:
            owns = derive_address(noise_key_of(key)).packed == owner
        except ValueError:
            owns = False
        if not owns:
            raise InvalidAnnouncement("lookup reply's key does not own the address asked for")
        if root_tag(root) != header.root_tag:
            raise InvalidAnnouncement("lookup reply's root does not match its header")
        statement = coords_statement(root, header.src_path, owner, nonce)
        try:
            nacl.bindings.crypto_sign_open(sig + statement, key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            raise InvalidAnnouncement("bad signature on a lookup reply") from None
        del self._pending[owner]
        self._remember(owner, Coords(root, header.src_path), key, now)
        self.stats["replies_accepted"] += 1
        return owner, list(pending.queue)

    def _remember(self, dst: bytes, coords: Coords, key: bytes, now: float) -> None:
        self._cache[dst] = _Entry(coords, key, now + LOOKUP_CACHE_TTL)
        self._cache.move_to_end(dst)
        while len(self._cache) > MAX_LOOKUP_CACHE:
            self._cache.popitem(last=False)

    def take(self, dst: bytes) -> list[bytes] | None:
        """End the lookup of ``dst`` (its node became reachable another way); its queued payloads, or None if
        there was no lookup in flight."""
        pending = self._pending.pop(dst, None)
        return None if pending is None else list(pending.queue)

    def key_for(self, dst: bytes, now: float) -> bytes | None:
        """The verified Ed25519 key of ``dst`` if its cache entry is fresh."""
        entry = self._cache.get(dst)
        return entry.key if entry is not None and now < entry.expires else None

    def broken(self, dst: bytes, now: float) -> int | None:
        """A relay reported the path to ``dst`` broken: forget its coordinates; the nonce of a new LOOKUP to
        send, or None if one is already in flight."""
        self.stats["path_broken"] += 1
        self._cache.pop(dst, None)
        return self.wait(dst, (), now) if dst not in self._pending else None

    def forget(self, dst: bytes) -> None:
        """Drop what we know of ``dst`` (its cache entry; a lookup in flight continues)."""
        self._cache.pop(dst, None)

    # --- the owner's side ----------------------------------------------------------------------------
    def answer(self, nonce: int, coords: Coords) -> bytes:
        """Our LOOKUP_REPLY payload for a LOOKUP of our address with ``nonce``, at ``coords``."""
        return encode_reply(self._secret, self._key, coords, self.address, nonce)

    # --- inspection ----------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, object]:
        """JSON-ready view for axiomnet-inspect: the cache and the lookups in flight."""
        return {
            "cache": [
                {"address": _ip(dst), "root": e.coords.root.hex()[:16], "coords": list(e.coords.path),
                 "expires_in": round(e.expires - now, 1)}
                for dst, e in self._cache.items()
            ],
            "pending": [
                {"address": _ip(dst), "age": round(now - p.started, 2), "queued": len(p.queue)}
                for dst, p in self._pending.items()
            ],
            **self.stats,
        }


def _ip(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))
