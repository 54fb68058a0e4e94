"""Noise XX handshakes: layout, authentication, expected keys, simultaneous open, replays, forgeries."""

from __future__ import annotations

import random

import pytest
from tests.unit.lossy_link import (
    respond,
    types_of,
    PAYLOAD,
    Network,
    Node,
    established_pair,
    event_kinds,
    ordered_seeds,
    static_keypair,
)

from axiomnet.constants import (
    HANDSHAKE_INIT_SIZE,
    HEADER_SIZE,
    MAC_SIZE,
    NEW_HANDSHAKE_AFTER_SILENCE,
    PENDING_HANDSHAKE_TIMEOUT,
    REKEY_AFTER_TIME,
    SIMULTANEOUS_OPEN_WINDOW,
)
from axiomnet.control import HandshakePayload
from axiomnet.cookie import add_mac1, cookie_key, mac, mac1_key, seal_cookie
from axiomnet.errors import (
    DecryptionFailed,
    InvalidMac,
    MalformedPacket,
    ReplayedPacket,
    UnknownReceiver,
)
from axiomnet.session import Established, HandshakeGaveUp, KeyMismatch, Session
from axiomnet.wire import (
    NO_MAC,
    NOISE_MSG1_MIN,
    PacketType,
    decode_datagram,
    decode_header,
    encode_cookie_reply,
    encode_handshake_final,
    encode_handshake_resp,
    encode_header,
    encode_key_probe,
    encode_key_reply,
)

INIT, RESP, FINAL = PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP, PacketType.HANDSHAKE_FINAL
COOKIE, DATA, KEEPALIVE = PacketType.COOKIE_REPLY, PacketType.DATA, PacketType.KEEPALIVE


def keys(session: Session) -> tuple[bytes, bytes]:
    """(send key, receive key) of the current keypair (test introspection)."""
    kp = session._current
    assert kp is not None
    return kp.send_key, kp.recv_key


def random_addr(rng: random.Random) -> tuple[str, int]:
    """A random IPv4 source address and port."""
    return (f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.randrange(1024, 65536))


# --- the happy path and its bytes ------------------------------------------------------------------
def test_handshake_completes_with_matching_keys_payloads_and_one_established_each() -> None:
    net, a, b, sa, sb = established_pair()
    assert keys(sa) == keys(sb)[::-1]
    assert sa.remote_static == b.public and sb.remote_static == a.public
    assert sa.remote_payload == PAYLOAD and sb.remote_payload == PAYLOAD
    ea, eb = a.drain_events(), b.drain_events()
    assert ea == [Established(sa.peer_name, b.public, True)]
    assert eb == [Established(sb.peer_name, a.public, False)]
    assert a.indices.live == a.owned_indices() and b.indices.live == b.owned_indices()


def test_handshake_datagrams_follow_the_wire_layout() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)[0]
    header, body = decode_datagram(init)
    assert header.ptype is INIT and header.receiver == 0 and header.counter == 0
    assert len(body.noise) == NOISE_MSG1_MIN and len(init) == HANDSHAKE_INIT_SIZE  # the ephemeral key, padded
    assert body.mac2 == NO_MAC and body.sender in sa.local_indices()  # no cookie held: mac2 is zeros
    assert body.mac1 == mac(mac1_key(b.public), init[: -2 * MAC_SIZE])  # keyed by the responder's key
    (resp,), _ = respond(b.responder, init, a.addr)
    assert len(resp) <= len(init)  # the answer is never larger than the unauthenticated INIT
    header, rbody = decode_datagram(resp)
    assert header.ptype is RESP and header.receiver == body.sender
    assert rbody.sender in b.responder.pending_indices()
    assert rbody.mac1 == mac(mac1_key(b.public), resp[:-MAC_SIZE])
    final = a.handle(resp, b.addr, 0.0)
    header, _ = decode_datagram(final[0])
    assert header.ptype is FINAL and header.receiver == rbody.sender
    replies, result = respond(b.responder, final[0], a.addr)
    assert replies == [] and result is not None
    assert (result.local_index, result.remote_index, result.initiator) == (rbody.sender, body.sender, False)
    assert result.remote_static == a.public and result.remote_payload == PAYLOAD


