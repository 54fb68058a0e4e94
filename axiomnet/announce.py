"""Signed tree announcements and root beats: the byte layout, the signed statements, their verification (pure).

A node tells a neighbour where it sits in the spanning tree (docs/PROTOCOL.md §5) when that changes, and again
every CERT_REFRESH heartbeats; in between, the root's liveness travels as ROOT_BEATs down the tree links only:

* the root's Ed25519 key and sequence number, with the root's signature over them (the root advances the
  number every heartbeat and sends it down the tree in a ROOT_BEAT, so a dead root is noticed within
  ROOT_TIMEOUT);
* its chain: for every hop from the root down to the sender, the child's key, the port its parent gave it, the
  root seq at which the parent issued it and the parent's signature over (root, issue seq, parent, child,
  port). A hop is valid while the receiver's current seq of that root is at most CERT_LIFETIME past its issue
  seq, so a node cannot claim a place it was not given within the last CERT_LIFETIME heartbeats, and cannot
  speak for another key;
* a certificate for the receiver: the port the sender gives it and its issue seq, signed the same way, which
  the receiver appends to the sender's chain if it takes the sender as its parent;
* on tree links only, the sender's lookup bloom filter.

Layout (big-endian)::

    0   u8   control type = 1 (ANNOUNCE)
    1   u8   flags: bit 0 = a bloom filter follows the certificate
    2   u16  n, hops in the chain (0 when the sender is the root; at most MAX_TREE_DEPTH)
    4   32B  root key (Ed25519)
    36  u64  root seq (the newest the sender has)
    44  64B  root signature over ROOT_STATEMENT || root || seq
    108 n x (32B child key, u16 port, u64 issue seq, 64B parent signature over HOP_STATEMENT || root ||
             issue seq || parent || child || port)
    ..  u16  certificate port for the receiver (0: none), u64 its issue seq, 64B signature (zeros when the
             port is 0)
    ..  [bloom filter, axiomnet/bloom.py encoding]    (iff flags bit 0)

On the wire an announcement always travels in ANNOUNCE_PARTs (control type 5, protocol 4; docs/PROTOCOL.md
§5.7), each carrying ANNOUNCE_PART_BYTES of it, so no chain depth is bounded by what one datagram holds::

    0   u8   control type = 5 (ANNOUNCE_PART)
    1   u8   flags = 0
    2   u64  announcement number (the sender's, increasing; all parts of one announcement share it)
    10  u16  part index, 0 .. count - 1
    12  u16  part count, 1 .. MAX_ANNOUNCE_PARTS
    14  ..   bytes [index x ANNOUNCE_PART_BYTES, ...) of the announcement: exactly ANNOUNCE_PART_BYTES except in
             the last part (1 .. ANNOUNCE_PART_BYTES)

:func:`split_announcement` cuts one; :class:`PartAssembler` puts them back together (one partial announcement per
neighbour, bounded in time and bytes) and hands the whole one to the tree, which checks it as before.

A ROOT_BEAT (control type 4) is u8 type, 32B root key, u64 seq, 64B root signature over ROOT_STATEMENT || root
|| seq (105 bytes): the root's statement alone, forwarded unchanged from parent to child.

The link RTT that parent choice weighs is measured by PROBE / PROBE_REPLY (control types 2 and 3: u8 type, u64
nonce), from the prober's own clock only: a neighbour can delay its reply (and look farther), never make itself
look closer, since it cannot answer a nonce it has not received.

Signatures are verified once each: a bounded LRU remembers verified (key, statement, signature) triples, which
siblings share and which stay valid for a certificate's whole lifetime.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from axiomnet.bloom import Bloom, decode_bloom
from axiomnet.constants import (
    ANNOUNCE_PART_BYTES,
    CERT_LIFETIME,
    MAX_ANNOUNCE_PARTS,
    MAX_ANNOUNCEMENT_SIZE,
    MAX_PARTIAL_BYTES,
    MAX_PORT,
    MAX_TREE_DEPTH,
    MAX_VERIFIED_SIGNATURES,
    PART_TIMEOUT,
    VERIFIED_IDLE_TICKS,
)
from axiomnet.errors import InvalidAnnouncement, MalformedPacket

ANNOUNCE = 1  # control type byte
PROBE = 2  # "echo this nonce": the RTT probe
PROBE_REPLY = 3  # the nonce of a probe, sent back at once
ROOT_BEAT = 4  # the root's signed seq, forwarded down the tree links
ANNOUNCE_PART = 5  # one part of an announcement (protocol 4: the only way an announcement travels)
FLAG_BLOOM = 0x01
ROOT_STATEMENT = b"axn-root"
HOP_STATEMENT = b"axn-hop\x00"
KEY_SIZE = 32
SIG_SIZE = 64
NO_SIGNATURE = bytes(SIG_SIZE)
_HEAD = struct.Struct(">BBH32sQ64s")
_PROBE = struct.Struct(">BQ")
_BEAT = struct.Struct(">B32sQ64s")
_HOP = struct.Struct(">32sHQ64s")
_CERT = struct.Struct(">HQ64s")
_U64 = struct.Struct(">Q")
_PORT = struct.Struct(">H")
_PART = struct.Struct(">BBQHH")
PART_HEADER_SIZE = _PART.size  # 14
MAX_U64 = (1 << 64) - 1
BEAT_SIZE = _BEAT.size  # 105


@dataclass(frozen=True, slots=True)
class Hop:
    """One link of a chain: ``key`` is a child, ``port`` the port its parent gave it, ``issued`` the root seq at
    which the parent issued it, ``sig`` the parent's signature."""

    key: bytes
    port: int
    issued: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class Announcement:
    """A decoded announcement (not yet verified: see :class:`Verifier`)."""

    root: bytes
    seq: int
    root_sig: bytes
    chain: tuple[Hop, ...]
    cert_port: int
    cert_issued: int
    cert_sig: bytes
    bloom: Bloom | None = None

    @property
    def sender(self) -> bytes:
        """The Ed25519 key of the node that sent it: the last hop's child, or the root itself."""
        return self.chain[-1].key if self.chain else self.root

    @property
    def path(self) -> tuple[int, ...]:
        """The sender's coordinates below the root: the ports of its chain."""
        return tuple(h.port for h in self.chain)

    @property
    def oldest_issue(self) -> int:
        """The lowest issue seq of its hops and of our certificate (its seq when it has neither): what ages first."""
        issued = [h.issued for h in self.chain]
        if self.cert_port:
            issued.append(self.cert_issued)
        return min(issued, default=self.seq)


