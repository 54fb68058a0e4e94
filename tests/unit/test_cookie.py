"""Cookies and per-source rate limits: the responder's answers to a flood, and the initiator's side of them."""

from __future__ import annotations

import itertools

import pytest
from tests.unit.lossy_link import Network, Node

from axiomnet.constants import (
    MAC_SIZE,
    COOKIE_LOAD_THRESHOLD,
    COOKIE_SECRET_LIFETIME,
    COOKIE_SIZE,
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKE_INITIAL_RETRANSMIT,
    HANDSHAKE_RATE_PER_SOURCE,
    MAX_RATE_LIMITED_SOURCES,
)
from axiomnet.cookie import (
    CookieChecker,
    SourceRateLimiter,
    cookie_key,
    mac,
    open_cookie,
    seal_cookie,
    source_key,
)
from axiomnet.errors import DecryptionFailed, UnknownReceiver
from axiomnet.wire import NO_MAC, PacketType, decode_datagram, decode_header, encode_cookie_reply

INIT, RESP, COOKIE, DATA = (
    PacketType.HANDSHAKE_INIT,
    PacketType.HANDSHAKE_RESP,
    PacketType.COOKIE_REPLY,
    PacketType.DATA,
)
HERE = ("192.0.2.10", 7443)
THERE = ("192.0.2.11", 7443)


def counting_secrets() -> tuple[list[bytes], object]:
    """A deterministic secret_source that records what it handed out."""
    handed: list[bytes] = []
    counter = itertools.count(1)

    def source(n: int) -> bytes:
        secret = bytes([next(counter)]) * n
        handed.append(secret)
        return secret

    return handed, source


def loaded(node: Node, now: float = 0.0) -> None:
    """Bring ``node``'s responder to COOKIE_LOAD_THRESHOLD half-open handshakes."""
    for i in range(COOKIE_LOAD_THRESHOLD):
        dialler = Node(f"d{i}", 500 + i)
        init = dialler.session_for(node.public).initiate(now)[0]
        node.responder.receive(decode_header(init), init, (f"203.0.113.{i % 250 + 1}", 3000 + i), now)
    assert node.responder.pending_count == COOKIE_LOAD_THRESHOLD


def first_message(datagram: bytes) -> tuple[int, bytes]:
    """(sender index, mac2) of a HANDSHAKE_INIT."""
    body = decode_datagram(datagram)[1]
    return body.sender, body.mac2


def cookie_in(reply: bytes, responder: Node, init: bytes) -> bytes:
    """The cookie sealed in ``reply`` (the test knows the responder's key and the INIT it answered)."""
    body = decode_datagram(reply)[1]
    cookie = open_cookie(cookie_key(responder.public), body.nonce, body.sealed, decode_datagram(init)[1].mac1)
    assert cookie is not None
    return cookie


def sealed_reply(responder_public: bytes, init: bytes, cookie: bytes, nonce: bytes) -> bytes:
    """A COOKIE_REPLY for ``init`` sealed the way ``responder_public``'s node seals it."""
    body = decode_datagram(init)[1]
    return encode_cookie_reply(body.sender, nonce, seal_cookie(cookie_key(responder_public), nonce, cookie, body.mac1))


# --- CookieChecker ------------------------------------------------------------------------------------
def test_cookie_is_bound_to_the_source_address_and_port() -> None:
    _, source = counting_secrets()
    checker = CookieChecker(source)
    cookie = checker.make(HERE, 0.0)
    assert len(cookie) == COOKIE_SIZE
    assert checker.is_valid(cookie, HERE, 1.0)
    assert not checker.is_valid(cookie, THERE, 1.0)
    assert not checker.is_valid(cookie, (HERE[0], HERE[1] + 1), 1.0)
    assert not checker.is_valid(bytes(COOKIE_SIZE), HERE, 1.0)


def test_rotation_keeps_the_previous_secret_valid_once() -> None:
    handed, source = counting_secrets()
    checker = CookieChecker(source)
    old = checker.make(HERE, 0.0)
    assert checker.is_valid(old, HERE, COOKIE_SECRET_LIFETIME)  # rotated once: previous secret still accepted
    assert len(handed) == 2
    newer = checker.make(HERE, COOKIE_SECRET_LIFETIME)
    assert newer != old
    assert not checker.is_valid(old, HERE, 2 * COOKIE_SECRET_LIFETIME)  # rotated twice: gone
    assert checker.is_valid(newer, HERE, 2 * COOKIE_SECRET_LIFETIME)


def test_a_long_quiet_spell_invalidates_both_secrets() -> None:
    _, source = counting_secrets()
    checker = CookieChecker(source)
    old = checker.make(HERE, 0.0)
    assert not checker.is_valid(old, HERE, 2.5 * COOKIE_SECRET_LIFETIME)