# --- whose key ---------------------------------------------------------------------------------------
def test_an_init_meant_for_another_key_gets_no_answer() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public, expected=static_keypair(3)[1])
    assert b.handle(sa.initiate(0.0)[0], a.addr, 0.0) == []  # mac1 is keyed by the key a expects, not b's
    assert b.responder.stats["bad_mac1"] == 1 and b.responder.pending_count == 0


def impersonating(node: Node, key: bytes) -> Node:
    """``node`` answering INITs meant for ``key`` (an impostor who knows that public key) with its own static."""
    node.responder._mac1_key = mac1_key(key)
    return node


def test_initiator_aborts_before_message_3_when_the_peer_has_another_key() -> None:
    wanted = static_keypair(3)[1]
    a, b = Node("a", 1), impersonating(Node("b", 2), wanted)
    sa = a.session_for(b.public, expected=wanted)
    init = sa.initiate(0.0)
    old_index = decode_datagram(init[0])[1].sender
    resp = b.handle(init[0], a.addr, 0.0)
    assert a.handle(resp[0], b.addr, 0.0) == []  # no HANDSHAKE_FINAL: b never gets our identity-bound msg 3
    (event,) = sa.events()
    assert isinstance(event, KeyMismatch) and event.expected == wanted and event.actual == b.public
    assert sa.peer_name in event.message
    assert b.public.hex()[:16] in event.message and wanted.hex()[:16] in event.message
    assert not sa.is_established and old_index not in a.indices.live
    assert a.indices.live == a.owned_indices()
    retry = sa.tick(sa.next_deadline() or 0.0)  # the dial goes on (an impostor cannot cancel it) with a fresh index
    assert types_of(retry) == [INIT] and decode_datagram(retry[0])[1].sender != old_index


def test_responder_session_refuses_a_handshake_from_an_unexpected_key() -> None:
    a, b = Node("a", 1), Node("b", 2)
    other = static_keypair(3)[1]
    sb = b.session_for(a.public, expected=other)  # b's session for this endpoint expects someone else
    sa = a.session_for(b.public)
    net = Network(a, b)
    net.send(a, sa.initiate(0.0))
    net.settle(0.0)
    (event,) = sb.events()
    assert isinstance(event, KeyMismatch) and event.actual == a.public and event.expected == other
    assert not sb.is_established and b.delivered == []
    assert b.indices.live == b.owned_indices()  # the completed handshake's index was released


def test_remote_key_is_pinned_by_the_first_handshake() -> None:
    net, a, b, sa, sb = established_pair()
    c = Node("c", 3)
    sc = c.session_for(b.public)
    resp = b.handle(sc.initiate(1.0)[0], c.addr, 1.0)
    final = c.handle(resp[0], b.addr, 1.0)
    _, result = respond(b.responder, final[0], c.addr, 1.0)
    assert result is not None
    refused = sb.install(result, 1.0)  # c's keys must not take over b's session with a
    assert refused.replies == [] and not refused.authenticated
    assert isinstance(sb.events()[-1], KeyMismatch) and keys(sb) == keys(sa)[::-1]


# --- simultaneous open ----------------------------------------------------------------------------------
def assert_one_session(a: Node, b: Node, sa: Session, sb: Session) -> None:
    """Both sides hold the same current keypair, initiated by the smaller key, one Established each."""
    assert keys(sa) == keys(sb)[::-1]
    smaller_is_a = a.public < b.public
    assert sa._current is not None and sa._current.initiator == smaller_is_a
    assert event_kinds(a).count("Established") == 1 and event_kinds(b).count("Established") == 1


def test_simultaneous_open_in_lockstep_gives_one_session() -> None:
    small, large = ordered_seeds()
    a, b = Node("a", small), Node("b", large)
    sa, sb = a.session_for(b.public), b.session_for(a.public)
    init_a, init_b = sa.initiate(0.0), sb.initiate(0.0)
    resp_to_a, resp_to_b = b.handle(init_a[0], a.addr, 0.0), a.handle(init_b[0], b.addr, 0.0)
    from_a, from_b = a.handle(resp_to_a[0], b.addr, 0.0), b.handle(resp_to_b[0], a.addr, 0.0)
    assert types_of(from_a) == [FINAL] and types_of(from_b) == [FINAL]
    net = Network(a, b)
    net.send(a, from_a)
    net.send(b, from_b)
    net.settle(0.0)
    assert_one_session(a, b, sa, sb)
    assert sa.stats["simultaneous_opens"] == 1 and sb.stats["simultaneous_opens"] == 1


