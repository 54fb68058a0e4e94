"""Signed tree announcements: the byte layout, the signed statements, and their verification (pure, no I/O).

Every HEARTBEAT_INTERVAL a node tells each neighbour where it sits in the spanning tree (docs/PROTOCOL.md §5):

* the root's Ed25519 key and sequence number, with the root's signature over them (the root advances the
  number every interval, so a dead root is noticed within ROOT_TIMEOUT);
* its chain: for every hop from the root down to the sender, the child's key, the port its parent gave it and
  the parent's signature over (root, seq, parent, child, port) — so a node cannot claim a place it does not have
  now, and cannot speak for another key;
* a certificate for the receiver: the port the sender gives it, signed the same way, which the receiver
  appends to the sender's chain if it takes the sender as its parent;
* on tree links only, the sender's lookup bloom filter.

Layout (big-endian)::

    0   u8   control type = 1 (ANNOUNCE)
    1   u8   flags: bit 0 = a bloom filter follows the certificate
    2   u16  n, hops in the chain (0 when the sender is the root; at most MAX_TREE_DEPTH)
    4   32B  root key (Ed25519)
    36  u64  root seq
    44  64B  root signature over ROOT_STATEMENT || root || seq
    108 n x (32B child key, u16 port, 64B parent signature over HOP_STATEMENT || root || seq || parent ||
             child || port)
    ..  u16  certificate port for the receiver (0: none), 64B signature (zeros when the port is 0)
    ..  [bloom filter, axiomnet/bloom.py encoding]    (iff flags bit 0)

The link RTT that parent choice weighs is measured by PROBE / PROBE_REPLY (control types 2 and 3: u8 type, u64
nonce), from the prober's own clock only: a neighbour can delay its reply (and look farther), never make itself
look closer, since it cannot answer a nonce it has not received.

Signatures are verified once each: a bounded cache remembers verified (key, statement, signature) triples,
which siblings share.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from axiomnet.bloom import Bloom, decode_bloom
from axiomnet.constants import MAX_ANNOUNCEMENT_SIZE, MAX_PORT, MAX_TREE_DEPTH, MAX_VERIFIED_SIGNATURES
from axiomnet.errors import InvalidAnnouncement, MalformedPacket

ANNOUNCE = 1  # control type byte
PROBE = 2  # "echo this nonce": the RTT probe
PROBE_REPLY = 3  # the nonce of a probe, sent back at once
FLAG_BLOOM = 0x01
ROOT_STATEMENT = b"axn-root"
HOP_STATEMENT = b"axn-hop\x00"
KEY_SIZE = 32
SIG_SIZE = 64
NO_SIGNATURE = bytes(SIG_SIZE)
_HEAD = struct.Struct(">BBH32sQ64s")
_PROBE = struct.Struct(">BQ")
_HOP = struct.Struct(">32sH64s")
_CERT = struct.Struct(">H64s")
_U64 = struct.Struct(">Q")
_PORT = struct.Struct(">H")
MAX_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Hop:
    """One link of a chain: ``key`` is a child, ``port`` the port its parent gave it, ``sig`` the parent's."""

    key: bytes
    port: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class Announcement:
    """A decoded announcement (not yet verified: see :class:`Verifier`)."""

    root: bytes
    seq: int
    root_sig: bytes
    chain: tuple[Hop, ...]
    cert_port: int
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


def root_statement(root: bytes, seq: int) -> bytes:
    """What a root signs to say it is alive at ``seq``."""
    return ROOT_STATEMENT + root + _U64.pack(seq)


def hop_statement(root: bytes, seq: int, parent: bytes, child: bytes, port: int) -> bytes:
    """What ``parent`` signs to give ``child`` the port ``port`` under ``root`` at ``seq``."""
    return HOP_STATEMENT + root + _U64.pack(seq) + parent + child + _PORT.pack(port)


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
    parts.extend(_HOP.pack(h.key, h.port, h.sig) for h in ann.chain)
    parts.append(_CERT.pack(ann.cert_port, ann.cert_sig))
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
        key, port, sig = _HOP.unpack_from(data, offset)
        if not 1 <= port <= MAX_PORT:
            raise MalformedPacket("announcement hop with port 0")
        chain.append(Hop(key, port, sig))
        offset += _HOP.size
    cert_port, cert_sig = _CERT.unpack_from(data, offset)
    offset += _CERT.size
    bloom = None
    if flags & FLAG_BLOOM:
        bloom, offset = decode_bloom(data, offset)
    if offset != n:
        raise MalformedPacket(f"announcement has {n - offset} trailing bytes")
    return Announcement(root, seq, root_sig, tuple(chain), cert_port, cert_sig, bloom)


