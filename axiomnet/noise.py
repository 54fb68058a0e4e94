"""The Noise_XX_25519_ChaChaPoly_BLAKE2s handshake as AxiomNet uses it, made failure-atomic (no I/O).

This module owns AxiomNet's one contact with noiseprotocol 0.3.1 and with its private state: it sets the
prologue and static key, builds and reads handshake messages, snapshots and restores the handshake state
around a read so that a forged message cannot poison a live handshake, and extracts the authenticated remote
static key and the transport keys once the handshake is done. Sessions and the responder use only
:class:`NoiseHandshake` and :class:`NoiseFailure`; nothing else imports noiseprotocol.
"""

from __future__ import annotations

import functools
from hashlib import blake2s
from typing import Any

from noise.backends.default.backend import DefaultNoiseBackend
from noise.backends.default.hashes import BLAKE2sHash
from noise.backends.default.keypairs import KeyPair25519
from noise.connection import NoiseConnection
from noise.exceptions import NoiseValueError

from axiomnet.constants import NOISE_PROLOGUE, NOISE_PROTOCOL_NAME

# --- the handshake's hashing through hashlib ---------------------------------------------------------------
# noiseprotocol's default backend hashes through `cryptography` objects: 5-8 µs per BLAKE2s and per HMAC, about
# 18% of a whole handshake's CPU (PERFORMANCE.md). The same functions from hashlib cost 0.5 and ~1.5 µs. The
# output is the same bytes (HMAC per RFC 2104 over BLAKE2s-256, block 64): tests/unit/test_noise.py runs a
# handshake with one end on the default backend and one on this.
_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _HashlibBlake2s(BLAKE2sHash):
    def hash(self, data: bytes) -> bytes:
        return blake2s(data).digest()


def _hmac_blake2s(key: bytes, data: bytes, algorithm: Any = None) -> bytes:
    """HMAC-BLAKE2s-256 (``algorithm`` is the backend's hash constructor, here always BLAKE2s: ignored)."""
    if len(key) > _BLOCK:
        key = blake2s(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return blake2s(key.translate(_OPAD) + blake2s(key.translate(_IPAD) + data).digest()).digest()


class _Backend(DefaultNoiseBackend):
    def __init__(self) -> None:
        super().__init__()
        self.hashes = {"BLAKE2s": _HashlibBlake2s}  # the one hash AxiomNet's protocol name uses
        self.hmac = _hmac_blake2s


BACKEND = _Backend()


@functools.lru_cache(maxsize=8)
def _static_keypair(static_private: bytes) -> KeyPair25519:
    """The node's static X25519 keypair, built once: building it derives the public key, a scalar
    multiplication as costly as a handshake's DH, on every handshake otherwise. Immutable; shared read-only."""
    return KeyPair25519.from_private_bytes(static_private)

class NoiseFailure(Exception):
    """A handshake message did not authenticate or was unusable (internal; mapped to RemoteProtocolError)."""


class NoiseHandshake:
    """One Noise_XX_25519_ChaChaPoly_BLAKE2s handshake, made failure-atomic on read.

    noiseprotocol 0.3.1 pops the message pattern and mixes keys before it knows a message is authentic, so
    one forged datagram would poison the handshake for the genuine one. ``read`` snapshots the few fields it
    touches and restores them on failure. It also drops ``handshake_state`` after the last message, so we
    keep our own reference to read the authenticated remote static key afterwards.
    """

    __slots__ = ("_conn", "_state")

    def __init__(self, static_private: bytes, initiator: bool) -> None:
        conn = NoiseConnection.from_name(NOISE_PROTOCOL_NAME, backend=BACKEND)
        conn.set_prologue(NOISE_PROLOGUE)
        conn.noise_protocol.keypairs["s"] = _static_keypair(bytes(static_private))  # what set_keypair_... does
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.start_handshake()
        self._conn = conn
        self._state = conn.noise_protocol.handshake_state

    def write(self, payload: bytes) -> bytes:
        """Next handshake message carrying ``payload``; NoiseFailure on a degenerate remote key."""
        try:
            return bytes(self._conn.write_message(payload))
        except (ValueError, NoiseValueError) as exc:  # X25519 with a low-order point gives an all-zero secret
            raise NoiseFailure(f"handshake message cannot be built: {exc}") from None

    def read(self, message: bytes) -> bytes:
        """Payload of the next handshake message; on failure the state is as before and NoiseFailure raised."""
        state = self._state
        symmetric = state.symmetric_state
        cipher = symmetric.cipher_state
        saved = (list(state.message_patterns), symmetric.h, symmetric.ck, cipher.k, cipher.n, state.rs, state.re)
        try:
            return bytes(self._conn.read_message(message))
        except Exception as exc:  # third-party code parsing attacker bytes: any failure is the message's fault
            patterns, h, ck, k, n, rs, re = saved
            state.message_patterns = patterns
            symmetric.h = h
            symmetric.ck = ck
            cipher.initialize_key(k)
            cipher.n = n
            state.rs = rs
            state.re = re
            self._conn._next_fn = self._conn.read_message  # read_message flipped it before failing
            raise NoiseFailure(f"{type(exc).__name__}") from None

    def remote_static(self) -> bytes:
        """The remote static key the handshake authenticated (after message 2 or 3 was read)."""
        return bytes(self._state.rs.public_bytes)

    def transport_keys(self) -> tuple[bytes, bytes]:
        """(send key, receive key) once the handshake is finished."""
        protocol = self._conn.noise_protocol
        return bytes(protocol.cipher_state_encrypt.k), bytes(protocol.cipher_state_decrypt.k)