@pytest.mark.parametrize("seed", range(12))
def test_simultaneous_open_with_reordering_gives_one_session(seed: int) -> None:
    small, large = ordered_seeds()
    a, b = Node("a", small), Node("b", large)
    net = Network(a, b, random.Random(seed), reorder_window=6)
    sa, sb = a.session_for(b.public), b.session_for(a.public)
    first, second = (sa, sb) if seed % 2 else (sb, sa)
    net.send(a if first is sa else b, first.initiate(0.0))
    net.send(a if second is sa else b, second.initiate(0.0))
    now = 0.0
    while now < 3 * PENDING_HANDSHAKE_TIMEOUT:
        now += 0.05
        net.step(now)
    net.send(a, sa.send(DATA, b"from a", now))
    net.send(b, sb.send(DATA, b"from b", now))
    net.settle(now)
    assert_one_session(a, b, sa, sb)
    assert a.delivered == [(DATA, b"from b")] and b.delivered == [(DATA, b"from a")]
    for node in (a, b):  # the losing handshake's indices, pending entries and keypairs are all gone
        assert node.indices.live == node.owned_indices() and len(node.indices.live) == 1


def test_larger_key_abandons_its_own_handshake_when_the_smaller_ones_completes() -> None:
    small, large = ordered_seeds()
    a, b = Node("a", small), Node("b", large)  # a's key is smaller
    sa, sb = a.session_for(b.public), b.session_for(a.public)
    init_a, init_b = sa.initiate(0.0), sb.initiate(0.0)
    resp_b = a.handle(init_b[0], b.addr, 0.0)  # b's handshake gets its response later
    final_a = a.handle(b.handle(init_a[0], a.addr, 0.0)[0], b.addr, 0.0)
    b.handle(final_a[0], a.addr, 0.0)  # b installs a's keypair while its own is in flight
    assert not sb.is_handshaking
    with pytest.raises(UnknownReceiver):
        sb.receive(decode_header(resp_b[0]), resp_b[0], 0.0)
    assert b.indices.live == b.owned_indices()


def leader_and_follower() -> tuple[Node, Node, Network]:
    """Two nodes, the leader (smaller key) first, with a perfect link."""
    small, large = ordered_seeds()
    leader, follower = Node("leader", small), Node("follower", large)
    return leader, follower, Network(leader, follower)


def exchange_data(net: Network, x: Node, sx: Session, y: Node, sy: Session, now: float) -> None:
    """One payload each way; both must arrive."""
    x.delivered.clear()
    y.delivered.clear()
    net.send(x, sx.send(DATA, b"to " + y.name.encode(), now))
    net.send(y, sy.send(DATA, b"to " + x.name.encode(), now))
    net.settle(now)
    assert y.delivered == [(DATA, b"to " + y.name.encode())] and x.delivered == [(DATA, b"to " + x.name.encode())]


def test_handshake_the_two_sides_classify_differently_still_converges() -> None:
    """The follower rehandshakes 1 s after the leader's handshake (simultaneous, by its clock); the FINAL reaches
    the leader 5 s later (not simultaneous, by the leader's clock). They still end on one keypair."""
    leader, follower, net = leader_and_follower()
    sl = leader.session_for(follower.public)
    net.send(leader, sl.initiate(0.0))
    net.settle(0.0)
    sf = follower.sessions[leader.public]
    resp = leader.handle(sf.initiate(1.0)[0], follower.addr, 1.0)
    final = follower.handle(resp[0], leader.addr, 1.0)
    net.send(leader, leader.handle(final[0], follower.addr, 1.0 + SIMULTANEOUS_OPEN_WINDOW))
    net.settle(1.0 + SIMULTANEOUS_OPEN_WINDOW)
    assert keys(sl) == keys(sf)[::-1]
    exchange_data(net, leader, sl, follower, sf, 7.0)


