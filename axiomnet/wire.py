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
from collections.abc import Callable
from typing import NamedTuple

from axiomnet.constants import (
    AEAD_TAG_SIZE,
    COOKIE_NONCE_SIZE,
    COOKIE_SIZE,
    HEADER_SIZE,
    KEY_PROBE_CHALLENGE_SIZE,
    MAC_SIZE,
    MAX_DATAGRAM_SIZE,
    MAX_RECEIVER_INDEX,
    PROTOCOL_VERSION,
    HANDSHAKE_INIT_SIZE,
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
    """The 4-bit packet type of the switch header. 0 and 8..13 are reserved (MalformedPacket)."""

    HANDSHAKE_INIT = 1  # Noise XX message 1; receiver index 0
    HANDSHAKE_RESP = 2  # Noise XX message 2
    HANDSHAKE_FINAL = 3  # Noise XX message 3
    COOKIE_REPLY = 4  # responder under load: your sealed cookie; put mac2 under it on your next HANDSHAKE_INIT
    DATA = 5  # encrypted IP packet
    CONTROL = 6  # encrypted msgpack control message (heartbeat, ...)
    KEEPALIVE = 7  # encrypted empty payload
    # 8..13 are left to the routing layer.
    KEY_PROBE = 14  # "what is your static public key?" (trust on first use); receiver index 0
    KEY_REPLY = 15  # the answer of a discoverable node


TRANSPORT_TYPES = frozenset({PacketType.DATA, PacketType.CONTROL, PacketType.KEEPALIVE})
HANDSHAKE_TYPES = frozenset(
    {PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP, PacketType.HANDSHAKE_FINAL, PacketType.COOKIE_REPLY,
     PacketType.KEY_PROBE, PacketType.KEY_REPLY}
)
# Types that open a conversation: receiver index 0, and the body names the sender's index.
FIRST_CONTACT_TYPES = frozenset({PacketType.HANDSHAKE_INIT, PacketType.KEY_PROBE})
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
    if ptype in FIRST_CONTACT_TYPES:
        if receiver != 0:
            raise MalformedPacket(f"{ptype.name} must have receiver index 0")
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
    """Body of HANDSHAKE_INIT: sender index, Noise message 1 (32 bytes), mac1 and mac2 (zeros when no cookie is
    held); ``padding`` is the number of zero bytes between message 1 and mac1."""

    sender: int
    noise: bytes
    mac1: bytes
    mac2: bytes
    padding: int = 0


class HandshakeResp(NamedTuple):
    """Body of HANDSHAKE_RESP: the responder's sender index, Noise message 2 and mac1."""

    sender: int
    noise: bytes
    mac1: bytes


class CookieReply(NamedTuple):
    """Body of COOKIE_REPLY: a random XChaCha20-Poly1305 nonce and the sealed cookie (cookie + tag)."""

    nonce: bytes
    sealed: bytes


class KeyProbe(NamedTuple):
    """Body of KEY_PROBE: the prober's sender index and a random challenge (then zero padding)."""

    sender: int
    challenge: bytes


class KeyReply(NamedTuple):
    """Body of KEY_REPLY: the answering node's static public key and the probe's challenge."""

    public_key: bytes
    challenge: bytes


NO_MAC = bytes(MAC_SIZE)
_MAX_NOISE = MAX_HANDSHAKE_PAYLOAD + NOISE_MSG2_MIN
INIT_BODY_MIN = 4 + NOISE_MSG1_MIN + 2 * MAC_SIZE
INIT_BODY_MAX = INIT_BODY_MIN + MAX_HANDSHAKE_PAYLOAD
# Zero bytes after message 1 that make an INIT HANDSHAKE_INIT_SIZE long (what initiators send).
INIT_PADDING = HANDSHAKE_INIT_SIZE - HEADER_SIZE - INIT_BODY_MIN
RESP_BODY_MIN = 4 + NOISE_MSG2_MIN + MAC_SIZE
RESP_BODY_MAX = 4 + _MAX_NOISE + MAC_SIZE
SEALED_COOKIE_SIZE = COOKIE_SIZE + AEAD_TAG_SIZE
COOKIE_REPLY_BODY = COOKIE_NONCE_SIZE + SEALED_COOKIE_SIZE
KEY_REPLY_BODY = NOISE_KEY_SIZE + KEY_PROBE_CHALLENGE_SIZE
# A probe is padded to the size of the reply it asks for, so answering it amplifies nothing.
KEY_PROBE_BODY = KEY_REPLY_BODY
_PROBE_PADDING = bytes(KEY_PROBE_BODY - 4 - KEY_PROBE_CHALLENGE_SIZE)


def _check_sender(sender: int) -> None:
    if not 1 <= sender <= MAX_RECEIVER_INDEX:
        raise MalformedPacket(f"sender index {sender} outside 1..2^24-1")


def _check_size(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")


def encode_handshake_init(sender: int, noise: bytes, mac1: bytes = NO_MAC, mac2: bytes = NO_MAC,
                          padding: int = INIT_PADDING) -> bytes:
    """Whole HANDSHAKE_INIT datagram (the initiator fills the macs with :func:`axiomnet.cookie.add_macs`), with
    ``padding`` zero bytes after message 1 (by default to HANDSHAKE_INIT_SIZE bytes in all)."""
    _check_size(mac1, MAC_SIZE, "mac1")
    _check_size(mac2, MAC_SIZE, "mac2")
    if padding < 0:
        raise ValueError("padding must not be negative")
    return encode_header(PacketType.HANDSHAKE_INIT, 0, 0) + _U32.pack(sender) + noise + bytes(padding) + mac1 + mac2


def decode_handshake_init(datagram: bytes) -> HandshakeInit:
    """Body of a HANDSHAKE_INIT datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if len(body) < INIT_BODY_MIN:
        raise MalformedPacket(f"handshake initiation body of {len(body)} bytes is truncated")
    if len(body) > INIT_BODY_MAX:
        raise MalformedPacket("handshake initiation is oversized")
    (sender,) = _U32.unpack_from(body, 0)
    _check_sender(sender)
    smac1 = len(body) - 2 * MAC_SIZE
    end = 4 + NOISE_MSG1_MIN  # message 1 carries no payload: exactly the ephemeral key, then zero padding
    if body[end:smac1].count(0) != smac1 - end:
        raise MalformedPacket("handshake initiation padding is not zero (message 1 carries no payload)")
    return HandshakeInit(sender, bytes(body[4:end]), bytes(body[smac1 : smac1 + MAC_SIZE]),
                         bytes(body[smac1 + MAC_SIZE :]), smac1 - end)


def encode_handshake_resp(receiver: int, sender: int, noise: bytes, mac1: bytes = NO_MAC) -> bytes:
    """Whole HANDSHAKE_RESP datagram (the responder fills mac1 with :func:`axiomnet.cookie.add_mac1`)."""
    _check_size(mac1, MAC_SIZE, "mac1")
    return encode_header(PacketType.HANDSHAKE_RESP, receiver, 0) + _U32.pack(sender) + noise + mac1


def decode_handshake_resp(datagram: bytes) -> HandshakeResp:
    """Body of a HANDSHAKE_RESP datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if not RESP_BODY_MIN <= len(body) <= RESP_BODY_MAX:
        raise MalformedPacket(f"handshake response body of {len(body)} bytes has the wrong size")
    (sender,) = _U32.unpack_from(body, 0)
    _check_sender(sender)
    return HandshakeResp(sender, bytes(body[4:-MAC_SIZE]), bytes(body[-MAC_SIZE:]))


def encode_handshake_final(receiver: int, noise: bytes) -> bytes:
    """Whole HANDSHAKE_FINAL datagram."""
    return encode_header(PacketType.HANDSHAKE_FINAL, receiver, 0) + noise


def decode_handshake_final(datagram: bytes) -> bytes:
    """Noise message 3 of a HANDSHAKE_FINAL datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if not NOISE_MSG3_MIN <= len(body) <= _MAX_NOISE:
        raise MalformedPacket(f"handshake final body of {len(body)} bytes has the wrong size")
    return bytes(body)


def encode_cookie_reply(receiver: int, nonce: bytes, sealed: bytes) -> bytes:
    """Whole COOKIE_REPLY datagram (``sealed`` from :func:`axiomnet.cookie.seal_cookie`)."""
    _check_size(nonce, COOKIE_NONCE_SIZE, "cookie reply nonce")
    _check_size(sealed, SEALED_COOKIE_SIZE, "sealed cookie")
    return encode_header(PacketType.COOKIE_REPLY, receiver, 0) + nonce + sealed


def decode_cookie_reply(datagram: bytes) -> CookieReply:
    """Nonce and sealed cookie of a COOKIE_REPLY datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if len(body) != COOKIE_REPLY_BODY:
        raise MalformedPacket(f"cookie reply body of {len(body)} bytes (expected {COOKIE_REPLY_BODY})")
    return CookieReply(bytes(body[:COOKIE_NONCE_SIZE]), bytes(body[COOKIE_NONCE_SIZE:]))


def encode_key_probe(sender: int, challenge: bytes) -> bytes:
    """Whole KEY_PROBE datagram (zero-padded to the size of its reply)."""
    _check_size(challenge, KEY_PROBE_CHALLENGE_SIZE, "key probe challenge")
    return encode_header(PacketType.KEY_PROBE, 0, 0) + _U32.pack(sender) + challenge + _PROBE_PADDING


def decode_key_probe(datagram: bytes) -> KeyProbe:
    """Body of a KEY_PROBE datagram whose header was already decoded; the padding must be zeros."""
    body = datagram[HEADER_SIZE:]
    if len(body) != KEY_PROBE_BODY:
        raise MalformedPacket(f"key probe body of {len(body)} bytes (expected {KEY_PROBE_BODY})")
    (sender,) = _U32.unpack_from(body, 0)
    _check_sender(sender)
    end = 4 + KEY_PROBE_CHALLENGE_SIZE
    if body[end:] != _PROBE_PADDING:
        raise MalformedPacket("key probe padding is not zeros")
    return KeyProbe(sender, bytes(body[4:end]))


def encode_key_reply(receiver: int, public_key: bytes, challenge: bytes) -> bytes:
    """Whole KEY_REPLY datagram."""
    _check_size(public_key, NOISE_KEY_SIZE, "public key")
    _check_size(challenge, KEY_PROBE_CHALLENGE_SIZE, "key probe challenge")
    return encode_header(PacketType.KEY_REPLY, receiver, 0) + public_key + challenge


def decode_key_reply(datagram: bytes) -> KeyReply:
    """Body of a KEY_REPLY datagram whose header was already decoded."""
    body = datagram[HEADER_SIZE:]
    if len(body) != KEY_REPLY_BODY:
        raise MalformedPacket(f"key reply body of {len(body)} bytes (expected {KEY_REPLY_BODY})")
    return KeyReply(bytes(body[:NOISE_KEY_SIZE]), bytes(body[NOISE_KEY_SIZE:]))


def sender_index(datagram: bytes) -> int:
    """The sender index a HANDSHAKE_INIT, HANDSHAKE_RESP or KEY_PROBE we built names (0 for any other datagram).

    The actors bind that index at the dispatcher before the datagram may leave (axiomnet/indices.py).
    """
    if len(datagram) < HEADER_SIZE + 4:
        return 0
    t = datagram[4] & 0x0F
    if t in (PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP, PacketType.KEY_PROBE):
        return int(_U32.unpack_from(datagram, HEADER_SIZE)[0])
    return 0


Body = HandshakeInit | HandshakeResp | CookieReply | KeyProbe | KeyReply | bytes

_BODY_DECODERS: dict[PacketType, Callable[[bytes], Body]] = {
    PacketType.HANDSHAKE_INIT: decode_handshake_init,
    PacketType.HANDSHAKE_RESP: decode_handshake_resp,
    PacketType.HANDSHAKE_FINAL: decode_handshake_final,
    PacketType.COOKIE_REPLY: decode_cookie_reply,
    PacketType.KEY_PROBE: decode_key_probe,
    PacketType.KEY_REPLY: decode_key_reply,
}


def decode_datagram(datagram: bytes) -> tuple[Header, Body]:
    """Decode header and body of any datagram: a handshake tuple, Noise message 3, or the ciphertext.

    Used by tests, fuzzing and ``axiomnet-inspect``; the data path decodes the header alone.
    """
    header = decode_header(datagram)
    decoder: Callable[[bytes], Body] | None = _BODY_DECODERS.get(header.ptype)
    body = decoder(datagram) if decoder is not None else bytes(datagram[HEADER_SIZE:])
    return header, body


def encode_datagram(header: Header, body: Body) -> bytes:
    """The exact inverse of :func:`decode_datagram`: ``encode_datagram(*decode_datagram(d)) == d``."""
    raw = encode_header(header.ptype, header.receiver, header.counter, header.route_label)
    if isinstance(body, HandshakeInit):
        rest = encode_handshake_init(body.sender, body.noise, body.mac1, body.mac2, body.padding)
    elif isinstance(body, HandshakeResp):
        rest = encode_handshake_resp(header.receiver, body.sender, body.noise, body.mac1)
    elif isinstance(body, CookieReply):
        rest = encode_cookie_reply(header.receiver, body.nonce, body.sealed)
    elif isinstance(body, KeyProbe):
        rest = encode_key_probe(body.sender, body.challenge)
    elif isinstance(body, KeyReply):
        rest = encode_key_reply(header.receiver, body.public_key, body.challenge)
    else:
        return raw + body
    return raw + rest[HEADER_SIZE:]
