"""axiomnet/noise.py: the handshake's hashlib backend is byte-for-byte noiseprotocol's, and the wrapper interoperates
with a peer on noiseprotocol's default backend (so a node built before the change, or another implementation,
still completes handshakes with us)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.backends.default.hashes import BLAKE2sHash, hmac_hash
from noise.connection import Keypair, NoiseConnection

from axiomnet.constants import NOISE_PROLOGUE, NOISE_PROTOCOL_NAME
from axiomnet.identity import Identity
from axiomnet.noise import BACKEND, NoiseFailure, NoiseHandshake


@settings(max_examples=300)
@given(st.binary(max_size=130), st.binary(max_size=300))
def test_hmac_and_hash_are_noiseprotocols_default(key: bytes, data: bytes) -> None:
    # Keys past the 64-byte block are hashed first (RFC 2104); Noise's keys are 32 bytes, the rest is range.
    assert BACKEND.hmac(key, data, algorithm=None) == hmac_hash(key, data, BLAKE2sHash().fn)
    assert BACKEND.hashes["BLAKE2s"]().hash(data) == BLAKE2sHash().hash(data)


def _default_backend_end(static_private: bytes, initiator: bool) -> NoiseConnection:
    conn = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)  # noiseprotocol's own backend, untouched
    conn.set_prologue(NOISE_PROLOGUE)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.start_handshake()
    return conn


def test_a_handshake_with_a_default_backend_peer_completes_with_the_same_keys() -> None:
    ours, theirs = Identity.generate(), Identity.generate()
    # We initiate, they answer on the default backend.
    a = NoiseHandshake(ours.private_key, initiator=True)
    b = _default_backend_end(theirs.private_key, initiator=False)
    assert bytes(b.read_message(a.write(b"one"))) == b"one"
    assert a.read(bytes(b.write_message(b"two"))) == b"two"
    assert bytes(b.read_message(a.write(b"three"))) == b"three"
    assert b.handshake_finished
    send, receive = a.transport_keys()
    assert (send, receive) == (bytes(b.noise_protocol.cipher_state_decrypt.k),
                               bytes(b.noise_protocol.cipher_state_encrypt.k))
    assert a.remote_static() == theirs.public_key
    # They initiate on the default backend, we answer.
    c = _default_backend_end(theirs.private_key, initiator=True)
    d = NoiseHandshake(ours.private_key, initiator=False)
    assert d.read(bytes(c.write_message(b"1"))) == b"1"
    assert bytes(c.read_message(d.write(b"2"))) == b"2"
    assert d.read(bytes(c.write_message(b"3"))) == b"3"
    assert d.remote_static() == theirs.public_key
    assert d.transport_keys() == (bytes(c.noise_protocol.cipher_state_decrypt.k),
                                  bytes(c.noise_protocol.cipher_state_encrypt.k))


def test_the_shared_static_keypair_serves_concurrent_handshakes_independently() -> None:
    # The static keypair object is built once and shared: two handshakes under one identity, interleaved,
    # must still each end with their own keys, and a forged message to one must not disturb the other.
    me, x, y = Identity.generate(), Identity.generate(), Identity.generate()
    r1, r2 = NoiseHandshake(me.private_key, initiator=False), NoiseHandshake(me.private_key, initiator=False)
    i1, i2 = NoiseHandshake(x.private_key, initiator=True), NoiseHandshake(y.private_key, initiator=True)
    r1.read(i1.write(b""))
    r2.read(i2.write(b""))
    m1, m2 = r1.write(b""), r2.write(b"")
    with pytest.raises(NoiseFailure):
        i2.read(m1)  # r1's answer to i1 is not an answer to i2
    i1.read(m1)
    i2.read(m2)
    r1.read(i1.write(b""))
    r2.read(i2.write(b""))
    assert (r1.remote_static(), r2.remote_static()) == (x.public_key, y.public_key)
    assert r1.transport_keys() == i1.transport_keys()[::-1]
    assert r2.transport_keys() == i2.transport_keys()[::-1]
    assert r1.transport_keys() != r2.transport_keys()


def test_a_version_3_peer_fails_loudly_against_version_4() -> None:
    """Announcements in parts changed the wire (docs/PROTOCOL.md "Version"): a node of protocol 4 sends them only
    as ANNOUNCE_PARTs and refuses a whole one, so a node of protocol 3 and one of protocol 4 must not half-work.
    Its datagrams fail the header's version check, and a handshake fails at message 2 (prologue)."""
    import struct

    from axiomnet.constants import PROTOCOL_VERSION
    from axiomnet.errors import MalformedPacket
    from axiomnet.wire import PacketType, decode_datagram

    assert PROTOCOL_VERSION == 4 and NOISE_PROLOGUE.startswith(b"AxiomNet/4 ")
    for old_version in (2, 3):
        old_header = struct.pack(">IIQ", 0, (old_version << 28) | (int(PacketType.CONTROL) << 24) | 7, 1)
        with pytest.raises(MalformedPacket, match="version"):
            decode_datagram(old_header + bytes(48))
    ours, theirs = Identity.generate(), Identity.generate()
    old = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
    old.set_prologue(b"AxiomNet/3 " + NOISE_PROTOCOL_NAME)
    old.set_keypair_from_private_bytes(Keypair.STATIC, theirs.private_key)
    old.set_as_responder()
    old.start_handshake()
    a = NoiseHandshake(ours.private_key, initiator=True)
    old.read_message(a.write(b""))
    with pytest.raises(NoiseFailure):
        a.read(bytes(old.write_message(b"")))