def test_leader_does_not_switch_to_a_late_final_of_a_superseded_handshake() -> None:
    """The follower's first rehandshake is overtaken by a second one; the first one's FINAL arrives last."""
    leader, follower, net = leader_and_follower()
    sl = leader.session_for(follower.public)
    net.send(leader, sl.initiate(0.0))
    net.settle(0.0)
    sf = follower.sessions[leader.public]
    late_final = follower.handle(leader.handle(sf.initiate(20.0)[0], follower.addr, 20.0)[0], leader.addr, 20.0)
    second = follower.handle(leader.handle(sf.initiate(20.5)[0], follower.addr, 20.5)[0], leader.addr, 20.5)
    net.send(follower, second)
    net.settle(20.5)
    settled = keys(sl)
    assert settled == keys(sf)[::-1]
    net.send(follower, late_final)  # the superseded FINAL finally arrives
    net.settle(21.0)
    assert keys(sl) == settled and keys(sf) == settled[::-1]
    exchange_data(net, leader, sl, follower, sf, 22.0)


def test_peer_handshake_keys_stay_pending_until_used_and_are_reconfirmed_identically() -> None:
    leader, follower, net = leader_and_follower()
    sl = leader.session_for(follower.public)
    net.send(leader, sl.initiate(0.0))
    net.settle(0.0)
    sf = follower.sessions[leader.public]
    before = keys(sl)
    final = follower.handle(leader.handle(sf.initiate(20.0)[0], follower.addr, 20.0)[0], leader.addr, 20.0)
    first = leader.handle(final[0], follower.addr, 20.0)  # the leader confirms the keys; this one is lost
    again = leader.handle(final[0], follower.addr, 20.3)  # the follower retransmits message 3
    assert types_of(first) == [KEEPALIVE] and decode_header(first[0]).counter == 0
    assert again == first  # the very same datagram: no nonce is ever used for two messages
    assert keys(sl) == before  # pending: the leader still sends under the old keys
    net.send(leader, again)
    net.settle(20.3)
    assert keys(sl) != before and keys(sl) == keys(sf)[::-1]
    exchange_data(net, leader, sl, follower, sf, 21.0)


def test_leader_reminds_a_follower_that_missed_its_switch() -> None:
    leader, follower, net = leader_and_follower()
    sl = leader.session_for(follower.public)
    net.send(leader, sl.initiate(0.0))
    net.settle(0.0)
    sf = follower.sessions[leader.public]
    t = REKEY_AFTER_TIME
    resp = follower.handle(sl.tick(t)[0], leader.addr, t)
    confirmation = follower.handle(leader.handle(resp[0], follower.addr, t)[0], leader.addr, t)
    announce = leader.handle(confirmation[0], follower.addr, t)  # the leader switches; this KEEPALIVE is lost
    assert types_of(announce) == [KEEPALIVE]
    stale = sf.send_batch(DATA, [b"old 1", b"old 2"], t + 0.1)  # the follower still sends under the old keys
    reminder = leader.handle(stale[0], follower.addr, t + 0.1)
    assert leader.handle(stale[1], follower.addr, t + 0.1) == []  # at most one reminder per interval
    assert types_of(reminder) == [KEEPALIVE]
    assert decode_header(reminder[0]).receiver == decode_header(announce[0]).receiver  # under the new keys
    follower.handle(reminder[0], leader.addr, t + 0.1)
    assert keys(sl) == keys(sf)[::-1]
    exchange_data(net, leader, sl, follower, sf, t + 1)


def test_leader_does_not_switch_back_to_an_older_pending_keypair() -> None:
    leader, follower, net = leader_and_follower()
    sl = leader.session_for(follower.public)
    net.send(leader, sl.initiate(0.0))
    net.settle(0.0)
    sf = follower.sessions[leader.public]
    # t=100: the follower rehandshakes; the leader's confirmation of those keys is delayed.
    final_f = follower.handle(leader.handle(sf.initiate(100.0)[0], follower.addr, 100.0)[0], leader.addr, 100.0)
    late_confirmation = leader.handle(final_f[0], follower.addr, 100.0)
    # t=101: the leader rekeys and switches; its announcement is lost.
    resp = follower.handle(sl.initiate(101.0)[0], leader.addr, 101.0)
    confirmation = follower.handle(leader.handle(resp[0], follower.addr, 101.0)[0], leader.addr, 101.0)
    leader.handle(confirmation[0], follower.addr, 101.0)
    newest = keys(sl)
    # t=107: the old confirmation reaches the follower, which switches to its own keys and says so.
    answer = follower.handle(late_confirmation[0], leader.addr, 107.0)
    reminder = leader.handle(answer[0], follower.addr, 107.0)
    assert keys(sl) == newest  # the leader stays on its newer keypair and reminds the follower of it
    follower.handle(reminder[0], leader.addr, 107.0)
    assert keys(sf) == newest[::-1]
    exchange_data(net, leader, sl, follower, sf, 108.0)


