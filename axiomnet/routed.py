"""The routed header: what every relay reads to forward a packet across the overlay (pure, no I/O).

A routed packet travels inside link sessions (the plaintext of a link DATA datagram). Layout (big-endian;
docs/PROTOCOL.md §6)::

    0   u8   kind: 1 TRAFFIC, 2 LOOKUP, 3 LOOKUP_REPLY, 4 PATH_BROKEN, 6 RING_SEARCH, 7 RING_REPLY, 8 SOURCE_ROUTED
    1   u8   reserved, 0
    2   u16  hop limit: a relay drops a packet that arrives with 1 or less, else sends it on with one less
    4   u32  watermark: the tree distance to the destination at the last relay; it must strictly fall
    8   u32  root tag: first 4 bytes of blake2s(root key, person=b"axn-rtag") of the tree the paths belong to
    12  16B  destination address (fc00::/8; for LOOKUP the address looked for)
    28  16B  source address
    44  u16  destination path length d (0 for LOOKUP), at most MAX_TREE_DEPTH
    46  u16  source path length s, at most MAX_TREE_DEPTH
    48  d x u16 destination path, then s x u16 source path (ports, each 1..65535)
    ..  payload (TRAFFIC: an end-to-end datagram; the others: see axiomnet/lookup.py)

A relay changes only bytes 2..7 (hop limit and watermark). Path lengths are u16 (protocol version 2): the depth
bound is MAX_TREE_DEPTH, what one announcement datagram can prove (axiomnet/constants.py), not the header.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from typing import NamedTuple

from axiomnet.constants import HOP_LIMIT, MAX_PORT, MAX_TREE_DEPTH
from axiomnet.errors import MalformedPacket

ROOT_TAG_PERSON = b"axn-rtag"
NO_WATERMARK = 0xFFFFFFFF
ADDRESS_SIZE = 16
_FIXED = struct.Struct(">BBHII16s16sHH")
FIXED_SIZE = _FIXED.size  # 48
_HOP_WM = struct.Struct(">HI")
_LENGTHS = struct.Struct(">HH")
DESTINATION = slice(12, 28)  # the destination address in the header (protocol 1: 8..24)
SOURCE = slice(28, 44)  # the source address (protocol 1: 24..40)


class Kind(enum.IntEnum):
    """What a routed packet carries."""

    TRAFFIC = 1  # an end-to-end datagram for the destination node
    LOOKUP = 2  # "who owns this address?", multicast down tree links whose filters hold it
    LOOKUP_REPLY = 3  # the owner's signed coordinates, routed greedily back to the asker
    PATH_BROKEN = 4  # a relay could not make progress towards the destination: look it up again
    # The root-independent fallback (axiomnet/lookup.py; 5 is NEIGHBOUR_IP below). Kinds 7 and 8 are source-routed:
    # the destination path is the route (a port per hop from the source) and the watermark the index of the port
    # the receiving relay takes next; kind 6 is flooded, its paths grow by one port per hop.
    RING_SEARCH = 6  # expanding-ring search over all links for an address, hop limit = remaining TTL
    RING_REPLY = 7  # the owner's signed answer, source-routed back along the search's reverse path
    SOURCE_ROUTED = 8  # an end-to-end datagram following a route a ring search found


_KINDS = frozenset(int(k) for k in Kind)

# A link DATA plaintext whose first byte is NEIGHBOUR_IP is not a routed packet: the rest is an IPv6 packet from
# the link's peer to the receiving node itself, sent only to a peer whose handshake announced NEIGHBOUR_CAPABILITY
# and never relayed (docs/PROTOCOL.md §6.6). Between neighbours the link session is end to end.
NEIGHBOUR_IP = 5
NEIGHBOUR_PREFIX = bytes([NEIGHBOUR_IP])
NEIGHBOUR_CAPABILITY = "neighbour-ip"


class RoutedHeader(NamedTuple):
    """A decoded routed header; ``offset`` is where the payload starts."""

    kind: Kind
    hop_limit: int
    watermark: int
    root_tag: int
    dst: bytes
    src: bytes
    dst_path: tuple[int, ...]
    src_path: tuple[int, ...]
    offset: int


def root_tag(root: bytes) -> int:
    """The 32-bit tag that names a tree's root in routed headers."""
    return int.from_bytes(hashlib.blake2s(root, digest_size=4, person=ROOT_TAG_PERSON).digest(), "big")


