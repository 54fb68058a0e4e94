"""The front door (HandshakeResponder) under attack: invalid first messages, rate limits, floods, bounds."""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest
from noise.backends.default.diffie_hellmans import ED25519
from tests.unit.lossy_link import (
    Network,
    respond,
    types_of,
    Node,
    static_keypair,
)

from axiomnet.constants import (
    COOKIE_LOAD_THRESHOLD,
    HANDSHAKE_BURST_PER_SOURCE,
    MAC_SIZE,
    MAX_PENDING_HANDSHAKES,
    PENDING_HANDSHAKE_TIMEOUT,
    REFUSALS_BEFORE_LOAD,
    REFUSALS_FORGIVEN_PER_SECOND,
    REFUSED_SOURCE_HANDSHAKE_BURST,
    REFUSED_SOURCE_HANDSHAKE_RATE,
    UNDER_LOAD_AFTER_TIME,
)
from axiomnet.cookie import add_macs, cookie_key, mac1_key, open_cookie
from axiomnet.errors import (
    Ignored,
    InvalidMac,
    MalformedPacket,
    RateLimited,
    RemoteProtocolError,
    UnknownReceiver,
)
from axiomnet.wire import (
    INIT_PADDING,
    NOISE_MSG1_MIN,
    PacketType,
    decode_datagram,
    decode_header,
    encode_handshake_init,
    encode_header,
)

INIT, RESP, FINAL = PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP, PacketType.HANDSHAKE_FINAL
COOKIE, DATA, KEEPALIVE = PacketType.COOKIE_REPLY, PacketType.DATA, PacketType.KEEPALIVE