@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_open_over_a_lossy_link_converges_without_loss_afterwards(seed: int) -> None:
    small, large = ordered_seeds()
    a, b = Node("a", small), Node("b", large)
    net = Network(a, b, random.Random(seed), loss=0.2, duplicate=0.05, reorder_window=64)
    sa, sb = a.session_for(b.public), b.session_for(a.public)
    net.send(a, sa.initiate(0.0))
    net.send(b, sb.initiate(0.1 * seed))
    now = 0.0
    for step in range(600):  # 120 s of lossy traffic, one rekey included
        now += 0.2
        if step % 5 == 0:
            net.send(a, sa.send(DATA, b"a%d" % step, now))
            net.send(b, sb.send(DATA, b"b%d" % step, now))
        net.step(now)
    for link in net.link_to.values():
        link.loss = link.duplicate = 0.0
    assert keys(sa) == keys(sb)[::-1]
    assert event_kinds(a).count("Established") == 1 and event_kinds(b).count("Established") == 1
    exchange_data(net, a, sa, b, sb, now + 1.0)


# --- replayed and forged handshake messages ------------------------------------------------------------
def test_replayed_init_creates_at_most_one_pending_entry_that_times_out() -> None:
    a, b = Node("a", 1), Node("b", 2)
    init = a.session_for(b.public).initiate(0.0)[0]
    answers = [respond(b.responder, init, a.addr, t)[0] for t in (0.0, 0.3, 1.0, 2.0)]
    assert all(answer == answers[0] for answer in answers)  # the same response, no new Diffie-Hellman
    assert b.responder.pending_count == 1 and b.responder.stats["responses_resent"] == 3
    b.responder.expire(PENDING_HANDSHAKE_TIMEOUT)
    assert b.responder.pending_count == 0 and b.indices.live == set()


def test_replayed_response_after_completion_does_not_disturb_the_session() -> None:
    a, b = Node("a", 1), Node("b", 2)
    net = Network(a, b)
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)
    resp = b.handle(init[0], a.addr, 0.0)
    net.send(b, resp)
    net.settle(0.0)
    before = keys(sa)
    with pytest.raises(ReplayedPacket):
        sa.receive(decode_header(resp[0]), resp[0], 1.0)
    assert keys(sa) == before
    net.send(a, sa.send(DATA, b"still fine", 1.0))
    net.settle(1.0)
    assert b.delivered == [(DATA, b"still fine")]


def test_replayed_final_is_ignored() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    final = a.handle(b.handle(sa.initiate(0.0)[0], a.addr, 0.0)[0], b.addr, 0.0)
    b.handle(final[0], a.addr, 0.0)
    sb = b.sessions[a.public]
    before = keys(sb)
    with pytest.raises(UnknownReceiver):  # the responder no longer has it pending
        respond(b.responder, final[0], a.addr, 1.0)
    b.handle(sa.send(DATA, b"heard", 1.0)[0], a.addr, 1.0)
    with pytest.raises(ReplayedPacket):  # nor does the session, once a spoke under the new keys
        sb.receive(decode_header(final[0]), final[0], 2.0)
    assert keys(sb) == before and b.delivered == [(DATA, b"heard")]


def test_duplicate_final_before_key_confirmation_repeats_the_keepalive() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    final = a.handle(b.handle(sa.initiate(0.0)[0], a.addr, 0.0)[0], b.addr, 0.0)
    first = b.handle(final[0], a.addr, 0.0)
    again = b.handle(final[0], a.addr, 0.1)  # the keepalive was lost, a retransmits message 3
    assert types_of(first) == [KEEPALIVE] and types_of(again) == [KEEPALIVE] and first != again
    a.handle(again[0], b.addr, 0.1)
    assert sa.next_deadline() == sa._current.rekey_at  # confirmed: a stops retransmitting


