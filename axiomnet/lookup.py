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

The root-independent fallback (docs/ROUTING.md §4.1, docs/PROTOCOL.md §6.7): a tree lookup unanswered for
RING_AFTER, or a route over which nothing came back for DEAD_PATH_AFTER, starts an expanding-ring search over
every link (TTL 2, 4, 8, .. RING_MAX_TTL), rate-limited per destination (RING_INTERVAL) and in all
(RING_SOURCE_RATE); the owner's signed RING_REPLY brings the path the search took, which becomes a source route
(kept while something comes back over it)::

    RING_SEARCH   u32 nonce | u8 TTL | 32B origin Ed25519 key | 64B signature over
                  RING_STATEMENT || target address || origin address || nonce
    RING_REPLY    32B owner Ed25519 key | u32 nonce | 64B signature over
                  RING_REPLY_STATEMENT || origin address || owner address || nonce
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
    DEAD_PATH_AFTER,
    LOOKUP_CACHE_TTL,
    LOOKUP_FIRST_RETRY,
    LOOKUP_GIVE_UP,
    LOOKUP_RETRY,
    MAX_CACHED_PORTS,
    MAX_LOOKUP_CACHE,
    MAX_PENDING_LOOKUPS,
    MAX_QUEUED_PER_DESTINATION,
    MAX_SOURCE_ROUTES,
    QUEUE_MAX_WAIT,
    RING_AFTER,
    RING_FIRST_TTL,
    RING_INTERVAL,
    RING_MAX_TTL,
    RING_SOURCE_BURST,
    RING_SOURCE_RATE,
    RING_STEP,
    RING_STEP_MAX,
    RING_STEP_MIN,
    SOURCE_ROUTE_IDLE,
)
from axiomnet.errors import InvalidAnnouncement, MalformedPacket
from axiomnet.identity import derive_address, noise_key_of
from axiomnet.routed import RoutedHeader, root_tag

COORDS_STATEMENT = b"axn-crds"
RING_STATEMENT = b"axn-ring"
RING_REPLY_STATEMENT = b"axn-rrep"
_NONCE = struct.Struct(">I")
_REPLY = struct.Struct(">32s32sI64s")
_RING = struct.Struct(">IH32s64s")  # u16 TTL: RING_MAX_TTL is MAX_TREE_DEPTH (655) under protocol 2
_RING_REPLY = struct.Struct(">32sI64s")
ADDRESS_SIZE = 16


@dataclass(frozen=True, slots=True)
class RingSearch:
    """A decoded RING_SEARCH payload."""

    nonce: int
    ttl: int
    key: bytes  # the origin's Ed25519 key
    sig: bytes


def encode_ring(signing_secret: bytes, signing_key: bytes, target: bytes, origin: bytes, nonce: int,
                ttl: int) -> bytes:
    """RING_SEARCH payload: the nonce, the round's TTL, our key and our signature over (target, us, nonce)."""
    sig = sign(signing_secret, RING_STATEMENT + target + origin + _NONCE.pack(nonce))
    return _RING.pack(nonce, ttl, signing_key, sig)


def decode_ring(payload: bytes) -> RingSearch:
    """A RING_SEARCH payload; MalformedPacket if it is not 102 bytes or its TTL is out of range."""
    if len(payload) != _RING.size:
        raise MalformedPacket(f"ring search payload of {len(payload)} bytes (expected {_RING.size})")
    nonce, ttl, key, sig = _RING.unpack(payload)
    if not 1 <= ttl <= RING_MAX_TTL:
        raise MalformedPacket(f"ring search TTL {ttl} out of range")
    return RingSearch(nonce, ttl, key, sig)


def _owns(key: bytes, address: bytes) -> bool:
    try:
        return derive_address(noise_key_of(key)).packed == address
    except ValueError:
        return False