def _check_path(path: tuple[int, ...]) -> None:
    if len(path) > MAX_TREE_DEPTH or not all(1 <= p <= MAX_PORT for p in path):
        raise ValueError(f"path {path[:8]}... is not a valid tree position")


def encode_routed(kind: Kind, *, root_tag: int, dst: bytes, src: bytes, dst_path: tuple[int, ...],
                  src_path: tuple[int, ...], payload: bytes, hop_limit: int = HOP_LIMIT,
                  watermark: int = NO_WATERMARK) -> bytes:
    """The bytes of one routed packet (ValueError on out-of-range fields: a local bug)."""
    _check_path(dst_path)
    _check_path(src_path)
    if len(dst) != ADDRESS_SIZE or len(src) != ADDRESS_SIZE:
        raise ValueError("addresses are 16 bytes")
    head = _FIXED.pack(int(kind), 0, hop_limit, watermark, root_tag, dst, src, len(dst_path), len(src_path))
    ports = struct.pack(f">{len(dst_path) + len(src_path)}H", *dst_path, *src_path)
    return head + ports + payload


def decode_routed(data: bytes) -> RoutedHeader:
    """Parse a routed header; MalformedPacket for anything truncated, of unknown kind or out of range."""
    n = len(data)
    if n < FIXED_SIZE:
        raise MalformedPacket(f"routed packet of {n} bytes is shorter than its {FIXED_SIZE}-byte header")
    kind, reserved, hop_limit, watermark, tag, dst, src, dlen, slen = _FIXED.unpack_from(data, 0)
    if kind not in _KINDS:
        raise MalformedPacket(f"unknown routed packet kind {kind}")
    if reserved:
        raise MalformedPacket(f"routed packet with reserved byte {reserved:#04x}")
    if dlen > MAX_TREE_DEPTH or slen > MAX_TREE_DEPTH:
        raise MalformedPacket(f"routed path of {max(dlen, slen)} ports exceeds MAX_TREE_DEPTH")
    end = FIXED_SIZE + 2 * (dlen + slen)
    if n < end:
        raise MalformedPacket(f"routed packet of {n} bytes is truncated inside its paths")
    ports = struct.unpack_from(f">{dlen + slen}H", data, FIXED_SIZE)
    if 0 in ports:
        raise MalformedPacket("routed path holds port 0")
    return RoutedHeader(Kind(kind), hop_limit, watermark, tag, dst, src, ports[:dlen], ports[dlen:], end)


def forwarded(data: bytes, hop_limit: int, watermark: int) -> bytes:
    """``data`` with its hop limit and watermark replaced (what a relay sends on)."""
    return b"".join((data[:2], _HOP_WM.pack(hop_limit, watermark), memoryview(data)[8:]))


def hop_limit_and_watermark(data: bytes) -> tuple[int, int]:
    """The hop limit and watermark of a routed packet at least FIXED_SIZE long (the relays' fast path)."""
    hop_limit, watermark = _HOP_WM.unpack_from(data, 2)
    return hop_limit, watermark


def header_end(data: bytes) -> int:
    """Where the payload of a routed packet at least FIXED_SIZE long starts, by its path lengths (unchecked)."""
    dlen, slen = _LENGTHS.unpack_from(data, FIXED_SIZE - 4)
    return FIXED_SIZE + 2 * (dlen + slen)