def test_forged_response_does_not_spoil_the_genuine_handshake() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)
    index = decode_datagram(init[0])[1].sender
    rng = random.Random(4)
    for _ in range(3):
        forged = encode_handshake_resp(index, rng.randrange(1, 1 << 24), rng.randbytes(32 + 48 + 40))
        with pytest.raises(InvalidMac):  # from someone who does not know b's key: no DH spent on it
            sa.receive(decode_header(forged), forged, 0.0)
        forged = add_mac1(forged, mac1_key(b.public))  # from someone who does: Noise refuses it, atomically
        with pytest.raises(DecryptionFailed):
            sa.receive(decode_header(forged), forged, 0.0)
    assert sa.stats["bad_mac1"] == 3 and sa.stats["decryption_failed"] == 3
    final = a.handle(b.handle(init[0], a.addr, 0.0)[0], b.addr, 0.0)
    assert types_of(final) == [FINAL]
    b.handle(final[0], a.addr, 0.0)
    assert keys(sa) == keys(b.sessions[a.public])[::-1]


def test_forged_final_does_not_spoil_the_pending_handshake() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    resp = b.handle(sa.initiate(0.0)[0], a.addr, 0.0)
    pending = decode_datagram(resp[0])[1].sender
    forged = encode_handshake_final(pending, random.Random(5).randbytes(48 + 40))
    with pytest.raises(DecryptionFailed):
        respond(b.responder, forged, ("192.0.2.66", 9), 0.0)
    assert b.responder.pending_count == 1
    final = a.handle(resp[0], b.addr, 0.0)
    _, result = respond(b.responder, final[0], a.addr, 0.0)
    assert result is not None and result.remote_static == a.public


def test_off_schema_handshake_payload_aborts_that_handshake() -> None:
    a, b = Node("a", 1), Node("b", 2)
    b.responder._payload = HandshakePayload(version=99).encode()  # a peer speaking another version
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)
    resp = b.handle(init[0], a.addr, 0.0)
    with pytest.raises(MalformedPacket, match=sa.peer_name):
        sa.receive(decode_header(resp[0]), resp[0], 0.0)
    assert not sa.is_established and a.indices.live == a.owned_indices()
    assert decode_datagram(init[0])[1].sender not in a.indices.live


@pytest.mark.parametrize("seed", range(8))
def test_overlapping_handshakes_under_chaos_converge_once_the_link_heals(seed: int) -> None:
    """Both sides force new handshakes at random over a bad link (loss, duplication, multi-second reordering).
    Once the link heals, they converge on one keypair and traffic flows (at worst after the
    NEW_HANDSHAKE_AFTER_SILENCE rehandshake, docs/PROTOCOL.md §3.2)."""
    rng = random.Random(seed)
    a, b = Node("a", 1), Node("b", 2)
    net = Network(a, b, random.Random(seed), loss=rng.choice([0.0, 0.1, 0.3]), duplicate=0.05,
                  reorder_window=rng.choice([1, 8, 64]))
    sa, sb = a.session_for(b.public), b.session_for(a.public)
    now = 0.0
    for step in range(400):
        now += rng.choice([0.01, 0.1, 0.5, 2.0])
        if rng.random() < 0.05:
            net.send(a, sa.initiate(now))
        elif rng.random() < 0.05:
            net.send(b, sb.initiate(now))
        if rng.random() < 0.5:
            net.send(a, sa.send(DATA, b"a%d" % step, now))
        if rng.random() < 0.5:
            net.send(b, sb.send(DATA, b"b%d" % step, now))
        net.step(now)
    for link in net.link_to.values():
        link.loss = link.duplicate = 0.0
        link.reorder_window = 1
    a.delivered.clear()
    b.delivered.clear()
    beats = 40
    for i in range(beats):  # one heartbeat a second each way, like the overlay's
        now += 1.0
        net.send(a, sa.send(DATA, b"hb-a%d" % i, now))
        net.send(b, sb.send(DATA, b"hb-b%d" % i, now))
        net.step(now)
        net.settle(now)
    settled = range(int(NEW_HANDSHAKE_AFTER_SILENCE) + 5, beats)
    assert {(DATA, b"hb-a%d" % i) for i in settled} <= set(b.delivered)
    assert {(DATA, b"hb-b%d" % i) for i in settled} <= set(a.delivered)
    assert keys(sa) == keys(sb)[::-1]
    for node in (a, b):
        assert node.indices.live == node.owned_indices()


