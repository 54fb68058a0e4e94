"""Cookies and per-source rate limits: the responder's answers to a flood, and the initiator's side of them."""

from __future__ import annotations

import itertools

import pytest
from tests.unit.lossy_link import Network, Node

from axiomnet.constants import (
    COOKIE_LOAD_THRESHOLD,
    COOKIE_SECRET_LIFETIME,
    COOKIE_SIZE,
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKE_INITIAL_RETRANSMIT,
    HANDSHAKE_RATE_PER_SOURCE,
    MAX_RATE_LIMITED_SOURCES,
)
from axiomnet.cookie import CookieChecker, SourceRateLimiter, source_key
from axiomnet.errors import UnknownReceiver
from axiomnet.wire import NO_COOKIE, PacketType, decode_datagram, decode_header, encode_cookie_reply

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
    """(sender index, cookie) of a HANDSHAKE_INIT."""
    body = decode_datagram(datagram)[1]
    return body.sender, body.cookie


# --- CookieChecker ------------------------------------------------------------------------------------
def test_cookie_is_bound_to_the_source_address_and_port() -> None:
    _, source = counting_secrets()
    checker = CookieChecker(source)
    cookie = checker.make(HERE, 0.0)
    assert len(cookie) == COOKIE_SIZE
    assert checker.is_valid(cookie, HERE, 1.0)
    assert not checker.is_valid(cookie, THERE, 1.0)
    assert not checker.is_valid(cookie, (HERE[0], HERE[1] + 1), 1.0)
    assert not checker.is_valid(NO_COOKIE, HERE, 1.0)


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
    assert first_message(echo[0]) == (first_message(init[0])[0], decode_datagram(cookie_reply[0])[1])
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
    assert first_message(retransmit[0])[1] == decode_datagram(cookie_reply[0])[1]


def test_cookie_replies_cannot_make_the_initiator_resend_faster_than_the_first_retransmit() -> None:
    a = Node("a", 1)
    sa = a.session_for(Node("b", 2).public)
    sender, _ = first_message(sa.initiate(0.0)[0])
    resent = []
    for i in range(10):
        reply = encode_cookie_reply(sender, bytes([i]) * COOKIE_SIZE)
        resent += sa.receive(decode_header(reply), reply, 0.01 * i).replies
    assert len(resent) == 1  # ten forged cookie replies inside HANDSHAKE_INITIAL_RETRANSMIT: one resend
    reply = encode_cookie_reply(sender, bytes(COOKIE_SIZE))
    assert len(sa.receive(decode_header(reply), reply, HANDSHAKE_INITIAL_RETRANSMIT + 0.01).replies) == 1


def test_cookie_reply_for_an_index_not_in_flight_is_refused() -> None:
    a = Node("a", 1)
    sa = a.session_for(Node("b", 2).public)
    reply = encode_cookie_reply(12345, bytes(COOKIE_SIZE))
    with pytest.raises(UnknownReceiver):
        sa.receive(decode_header(reply), reply, 0.0)


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
