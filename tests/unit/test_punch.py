"""NAT traversal's pure core (axiomnet/punch.py, docs/PROTOCOL.md §8.2): the CANDIDATES message byte for byte, its
bounds, and the planner's bounds on what a hostile exchange can make a node probe."""

from __future__ import annotations

import random

import pytest

from axiomnet.e2e import EndToEnd
from axiomnet.errors import MalformedPacket
from axiomnet.identity import Identity
from axiomnet.punch import (CANDIDATES, EXCHANGE_MIN_GAP, MAX_CANDIDATES, PUNCH_ATTEMPT_TIME, PUNCH_RETRY_INTERVAL, PunchPlanner,
                            decode_candidates, encode_candidates)
from axiomnet.wire import PacketType

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_candidates_known_answer():
    payload = encode_candidates([("198.51.100.7", 7443), ("2001:db8::1", 443)])
    assert payload.hex() == "4102" "04c63364071d13" "0620010db8000000000000000000000001" "01bb"
    assert decode_candidates(payload) == [("198.51.100.7", 7443), ("2001:db8::1", 443)]


def test_encoding_leaves_out_what_no_one_can_dial_and_keeps_at_most_four():
    endpoints = [("0.0.0.0", 1), ("127.0.0.1", 7443), ("fe80::1", 7443), ("224.0.0.1", 9), ("::ffff:192.0.2.1", 5),
                 ("192.0.2.1", 5), ("not an ip", 5), ("192.0.2.9", 0)] + [(f"192.0.2.{i}", 7443) for i in range(10, 20)]
    decoded = decode_candidates(encode_candidates(endpoints))
    assert decoded[0] == ("192.0.2.1", 5)  # the mapped one, as IPv4, once
    assert len(decoded) == MAX_CANDIDATES
    assert encode_candidates([]) == bytes([CANDIDATES, 0])


@pytest.mark.parametrize("payload", [
    "", "40", "4101", "4105" + "04c63364071d13" * 5,  # wrong type, truncated, over MAX_CANDIDATES
    "410104c6336407", "410105c63364071d13", "410104c63364071d1300",  # truncated, family 5, trailing byte
    "41010400000000" "1d13", "4101047f000001" "1d13", "410104c6336407" "0000",  # unspecified, loopback, port 0
    "410106fe800000000000000000000000000001" "1d13",  # link-local
])
def test_malformed_candidates_are_refused(payload):
    with pytest.raises(MalformedPacket):
        decode_candidates(bytes.fromhex(payload))


def test_an_exchange_is_probed_once_then_backs_off():
    planner = PunchPlanner()
    dial = planner.heard(KEY, [("192.0.2.1", 7443)], own=set(), direct=False, now=0.0)
    assert dial == (("192.0.2.1", 7443),) and planner.next_deadline() == PUNCH_ATTEMPT_TIME
    # The same (or a hostile peer's new) list while the attempt is in flight, or soon after: nothing more is sent.
    assert planner.heard(KEY, [("203.0.113.9", 1)], own=set(), direct=False, now=1.0) == ()
    assert planner.expired(PUNCH_ATTEMPT_TIME - 0.1) == []
    assert planner.expired(PUNCH_ATTEMPT_TIME) == [KEY]
    state = planner.snapshot()[KEY.hex()]
    assert state["state"] == "relayed" and "no candidate answered" in state["reason"]
    assert planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, PUNCH_RETRY_INTERVAL - EXCHANGE_MIN_GAP - 1) == ()
    assert planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, PUNCH_RETRY_INTERVAL) != ()
    planner.expired(PUNCH_RETRY_INTERVAL + PUNCH_ATTEMPT_TIME)
    # The backoff doubled: the third attempt waits twice as long.
    assert planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, 2 * PUNCH_RETRY_INTERVAL + 1) == ()
    assert planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, 3 * PUNCH_RETRY_INTERVAL) != ()
    assert planner.stats["punch_attempts"] == 3 and planner.stats["punch_failed"] == 2