@pytest.mark.parametrize("restarted_leads", [False, True])
def test_peer_restarting_within_the_simultaneous_window_is_accepted_at_once(restarted_leads: bool) -> None:
    """A peer that restarts (losing its keys) and dials again seconds after the first handshake must not be
    mistaken for a simultaneous open: the survivor had already heard it under the old keys, so the new
    handshake is deliberate, and both sides use the new keys after one round trip."""
    small, large = ordered_seeds()
    survivor_seed, restarted_seed = (large, small) if restarted_leads else (small, large)
    survivor, first_life = Node("s", survivor_seed), Node("r", restarted_seed)
    net = Network(survivor, first_life)
    net.send(survivor, survivor.session_for(first_life.public).initiate(0.0))
    net.settle(0.0)
    s_session = survivor.sessions[first_life.public]
    net.send(survivor, s_session.send(PacketType.DATA, b"before", 0.2))
    net.send(first_life, first_life.sessions[survivor.public].send(PacketType.DATA, b"before", 0.2))
    net.settle(0.2)
    assert s_session._current is not None and s_session._current.heard

    second_life = Node("r", restarted_seed)  # same key, no state: the process restarted
    net = Network(survivor, second_life)
    net.send(second_life, second_life.session_for(survivor.public).initiate(1.0))
    net.settle(1.0)
    r_session = second_life.sessions[survivor.public]
    for t in (1.1, 1.2):
        net.send(survivor, s_session.send(PacketType.DATA, b"from survivor %.1f" % t, t))
        net.send(second_life, r_session.send(PacketType.DATA, b"from restarted %.1f" % t, t))
        net.settle(t)
    assert (PacketType.DATA, b"from survivor 1.2") in second_life.delivered
    assert (PacketType.DATA, b"from restarted 1.2") in survivor.delivered
    assert keys(s_session) == keys(r_session)[::-1]


# --- key discovery (a peer configured without a key: trust on first use) --------------------------------
def probe_exchange(a: Node, b: Node, sa: Session, now: float = 0.0) -> list[bytes]:
    """Run ``sa``'s first datagrams against ``b`` until nothing is left to send; the datagrams a sent."""
    sent: list[bytes] = []
    out = sa.initiate(now)
    while out:
        sent += out
        out = [r for d in out for r in b.handle(d, a.addr, now)]
        out = [r for d in out for r in a.handle(d, b.addr, now)]
    return sent


def test_a_peer_configured_without_a_key_is_probed_then_dialled_with_mac1() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(None, pin=False)
    probe = sa.initiate(0.0)
    header, body = decode_datagram(probe[0])
    assert header.ptype is PacketType.KEY_PROBE and header.receiver == 0 and len(probe[0]) == 64
    assert body.sender in sa.local_indices()
    (reply,) = b.handle(probe[0], a.addr, 0.0)
    assert decode_datagram(reply)[1].public_key == b.public and len(reply) == len(probe[0])  # no amplification
    (init,) = a.handle(reply, b.addr, 0.0)
    assert decode_datagram(init)[1].sender == body.sender  # the same index carries on
    assert decode_datagram(init)[1].mac1 == mac(mac1_key(b.public), init[: -2 * MAC_SIZE])
    net = Network(a, b)
    net.send(a, [init])
    net.settle(0.0)
    assert sa.is_established and sa.remote_static == b.public and sa.stats["keys_discovered"] == 1
    assert a.indices.live == a.owned_indices()


def test_a_node_that_is_not_discoverable_answers_no_probe_but_still_its_pinned_peers() -> None:
    a, b = Node("a", 1), Node("b", 2, discoverable=False)
    sa = a.session_for(None, pin=False)
    probe = sa.initiate(0.0)
    assert b.handle(probe[0], a.addr, 0.0) == [] and b.responder.stats["key_probes_ignored"] == 1
    now = 0.0
    events: list[object] = []
    while not events:
        now = sa.next_deadline() or now + 1.0
        again = sa.tick(now)
        assert types_of(again) in ([], [PacketType.KEY_PROBE])
        for d in again:
            assert b.handle(d, a.addr, now) == []
        events += sa.events()
    (gave_up,) = events
    assert isinstance(gave_up, HandshakeGaveUp)
    assert "key reply" in gave_up.reason
    c = Node("c", 3)  # a peer that was given b's key is answered as usual
    sc = c.session_for(b.public)
    assert types_of(b.handle(sc.initiate(now)[0], c.addr, now)) == [RESP]