@pytest.fixture
def dh_count(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every X25519 operation noiseprotocol performs (the cost a flood must not make us pay)."""
    counts: Counter[str] = Counter()
    real = ED25519.dh

    def counting(self: ED25519, private_key: object, public_key: object) -> bytes:
        counts["dh"] += 1
        return real(self, private_key, public_key)

    monkeypatch.setattr(ED25519, "dh", counting)
    return counts


def random_addr(rng: random.Random) -> tuple[str, int]:
    """A random IPv4 source address and port."""
    return (f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.randrange(1024, 65536))


def init_for(node: Node, sender: int, noise: bytes, cookie: bytes | None = None) -> bytes:
    """A HANDSHAKE_INIT to ``node`` with a valid mac1 (the sender knows its key), mac2 under ``cookie``."""
    return add_macs(encode_handshake_init(sender, noise), mac1_key(node.public), cookie)[0]


def cookie_of(node: Node, reply: bytes, init: bytes) -> bytes:
    """Open the COOKIE_REPLY ``node`` sent for ``init`` (as the initiator does)."""
    body = decode_datagram(reply)[1]
    cookie = open_cookie(cookie_key(node.public), body.nonce, body.sealed, decode_datagram(init)[1].mac1)
    assert cookie is not None
    return cookie


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
        "payload in message 1": init_for(b, 5, e + b"extra"),
        "sender index 0": encode_header(INIT, 0, 0) + struct.pack(">I", 0) + e + bytes(2 * MAC_SIZE),
        "truncated": encode_header(INIT, 0, 0) + struct.pack(">I", 5) + e[:10] + bytes(2 * MAC_SIZE),
        "low-order ephemeral": init_for(b, 5, bytes(32)),
    }
    for name, datagram in bad.items():
        with pytest.raises(MalformedPacket):
            respond(b.responder, datagram, ("192.0.2.1", 1))
        assert b.responder.pending_count == 0 and b.indices.live == set(), name
    transport = encode_header(DATA, 77, 0) + bytes(32)
    with pytest.raises(UnknownReceiver):
        respond(b.responder, transport, ("192.0.2.1", 1))


def test_inits_without_a_valid_mac1_get_no_reply_and_cost_no_diffie_hellman(dh_count: Counter[str]) -> None:
    b = Node("b", 2)
    rng = random.Random(12)
    e = static_keypair(7)[1]
    wrong_key = Node("c", 3)
    inits = [encode_handshake_init(1 + i, e) for i in range(100)]  # zero macs: a scan
    inits += [init_for(wrong_key, 200 + i, e) for i in range(100)]  # meant for another node's key
    inits += [init_for(b, 400 + i, e)[:-2 * MAC_SIZE] + rng.randbytes(2 * MAC_SIZE) for i in range(100)]  # guessed
    for datagram in inits:
        with pytest.raises(InvalidMac):
            respond(b.responder, datagram, random_addr(rng))
    assert dh_count["dh"] == 0
    assert b.responder.stats["bad_mac1"] == 300 and b.responder.stats["responses_sent"] == 0
    assert b.responder.pending_count == 0 and b.indices.live == set()
    respond(b.responder, init_for(b, 999, e), random_addr(rng))  # the same INIT with a valid mac1 is answered
    assert dh_count["dh"] > 0 and b.responder.stats["responses_sent"] == 1


def test_no_rate_limit_and_no_cookie_below_the_load_threshold() -> None:
    """Below load nothing is rate-limited at all (wireguard-go applies its limiter only under load, after the
    cookie check): INITs spoofed with a victim's address cannot use up the victim's bucket."""
    b = Node("b", 2)
    victim = ("198.51.100.9", 7443)
    now = 0.0
    rate = (COOKIE_LOAD_THRESHOLD - 4) / PENDING_HANDSHAKE_TIMEOUT  # just under the load threshold
    for i in range(int(3 * HANDSHAKE_BURST_PER_SOURCE)):
        now += 1.0 / rate
        replies, _ = respond(b.responder, init_for(b, i + 1, static_keypair(100 + i)[1]), victim, now)
        assert types_of(replies) == [RESP]
    assert b.responder.stats["rate_limited"] == 0 and b.responder.stats["cookie_replies"] == 0
    assert b.responder.pending_count < COOKIE_LOAD_THRESHOLD


def test_under_load_the_rate_limit_applies_per_source_after_the_cookie_check() -> None:
    b = Node("b", 2)
    fill_pending(b, COOKIE_LOAD_THRESHOLD)
    noisy = ("198.51.100.9", 1000)
    outcomes: Counter[str] = Counter()
    for i in range(100):
        e = static_keypair(100 + i)[1]
        (reply,), _ = respond(b.responder, init_for(b, i + 1, e), noisy, 0.0)
        assert types_of([reply]) == [COOKIE]  # no mac2 yet: a cookie reply, and no token taken
        cookie = cookie_of(b, reply, init_for(b, i + 1, e))
        try:
            respond(b.responder, init_for(b, i + 1, e, cookie), noisy, 0.0)
            outcomes["answered"] += 1
        except RateLimited:
            outcomes["limited"] += 1
    assert outcomes["answered"] == HANDSHAKE_BURST_PER_SOURCE and outcomes["limited"] == 100 - outcomes["answered"]
    assert b.responder.stats["cookie_replies"] == 100
    other = random_addr(random.Random(8))  # another source is not affected
    init = init_for(b, 999, static_keypair(200)[1])
    (reply,), _ = respond(b.responder, init, other, 0.0)
    (answer,), _ = respond(b.responder, init_for(b, 999, static_keypair(200)[1], cookie_of(b, reply, init)), other, 0.0)
    assert types_of([answer]) == [RESP]


def test_load_outlasts_the_half_open_count_by_under_load_after_time() -> None:
    b = Node("b", 2)
    fill_pending(b, COOKIE_LOAD_THRESHOLD)
    assert b.responder.under_load(0.0)
    b.responder.expire(PENDING_HANDSHAKE_TIMEOUT)  # every half-open handshake times out
    assert b.responder.pending_count == 0
    assert b.responder.under_load(PENDING_HANDSHAKE_TIMEOUT - 0.01 + UNDER_LOAD_AFTER_TIME)
    assert not b.responder.under_load(PENDING_HANDSHAKE_TIMEOUT + UNDER_LOAD_AFTER_TIME)


def flood(b: Node, rng: random.Random, count: int, *, mac1_valid: bool) -> Counter[str]:
    """``count`` random first messages at ``b`` over 50 s, one in ten from one noisy source; outcome counts."""
    responder = b.responder
    outcomes: Counter[str] = Counter()
    noisy = ("198.51.100.7", 4000)
    header = encode_header(INIT, 0, 0)
    now = 0.0
    for i in range(count):
        now += 50.0 / count  # half-open entries time out and are replaced
        if i % 3 == 0:
            body = rng.randbytes(4 + NOISE_MSG1_MIN)  # fully random (mostly a bad sender index)
        else:
            body = struct.pack(">I", rng.randrange(1, 1 << 24)) + rng.randbytes(NOISE_MSG1_MIN)
        datagram = header + body + bytes(INIT_PADDING + 2 * MAC_SIZE)  # padded, as every initiator sends it
        if mac1_valid:
            datagram = add_macs(datagram, mac1_key(b.public), None)[0]
        addr = noisy if i % 10 == 0 else random_addr(rng)
        try:
            replies, result = responder.receive(decode_header(datagram), datagram, addr, now)
        except RemoteProtocolError as exc:
            outcomes[type(exc).__name__] += 1
            continue
        assert result is None
        outcomes[types_of(replies)[0].name] += 1
        assert responder.pending_count <= COOKIE_LOAD_THRESHOLD <= MAX_PENDING_HANDSHAKES
    assert b.indices.live == responder.pending_indices()  # nothing leaked
    return outcomes


@pytest.mark.slow
def test_100k_garbage_first_messages_get_no_reply_and_cost_no_diffie_hellman(dh_count: Counter[str]) -> None:
    b = Node("b", 2)
    outcomes = flood(b, random.Random(9), 100_000, mac1_valid=False)
    assert dh_count["dh"] == 0 and b.responder.pending_count == 0
    assert outcomes["InvalidMac"] > 60_000 and outcomes["MalformedPacket"] > 20_000
    assert set(outcomes) == {"InvalidMac", "MalformedPacket"}  # no reply of any kind


@pytest.mark.slow
def test_a_flood_from_senders_that_know_our_key_keeps_the_front_door_bounded(dh_count: Counter[str]) -> None:
    b = Node("b", 2)
    outcomes = flood(b, random.Random(9), 100_000, mac1_valid=True)
    assert outcomes["COOKIE_REPLY"] > 50_000  # most of the flood costs one hash and no state
    assert outcomes["HANDSHAKE_RESP"] < 1_000  # few Diffie-Hellmans, bounded by load and time
    assert dh_count["dh"] <= 3 * outcomes["HANDSHAKE_RESP"] + 3 * outcomes["MalformedPacket"]
    assert outcomes["RateLimited"] == 0  # nobody proved an address, so no bucket was touched
    assert outcomes["MalformedPacket"] > 20_000


@pytest.mark.slow
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
        init = init_for(b, sender, e)
        (reply,), _ = respond(responder, init, addr, 1.0)
        assert decode_header(reply).ptype is COOKIE and responder.pending_count == max(
            COOKIE_LOAD_THRESHOLD, min(created + COOKIE_LOAD_THRESHOLD, MAX_PENDING_HANDSHAKES)
        )
        try:
            (answer,), _ = respond(responder, init_for(b, sender, e, cookie_of(b, reply, init)), addr, 1.0)
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


def test_a_spoofed_source_init_flood_cannot_stop_the_real_peer_at_that_source() -> None:
    """1,000 INITs a second carrying the victim's exact address (and a valid mac1: the attacker knows b's key)
    for 5 s. The victim, who receives at that address, gets its cookie, passes mac2 and the rate limit, and
    connects while the flood goes on; the flood never got a RESP to a spoofed sender past the load threshold."""
    a, b = Node("a", 1), Node("b", 2)
    net = Network(a, b)
    rng = random.Random(13)
    e = static_keypair(14)[1]
    sa = a.session_for(b.public)
    now, answered = 0.0, 0
    net.send(a, sa.initiate(now))
    while now < 5.0:
        now += 0.001
        forged = init_for(b, rng.randrange(1, 1 << 24), bytes([rng.randrange(256)]) + e[1:])
        try:
            replies, _ = respond(b.responder, forged, a.addr, now)  # spoofed: the replies go to the victim
        except RemoteProtocolError:
            continue
        answered += types_of(replies) == [RESP]
        if int(now * 1000) % 50 == 0:
            net.step(now)  # the victim's own traffic, timers and retransmissions
    assert sa.is_established and b.sessions[a.public].is_established
    assert answered < 2 * COOKIE_LOAD_THRESHOLD  # past the load threshold, spoofers got only cookie replies
    assert b.responder.stats["rate_limited"] == 0  # and never touched the victim's bucket


def test_next_deadline_is_when_the_oldest_half_open_handshake_expires() -> None:
    """The peer manager and the e2e actor sleep until this instead of expiring half-open handshakes on a tick."""
    b = Node("b", 2)
    assert b.responder.next_deadline() is None  # nothing half-open: nothing to expire, ever
    fill_pending(b, 1, now=1.0)
    fill_pending(b, 1, now=2.0)
    assert b.responder.next_deadline() == 1.0 + PENDING_HANDSHAKE_TIMEOUT
    b.responder.expire(1.0 + PENDING_HANDSHAKE_TIMEOUT - 1e-6)
    assert b.responder.pending_count == 2  # not before
    b.responder.expire(1.0 + PENDING_HANDSHAKE_TIMEOUT)
    assert b.responder.pending_count == 1 and b.responder.next_deadline() == 2.0 + PENDING_HANDSHAKE_TIMEOUT
    b.responder.expire(2.0 + PENDING_HANDSHAKE_TIMEOUT)
    assert b.responder.pending_count == 0 and b.responder.next_deadline() is None


# --- no amplification ------------------------------------------------------------------------------------
def test_no_reply_to_an_unauthenticated_datagram_is_larger_than_it() -> None:
    """Issue 17: a captured 84-byte HANDSHAKE_INIT replayed 20 times from a spoofed source drew 20 RESPs of about
    150 bytes (1.8x). INITs are now padded to HANDSHAKE_INIT_SIZE and an INIT smaller than the RESP it would
    draw gets nothing; a burst of copies of one INIT draws one answer. Every reply the front door gives to a
    datagram nobody authenticated, on every path, is measured here."""
    b = Node("b", 2)
    victim = ("192.0.2.66", 7443)
    ratios: dict[str, float] = {}

    def measure(name: str, datagram: bytes, addr: tuple[str, int], now: float) -> list[bytes]:
        replies, _ = respond(b.responder, datagram, addr, now)
        assert len(replies) == 1, name
        ratios[name] = len(replies[0]) / len(datagram)
        return replies

    init = Node("a", 1).session_for(b.public).initiate(0.0)[0]
    measure("HANDSHAKE_INIT -> HANDSHAKE_RESP", init, victim, 0.0)
    measure("HANDSHAKE_INIT retransmitted -> HANDSHAKE_RESP again", init, victim, 0.3)
    answers = 0
    for i in range(20):  # the captured INIT replayed in a burst: the answer just sent is not sent again
        try:
            answers += len(respond(b.responder, init, victim, 0.31 + i * 0.001)[0])
        except Ignored:
            pass
    assert answers == 0 and b.responder.stats["responses_not_resent"] == 20
    probe = Node("p", 5).session_for(None, pin=False).initiate(1.0)[0]
    measure("KEY_PROBE -> KEY_REPLY", probe, victim, 1.0)
    fill_pending(b, COOKIE_LOAD_THRESHOLD - b.responder.pending_count, now=2.0)
    init2 = Node("c", 3).session_for(b.public).initiate(2.0)[0]
    assert types_of(measure("HANDSHAKE_INIT under load -> COOKIE_REPLY", init2, victim, 2.0)) == [
        PacketType.COOKIE_REPLY]
    assert all(ratio <= 1.0 for ratio in ratios.values()), ratios
    assert len(ratios) == 4
    # An INIT without the padding (an old or hostile sender) would draw more than it cost: it gets nothing.
    e = static_keypair(7)[1]
    bare = add_macs(encode_handshake_init(77, e, padding=0), mac1_key(b.public), None)[0]
    with pytest.raises(MalformedPacket, match="smaller than our"):
        respond(b.responder, bare, victim, 30.0)
    assert b.responder.stats["init_too_small"] == 1


def test_a_local_payload_too_large_for_the_padded_init_is_refused_at_start() -> None:
    """The rule above holds by construction: a node whose RESP would outgrow the INIT does not start."""
    from axiomnet.control import HandshakePayload
    from axiomnet.responder import HandshakeResponder

    private, public = static_keypair(9)
    HandshakeResponder(private, public, local_payload=HandshakePayload(capabilities=("tun", "neighbour-ip", "e2e")))
    with pytest.raises(ValueError, match="larger than"):
        HandshakeResponder(private, public, local_payload=HandshakePayload(capabilities=tuple("x" * 12 + str(i)
                                                                                             for i in range(10))))


# --- refusals are load ------------------------------------------------------------------------------------
def test_refused_handshakes_put_their_source_under_load_cookies_then_its_rate_limit(dh_count: Counter[str]) -> None:
    """Issue 17: 8,000 refused fresh keys from one host each completed Noise (0.8 ms of DH apiece) and nothing
    slowed that host down, since refusals were not load (the half-open table never held 64). Past
    REFUSALS_BEFORE_LOAD refusals its source needs a cookie, then meets the per-source rate limit; every other
    source, and the node, stay unloaded: a pinned peer elsewhere is answered at once."""
    friend = Node("friend", 50)
    b = Node("b", 2, allowed_keys=frozenset({friend.public}))
    host = "198.51.100.66"
    now = 0.0

    def complete(node: Node, addr: tuple[str, int], cookie: bytes | None = None) -> list[PacketType]:
        """One full handshake attempt from ``node`` at ``addr``; the packet types b answered with."""
        session = node.session_for(b.public)
        init = session.initiate(now)[0]
        if cookie is not None:
            init = add_macs(init, mac1_key(b.public), cookie)[0]
        try:
            replies, _ = respond(b.responder, init, addr, now)
        except RemoteProtocolError as exc:
            return [type(exc).__name__]
        if types_of(replies) != [RESP]:
            return types_of(replies)
        final = node.handle(replies[0], b.addr, now)
        try:
            respond(b.responder, final[0], addr, now)
        except RemoteProtocolError as exc:
            return [RESP, type(exc).__name__]
        return [RESP]

    for i in range(int(REFUSALS_BEFORE_LOAD)):  # fresh keys, refused by allowed_keys after a full handshake
        now += 0.01
        assert complete(Node(f"k{i}", 100 + i), (host, 2000 + i)) == [RESP, "NotAllowed"]
    assert b.responder.source_under_load((host, 1), now) and not b.responder.under_load(now)
    dh_before = dh_count["dh"]
    for i in range(100):  # the same host, any port, fresh keys: a cookie reply each, no Diffie-Hellman
        now += 0.0005
        assert complete(Node(f"x{i}", 300 + i), (host, 3000 + i)) == [PacketType.COOKIE_REPLY]
    assert dh_count["dh"] == dh_before and b.responder.stats["cookie_replies_refused_source"] == 100
    # One that echoes its cookie (it receives at its address) meets its source's rate limit.
    addr = (host, 4000)
    dialler = Node("echo", 400)
    init = dialler.session_for(b.public).initiate(now)[0]
    cookie = cookie_of(b, respond(b.responder, init, addr, now)[0][0], init)
    outcomes: Counter[str] = Counter()
    for i in range(60):
        now += 0.005
        outcomes[str(complete(Node(f"c{i}", 500 + i), addr, cookie)[-1])] += 1
    # Within 0.3 s: the refused source's own bucket lets REFUSED_SOURCE_HANDSHAKE_BURST through, not 40.
    assert 0 < outcomes["NotAllowed"] <= REFUSED_SOURCE_HANDSHAKE_BURST + 1
    assert outcomes["RateLimited"] >= 60 - REFUSED_SOURCE_HANDSHAKE_BURST - 1
    # The penalty box (the reader drops this source's INITs till then) lasts exactly as long as a refusal would:
    # just before penalty_until every INIT is still RateLimited, at it one gets through again.
    until = b.responder.penalty_until(addr, now)
    assert now < until <= now + 1.0 / REFUSED_SOURCE_HANDSHAKE_RATE
    assert b.responder.penalty_until((host, 9), now) == until  # the source, any port
    assert b.responder.penalty_until(("192.0.2.50", 7443), now) == now  # nobody else
    now = until - 0.01
    assert complete(Node("early", 700), addr, cookie) == ["RateLimited"]
    assert b.responder.penalty_until(addr, now) == until
    now = until
    assert complete(Node("on-time", 701), addr, cookie) == [RESP, "NotAllowed"]
    # A named peer at another address is answered at once, no cookie asked.
    assert complete(friend, ("192.0.2.50", 7443)) == [RESP]
    # Refusals are forgiven over time: the source is unloaded again (a host that stops is not punished forever).
    now += (b.responder.stats["refusals"] + 1) / REFUSALS_FORGIVEN_PER_SECOND
    assert not b.responder.source_under_load((host, 1), now)