def test_a_relayed_peer_is_asked_for_a_new_exchange_once_per_backoff():
    planner = PunchPlanner()
    planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, 0.0)
    planner.expired(PUNCH_ATTEMPT_TIME)
    assert planner.next_deadline() == PUNCH_RETRY_INTERVAL  # the retry is the next thing to do
    assert planner.retries_due(PUNCH_RETRY_INTERVAL - 1) == []
    assert planner.retries_due(PUNCH_RETRY_INTERVAL) == [KEY]
    assert planner.retries_due(PUNCH_RETRY_INTERVAL + 100) == [] and planner.next_deadline() is None  # once
    # The peer's answer starts the second attempt; when it fails too, the next ask waits twice as long.
    assert planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, PUNCH_RETRY_INTERVAL + 0.1) != ()
    planner.expired(PUNCH_RETRY_INTERVAL + PUNCH_ATTEMPT_TIME + 0.1)
    assert planner.next_deadline() == PUNCH_RETRY_INTERVAL + 0.1 + 2 * PUNCH_RETRY_INTERVAL


def test_own_endpoints_direct_peers_and_too_many_attempts_are_not_dialled():
    planner = PunchPlanner(max_attempts=1)
    own = {("192.0.2.1", 7443)}
    assert planner.heard(KEY, [("192.0.2.1", 7443)], own, False, 0.0) == ()  # only ourselves: nothing
    assert planner.stats["punch_no_candidate"] == 1
    assert planner.heard(OTHER, [("192.0.2.2", 1)], set(), True, 0.0) == ()  # a link session exists already
    assert planner.heard(OTHER, [("192.0.2.2", 1)], set(), False, 0.0) != ()
    third = bytes(32)
    assert planner.heard(third, [("192.0.2.3", 1)], set(), False, 0.0) == ()  # one attempt at once
    assert planner.stats["punch_over_limit"] == 1


def test_a_direct_session_and_its_loss():
    planner = PunchPlanner()
    planner.heard(KEY, [("192.0.2.1", 7443)], set(), False, 0.0)
    planner.up(KEY, ("192.0.2.1", 7443))
    assert planner.expired(PUNCH_ATTEMPT_TIME) == [] and planner.snapshot()[KEY.hex()]["state"] == "direct"
    planner.down(KEY, 100.0, "expired")
    state = planner.snapshot()[KEY.hex()]
    assert state["state"] == "relayed" and "direct session lost" in state["reason"]


def test_the_peer_table_is_bounded():
    planner = PunchPlanner(max_attempts=1000, max_peers=4)
    for i in range(10):
        planner.heard(bytes([i]) * 32, [], set(), False, 0.0)
    assert len(planner.peers) == 4


def established_pair():
    rng = random.Random(7)
    a, b = Identity.generate(), Identity.generate()
    ea = EndToEnd(a.private_key, a.public_key, rng=rng)
    eb = EndToEnd(b.private_key, b.public_key, rng=rng)
    out = ea.dial(eb.address, b.public_key, 0.0)
    for _ in range(6):  # carry the handshake back and forth
        back = eb.inbound([(ea.address, d) for d in out.sends.get(eb.address, [])], 0.0)
        out = ea.inbound([(eb.address, d) for d in back.sends.get(ea.address, [])], 0.0)
    return a, b, ea, eb


def test_an_end_to_end_control_message_arrives_with_the_senders_key():
    a, b, ea, eb = established_pair()
    assert ea.established_sessions() == [eb.address]
    payload = encode_candidates([("192.0.2.1", 7443)])
    sent = ea.send_control(eb.address, payload, 1.0)
    [datagram] = sent.sends[eb.address]
    assert datagram[4] & 0x0F == PacketType.CONTROL
    got = eb.inbound([(ea.address, datagram)], 1.0)
    assert got.control == [(ea.address, a.public_key, payload)] and got.tun == []
    # Without an established session nothing is sent (a control message is never staged).
    assert ea.send_control(bytes(16), payload, 1.0).sends == {}