def test_a_key_reply_that_does_not_answer_our_probe_is_refused_and_changes_nothing() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(None, pin=False)
    probe = sa.initiate(0.0)[0]
    sender = decode_datagram(probe)[1].sender
    for forged in (encode_key_reply(sender, static_keypair(9)[1], bytes(16)),  # wrong challenge
                   encode_key_reply(sender ^ 1 or 2, b.public, decode_datagram(probe)[1].challenge)):  # wrong index
        with pytest.raises((InvalidMac, UnknownReceiver)):
            sa.receive(decode_header(forged), forged, 0.0)
    assert sa.stats["bad_key_replies"] == 1
    assert types_of(sa.tick(sa.next_deadline() or 1.0)) == [PacketType.KEY_PROBE]  # still probing, same probe


def test_a_probed_key_the_handshake_does_not_confirm_is_forgotten() -> None:
    """An on-path impostor answers the probe with key X, then the handshake authenticates another key: the
    session does not keep X but probes again (what it learned unauthenticated never pins anything)."""
    a, b = Node("a", 1), Node("b", 2)
    x = static_keypair(9)[1]
    impersonating(b, x)  # b answers INITs meant for x, as an impostor would
    sa = a.session_for(None, pin=False)
    probe = sa.initiate(0.0)[0]
    body = decode_datagram(probe)[1]
    forged_reply = encode_key_reply(body.sender, x, body.challenge)
    (init,) = a.handle(forged_reply, b.addr, 0.0)
    resp = b.handle(init, a.addr, 0.0)
    assert a.handle(resp[0], b.addr, 0.0) == []  # no FINAL: b authenticated as b, not as x
    assert any(isinstance(e, KeyMismatch) and e.expected == x for e in sa.events())
    assert sa.remote_static is None and not sa.is_established
    assert types_of(sa.tick(sa.next_deadline() or 1.0)) == [PacketType.KEY_PROBE]


def test_probe_floods_are_bounded_but_a_spoofer_cannot_starve_one_victims_probes() -> None:
    b = Node("b", 2)
    victim = ("192.0.2.77", 7443)
    probe = encode_key_probe(5, bytes(16))
    answered = 0
    now = 0.0
    for _ in range(100):  # a spoofer sends 10 probes a second with the victim's address: all answered
        now += 0.1
        answered += len(b.handle(probe, victim, now))
    assert answered == 100
    loud = ("198.51.100.1", 1)
    answers = [len(b.handle(probe, loud, now)) for _ in range(200)]  # one source all at once
    assert sum(answers) < 60 and b.responder.stats["key_probes_limited"] > 140
    assert b.handle(probe, victim, now) != []  # the loud source used up its own share, not the victim's


# --- what authenticates (the roaming rule's input) ----------------------------------------------------
def test_only_authenticated_datagrams_say_so() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)[0]
    body = decode_datagram(init)[1]
    reply = encode_cookie_reply(body.sender, bytes(24), seal_cookie(cookie_key(b.public), bytes(24), bytes(16),
                                                                    body.mac1))
    assert not sa.receive(decode_header(reply), reply, 0.0).authenticated  # a valid cookie reply proves no key
    (resp,) = b.handle(init, a.addr, 0.0)
    assert sa.receive(decode_header(resp), resp, 0.0).authenticated  # completes our handshake
    net, a, b, sa, sb = established_pair()
    data = sa.send(DATA, b"y", 1.0)[0]
    assert sb.receive(decode_header(data), data, 1.0).authenticated
    forged = encode_header(DATA, decode_header(data).receiver, 99) + bytes(len(data) - HEADER_SIZE)
    with pytest.raises(DecryptionFailed):  # a forgery raises: it never returns, so it can never move an endpoint
        sb.receive(decode_header(forged), forged, 1.0)