# --- responder under load ---------------------------------------------------------------------------------
def test_under_load_an_init_without_cookie_gets_a_cookie_reply_and_no_state() -> None:
    a, b = Node("a", 1), Node("b", 2)
    loaded(b)
    live_before = set(b.indices.live)
    init = a.session_for(b.public).initiate(0.0)[0]
    sender, _ = first_message(init)
    replies = b.handle(init, a.addr, 0.0)
    assert [decode_header(r).ptype for r in replies] == [COOKIE]
    assert decode_header(replies[0]).receiver == sender
    assert b.responder.pending_count == COOKIE_LOAD_THRESHOLD and b.indices.live == live_before


def test_initiator_echoes_the_cookie_at_once_and_completes() -> None:
    a, b = Node("a", 1), Node("b", 2)
    loaded(b)
    net = Network(a, b)
    sa = a.session_for(b.public)
    init = sa.send(DATA, b"after the cookie", 0.0)
    cookie_reply = b.handle(init[0], a.addr, 0.0)
    echo = a.handle(cookie_reply[0], b.addr, 0.0)
    assert [decode_header(d).ptype for d in echo] == [INIT]
    cookie = cookie_in(cookie_reply[0], b, init[0])
    assert first_message(echo[0]) == (first_message(init[0])[0], mac(cookie, echo[0][:-MAC_SIZE]))
    net.send(a, echo)
    net.settle(0.0)
    assert sa.is_established and b.delivered == [(DATA, b"after the cookie")]
    assert sa.stats["cookies_received"] == 1


def test_a_cookie_minted_for_another_address_is_refused() -> None:
    a, b = Node("a", 1), Node("b", 2)
    loaded(b)
    sa = a.session_for(b.public)
    cookie_reply = b.handle(sa.initiate(0.0)[0], a.addr, 0.0)
    echo = a.handle(cookie_reply[0], b.addr, 0.0)
    elsewhere = ("198.51.100.200", a.addr[1])
    replies = b.handle(echo[0], elsewhere, 0.0)  # the same INIT, cookie and all, from another address
    assert [decode_header(r).ptype for r in replies] == [COOKIE]
    assert b.responder.pending_count == COOKIE_LOAD_THRESHOLD
    assert [decode_header(r).ptype for r in b.handle(echo[0], a.addr, 0.0)] == [RESP]  # the right one passes


def test_retransmitted_init_keeps_carrying_the_cookie() -> None:
    a, b = Node("a", 1), Node("b", 2)
    loaded(b)
    sa = a.session_for(b.public)
    cookie_reply = b.handle(sa.initiate(0.0)[0], a.addr, 0.0)
    a.handle(cookie_reply[0], b.addr, 0.0)
    retransmit = sa.tick(sa.next_deadline() or 0.0)
    cookie = cookie_in(cookie_reply[0], b, retransmit[0])
    assert first_message(retransmit[0])[1] == mac(cookie, retransmit[0][:-MAC_SIZE]) != NO_MAC


def test_cookie_replies_cannot_make_the_initiator_resend_faster_than_the_first_retransmit() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)[0]
    resent = []
    for i in range(10):  # valid replies (whoever saw the INIT and knows b's public key can seal one)
        reply = sealed_reply(b.public, init, bytes([i]) * COOKIE_SIZE, bytes([i]) * 24)
        resent += sa.receive(decode_header(reply), reply, 0.01 * i).replies
    assert len(resent) == 1  # ten cookie replies inside HANDSHAKE_INITIAL_RETRANSMIT: one resend
    reply = sealed_reply(b.public, init, bytes(COOKIE_SIZE), bytes(24))
    assert len(sa.receive(decode_header(reply), reply, HANDSHAKE_INITIAL_RETRANSMIT + 0.01).replies) == 1


def test_cookie_reply_for_an_index_not_in_flight_is_refused() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    reply = encode_cookie_reply(12345, bytes(24), bytes(COOKIE_SIZE + 16))
    with pytest.raises(UnknownReceiver):
        sa.receive(decode_header(reply), reply, 0.0)


@pytest.mark.parametrize("forgery", ["another responder's key", "another message's mac1", "garbage"])
def test_a_forged_cookie_reply_is_refused_and_changes_nothing(forgery: str) -> None:
    a, b, c = Node("a", 1), Node("b", 2), Node("c", 3)
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)[0]
    other_init = c.session_for(b.public).initiate(0.0)[0]
    cookie = bytes(range(COOKIE_SIZE))
    reply = {
        "another responder's key": sealed_reply(c.public, init, cookie, bytes(24)),
        "another message's mac1": encode_cookie_reply(
            first_message(init)[0], bytes(24),
            seal_cookie(cookie_key(b.public), bytes(24), cookie, decode_datagram(other_init)[1].mac1)),
        "garbage": encode_cookie_reply(first_message(init)[0], bytes(24), bytes(range(32))),
    }[forgery]
    deadline = sa.next_deadline()
    with pytest.raises(DecryptionFailed):
        sa.receive(decode_header(reply), reply, 0.0)
    assert sa.stats["forged_cookie_replies"] == 1 and sa.stats["cookies_received"] == 0
    assert sa.next_deadline() == deadline  # no resend scheduled or sent
    assert first_message(sa.tick(deadline or 0.0)[0])[1] == NO_MAC  # the retransmission carries no mac2


