"""The switch header and the datagram layouts that ride on it (strict, bounded, no I/O).

Every datagram starts with a 16-byte big-endian header::

    0               4       5               8                              16
    | route label   | v | t | receiver idx  | counter (u64)                |
       u32            4b  4b     u24

Decoding checks the length first and raises :class:`MalformedPacket` for anything truncated, oversized,
of an unknown type or of another version; it never lets ``struct.error`` or ``IndexError`` escape.
docs/PROTOCOL.md is the normative description.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from axiomnet.constants import (
    AEAD_TAG_SIZE,
    COOKIE_SIZE,
    HEADER_SIZE,
    MAX_DATAGRAM_SIZE,
    MAX_RECEIVER_INDEX,
    PROTOCOL_VERSION,
)
from axiomnet.errors import MalformedPacket

_HEADER = struct.Struct(">IIQ")
_U32 = struct.Struct(">I")

NOISE_KEY_SIZE = 32
# Noise XX message sizes without payload: msg1 = e; msg2 = e + enc(s) + tag; msg3 = enc(s) + tag.
NOISE_MSG1_MIN = NOISE_KEY_SIZE
NOISE_MSG2_MIN = NOISE_KEY_SIZE + NOISE_KEY_SIZE + AEAD_TAG_SIZE + AEAD_TAG_SIZE
NOISE_MSG3_MIN = NOISE_KEY_SIZE + AEAD_TAG_SIZE + AEAD_TAG_SIZE
MAX_HANDSHAKE_PAYLOAD = 1024  # plaintext payload bytes carried by one handshake message


class PacketType(enum.IntEnum):
    """The 4-bit packet type of the switch header. 0 and 8..15 are reserved (MalformedPacket)."""

    HANDSHAKE_INIT = 1  # Noise XX message 1; receiver index 0
    HANDSHAKE_RESP = 2  # Noise XX message 2
    HANDSHAKE_FINAL = 3  # Noise XX message 3
    COOKIE_REPLY = 4  # responder under load: echo this cookie in your next HANDSHAKE_INIT
    DATA = 5  # encrypted IP packet
    CONTROL = 6  # encrypted msgpack control message (heartbeat, ...)
    KEEPALIVE = 7  # encrypted empty payload


TRANSPORT_TYPES = frozenset({PacketType.DATA, PacketType.CONTROL, PacketType.KEEPALIVE})
HANDSHAKE_TYPES = frozenset(
    {PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP, PacketType.HANDSHAKE_FINAL, PacketType.COOKIE_REPLY}
)
_VALID_TYPES = frozenset(int(t) for t in PacketType)


class Header(NamedTuple):
    """A decoded switch header."""

    route_label: int
    version: int
    ptype: PacketType
    receiver: int
    counter: int


def encode_header(ptype: int, receiver: int, counter: int, route_label: int = 0) -> bytes:
    """Return the 16 header bytes. Raises ValueError on out-of-range fields (a local bug, not input)."""
    if not 0 <= receiver <= MAX_RECEIVER_INDEX:
        raise ValueError(f"receiver index {receiver} does not fit 24 bits")
    if int(ptype) not in _VALID_TYPES:
        raise ValueError(f"unknown packet type {ptype}")
    if not 0 <= counter < (1 << 64) or not 0 <= route_label < (1 << 32):
        raise ValueError("counter or route label out of range")
    return _HEADER.pack(route_label, (PROTOCOL_VERSION << 28) | (int(ptype) << 24) | receiver, counter)


def decode_header(datagram: bytes | bytearray | memoryview) -> Header:
    """Parse the header of ``datagram``; MalformedPacket on short, oversized, unknown type or version."""
    n = len(datagram)
    if n < HEADER_SIZE:
        raise MalformedPacket(f"datagram of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    if n > MAX_DATAGRAM_SIZE:
        raise MalformedPacket(f"datagram of {n} bytes exceeds {MAX_DATAGRAM_SIZE}")
    route_label, word, counter = _HEADER.unpack_from(datagram, 0)
    version = word >> 28
    if version != PROTOCOL_VERSION:
        raise MalformedPacket(f"protocol version {version} (expected {PROTOCOL_VERSION})")
    t = (word >> 24) & 0x0F
    if t not in _VALID_TYPES:
        raise MalformedPacket(f"unknown packet type {t}")
    ptype = PacketType(t)
    receiver = word & MAX_RECEIVER_INDEX
    if ptype is PacketType.HANDSHAKE_INIT:
        if receiver != 0:
            raise MalformedPacket("handshake initiation must have receiver index 0")
    elif receiver == 0:
        raise MalformedPacket(f"{ptype.name} with receiver index 0")
    if ptype in TRANSPORT_TYPES and n < HEADER_SIZE + AEAD_TAG_SIZE:
        raise MalformedPacket(f"{ptype.name} of {n} bytes cannot hold an authentication tag")
    return Header(route_label, version, ptype, receiver, counter)


def peek_receiver(datagram: bytes | bytearray | memoryview) -> int:
    """Receiver index of a datagram for dispatch, or -1 if it is too short to have one (no validation)."""
    if len(datagram) < HEADER_SIZE:
        return -1
    return _U32.unpack_from(datagram, 4)[0] & MAX_RECEIVER_INDEX


# --- handshake datagram bodies ---------------------------------------------------------------------
class HandshakeInit(NamedTuple):
    """Body of HANDSHAKE_INIT: sender index, cookie (zeros when none) and Noise message 1."""

    sender: int
    cookie: bytes
    noise: bytes


class HandshakeResp(NamedTuple):
    """Body of HANDSHAKE_RESP: the responder's sender index and Noise message 2."""

    sender: int
    noise: bytes


