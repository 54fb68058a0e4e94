"""A transport keypair and the sealing and opening of transport datagrams under it (no I/O).

A :class:`Keypair` is what one completed handshake leaves behind: the two ChaCha20-Poly1305 keys, the
receiver indices of both sides, the send counter, the RFC 6479 replay window, and the keypair's deadlines
(rekey, reject). :func:`seal` and :func:`open_sealed` are the per-packet path: the 16-byte switch header is the
associated data and the explicit 64-bit counter is the nonce. Which keypair is current, and when keypairs
rotate, is the Session's state machine (axiomnet/session.py).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable

from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from nacl.bindings import sodium_init
from nacl.exceptions import CryptoError

from axiomnet.constants import (
    AEAD_TAG_SIZE,
    HANDSHAKE_INITIAL_RETRANSMIT,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER,
)
from axiomnet.replay import ReplayWindow
from axiomnet.wire import PacketType

# --- transport framing (precomputed: this is the per-packet path) ---------------------------------
HEADER_STRUCT = struct.Struct(">IIQ")  # route label | version:4 type:4 receiver:24 | counter
NONCE_STRUCT = struct.Struct("<4xQ")  # ChaCha20-Poly1305 IETF nonce: 4 zero bytes + counter, 64-bit little-endian
VERSION_BITS = PROTOCOL_VERSION << 28
_KEEPALIVE = PacketType.KEEPALIVE
# DATA, CONTROL and KEEPALIVE are the three highest packet types; one int comparison dispatches them.
FIRST_TRANSPORT = int(PacketType.DATA)
LAST_TRANSPORT = int(PacketType.KEEPALIVE)

# libsodium's ChaCha20-Poly1305 (IETF) through pynacl's own cffi binding, called directly: pynacl's wrapper
# checks and copies its arguments on every call, which cost as much as the cipher on a 1400-byte packet. Output
# goes into a scratch buffer of the call (not zeroed: every byte used is written first), then one copy to bytes.
# sodium_init() picks the CPU's fastest implementations (AVX2 ChaCha20 here: twice the reference code's speed);
# pynacl calls it when nacl.bindings is imported, which this import guarantees whatever else was imported first.
sodium_init()
_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
_scratch = _ffi.new_allocator(should_clear_after_alloc=False)
_NULL = _ffi.NULL


def retransmit_delay(attempt: int, rng: random.Random) -> float:
    """HANDSHAKE_INITIAL_RETRANSMIT doubling per attempt, capped at REKEY_TIMEOUT, plus random jitter."""
    base = min(HANDSHAKE_INITIAL_RETRANSMIT * 2.0 ** min(attempt, 32), REKEY_TIMEOUT)
    return base + rng.uniform(0.0, REKEY_TIMEOUT_JITTER)



class Keypair:
    """Transport keys of one completed handshake, with their counters, replay window and deadlines."""

    __slots__ = (
        "local_index",
        "remote_index",
        "send_key",
        "recv_key",
        "initiator",
        "initiator_key",
        "created",
        "dead_at",
        "rekey_at",
        "send_counter",
        "replay",
        "heard",
        "heard_at",
        "started",
    )

    def __init__(
        self,
        local_index: int,
        remote_index: int,
        send_key: bytes,
        recv_key: bytes,
        initiator: bool,
        initiator_key: bytes,
        created: float,
        started: float | None = None,
    ) -> None:
        self.local_index = local_index
        self.remote_index = remote_index
        self.send_key = send_key
        self.recv_key = recv_key
        self.initiator = initiator
        self.initiator_key = initiator_key  # static key of the side that initiated (simultaneous-open rule)
        self.created = created
        self.dead_at = created + REJECT_AFTER_TIME  # pulled in to now + grace when the keypair is retired
        # Only the initiator rekeys on age, so both sides do not start a handshake at the same moment.
        self.rekey_at = created + REKEY_AFTER_TIME if initiator else math.inf
        self.send_counter = 0  # next counter to send
        self.replay = ReplayWindow()
        self.heard = False  # an authenticated transport packet arrived under it (key confirmation)
        self.heard_at: float | None = None  # when that first happened
        # When the handshake that made it began (our first INIT sent, or the peer's INIT received): a keypair the
        # peer already sent under before then cannot be its simultaneous rival (see _simultaneous).
        self.started = created if started is None else started


def seal(kp: Keypair, ptype: PacketType, payloads: list[bytes]) -> list[bytes]:
    """Transport datagrams for ``payloads`` under ``kp``, counters consecutive from ``kp.send_counter``.

    The caller checked that ``kp`` may still send that many; the send counter is advanced past them.
    """
    out = _seal(kp.send_key, VERSION_BITS | (int(ptype) << 24) | kp.remote_index, kp.send_counter, payloads)
    kp.send_counter += len(payloads)
    return out


def seal_confirmation(kp: Keypair) -> bytes:
    """The KEEPALIVE at counter 0 under ``kp``, byte for byte (resending the very same message under the same
    nonce reveals nothing)."""
    return _seal(kp.send_key, VERSION_BITS | (int(_KEEPALIVE) << 24) | kp.remote_index, 0, [b""])[0]


def _seal(key: bytes, word: int, counter: int, payloads: list[bytes]) -> list[bytes]:
    """Datagrams (header with ``word`` and consecutive counters from ``counter``, ciphertext, tag)."""
    if not payloads:
        return []
    buf = _scratch("unsigned char[]", HEADER_SIZE + max(map(len, payloads)) + AEAD_TAG_SIZE)
    view = _ffi.buffer(buf)
    body = buf + HEADER_SIZE
    pack_header = HEADER_STRUCT.pack_into
    pack_nonce = NONCE_STRUCT.pack
    encrypt = _encrypt
    overhead = HEADER_SIZE + AEAD_TAG_SIZE
    out: list[bytes] = []
    append = out.append
    for payload in payloads:
        pack_header(view, 0, 0, word, counter)  # the header is the associated data and the datagram's start
        encrypt(body, _NULL, payload, len(payload), buf, HEADER_SIZE, _NULL, pack_nonce(counter), key)
        append(view[:len(payload) + overhead])
        counter += 1
    return out


def open_sealed(kp: Keypair, datagram: bytes, counter: int) -> bytes:
    """Plaintext of a transport datagram under ``kp``; nacl's CryptoError if the tag does not verify.

    The replay window is neither checked nor moved here: the Session checks before and updates after.
    """
    size = len(datagram) - HEADER_SIZE - AEAD_TAG_SIZE
    if size < 0:
        raise CryptoError("datagram too short for its tag")
    buf = _scratch("unsigned char[]", size or 1)
    src = _ffi.from_buffer(datagram)
    if _decrypt(buf, _NULL, _NULL, src + HEADER_SIZE, size + AEAD_TAG_SIZE, src, HEADER_SIZE,
                NONCE_STRUCT.pack(counter), kp.recv_key):
        raise CryptoError("authentication tag mismatch")
    return _ffi.buffer(buf, size)[:]


def opener(key: bytes, largest: int) -> Callable[[bytes, int], bytes | None]:
    """A function opening the transport datagrams of one batch (each at most ``largest`` bytes) under ``key`` into
    one scratch buffer: plaintext, or None if the tag does not verify. Like :func:`open_sealed`, it neither checks
    nor moves a replay window."""
    buf = _scratch("unsigned char[]", max(1, largest - HEADER_SIZE - AEAD_TAG_SIZE))
    view = _ffi.buffer(buf)
    from_buffer, decrypt, pack_nonce = _ffi.from_buffer, _decrypt, NONCE_STRUCT.pack
    overhead = HEADER_SIZE + AEAD_TAG_SIZE

    def open_one(datagram: bytes, counter: int) -> bytes | None:
        size = len(datagram) - overhead
        src = from_buffer(datagram)
        if decrypt(buf, _NULL, _NULL, src + HEADER_SIZE, size + AEAD_TAG_SIZE, src, HEADER_SIZE, pack_nonce(counter),
                   key):
            return None
        return view[:size]

    return open_one