# --- SourceRateLimiter ------------------------------------------------------------------------------------
def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    limiter = SourceRateLimiter()
    allowed = sum(limiter.allow("192.0.2.1", 0.0) for _ in range(100))
    assert allowed == HANDSHAKE_BURST_PER_SOURCE
    assert not limiter.allow("192.0.2.1", 0.0)
    one_token = 1.0 / HANDSHAKE_RATE_PER_SOURCE
    assert limiter.allow("192.0.2.1", one_token)
    assert not limiter.allow("192.0.2.1", one_token)
    assert limiter.allow("192.0.2.2", 0.0)  # buckets are per source


def test_rate_limit_table_is_bounded_lru() -> None:
    limiter = SourceRateLimiter()
    for _ in range(int(HANDSHAKE_BURST_PER_SOURCE)):
        limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.0)
    for i in range(MAX_RATE_LIMITED_SOURCES):
        limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert len(limiter) == MAX_RATE_LIMITED_SOURCES
    assert limiter.allow("192.0.2.1", 0.0)  # it was the least recently used and was forgotten


def test_ipv6_sources_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() -> None:
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:192.0.2.7") == source_key("192.0.2.7")
    assert source_key("::ffff:192.0.2.7") != source_key("::ffff:192.0.2.8")
    assert source_key("fe80::1%eth0") == source_key("fe80::2")


# --- known answers (docs/PROTOCOL.md §2.2 and §3.5 print these bytes) --------------------------------------
def test_mac_and_cookie_reply_known_answers() -> None:
    from axiomnet.cookie import add_macs, mac1_key
    from axiomnet.wire import encode_handshake_init

    public = bytes(range(32))
    assert mac1_key(public).hex() == "4fb2527ac956001553dc1ad9b55171b7d9daa3de1cdbcd71451830170c7e6cac"
    assert cookie_key(public).hex() == "3dd5869c5202e45146936d1644f76ff697061661c181f3fd450eae43932eacec"
    datagram, mac1 = add_macs(encode_handshake_init(0x010203, bytes([0x42]) * 32), mac1_key(public), None)
    assert datagram.hex() == ("00000000" "41000000" "0000000000000000" "00010203" + "42" * 32 + "00" * 172
                              + "71c033e90542137cd681beb732e2cbea" + "00" * 16)
    cookie = bytes([0xC0]) * 16
    assert add_macs(datagram, mac1_key(public), cookie)[0][-16:].hex() == "c11a943a7237de684d6ffe3996fc67fd"
    reply = encode_cookie_reply(0x010203, bytes([0x0A]) * 24, seal_cookie(cookie_key(public), bytes([0x0A]) * 24,
                                                                           cookie, mac1))
    assert reply.hex() == ("00000000" "44010203" "0000000000000000" + "0a" * 24
                           + "d3d64b1bf9e3367b716ee9d1c53f92316c22b4ef96d3ffa807fba432105b9037")


def test_the_penalty_box_drops_only_inits_of_its_sources_until_their_time() -> None:
    from axiomnet.cookie import PENALTY_BOX_MAX_SOURCES, boxed, penalised, source_key

    def datagram(ptype: PacketType) -> bytes:
        return bytes(4) + bytes([ptype]) + bytes(251)

    init = datagram(PacketType.HANDSHAKE_INIT)
    box = boxed({}, source_key(("198.51.100.7", 1)), until=10.0, now=0.0)
    assert penalised(box, init, ("198.51.100.7", 4000), 9.9)  # any port of the source
    assert not penalised(box, init, ("198.51.100.7", 4000), 10.0)  # released on time
    assert not penalised(box, init, ("198.51.100.8", 4000), 9.9)  # another source
    for other in (PacketType.HANDSHAKE_FINAL, PacketType.KEY_PROBE, PacketType.DATA, PacketType.CONTROL):
        assert not penalised(box, datagram(other), ("198.51.100.7", 4000), 9.9)  # its sessions run on
    assert not penalised(box, init[:4], ("198.51.100.7", 4000), 9.9)
    # A new box drops the expired entries, keeps the later release, and is bounded (soonest released go first).
    later = boxed(box, source_key(("198.51.100.9", 1)), until=30.0, now=11.0)
    assert later == {source_key(("198.51.100.9", 1)): 30.0} and box != later
    assert boxed(later, source_key(("198.51.100.9", 1)), until=20.0, now=11.0) == later
    full: dict[bytes, float] = {}
    for i in range(PENALTY_BOX_MAX_SOURCES + 10):
        full = boxed(full, i.to_bytes(4, "big"), until=100.0 + i, now=0.0)
    assert len(full) == PENALTY_BOX_MAX_SOURCES and (0).to_bytes(4, "big") not in full
