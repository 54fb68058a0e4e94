"""The front door (HandshakeResponder) under attack: invalid first messages, rate limits, floods, bounds."""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest
from tests.unit.lossy_link import (
    respond,
    types_of,
    Node,
    static_keypair,
)

from axiomnet.constants import (
    COOKIE_LOAD_THRESHOLD,
    COOKIE_SIZE,
    MAX_PENDING_HANDSHAKES,
    PENDING_HANDSHAKE_TIMEOUT,
)
from axiomnet.errors import (
    MalformedPacket,
    RateLimited,
    RemoteProtocolError,
    UnknownReceiver,
)
from axiomnet.wire import (
    NO_COOKIE,
    NOISE_MSG1_MIN,
    PacketType,
    decode_datagram,
    decode_header,
    encode_handshake_init,
    encode_header,
)

INIT, RESP, FINAL = PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP, PacketType.HANDSHAKE_FINAL
COOKIE, DATA, KEEPALIVE = PacketType.COOKIE_REPLY, PacketType.DATA, PacketType.KEEPALIVE


def random_addr(rng: random.Random) -> tuple[str, int]:
    """A random IPv4 source address and port."""
    return (f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.randrange(1024, 65536))


def fill_pending(node: Node, count: int, now: float = 0.0) -> None:
    """Open ``count`` half-open handshakes at ``node`` from distinct throw-away initiators."""
    for i in range(count):
        dialler = Node(f"d{i}", 1000 + i)
        init = dialler.session_for(node.public).initiate(now)[0]
        replies, _ = respond(node.responder, init, (f"203.0.113.{i % 250 + 1}", 2000 + i), now)
        assert types_of(replies) == [RESP]


# --- the front door under attack ------------------------------------------------------------------------
def test_first_messages_that_are_not_valid_leave_no_state() -> None:
    b = Node("b", 2)
    e = static_keypair(7)[1]
    bad = {
        "payload in message 1": encode_handshake_init(5, NO_COOKIE, e + b"extra"),
        "sender index 0": encode_header(INIT, 0, 0) + struct.pack(">I", 0) + NO_COOKIE + e,
        "truncated": encode_header(INIT, 0, 0) + struct.pack(">I", 5) + NO_COOKIE + e[:10],
        "low-order ephemeral": encode_handshake_init(5, NO_COOKIE, bytes(32)),
    }
    for name, datagram in bad.items():
        with pytest.raises(MalformedPacket):
            respond(b.responder, datagram, ("192.0.2.1", 1))
        assert b.responder.pending_count == 0 and b.indices.live == set(), name
    transport = encode_header(DATA, 77, 0) + bytes(32)
    with pytest.raises(UnknownReceiver):
        respond(b.responder, transport, ("192.0.2.1", 1))


def test_rate_limit_per_source_address() -> None:
    b = Node("b", 2)
    rng = random.Random(8)
    outcomes: Counter[str] = Counter()
    for i in range(100):
        init = encode_handshake_init(i + 1, NO_COOKIE, static_keypair(100 + i)[1])
        try:
            respond(b.responder, init, ("198.51.100.9", 1000 + i), 0.0)  # same IP, any port
            outcomes["answered"] += 1
        except RateLimited:
            outcomes["limited"] += 1
    assert outcomes["answered"] == 40 and outcomes["limited"] == 60  # HANDSHAKE_BURST_PER_SOURCE
    init = encode_handshake_init(999, NO_COOKIE, static_keypair(200)[1])
    respond(b.responder, init, random_addr(rng), 0.0)  # another source is not affected


def test_100k_garbage_first_messages_keep_the_front_door_bounded() -> None:
    b = Node("b", 2)
    responder = b.responder
    rng = random.Random(9)
    outcomes: Counter[str] = Counter()
    noisy = ("198.51.100.7", 4000)
    header = encode_header(INIT, 0, 0)
    now = 0.0
    for i in range(100_000):
        now += 0.0005  # 50 s of flood: half-open entries time out and are replaced
        if i % 3 == 0:
            body = rng.randbytes(4 + COOKIE_SIZE + NOISE_MSG1_MIN)  # fully random (mostly a bad sender index)
        else:
            body = struct.pack(">I", rng.randrange(1, 1 << 24)) + rng.randbytes(COOKIE_SIZE + NOISE_MSG1_MIN)
        addr = noisy if i % 10 == 0 else random_addr(rng)
        datagram = header + body
        try:
            replies, result = responder.receive(decode_header(datagram), datagram, addr, now)
        except RemoteProtocolError as exc:
            outcomes[type(exc).__name__] += 1
            continue
        assert result is None
        outcomes[types_of(replies)[0].name] += 1
        assert responder.pending_count <= COOKIE_LOAD_THRESHOLD <= MAX_PENDING_HANDSHAKES
    assert outcomes["COOKIE_REPLY"] > 50_000  # most of the flood costs one hash and no state
    assert outcomes["HANDSHAKE_RESP"] < 1_000  # few Diffie-Hellmans, bounded by load and time
    assert outcomes["RateLimited"] > 5_000  # the one noisy source is held to its bucket
    assert outcomes["MalformedPacket"] > 20_000
    assert b.indices.live == responder.pending_indices()  # nothing leaked


def test_pending_table_is_bounded_even_when_every_initiator_echoes_its_cookie() -> None:
    b = Node("b", 2)
    responder = b.responder
    rng = random.Random(10)
    fill_pending(b, COOKIE_LOAD_THRESHOLD)
    e = static_keypair(11)[1]
    created = 0
    for i in range(MAX_PENDING_HANDSHAKES + 200):
        addr = random_addr(rng)
        sender = i + 1
        e = bytes([(i >> 8) & 0xFF, i & 0xFF]) + e[2:]  # distinct message 1 each time
        (reply,), _ = respond(responder, encode_handshake_init(sender, NO_COOKIE, e), addr, 1.0)
        assert decode_header(reply).ptype is COOKIE and responder.pending_count == max(
            COOKIE_LOAD_THRESHOLD, min(created + COOKIE_LOAD_THRESHOLD, MAX_PENDING_HANDSHAKES)
        )
        cookie = decode_datagram(reply)[1]
        try:
            (answer,), _ = respond(responder, encode_handshake_init(sender, cookie, e), addr, 1.0)
        except MalformedPacket:
            continue  # this ephemeral happened to be unusable
        assert decode_header(answer).ptype is RESP
        created += 1
        assert responder.pending_count <= MAX_PENDING_HANDSHAKES
    assert responder.pending_count == MAX_PENDING_HANDSHAKES
    assert responder.stats["pending_evicted"] == created + COOKIE_LOAD_THRESHOLD - MAX_PENDING_HANDSHAKES
    assert b.indices.live == responder.pending_indices()
    responder.expire(1.0 + PENDING_HANDSHAKE_TIMEOUT)
    assert responder.pending_count == 0 and b.indices.live == set()


def test_pending_handshake_is_dropped_after_timeout() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    resp = b.handle(sa.initiate(0.0)[0], a.addr, 0.0)
    b.responder.expire(PENDING_HANDSHAKE_TIMEOUT - 0.01)
    assert b.responder.pending_count == 1
    b.responder.expire(PENDING_HANDSHAKE_TIMEOUT)
    assert b.responder.pending_count == 0 and b.indices.live == set()
    final = a.handle(resp[0], b.addr, PENDING_HANDSHAKE_TIMEOUT)
    with pytest.raises(UnknownReceiver):  # too late: the initiator will rehandshake on silence
        respond(b.responder, final[0], a.addr, PENDING_HANDSHAKE_TIMEOUT)