@dataclass(frozen=True, slots=True)
class Beat:
    """A decoded ROOT_BEAT: the root's signature over its seq (not yet verified)."""

    root: bytes
    seq: int
    sig: bytes


def root_statement(root: bytes, seq: int) -> bytes:
    """What a root signs to say it is alive at ``seq``."""
    return ROOT_STATEMENT + root + _U64.pack(seq)


def hop_statement(root: bytes, issued: int, parent: bytes, child: bytes, port: int) -> bytes:
    """What ``parent`` signs to give ``child`` the port ``port`` under ``root``, at the root's seq ``issued``."""
    return HOP_STATEMENT + root + _U64.pack(issued) + parent + child + _PORT.pack(port)


def sign(secret: bytes, statement: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``statement`` under the 64-byte libsodium secret key."""
    return nacl.bindings.crypto_sign(statement, secret)[:SIG_SIZE]


def encode_announcement(ann: Announcement) -> bytes:
    """The bytes of ``ann`` (ValueError on out-of-range fields: a local bug)."""
    if len(ann.chain) > MAX_TREE_DEPTH:
        raise ValueError(f"chain of {len(ann.chain)} hops is too deep")
    if not 0 <= ann.seq <= MAX_U64:
        raise ValueError("announcement seq out of range")
    flags = FLAG_BLOOM if ann.bloom is not None else 0
    parts = [_HEAD.pack(ANNOUNCE, flags, len(ann.chain), ann.root, ann.seq, ann.root_sig)]
    parts.extend(_HOP.pack(h.key, h.port, h.issued, h.sig) for h in ann.chain)
    parts.append(_CERT.pack(ann.cert_port, ann.cert_issued, ann.cert_sig))
    if ann.bloom is not None:
        parts.append(ann.bloom.encode())
    return b"".join(parts)


def decode_announcement(data: bytes) -> Announcement:
    """Parse an announcement; MalformedPacket for anything truncated, oversized or out of range.

    Only the layout is checked here; what it claims is checked by :class:`Verifier`.
    """
    n = len(data)
    if n > MAX_ANNOUNCEMENT_SIZE:
        raise MalformedPacket(f"announcement of {n} bytes exceeds {MAX_ANNOUNCEMENT_SIZE}")
    if n < _HEAD.size + _CERT.size:
        raise MalformedPacket(f"announcement of {n} bytes is truncated")
    ctype, flags, hops, root, seq, root_sig = _HEAD.unpack_from(data, 0)
    if ctype != ANNOUNCE:
        raise MalformedPacket(f"control type {ctype} is not an announcement")
    if flags & ~FLAG_BLOOM:
        raise MalformedPacket(f"announcement has unknown flags {flags:#04x}")
    if hops > MAX_TREE_DEPTH:
        raise MalformedPacket(f"announcement chain of {hops} hops exceeds MAX_TREE_DEPTH ({MAX_TREE_DEPTH})")
    offset = _HEAD.size
    end = offset + hops * _HOP.size + _CERT.size
    if n < end:
        raise MalformedPacket(f"announcement with {hops} hops is truncated at {n} bytes")
    chain = []
    for _ in range(hops):
        key, port, issued, sig = _HOP.unpack_from(data, offset)
        if not 1 <= port <= MAX_PORT:
            raise MalformedPacket("announcement hop with port 0")
        chain.append(Hop(key, port, issued, sig))
        offset += _HOP.size
    cert_port, cert_issued, cert_sig = _CERT.unpack_from(data, offset)
    offset += _CERT.size
    bloom = None
    if flags & FLAG_BLOOM:
        bloom, offset = decode_bloom(data, offset)
    if offset != n:
        raise MalformedPacket(f"announcement has {n - offset} trailing bytes")
    return Announcement(root, seq, root_sig, tuple(chain), cert_port, cert_issued, cert_sig, bloom)


def encode_beat(beat: Beat) -> bytes:
    """A ROOT_BEAT (BEAT_SIZE bytes)."""
    return _BEAT.pack(ROOT_BEAT, beat.root, beat.seq, beat.sig)


def decode_beat(data: bytes) -> Beat:
    """Parse a ROOT_BEAT; MalformedPacket for anything else."""
    if len(data) != _BEAT.size or data[0] != ROOT_BEAT:
        raise MalformedPacket(f"root beat of {len(data)} bytes or of control type {data[:1].hex()}")
    _, root, seq, sig = _BEAT.unpack(data)
    return Beat(root, seq, sig)


def encode_probe(kind: int, nonce: int) -> bytes:
    """A PROBE or PROBE_REPLY (9 bytes)."""
    return _PROBE.pack(kind, nonce)


def decode_probe(data: bytes) -> tuple[int, int]:
    """(control type, nonce) of a PROBE or PROBE_REPLY; MalformedPacket for anything else."""
    if len(data) != _PROBE.size or data[0] not in (PROBE, PROBE_REPLY):
        raise MalformedPacket(f"probe of {len(data)} bytes or of control type {data[:1].hex()}")
    kind, nonce = _PROBE.unpack(data)
    return kind, nonce


def certificates_fresh(ann: Announcement, current_seq: int, lifetime: int = CERT_LIFETIME) -> bool:
    """True if every hop and the certificate of ``ann`` were issued at most ``lifetime`` seqs before
    ``current_seq`` (the receiver's newest seq of that root) and none claims a seq after the announcement's."""
    for hop in ann.chain:
        if hop.issued > ann.seq or current_seq - hop.issued > lifetime:
            return False
    if ann.cert_port and (ann.cert_issued > ann.seq or current_seq - ann.cert_issued > lifetime):
        return False
    return True


class Verifier:
    """Checks what an announcement or a beat claims; remembers verified signatures (an LRU).

    A certificate keeps its signature for up to CERT_LIFETIME heartbeats and is carried again in every
    announcement of the sender and of the sender's subtree, so most checks hit the cache; a root signs one new
    seq per heartbeat, which each node verifies once, from its parent's beat. At most ``capacity`` signatures
    are remembered, the least recently used forgotten first, and none unused for ``idle_ticks`` heartbeats
    (:meth:`tick`): every root seq's signature is dead a heartbeat later, so without the age bound the cache
    would fill to ``capacity`` with them (about 75 a minute in a 12-node mesh: full after half an hour) and
    then hold ``capacity`` entries for good."""

    def __init__(self, capacity: int = MAX_VERIFIED_SIGNATURES, idle_ticks: int = VERIFIED_IDLE_TICKS) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # token -> the heartbeat it was last used at
        self._capacity = capacity
        self._idle_ticks = idle_ticks
        self._ticks = 0
        self.verifications = 0  # signatures actually checked (cache misses), for inspection and benchmarks

    def tick(self) -> None:
        """One heartbeat passed: forget the signatures unused for ``idle_ticks`` of them (the least recently
        used come first, so this stops at the first one still in use)."""
        self._ticks += 1
        seen, oldest = self._seen, self._ticks - self._idle_ticks
        while seen and next(iter(seen.values())) < oldest:
            seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)

    def _check(self, key: bytes, statement: bytes, sig: bytes, what: str) -> None:
        token = sig + key + statement
        if token in self._seen:
            self._seen[token] = self._ticks
            self._seen.move_to_end(token)
            return
        self.verifications += 1
        try:
            nacl.bindings.crypto_sign_open(sig + statement, key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            raise InvalidAnnouncement(f"bad signature on {what}") from None
        self._seen[token] = self._ticks
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def verify_beat(self, beat: Beat) -> None:
        """InvalidAnnouncement unless the root signed ``beat.seq``."""
        self._check(beat.root, root_statement(beat.root, beat.seq), beat.sig, "a root beat")

    def verify(self, ann: Announcement, receiver: bytes, current_seq: int | None = None,
               known: tuple[Hop, ...] = ()) -> None:
        """InvalidAnnouncement unless every signature holds, every certificate is fresh (see
        :func:`certificates_fresh`; ``current_seq`` is our newest seq of the announcement's root, if we know one
        newer than the announcement's), and the chain is a simple path from the root.

        ``receiver`` is our own Ed25519 key: the certificate (if any) must be signed for it. ``known`` is a chain
        under the same root whose every signature was verified before (our own): the hops of ``ann`` that repeat
        it from the root down, byte for byte, sign the very same statements and are not checked again (a child's
        or a sibling's chain repeats ours; past MAX_VERIFIED_SIGNATURES hops the cache alone would miss them all).
        """
        keys = [ann.root] + [h.key for h in ann.chain]
        if len(set(keys)) != len(keys):
            raise InvalidAnnouncement("announcement chain repeats a key (a loop)")
        if not certificates_fresh(ann, max(ann.seq, current_seq or 0)):
            raise InvalidAnnouncement(f"a certificate is older than CERT_LIFETIME ({CERT_LIFETIME} seqs) or from "
                                      "a later seq than the announcement's")
        self._check(ann.root, root_statement(ann.root, ann.seq), ann.root_sig, "the root's sequence number")
        parent = ann.root
        same = 0  # hops that repeat ``known`` from the root down: verified when it was
        while same < len(ann.chain) and same < len(known) and ann.chain[same] == known[same]:
            same += 1
        if same:
            parent = ann.chain[same - 1].key
        for depth, hop in enumerate(ann.chain[same:], same + 1):
            statement = hop_statement(ann.root, hop.issued, parent, hop.key, hop.port)
            self._check(parent, statement, hop.sig, f"hop {depth}")
            parent = hop.key
        if ann.cert_port:
            statement = hop_statement(ann.root, ann.cert_issued, ann.sender, receiver, ann.cert_port)
            self._check(ann.sender, statement, ann.cert_sig, "our certificate")


# --- announcements in parts (protocol 4, docs/PROTOCOL.md §5.7) -------------------------------------------------
@dataclass(frozen=True, slots=True)
class Part:
    """A decoded ANNOUNCE_PART: bytes ``[index x ANNOUNCE_PART_BYTES, ...)`` of announcement ``number``."""

    number: int
    index: int
    count: int
    data: bytes


def split_announcement(data: bytes, number: int) -> list[bytes]:
    """The ANNOUNCE_PARTs that carry the announcement ``data`` (ValueError if it is not one or is too large)."""
    if not data or data[0] != ANNOUNCE or len(data) > MAX_ANNOUNCEMENT_SIZE:
        raise ValueError("not an announcement, or larger than MAX_ANNOUNCEMENT_SIZE")
    if not 0 <= number <= MAX_U64:
        raise ValueError("announcement number out of range")
    count = -(-len(data) // ANNOUNCE_PART_BYTES)
    return [_PART.pack(ANNOUNCE_PART, 0, number, i, count) + data[i * ANNOUNCE_PART_BYTES:(i + 1) * ANNOUNCE_PART_BYTES]
            for i in range(count)]


def decode_part(data: bytes) -> Part:
    """Parse an ANNOUNCE_PART; MalformedPacket for a bad header, count or index, or a body of the wrong size."""
    if len(data) <= _PART.size:
        raise MalformedPacket(f"announcement part of {len(data)} bytes is truncated")
    ctype, flags, number, index, count = _PART.unpack_from(data, 0)
    if ctype != ANNOUNCE_PART:
        raise MalformedPacket(f"control type {ctype} is not an announcement part")
    if flags:
        raise MalformedPacket(f"announcement part has unknown flags {flags:#04x}")
    if not 1 <= count <= MAX_ANNOUNCE_PARTS:
        raise MalformedPacket(f"announcement in {count} parts (1..{MAX_ANNOUNCE_PARTS})")
    if index >= count:
        raise MalformedPacket(f"announcement part {index} of {count}")
    body = len(data) - _PART.size
    if body > ANNOUNCE_PART_BYTES or (index < count - 1 and body != ANNOUNCE_PART_BYTES):
        raise MalformedPacket(f"announcement part {index} of {count} carries {body} bytes")
    return Part(number, index, count, bytes(data[_PART.size:]))


@dataclass(slots=True)
class _Partial:
    number: int
    count: int
    started: float
    parts: dict[int, bytes]
    size: int = 0


class PartAssembler:
    """Puts announcements back together from their parts, per neighbour; numbers the ones we send.

    A neighbour has at most one partial announcement: a part with a higher number replaces it (counted
    ``partials_replaced``), parts with a lower number, or a number not above the last announcement completed from
    that neighbour within PART_TIMEOUT, are stale (dropped, ``parts_stale``). A partial announcement not complete
    PART_TIMEOUT after its first part is dropped (``partials_expired``), and all of them together hold at most
    ``max_bytes``, the oldest dropped first (``partials_evicted``). Numbers start from ``number_start`` (the
    daemon passes the wall clock in ms, so a restarted node's numbers are newer than its last ones)."""

    def __init__(self, number_start: int = 0, *, max_bytes: int = MAX_PARTIAL_BYTES,
                 timeout: float = PART_TIMEOUT) -> None:
        self._number = number_start
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._partials: OrderedDict[bytes, _Partial] = OrderedDict()  # by neighbour, oldest first
        self._done: dict[bytes, tuple[int, float]] = {}  # neighbour -> (number, when) of its last complete one
        self.held = 0  # bytes in partial announcements
        self.stats: dict[str, int] = {"parts_sent": 0, "parts_received": 0, "parts_stale": 0, "parts_repeated": 0,
                                      "announcements_assembled": 0, "partials_replaced": 0, "partials_expired": 0,
                                      "partials_evicted": 0, "partials_malformed": 0}

    def split(self, data: bytes) -> list[bytes]:
        """The control messages that carry ``data`` to a neighbour: an announcement as its parts under our next
        number, anything else (a beat, a probe) unchanged."""
        if data[:1] != bytes([ANNOUNCE]):
            return [data]
        self._number += 1
        parts = split_announcement(data, self._number)
        self.stats["parts_sent"] += len(parts)
        return parts

    def receive(self, sender: bytes, data: bytes, now: float) -> bytes | None:
        """A control message from the neighbour ``sender``: the whole announcement once its last part arrives,
        None for a part that completes nothing, other control types unchanged. MalformedPacket for a bad part (the
        neighbour's partial announcement is dropped with it) and for an announcement that is not in parts."""
        kind = data[:1]
        if kind == bytes([ANNOUNCE]):
            raise MalformedPacket("an announcement outside ANNOUNCE_PART (protocol 4 sends them in parts)")
        if kind != bytes([ANNOUNCE_PART]):
            return data
        self._expire(now)
        try:
            part = decode_part(data)
        except MalformedPacket:
            if self._drop(sender) is not None:
                self.stats["partials_malformed"] += 1
            raise
        self.stats["parts_received"] += 1
        done = self._done.get(sender)
        if done is not None and part.number <= done[0] and now - done[1] < self._timeout:
            self.stats["parts_stale"] += 1  # a late part of one we completed (or older)
            return None
        partial = self._partials.get(sender)
        if partial is not None and part.number != partial.number:
            if part.number < partial.number:
                self.stats["parts_stale"] += 1
                return None
            self._drop(sender)
            self.stats["partials_replaced"] += 1
            partial = None
        if partial is None:
            partial = self._partials[sender] = _Partial(part.number, part.count, now, {})
        elif part.count != partial.count:
            self._drop(sender)
            self.stats["partials_malformed"] += 1
            raise MalformedPacket(f"announcement {part.number} in {part.count} parts, earlier {partial.count}")
        if part.index in partial.parts:
            self.stats["parts_repeated"] += 1
            return None
        partial.parts[part.index] = part.data
        partial.size += len(part.data)
        self.held += len(part.data)
        if len(partial.parts) == partial.count:
            self._drop(sender)
            self._done[sender] = (part.number, now)
            self.stats["announcements_assembled"] += 1
            return b"".join(partial.parts[i] for i in range(partial.count))
        while self.held > self._max_bytes:
            oldest = next(iter(self._partials))
            self._drop(oldest)
            self.stats["partials_evicted"] += 1
        return None

    def forget(self, sender: bytes) -> None:
        """The link to ``sender`` is gone: drop what we hold of its announcements."""
        self._drop(sender)
        self._done.pop(sender, None)

    def _drop(self, sender: bytes) -> _Partial | None:
        partial = self._partials.pop(sender, None)
        if partial is not None:
            self.held -= partial.size
        return partial

    def _expire(self, now: float) -> None:
        while self._partials:
            sender, partial = next(iter(self._partials.items()))
            if now - partial.started < self._timeout:
                return
            self._drop(sender)
            self.stats["partials_expired"] += 1

    def __len__(self) -> int:
        return len(self._partials)