def _verify(key: bytes, sig: bytes, statement: bytes) -> None:
    try:
        nacl.bindings.crypto_sign_open(sig + statement, key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise InvalidAnnouncement("bad signature") from None


def verify_ring(search: RingSearch, target: bytes, origin: bytes) -> None:
    """InvalidAnnouncement unless the search's key owns ``origin`` and its signature holds (the target checks)."""
    if not _owns(search.key, origin):
        raise InvalidAnnouncement("ring search's key does not own its origin address")
    _verify(search.key, search.sig, RING_STATEMENT + target + origin + _NONCE.pack(search.nonce))


def ring_step(ttl: int) -> float:
    """How long a ring round of ``ttl`` waits for an answer before the next, wider one."""
    return min(RING_STEP_MAX, max(RING_STEP_MIN, RING_STEP * ttl))


def expire_waiting(queue: deque[tuple[float, bytes]], now: float, stats: dict[str, int]) -> None:
    """Drop (counting ``queue_expired``) what waited in ``queue`` of (queued at, packet) past QUEUE_MAX_WAIT."""
    while queue and now - queue[0][0] > QUEUE_MAX_WAIT:
        queue.popleft()
        stats["queue_expired"] += 1


def release_waiting(queue: deque[tuple[float, bytes]], now: float, stats: dict[str, int]) -> list[bytes]:
    """What waited behind a forming route (a lookup, a key), to send now: all but what waited past QUEUE_MAX_WAIT
    (dropped, counted); the longest wait of what goes is kept in ``stats["queue_wait_max_ms"]``."""
    expire_waiting(queue, now, stats)
    if queue:
        waited = int((now - queue[0][0]) * 1000)
        if waited > stats["queue_wait_max_ms"]:
            stats["queue_wait_max_ms"] = waited
    return [packet for _, packet in queue]


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
    asked_from: tuple[int, ...] = ()  # our own path when we asked (the LOOKUP's source path, the reply's destination)

    @property
    def ports(self) -> int:
        return len(self.coords.path) + len(self.asked_from)


@dataclass
class _Pending:
    nonce: int
    started: float
    sent_at: float
    wait: float = LOOKUP_FIRST_RETRY  # before the next try: doubles up to LOOKUP_RETRY
    queue: deque[tuple[float, bytes]] = field(default_factory=lambda: deque())  # (queued at, payload)


@dataclass
class _Ring:
    nonce: int
    ttl: int  # of the round in flight
    sent_at: float


@dataclass
class _Route:
    ports: tuple[int, ...]  # a port per hop, ours first
    key: bytes  # the owner's verified Ed25519 key
    heard: float  # when something last came back from the owner


_STATS = ("lookups_sent", "lookup_retries", "replies_accepted", "replies_rejected", "queued", "queue_dropped",
          "gave_up", "gave_up_dropped", "pending_refused", "path_broken", "cache_expired", "queue_expired",
          "queue_wait_max_ms", "ring_searches",
          "ring_rounds", "ring_limited", "ring_replies_accepted", "ring_exhausted", "routes_learned", "dead_paths",
          "routes_idle", "routes_lost", "routes_too_long")


class Pathfinder:
    """The lookup cache, the lookups in flight and the packets waiting for them."""

    def __init__(self, address: bytes, signing_secret: bytes, signing_key: bytes,
                 rng: random.Random | None = None) -> None:
        self.address = address
        self._secret = signing_secret
        self._key = signing_key
        self._rng = rng if rng is not None else random.Random()
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._cache_ports = 0  # ports held by the cache's paths, at most MAX_CACHED_PORTS
        self._pending: dict[bytes, _Pending] = {}
        self._rings: dict[bytes, _Ring] = {}  # ring searches in flight, by destination
        self._ring_asap: set[bytes] = set()  # destinations whose route died: search at the next tick
        self._ring_started: OrderedDict[bytes, float] = OrderedDict()  # per destination, for RING_INTERVAL
        self._ring_tokens = RING_SOURCE_BURST
        self._ring_tokens_at: float | None = None
        self._routes: OrderedDict[bytes, _Route] = OrderedDict()  # source routes a ring search found
        self._unanswered: OrderedDict[bytes, float] = OrderedDict()  # dst -> first send since we last heard it
        self.given_up: list[bytes] = []  # destinations given up since the owner last drained this
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)

    # --- the asker's side ----------------------------------------------------------------------------
    def asked_from(self, dst: bytes) -> tuple[int, ...] | None:
        """Our own path when the cached coordinates of ``dst`` were looked up (None if none are cached): if ours has
        changed since, the tree moved under the route, and the destination's position has likely moved too."""
        entry = self._cache.get(dst)
        return None if entry is None else entry.asked_from

    def route(self, dst: bytes, now: float) -> Coords | None:
        """Cached coordinates of ``dst`` if fresh (an expired entry is dropped)."""
        entry = self._cache.get(dst)
        if entry is None:
            return None
        if now >= entry.expires:
            self._uncache(dst)
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
            queue.append((now, payload))
            self.stats["queued"] += 1
        if start:
            self.stats["lookups_sent"] += 1
            return pending.nonce
        return None

    def due(self, now: float) -> list[tuple[bytes, int]]:
        """Lookups to send again as (address, nonce): no reply within their wait (LOOKUP_FIRST_RETRY, doubling up
        to LOOKUP_RETRY); destinations unanswered for LOOKUP_GIVE_UP are given up and their queued packets dropped
        (counted), as are packets that waited QUEUE_MAX_WAIT."""
        out = []
        for dst, pending in list(self._pending.items()):
            if now - pending.started >= LOOKUP_GIVE_UP:
                del self._pending[dst]
                self._rings.pop(dst, None)
                self.given_up.append(dst)
                self.stats["gave_up"] += 1
                self.stats["gave_up_dropped"] += len(pending.queue)
                continue
            self._expire(pending.queue, now)
            if now - pending.sent_at >= pending.wait:
                pending.sent_at = now
                pending.wait = min(LOOKUP_RETRY, 2 * pending.wait)
                self.stats["lookup_retries"] += 1
                out.append((dst, pending.nonce))
        return out

    def _expire(self, queue: deque[tuple[float, bytes]], now: float) -> None:
        expire_waiting(queue, now, self.stats)

    def _release(self, pending: _Pending, now: float) -> list[bytes]:
        return release_waiting(pending.queue, now, self.stats)

    def next_deadline(self, now: float) -> float | None:
        """The earliest time :meth:`due`, :meth:`ring_due` or :meth:`dead_paths` has work (a lookup to retry or give
        up, a ring search to start or widen, a route to find dead), or None; never earlier than the rate limits allow
        that work, so a caller sleeping until it does not spin."""
        deadlines = []
        ring_free = now
        if self._ring_tokens_at is not None and self._ring_tokens < 1.0:
            ring_free = self._ring_tokens_at + (1.0 - self._ring_tokens) / RING_SOURCE_RATE
        for dst, pending in self._pending.items():
            deadlines.append(min(pending.sent_at + pending.wait, pending.started + LOOKUP_GIVE_UP))
            if dst not in self._rings:
                last = self._ring_started.get(dst)
                start = max(pending.started + RING_AFTER, ring_free,
                            last + RING_INTERVAL if last is not None else ring_free)
                deadlines.append(start)
        for ring in self._rings.values():
            deadlines.append(ring.sent_at + ring_step(ring.ttl))
        if self._ring_asap:
            deadlines.append(ring_free)
        if self._unanswered:
            deadlines.append(next(iter(self._unanswered.values())) + DEAD_PATH_AFTER)
        return min(deadlines, default=None)

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
        self._remember(owner, Coords(root, header.src_path), key, now, header.dst_path)
        self.stats["replies_accepted"] += 1
        return owner, self._release(pending, now)

    # --- the fallback: ring searches, source routes, dead paths --------------------------------------
    def ring_due(self, now: float) -> list[tuple[bytes, int, int]]:
        """Ring rounds to send now as (destination, nonce, TTL): a new search for a destination whose tree lookup
        has gone unanswered for RING_AFTER or whose route died, the next wider round of a search unanswered for
        its round's wait; within RING_INTERVAL per destination and RING_SOURCE_RATE in all."""
        out = []
        for dst, ring in list(self._rings.items()):
            if now - ring.sent_at < ring_step(ring.ttl):
                continue
            if ring.ttl >= RING_MAX_TTL:
                del self._rings[dst]
                self.stats["ring_exhausted"] += 1
                continue
            ring.ttl = min(RING_MAX_TTL, 2 * ring.ttl)
            ring.sent_at = now
            self.stats["ring_rounds"] += 1
            out.append((dst, ring.nonce, ring.ttl))
        # Due: a tree lookup unanswered for RING_AFTER, and at once a destination whose route was lost (dead, or
        # found in a tree we have left: search_now), whether or not a tree lookup for it is in flight.
        wanted = [dst for dst, p in self._pending.items() if now - p.started >= RING_AFTER or dst in self._ring_asap]
        wanted += [dst for dst in self._ring_asap if dst not in self._pending]
        self._ring_asap.clear()
        for dst in wanted:
            if dst in self._rings:
                continue
            last = self._ring_started.get(dst)
            if (last is not None and now - last < RING_INTERVAL) or not self._take_ring_token(now):
                self.stats["ring_limited"] += 1
                continue
            self._ring_started[dst] = now
            self._ring_started.move_to_end(dst)
            while len(self._ring_started) > MAX_PENDING_LOOKUPS:
                self._ring_started.popitem(last=False)
            ring = self._rings[dst] = _Ring(self._rng.getrandbits(32), RING_FIRST_TTL, now)
            self.stats["ring_searches"] += 1
            self.stats["ring_rounds"] += 1
            out.append((dst, ring.nonce, ring.ttl))
        return out

    def _take_ring_token(self, now: float) -> bool:
        if self._ring_tokens_at is not None:
            self._ring_tokens = min(RING_SOURCE_BURST,
                                    self._ring_tokens + (now - self._ring_tokens_at) * RING_SOURCE_RATE)
        self._ring_tokens_at = now
        if self._ring_tokens < 1.0:
            return False
        self._ring_tokens -= 1.0
        return True

    def ring_payload(self, dst: bytes, nonce: int, ttl: int) -> bytes:
        """Our RING_SEARCH payload for one round."""
        return encode_ring(self._secret, self._key, dst, self.address, nonce, ttl)

    def ring_answer(self, origin: bytes, nonce: int) -> bytes:
        """Our RING_REPLY payload for a verified search from ``origin``."""
        sig = sign(self._secret, RING_REPLY_STATEMENT + origin + self.address + _NONCE.pack(nonce))
        return _RING_REPLY.pack(self._key, nonce, sig)

    def accept_ring(self, header: RoutedHeader, payload: bytes, now: float) -> tuple[bytes, bytes, list[bytes]]:
        """Take a RING_REPLY addressed to us: (the destination, its Ed25519 key, the payloads queued for it). Its
        header's source path (the route the search took) becomes the destination's source route. Raises a
        RemoteProtocolError unless it answers a search in flight, by a key that owns the address, signed."""
        try:
            if len(payload) != _RING_REPLY.size:
                raise MalformedPacket(f"ring reply payload of {len(payload)} bytes (expected {_RING_REPLY.size})")
            key, nonce, sig = _RING_REPLY.unpack(payload)
            owner = header.src
            ring = self._rings.get(owner)
            if ring is None or ring.nonce != nonce:
                raise InvalidAnnouncement("ring reply for no search in flight")
            if not _owns(key, owner):
                raise InvalidAnnouncement("ring reply's key does not own the address asked for")
            if not header.src_path:
                raise InvalidAnnouncement("ring reply without a route")
            _verify(key, sig, RING_REPLY_STATEMENT + self.address + owner + _NONCE.pack(nonce))
        except (MalformedPacket, InvalidAnnouncement):
            self.stats["replies_rejected"] += 1
            raise
        del self._rings[owner]
        self.learn(owner, header.src_path, key, now)
        self.stats["ring_replies_accepted"] += 1
        queued = self.take(owner, now)
        return owner, key, queued or []

    def learn(self, dst: bytes, ports: tuple[int, ...], key: bytes, now: float) -> None:
        """Keep ``ports`` as the source route to ``dst`` (whose verified Ed25519 key is ``key``). A ring search dies
        RING_MAX_TTL hops out, so a longer route is no search's (the origin made up its path): not kept, counted."""
        if len(ports) > RING_MAX_TTL + 1:
            self.stats["routes_too_long"] += 1
            return
        self._routes[dst] = _Route(tuple(ports), key, now)
        self._routes.move_to_end(dst)
        while len(self._routes) > MAX_SOURCE_ROUTES:
            self._routes.popitem(last=False)
        self._unanswered.pop(dst, None)
        self.stats["routes_learned"] += 1

    def source_route(self, dst: bytes, now: float) -> tuple[int, ...] | None:
        """The source route to ``dst`` unless nothing came back over it for SOURCE_ROUTE_IDLE."""
        route = self._routes.get(dst)
        if route is None:
            return None
        if now - route.heard >= SOURCE_ROUTE_IDLE:
            del self._routes[dst]
            self.stats["routes_idle"] += 1
            return None
        return route.ports

    def drop_routes_via(self, port: int) -> None:
        """Our link on ``port`` went away: the source routes leaving by it go too."""
        for dst in [d for d, r in self._routes.items() if r.ports and r.ports[0] == port]:
            del self._routes[dst]

    def sent(self, dst: bytes, now: float) -> None:
        """We routed something to ``dst``: if nothing comes back within DEAD_PATH_AFTER, its route is dead."""
        if dst not in self._unanswered:
            self._unanswered[dst] = now
            while len(self._unanswered) > MAX_LOOKUP_CACHE:
                self._unanswered.popitem(last=False)

    def heard(self, src: bytes, now: float) -> None:
        """Something from ``src`` reached us end to end: the route to it works."""
        self._unanswered.pop(src, None)
        route = self._routes.get(src)
        if route is not None:
            route.heard = now

    def search_now(self, dst: bytes) -> None:
        """The route to ``dst`` was in use and is lost to a tree change (its coordinates are under a root we have
        left, or no neighbour leads towards them any more): a ring search is due at once, beside the tree lookup,
        rate limits permitting. A lookup in the new tree waits for its filters to spread (2 x depth heartbeats),
        and under a hostile root it dies; every packet meanwhile would wait RING_AFTER and be dropped past
        QUEUE_MAX_WAIT. The ring's route is a source route, so the next root change does not lose it."""
        self._ring_asap.add(dst)
        self.stats["routes_lost"] += 1

    def dead_paths(self, now: float) -> list[bytes]:
        """Destinations we sent to and heard nothing from for DEAD_PATH_AFTER: their coordinates and source
        route are dropped and a ring search is due at once (rate limits permitting)."""
        dead = [dst for dst, since in self._unanswered.items() if now - since >= DEAD_PATH_AFTER]
        for dst in dead:
            del self._unanswered[dst]
            self._uncache(dst)
            self._routes.pop(dst, None)
            self._ring_asap.add(dst)
            self.stats["dead_paths"] += 1
        return dead

    def _remember(self, dst: bytes, coords: Coords, key: bytes, now: float, asked_from: tuple[int, ...] = ()) -> None:
        self._uncache(dst)
        entry = self._cache[dst] = _Entry(coords, key, now + LOOKUP_CACHE_TTL, tuple(asked_from))
        self._cache_ports += entry.ports
        while len(self._cache) > MAX_LOOKUP_CACHE or (self._cache_ports > MAX_CACHED_PORTS and len(self._cache) > 1):
            self._uncache(next(iter(self._cache)))

    def _uncache(self, dst: bytes) -> None:
        entry = self._cache.pop(dst, None)
        if entry is not None:
            self._cache_ports -= entry.ports

    def take(self, dst: bytes, now: float) -> list[bytes] | None:
        """End the lookup of ``dst`` (its node became reachable another way); its queued payloads (but those that
        waited past QUEUE_MAX_WAIT), or None if there was no lookup in flight."""
        pending = self._pending.pop(dst, None)
        return None if pending is None else self._release(pending, now)

    def key_for(self, dst: bytes, now: float) -> bytes | None:
        """The verified Ed25519 key of ``dst`` if its cache entry is fresh."""
        entry = self._cache.get(dst)
        if entry is not None and now < entry.expires:
            return entry.key
        route = self._routes.get(dst)
        return route.key if route is not None and now - route.heard < SOURCE_ROUTE_IDLE else None

    def broken(self, dst: bytes, now: float) -> int | None:
        """A relay reported the path to ``dst`` broken: forget its coordinates; the nonce of a new LOOKUP to
        send, or None if one is already in flight."""
        self.stats["path_broken"] += 1
        self._uncache(dst)
        return self.wait(dst, (), now) if dst not in self._pending else None

    def forget(self, dst: bytes) -> None:
        """Drop what we know of ``dst`` (its cache entry; a lookup in flight continues)."""
        self._uncache(dst)

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
                {"address": _ip(dst), "age": round(now - p.started, 2), "queued": len(p.queue),
                 "ring_ttl": self._rings[dst].ttl if dst in self._rings else None}
                for dst, p in self._pending.items()
            ],
            "source_routes": [
                {"address": _ip(dst), "ports": list(r.ports), "key": r.key.hex(), "heard_ago": round(now - r.heard, 1)}
                for dst, r in self._routes.items()
            ],
            **self.stats,
        }


def _ip(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))