def encode_probe(kind: int, nonce: int) -> bytes:
    """A PROBE or PROBE_REPLY (9 bytes)."""
    return _PROBE.pack(kind, nonce)


def decode_probe(data: bytes) -> tuple[int, int]:
    """(control type, nonce) of a PROBE or PROBE_REPLY; MalformedPacket for anything else."""
    if len(data) != _PROBE.size or data[0] not in (PROBE, PROBE_REPLY):
        raise MalformedPacket(f"probe of {len(data)} bytes or of control type {data[:1].hex()}")
    kind, nonce = _PROBE.unpack(data)
    return kind, nonce


VERIFIED_ROUNDS = 3  # per root, the newest rounds (seq values) whose verified signatures are remembered


class Verifier:
    """Checks what an announcement claims; remembers verified signatures, by round.

    Every signature in an announcement covers the root and its seq, and a root signs a new seq every tick,
    so a signature of an older round is never asked about again once the next rounds arrive. The cache keeps,
    per root, only the last VERIFIED_ROUNDS rounds seen (insertion order: a restarted root whose seq starts
    lower is cached too), roots in LRU order, and at most ``capacity`` signatures in all (the least recently
    used root's oldest round goes first). A single LRU of ``capacity`` signatures instead filled up with the
    signatures of past rounds (8,192 entries, ~4 MiB per daemon, hit only by the current round's ~10-30)."""

    def __init__(self, capacity: int = MAX_VERIFIED_SIGNATURES) -> None:
        self._rounds: OrderedDict[bytes, OrderedDict[int, set[bytes]]] = OrderedDict()  # root -> seq -> tokens
        self._size = 0  # tokens held in all rounds
        self._capacity = capacity
        self.verifications = 0  # signatures actually checked (cache misses), for inspection and benchmarks

    def __len__(self) -> int:
        return self._size

    def _check(self, key: bytes, statement: bytes, sig: bytes, what: str, root: bytes = b"", seq: int = 0) -> None:
        token = sig + key + statement
        rounds = self._rounds.get(root)
        if rounds is not None and token in rounds.get(seq, ()):
            self._rounds.move_to_end(root)
            return
        self.verifications += 1
        try:
            nacl.bindings.crypto_sign_open(sig + statement, key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            raise InvalidAnnouncement(f"bad signature on {what}") from None
        if rounds is None:
            rounds = self._rounds[root] = OrderedDict()
        self._rounds.move_to_end(root)
        tokens = rounds.get(seq)
        if tokens is None:
            tokens = rounds[seq] = set()
            while len(rounds) > VERIFIED_ROUNDS:
                self._size -= len(rounds.popitem(last=False)[1])
        tokens.add(token)
        self._size += 1
        while self._size > self._capacity:
            oldest_root, oldest = next(iter(self._rounds.items()))
            self._size -= len(oldest.popitem(last=False)[1])
            if not oldest:
                del self._rounds[oldest_root]

    def verify(self, ann: Announcement, receiver: bytes) -> None:
        """InvalidAnnouncement unless every signature holds and the chain is a simple path from the root.

        ``receiver`` is our own Ed25519 key: the certificate (if any) must be signed for it.
        """
        keys = [ann.root] + [h.key for h in ann.chain]
        if len(set(keys)) != len(keys):
            raise InvalidAnnouncement("announcement chain repeats a key (a loop)")
        rnd = (ann.root, ann.seq)
        self._check(ann.root, root_statement(ann.root, ann.seq), ann.root_sig, "the root's sequence number", *rnd)
        parent = ann.root
        for depth, hop in enumerate(ann.chain, 1):
            statement = hop_statement(ann.root, ann.seq, parent, hop.key, hop.port)
            self._check(parent, statement, hop.sig, f"hop {depth}", *rnd)
            parent = hop.key
        if ann.cert_port:
            statement = hop_statement(ann.root, ann.seq, ann.sender, receiver, ann.cert_port)
            self._check(ann.sender, statement, ann.cert_sig, "our certificate", *rnd)