NO_COOKIE = bytes(COOKIE_SIZE)
_MAX_NOISE = MAX_HANDSHAKE_PAYLOAD + NOISE_MSG2_MIN


def _check_sender(sender: int) -> None:
    if not 1 <= sender <= MAX_RECEIVER_INDEX:
        raise MalformedPacket(f"sender index {sender} outside 1..2^24-1")


def encode_handshake_init(sender: int, cookie: bytes, noise: bytes) -> bytes:
    """Whole HANDSHAKE_INIT datagram."""
    if len(cookie) != COOKIE_SIZE:
        raise ValueError("cookie must be COOKIE_SIZE bytes")
    return encode_header(PacketType.HANDSHAKE_INIT, 0, 0) + _U32.pack(sender) + cookie + noise


def decode_handshake_init(datagram: bytes) -> HandshakeInit:
    """Body of a HANDSHAKE_INIT datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if len(body) < 4 + COOKIE_SIZE + NOISE_MSG1_MIN:
        raise MalformedPacket(f"handshake initiation body of {len(body)} bytes is truncated")
    if len(body) > 4 + COOKIE_SIZE + NOISE_MSG1_MIN + MAX_HANDSHAKE_PAYLOAD:
        raise MalformedPacket("handshake initiation is oversized")
    (sender,) = _U32.unpack_from(body, 0)
    _check_sender(sender)
    return HandshakeInit(sender, bytes(body[4 : 4 + COOKIE_SIZE]), bytes(body[4 + COOKIE_SIZE :]))


def encode_handshake_resp(receiver: int, sender: int, noise: bytes) -> bytes:
    """Whole HANDSHAKE_RESP datagram."""
    return encode_header(PacketType.HANDSHAKE_RESP, receiver, 0) + _U32.pack(sender) + noise


def decode_handshake_resp(datagram: bytes) -> HandshakeResp:
    """Body of a HANDSHAKE_RESP datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if not 4 + NOISE_MSG2_MIN <= len(body) <= 4 + _MAX_NOISE:
        raise MalformedPacket(f"handshake response body of {len(body)} bytes has the wrong size")
    (sender,) = _U32.unpack_from(body, 0)
    _check_sender(sender)
    return HandshakeResp(sender, bytes(body[4:]))


def encode_handshake_final(receiver: int, noise: bytes) -> bytes:
    """Whole HANDSHAKE_FINAL datagram."""
    return encode_header(PacketType.HANDSHAKE_FINAL, receiver, 0) + noise


def decode_handshake_final(datagram: bytes) -> bytes:
    """Noise message 3 of a HANDSHAKE_FINAL datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if not NOISE_MSG3_MIN <= len(body) <= _MAX_NOISE:
        raise MalformedPacket(f"handshake final body of {len(body)} bytes has the wrong size")
    return bytes(body)


def encode_cookie_reply(receiver: int, cookie: bytes) -> bytes:
    """Whole COOKIE_REPLY datagram."""
    if len(cookie) != COOKIE_SIZE:
        raise ValueError("cookie must be COOKIE_SIZE bytes")
    return encode_header(PacketType.COOKIE_REPLY, receiver, 0) + cookie


def decode_cookie_reply(datagram: bytes) -> bytes:
    """Cookie of a COOKIE_REPLY datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if len(body) != COOKIE_SIZE:
        raise MalformedPacket(f"cookie reply body of {len(body)} bytes (expected {COOKIE_SIZE})")
    return bytes(body)


def decode_datagram(datagram: bytes) -> tuple[Header, object]:
    """Decode header and body of any datagram: the body is a handshake tuple, a cookie, or the ciphertext.

    Used by tests, fuzzing and ``axiomnet-inspect``; the data path decodes the header alone.
    """
    header = decode_header(datagram)
    body: object
    if header.ptype is PacketType.HANDSHAKE_INIT:
        body = decode_handshake_init(datagram)
    elif header.ptype is PacketType.HANDSHAKE_RESP:
        body = decode_handshake_resp(datagram)
    elif header.ptype is PacketType.HANDSHAKE_FINAL:
        body = decode_handshake_final(datagram)
    elif header.ptype is PacketType.COOKIE_REPLY:
        body = decode_cookie_reply(datagram)
    else:
        body = bytes(datagram[HEADER_SIZE:])
    return header, body
