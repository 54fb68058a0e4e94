"""Lookup bloom filters over overlay addresses, exchanged on tree links (pure, no I/O; ironwood's bloomfilter.go).

Each node tells each tree neighbour (its parent and its children) one filter: its own address plus every
address the filters of its OTHER tree neighbours hold, i.e. "what can be found through me". A lookup for an
address travels only down tree links whose filter holds it. A filter is BLOOM_BITS bits with BLOOM_HASHES bits
per address, taken from BLAKE2s of the 16-byte address; false positives cost extra lookup messages, never a
wrong answer (the owner proves its key). On the wire a filter is sparse (a list of set bit numbers, strictly
ascending) while that is shorter than the raw bits, raw otherwise: one encoding per filter, and the decoder
refuses any other.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from axiomnet.constants import BLOOM_BITS, BLOOM_HASHES
from axiomnet.errors import MalformedPacket

BLOOM_PERSON = b"axnbloom"
WORDS = BLOOM_BITS // 64
RAW_SIZE = BLOOM_BITS // 8
RAW_MARK = 0xFFFF  # the u16 count that says "raw bits follow"
_U16 = struct.Struct(">H")


def bit_indices(address: bytes) -> tuple[int, ...]:
    """The BLOOM_HASHES bit numbers of a 16-byte address."""
    digest = hashlib.blake2s(address, digest_size=2 * BLOOM_HASHES, person=BLOOM_PERSON).digest()
    return tuple(v % BLOOM_BITS for v in struct.unpack(f">{BLOOM_HASHES}H", digest))


class Bloom:
    """A mutable BLOOM_BITS-bit filter (numpy uint64 words)."""

    __slots__ = ("words",)

    def __init__(self, words: npt.NDArray[np.uint64] | None = None) -> None:
        self.words = np.zeros(WORDS, dtype=np.uint64) if words is None else words

    @classmethod
    def of(cls, addresses: Iterable[bytes]) -> Bloom:
        """A filter holding ``addresses``."""
        bloom = cls()
        for address in addresses:
            bloom.add(address)
        return bloom

    def add(self, address: bytes) -> None:
        """Set the bits of ``address``."""
        for bit in bit_indices(address):
            self.words[bit >> 6] |= np.uint64(1 << (bit & 63))

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, bytes):
            return False
        words = self.words
        return all(int(words[bit >> 6]) >> (bit & 63) & 1 for bit in bit_indices(address))

    def __ior__(self, other: Bloom) -> Bloom:
        np.bitwise_or(self.words, other.words, out=self.words)
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bloom) and bool(np.array_equal(self.words, other.words))

    def copy(self) -> Bloom:
        """An independent copy."""
        return Bloom(self.words.copy())

    def count(self) -> int:
        """Bits set."""
        return int(np.unpackbits(self.words.view(np.uint8)).sum())

    def encode(self) -> bytes:
        """u16 count + that many u16 bit numbers, or u16 0xFFFF + the RAW_SIZE raw bytes (whichever is shorter)."""
        bits = np.flatnonzero(np.unpackbits(self.words.view(np.uint8), bitorder="little"))
        if 2 * len(bits) < RAW_SIZE:
            return _U16.pack(len(bits)) + bits.astype(">u2").tobytes()
        return _U16.pack(RAW_MARK) + self.words.astype("<u8").tobytes()


def decode_bloom(data: bytes | memoryview, offset: int = 0) -> tuple[Bloom, int]:
    """(filter, offset after it) from ``data`` at ``offset``; MalformedPacket if truncated or out of range."""
    if len(data) < offset + 2:
        raise MalformedPacket("bloom filter is truncated")
    (count,) = _U16.unpack_from(data, offset)
    offset += 2
    if count == RAW_MARK:
        end = offset + RAW_SIZE
        if len(data) < end:
            raise MalformedPacket("raw bloom filter is truncated")
        words = np.frombuffer(bytes(data[offset:end]), dtype="<u8").astype(np.uint64)
        bloom = Bloom(words)
        if 2 * bloom.count() < RAW_SIZE:
            raise MalformedPacket("raw bloom filter with few enough bits for the sparse form (not canonical)")
        return bloom, end
    end = offset + 2 * count
    if 2 * count >= RAW_SIZE or len(data) < end:
        raise MalformedPacket(f"sparse bloom filter of {count} bits is oversized or truncated")
    bits = np.frombuffer(bytes(data[offset:end]), dtype=">u2").astype(np.int64)
    if bits.size and int(bits.max()) >= BLOOM_BITS:
        raise MalformedPacket("bloom filter bit number out of range")
    if bits.size > 1 and not bool(np.all(np.diff(bits) > 0)):
        raise MalformedPacket("sparse bloom filter bit numbers are not strictly ascending (not canonical)")
    flags = np.zeros(BLOOM_BITS, dtype=np.uint8)
    flags[bits] = 1
    words = np.packbits(flags, bitorder="little").view("<u8").astype(np.uint64)
    return Bloom(words), end
