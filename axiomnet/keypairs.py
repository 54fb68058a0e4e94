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

from nacl.bindings import crypto_aead_chacha20poly1305_ietf_decrypt as _aead_decrypt
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt as _aead_encrypt

from axiomnet.constants import (
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
    word = VERSION_BITS | (int(ptype) << 24) | kp.remote_index
    key = kp.send_key
    counter = kp.send_counter
    pack_header = HEADER_STRUCT.pack
    pack_nonce = NONCE_STRUCT.pack
    encrypt = _aead_encrypt
    out: list[bytes] = []
    append = out.append
    for payload in payloads:
        header = pack_header(0, word, counter)
        append(header + encrypt(payload, header, pack_nonce(counter), key))
        counter += 1
    kp.send_counter = counter
    return out


def seal_confirmation(kp: Keypair) -> bytes:
    """The KEEPALIVE at counter 0 under ``kp``, byte for byte (resending the very same message under the same
    nonce reveals nothing)."""
    header = HEADER_STRUCT.pack(0, VERSION_BITS | (int(_KEEPALIVE) << 24) | kp.remote_index, 0)
    return header + _aead_encrypt(b"", header, NONCE_STRUCT.pack(0), kp.send_key)


def open_sealed(kp: Keypair, datagram: bytes, counter: int) -> bytes:
    """Plaintext of a transport datagram under ``kp``; nacl's CryptoError if the tag does not verify.

    The replay window is neither checked nor moved here: the Session checks before and updates after.
    """
    return _aead_decrypt(datagram[HEADER_SIZE:], datagram[:HEADER_SIZE], NONCE_STRUCT.pack(counter), kp.recv_key)
