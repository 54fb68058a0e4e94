"""Session transport: encryption, replay protection, staging, rekeying and every timer, with injected time."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.lossy_link import Network, Node, established_pair, event_kinds, static_keypair

from axiomnet.constants import (
    HANDSHAKE_INITIAL_RETRANSMIT,
    HEADER_SIZE,
    KEEPALIVE_TIMEOUT,
    MAX_STAGED_PACKETS,
    NEW_HANDSHAKE_AFTER_SILENCE,
    PREVIOUS_KEYPAIR_GRACE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER,
    SESSION_EXPIRY,
)
from axiomnet.errors import (
    DecryptionFailed,
    MalformedPacket,
    RemoteProtocolError,
    ReplayedPacket,
    UnknownReceiver,
)
from axiomnet.session import Expired, HandshakeGaveUp, Received, Session
from axiomnet.wire import PacketType, decode_header, encode_header

DATA, CONTROL, KEEPALIVE = PacketType.DATA, PacketType.CONTROL, PacketType.KEEPALIVE
INIT, FINAL = PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_FINAL


# --- helpers --------------------------------------------------------------------------------------
def deliver(session: Session, datagram: bytes, now: float) -> Received:
    """Decode the header and hand the datagram to ``session``, as the session actor does."""
    return session.receive(decode_header(datagram), datagram, now)


def types_of(datagrams: list[bytes]) -> list[PacketType]:
    """Packet types of datagrams, in order."""
    return [decode_header(d).ptype for d in datagrams]


def transport(datagrams: list[bytes]) -> list[bytes]:
    """Only the DATA/CONTROL/KEEPALIVE datagrams."""
    return [d for d in datagrams if decode_header(d).ptype in (DATA, CONTROL, KEEPALIVE)]


def numbered(tag: bytes, seq: int) -> bytes:
    """A small payload whose content is checkable from its sequence number."""
    return tag + struct.pack(">I", seq) + bytes([seq & 0xFF]) * 11


def keys(session: Session) -> tuple[bytes, bytes]:
    """(send key, receive key) of the session's current keypair (test introspection)."""
    kp = session._current
    assert kp is not None
    return kp.send_key, kp.recv_key


def set_send_counter(session: Session, counter: int) -> None:
    """Test helper: pretend the current keypair has already sent ``counter`` messages."""
    assert session._current is not None
    session._current.send_counter = counter


def lone_session(seed: int = 1) -> tuple[Node, Session]:
    """A session dialling a peer that never answers."""
    node = Node("lonely", seed)
    return node, node.session_for(static_keypair(99)[1])


def run_until_quiet(net: Network, start: float, end: float, step: float = 0.05) -> float:
    """Advance the fake clock from start to end in steps; each step ticks, then delivers until quiet."""
    now = start
    while now < end:
        now = min(end, now + step)
        net.step(now)
        net.settle(now)
    return now


# Rekey tests run with either side dialling: the side with the smaller static key arbitrates keypair changes
# (docs/PROTOCOL.md §3.2), so a rekey the leader initiates and one the follower initiates take
# different message paths.
DIALLER = pytest.mark.parametrize("seeds", [(1, 2), (2, 1)], ids=["leader-dials", "follower-dials"])


def pair(seeds: tuple[int, int]) -> tuple[Network, Node, Node, Session, Session]:
    """established_pair() with node a (the dialler) on the first seed."""
    return established_pair(seed_a=seeds[0], seed_b=seeds[1])


# --- transport basics -------------------------------------------------------------------------------
def test_data_flows_both_ways_after_handshake() -> None:
    net, a, b, sa, sb = established_pair()
    assert keys(sa) == keys(sb)[::-1]
    net.send(a, sa.send_batch(DATA, [b"one", b"two"], 1.0))
    net.send(b, sb.send(CONTROL, b"ctl", 1.0))
    net.settle(1.0)
    assert b.delivered == [(DATA, b"one"), (DATA, b"two")]
    assert a.delivered == [(CONTROL, b"ctl")]
    assert event_kinds(a) == ["Established"] and event_kinds(b) == ["Established"]


def test_send_without_keys_stages_then_flushes_in_order_on_establishment() -> None:
    a, b = Node("a", 1), Node("b", 2)
    net = Network(a, b)
    sa = a.session_for(b.public)
    first = sa.send(DATA, b"p0", 0.0)
    assert types_of(first) == [INIT]
    assert sa.send_batch(DATA, [b"p1", b"p2"], 0.0) == []  # handshake already in flight
    net.send(a, first)
    net.settle(0.0)
    assert b.delivered == [(DATA, b"p0"), (DATA, b"p1"), (DATA, b"p2")]


def test_staging_is_bounded_and_drops_the_oldest() -> None:
    a, b = Node("a", 1), Node("b", 2)
    net = Network(a, b)
    sa = a.session_for(b.public)
    payloads = [numbered(b"S", i) for i in range(MAX_STAGED_PACKETS + 5)]
    net.send(a, sa.send_batch(DATA, payloads, 0.0))
    assert sa.stats["staged_dropped"] == 5
    net.settle(0.0)
    assert [p for _, p in b.delivered] == payloads[5:]


def test_send_refuses_non_transport_packet_types() -> None:
    _, _, _, sa, _ = established_pair()
    with pytest.raises(ValueError):
        sa.send(INIT, b"", 0.0)


def test_unknown_index_is_refused_naming_the_peer() -> None:
    _, _, _, sa, sb = established_pair()
    datagram = encode_header(DATA, 4242, 0) + bytes(32)
    with pytest.raises(UnknownReceiver, match=sb.peer_name):
        deliver(sb, datagram, 0.0)
    assert sb.stats["unknown_receiver"] == 1


def test_keepalive_carrying_bytes_is_malformed() -> None:
    _, _, _, sa, sb = established_pair()
    kp = sa._current
    assert kp is not None
    # Build an authentic KEEPALIVE with a payload by sealing it as the session would (encrypt bypasses the check).
    forged = sa._encrypt(kp, KEEPALIVE, [b"smuggled"], 0.0)[0]
    with pytest.raises(MalformedPacket):
        deliver(sb, forged, 0.0)


# --- the lossy link -----------------------------------------------------------------------------------
@pytest.mark.slow
@DIALLER
def test_lossy_link_100k_packets_survive_several_rekeys(seeds: tuple[int, int]) -> None:
    """20% loss, 5% duplication, reordering within 64: every delivered payload intact and unique, no replay
    accepted, and the session lives through several REKEY_AFTER_TIME rotations."""
    a, b = Node("a", seeds[0]), Node("b", seeds[1])
    net = Network(a, b, random.Random(20240601), loss=0.2, duplicate=0.05, reorder_window=64)
    sa = a.session_for(b.public)
    now, sent_a, sent_b, total = 0.0, 0, 0, 100_000
    while sent_a + sent_b < total:
        now += 0.1
        net.send(a, sa.send_batch(DATA, [numbered(b"A", sent_a + i) for i in range(10)], now))
        sent_a += 10
        sb = b.sessions.get(a.public)
        if sb is not None:
            net.send(b, sb.send_batch(DATA, [numbered(b"B", sent_b + i) for i in range(10)], now))
            sent_b += 10
        net.step(now)
    net.settle(now)
    sb = b.sessions[a.public]
    assert now > 4 * REKEY_AFTER_TIME
    for node, tag, sent in ((b, b"A", sent_a), (a, b"B", sent_b)):
        payloads = [p for _, p in node.delivered]
        assert len(payloads) == len(set(payloads)), "a payload was delivered twice"
        for p in payloads:
            assert p[:1] == tag and p == numbered(tag, struct.unpack(">I", p[1:5])[0])
        assert len(payloads) > 0.75 * sent  # only the link's own 20% loss, nothing lost to rekeys
        assert node.errors["ReplayedPacket"] > 0  # duplicates arrived, and were refused
    assert event_kinds(a).count("Rekeyed") >= 3 and event_kinds(b).count("Rekeyed") >= 3
    assert sa.is_established and sb.is_established and keys(sa) == keys(sb)[::-1]
    for node in (a, b):
        assert node.indices.live == node.owned_indices()  # nothing leaked across the rekeys
    # Any transport datagram A ever sent, replayed now, is refused (replayed, or its keypair is long gone).
    sample = random.Random(1).sample(transport(net.link_to["b"].log), 2000)
    refused = {"ReplayedPacket": 0, "UnknownReceiver": 0}
    for datagram in sample:
        with pytest.raises((ReplayedPacket, UnknownReceiver)) as exc:
            deliver(sb, datagram, now)
        refused[type(exc.value).__name__] += 1
    assert refused["ReplayedPacket"] > 0 and refused["UnknownReceiver"] > 0


def test_forged_huge_counter_is_dropped_and_does_not_move_the_window() -> None:
    _, _, _, sa, sb = established_pair()
    genuine = sa.send_batch(DATA, [b"g0", b"g1"], 1.0)
    receiver = decode_header(genuine[0]).receiver
    forged = encode_header(DATA, receiver, 2**63 - 5) + os.urandom(48)
    with pytest.raises(DecryptionFailed):
        deliver(sb, forged, 1.0)
    # Counters 0 and 1 are still acceptable: the forged counter did not slide the window.
    assert [deliver(sb, d, 1.0).payload for d in genuine] == [b"g0", b"g1"]
    assert deliver(sb, sa.send(DATA, b"g2", 1.0)[0], 1.0).payload == b"g2"


# --- properties --------------------------------------------------------------------------------------
steps = st.lists(
    st.tuples(st.sampled_from([DATA, CONTROL, KEEPALIVE]), st.integers(0, 6), st.floats(0.0, 25.0)),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(steps)
def test_prop_session_counter_monotonic(plan: list[tuple[PacketType, int, float]]) -> None:
    """Counters a keypair sends are strictly increasing, across batches, keepalives, ticks and rekeys."""
    net, a, b, sa, sb = established_pair()
    now = 0.0
    per_keypair: dict[int, list[int]] = {}
    for ptype, count, dt in plan:
        now += dt
        payloads = [b""] * count if ptype is KEEPALIVE else [numbered(b"M", i) for i in range(count)]
        out = sa.send_batch(ptype, payloads, now) + sa.tick(now)
        for datagram in transport(out):
            header = decode_header(datagram)
            per_keypair.setdefault(header.receiver, []).append(header.counter)
        net.send(a, out)
        net.send(b, sb.tick(now))
        net.settle(now)
    for counters in per_keypair.values():
        assert all(x < y for x, y in zip(counters, counters[1:]))
    assert not b.errors  # and every one of them was accepted in order


_shared: dict[str, Session] = {}


def shared_pair() -> tuple[Session, Session]:
    """One established pair for the bit-flip property (a refused datagram changes no state)."""
    if not _shared:
        _, _, _, sa, sb = established_pair()
        _shared.update(a=sa, b=sb)
    return _shared["a"], _shared["b"]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64), st.data())
def test_prop_any_flipped_bit_is_rejected(payload: bytes, data: st.DataObject) -> None:
    sa, sb = shared_pair()
    datagram = sa.send(DATA, payload, 1.0)[0]
    bit = data.draw(st.integers(0, len(datagram) * 8 - 1))
    flipped = bytearray(datagram)
    flipped[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(RemoteProtocolError) as refused:
        deliver(sb, bytes(flipped), 1.0)
    byte = bit // 8
    if byte < 4 or byte >= HEADER_SIZE:  # route label (authenticated as AAD), ciphertext, tag
        assert isinstance(refused.value, DecryptionFailed)
    elif byte >= 8:  # counter: another nonce, or a counter already seen
        assert isinstance(refused.value, (DecryptionFailed, ReplayedPacket))
    assert deliver(sb, datagram, 1.0).payload == payload  # the genuine one still passes


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=40))
def test_prop_replayed_datagram_is_rejected(order: list[int]) -> None:
    _, _, _, sa, sb = established_pair()
    datagrams = sa.send_batch(DATA, [numbered(b"R", i) for i in range(12)], 1.0)
    seen: set[int] = set()
    for i in order:
        if i in seen:
            with pytest.raises(ReplayedPacket):
                deliver(sb, datagrams[i], 1.0)
        else:
            assert deliver(sb, datagrams[i], 1.0).payload == numbered(b"R", i)
            seen.add(i)


# --- rekeying ------------------------------------------------------------------------------------------
@DIALLER
def test_initiator_rekeys_at_rekey_after_time_and_responder_does_not(seeds: tuple[int, int]) -> None:
    net, a, b, sa, sb = pair(seeds)
    old = keys(sa)
    assert sa.next_deadline() == REKEY_AFTER_TIME
    assert sa.tick(REKEY_AFTER_TIME - 0.01) == [] and sb.tick(REKEY_AFTER_TIME) == []
    out = sa.tick(REKEY_AFTER_TIME)
    assert types_of(out) == [INIT]
    net.send(a, out)
    net.settle(REKEY_AFTER_TIME)
    assert keys(sa) != old and keys(sa) == keys(sb)[::-1]
    assert event_kinds(a) == ["Established", "Rekeyed"] and event_kinds(b) == ["Established", "Rekeyed"]


@DIALLER
def test_rekey_at_message_limit(seeds: tuple[int, int]) -> None:
    net, a, b, sa, sb = pair(seeds)
    set_send_counter(sa, REKEY_AFTER_MESSAGES - 1)
    out = sa.send_batch(DATA, [b"x", b"y"], 1.0)
    assert types_of(out) == [DATA, DATA, INIT]
    assert decode_header(out[1]).counter == REKEY_AFTER_MESSAGES
    old = keys(sa)
    net.send(a, out)
    net.settle(1.0)
    assert [p for _, p in b.delivered] == [b"x", b"y"]
    assert keys(sa) != old and keys(sa) == keys(sb)[::-1]


@DIALLER
def test_keypair_never_sends_past_reject_after_messages(seeds: tuple[int, int]) -> None:
    net, a, b, sa, sb = pair(seeds)
    set_send_counter(sa, REJECT_AFTER_MESSAGES - 1)
    out = sa.send_batch(DATA, [b"last", b"s1", b"s2"], 1.0)
    assert types_of(out) == [DATA, INIT]  # one fits; the rest is staged behind a new handshake
    assert decode_header(out[0]).counter == REJECT_AFTER_MESSAGES - 1
    net.send(a, out)
    net.settle(1.0)
    assert [p for _, p in b.delivered] == [b"last", b"s1", b"s2"]
    assert sa._current is not None and sa._current.send_counter < 10  # the staged ones went under new keys


def test_counter_past_reject_after_messages_is_refused_before_decryption() -> None:
    _, _, _, sa, sb = established_pair()
    receiver = decode_header(sa.send(DATA, b"x", 0.0)[0]).receiver
    datagram = encode_header(DATA, receiver, REJECT_AFTER_MESSAGES) + bytes(32)
    with pytest.raises(ReplayedPacket, match="REJECT_AFTER_MESSAGES"):
        deliver(sb, datagram, 0.0)


def test_keypair_rejected_after_reject_after_time() -> None:
    net, a, b, sa, sb = established_pair()
    sa.tick(REKEY_AFTER_TIME)  # the rekey INIT is lost: nothing is delivered from here on
    late = sa.send(DATA, b"late", REJECT_AFTER_TIME - 0.01)
    assert types_of(late) == [DATA]
    with pytest.raises(DecryptionFailed, match="expired"):
        deliver(sb, late[0], REJECT_AFTER_TIME)
    sa.tick(REJECT_AFTER_TIME)
    assert not sa.is_established
    assert transport(sa.send(DATA, b"no keys", REJECT_AFTER_TIME)) == []  # staged, not sent under dead keys
    sb.tick(REJECT_AFTER_TIME)
    with pytest.raises(UnknownReceiver):
        deliver(sb, late[0], REJECT_AFTER_TIME)
    assert types_of(sb.send(DATA, b"b wants out", REJECT_AFTER_TIME)) == [INIT]  # the responder dials now


@DIALLER
def test_previous_keypair_decrypts_only_during_grace(seeds: tuple[int, int]) -> None:
    net, a, b, sa, sb = pair(seeds)
    old = [sb.send(DATA, numbered(b"O", i), REKEY_AFTER_TIME - 1)[0] for i in range(2)]
    net.send(a, sa.tick(REKEY_AFTER_TIME))
    net.settle(REKEY_AFTER_TIME)
    assert event_kinds(a)[-1] == "Rekeyed"
    assert deliver(sa, old[0], REKEY_AFTER_TIME + PREVIOUS_KEYPAIR_GRACE - 0.01).payload == numbered(b"O", 0)
    with pytest.raises((DecryptionFailed, UnknownReceiver)):
        deliver(sa, old[1], REKEY_AFTER_TIME + PREVIOUS_KEYPAIR_GRACE)


@DIALLER
def test_session_decrypt_with_old_keypair_during_rekey(seeds: tuple[int, int]) -> None:
    """Packets sealed under the old keypair that arrive after the rekey, mixed with new ones: none lost."""
    net, a, b, sa, sb = pair(seeds)
    t = REKEY_AFTER_TIME
    held_to_b = sa.send_batch(DATA, [numbered(b"a", i) for i in range(5)], t - 0.5)
    held_to_a = sb.send_batch(DATA, [numbered(b"b", i) for i in range(5)], t - 0.5)
    # The rekey handshake runs to completion while the old-key packets are still in flight.
    net.send(a, sa.tick(t))
    net.settle(t)
    assert event_kinds(a)[-1] == "Rekeyed" and event_kinds(b)[-1] == "Rekeyed"
    fresh_to_b = sa.send_batch(DATA, [numbered(b"a", i) for i in range(5, 10)], t + 0.5)
    fresh_to_a = sb.send_batch(DATA, [numbered(b"b", i) for i in range(5, 10)], t + 0.5)
    assert decode_header(fresh_to_b[0]).receiver != decode_header(held_to_b[0]).receiver  # new keypair
    rng = random.Random(3)
    for node, datagrams in ((b, held_to_b + fresh_to_b), (a, held_to_a + fresh_to_a)):
        rng.shuffle(datagrams)
        for datagram in datagrams:
            node.handle(datagram, ("192.0.2.1", 1), t + 1.0)
    assert sorted(p for _, p in b.delivered) == sorted(numbered(b"a", i) for i in range(10))
    assert sorted(p for _, p in a.delivered) == sorted(numbered(b"b", i) for i in range(10))
    assert not a.errors and not b.errors


@DIALLER
def test_rekey_keeps_sending_on_old_keys_until_the_responder_confirms(seeds: tuple[int, int]) -> None:
    """A lost HANDSHAKE_FINAL during a rekey must not lose traffic: the initiator keeps the old keys."""
    net, a, b, sa, sb = pair(seeds)
    t = REKEY_AFTER_TIME
    init = sa.tick(t)
    resp = b.handle(init[0], a.addr, t)
    final = a.handle(resp[0], b.addr, t)
    assert types_of(final) == [FINAL]  # ... and it is lost
    during = sa.send(DATA, b"during", t + 0.1)
    assert b.handle(during[0], a.addr, t + 0.1) == [] and b.delivered == [(DATA, b"during")]
    retransmit = sa.tick(sa.next_deadline() or 0.0)
    assert types_of(retransmit) == [FINAL]
    net.send(a, retransmit)
    net.settle(t + 1)
    assert keys(sa) == keys(sb)[::-1] and event_kinds(a)[-1] == "Rekeyed"


# --- handshake timers -----------------------------------------------------------------------------------
def test_lost_final_is_retransmitted_until_the_responder_confirms() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    resp = b.handle(sa.initiate(0.0)[0], a.addr, 0.0)
    final = a.handle(resp[0], b.addr, 0.0)
    assert types_of(final) == [FINAL] and sa.is_established  # the FINAL is lost
    early = sa.send(DATA, b"early", 0.01)
    assert b.handle(early[0], a.addr, 0.01) == [] and b.errors["UnknownReceiver"] == 1  # dropped: UDP semantics
    when = sa.next_deadline()
    assert when is not None and HANDSHAKE_INITIAL_RETRANSMIT <= when <= HANDSHAKE_INITIAL_RETRANSMIT + 0.34
    again = sa.tick(when)
    assert again == final
    confirmation = b.handle(again[0], a.addr, when)
    assert types_of(confirmation) == [KEEPALIVE]
    a.handle(confirmation[0], b.addr, when)
    assert sa.next_deadline() == REKEY_AFTER_TIME  # confirmed: no more FINAL retransmissions


def test_handshake_retransmission_backoff_schedule_and_give_up() -> None:
    node, session = lone_session()
    sent_at, sent = [0.0], session.send(DATA, b"staged", 0.0)
    while True:
        now = session.next_deadline()
        assert now is not None and now > sent_at[-1] - 1e-9
        out = session.tick(now)
        if out:
            assert out == sent  # the same INIT, the same index
            sent_at.append(now)
        if any(isinstance(e, HandshakeGaveUp) for e in session.events()):
            break
    assert now == pytest.approx(REKEY_ATTEMPT_TIME)
    gaps = [y - x for x, y in zip(sent_at, sent_at[1:])]
    expected = [min(HANDSHAKE_INITIAL_RETRANSMIT * 2**i, REKEY_TIMEOUT) for i in range(len(gaps))]
    assert expected[:7] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    for gap, base in zip(gaps, expected):
        assert base <= gap <= base + REKEY_TIMEOUT_JITTER
    assert any(gap > base for gap, base in zip(gaps, expected))  # jitter is really added
    assert session.stats["staged_dropped"] == 1 and session.local_indices() == set()
    assert node.indices.live == set()


def test_keepalive_after_keepalive_timeout_of_receiving_without_sending() -> None:
    net, a, b, sa, sb = established_pair()
    net.send(a, sa.send(DATA, b"hello", 1.0))
    net.settle(1.0)
    assert sb.next_deadline() == 1.0 + KEEPALIVE_TIMEOUT
    assert sb.tick(1.0 + KEEPALIVE_TIMEOUT - 0.01) == []
    out = sb.tick(1.0 + KEEPALIVE_TIMEOUT)
    assert types_of(out) == [KEEPALIVE]
    got = deliver(sa, out[0], 1.0 + KEEPALIVE_TIMEOUT)
    assert got.ptype is KEEPALIVE and got.payload == b""
    assert sa.tick(40.0) == []  # a keepalive is never answered with a keepalive


def test_no_keepalive_when_we_sent_something() -> None:
    net, a, b, sa, sb = established_pair()
    net.send(a, sa.send(DATA, b"hello", 1.0))
    net.settle(1.0)
    net.send(b, sb.send(DATA, b"reply", 5.0))
    assert sb.tick(1.0 + KEEPALIVE_TIMEOUT) == []


def test_new_handshake_after_silence() -> None:
    net, a, b, sa, sb = established_pair()
    net.send(a, sa.send(DATA, b"anyone there?", 1.0))  # b answers nothing (it lost its state, say)
    assert sa.tick(1.0 + NEW_HANDSHAKE_AFTER_SILENCE - 0.01) == []
    assert types_of(sa.tick(1.0 + NEW_HANDSHAKE_AFTER_SILENCE)) == [INIT]


def test_hearing_back_cancels_the_silence_handshake() -> None:
    net, a, b, sa, sb = established_pair()
    net.send(a, sa.send(DATA, b"ping", 1.0))
    net.settle(1.0)
    net.send(b, sb.tick(1.0 + KEEPALIVE_TIMEOUT))  # b's keepalive answers
    net.settle(1.0 + KEEPALIVE_TIMEOUT)
    assert sa.tick(1.0 + NEW_HANDSHAKE_AFTER_SILENCE) == []


def test_session_expires_when_it_never_got_keys() -> None:
    node, session = lone_session()
    session.initiate(0.0)
    now = 0.0
    while not session.is_expired:
        now = session.next_deadline() or pytest.fail("no deadline while not expired")
        session.tick(now)
    events = session.events()
    assert [type(e) for e in events] == [HandshakeGaveUp, Expired]
    assert now == pytest.approx(SESSION_EXPIRY)
    assert session.local_indices() == set() and node.indices.live == set()
    assert session.next_deadline() is None and session.snapshot(now)["state"] == "expired"
    assert types_of(session.initiate(now + 1)) == [INIT] and not session.is_expired  # it can be revived


def test_established_session_expires_after_the_peer_vanishes() -> None:
    net, a, b, sa, sb = established_pair()
    now = 0.0
    while not sa.is_expired:  # b is gone: nothing is delivered any more
        now = sa.next_deadline() or pytest.fail("no deadline")
        sa.tick(now)
    assert now == pytest.approx(SESSION_EXPIRY)  # measured from the last thing heard (b's confirmation at 0)
    assert event_kinds(a) == ["Established", "HandshakeGaveUp", "Expired"]
    assert a.indices.live == set()


@DIALLER
def test_no_index_leaks_across_rekeys_and_expiry(seeds: tuple[int, int]) -> None:
    net, a, b, sa, sb = pair(seeds)
    end = run_until_quiet(net, 0.0, 3 * REKEY_AFTER_TIME + 1, step=1.0)
    assert event_kinds(a).count("Rekeyed") == 3
    for node in (a, b):
        assert node.indices.live == node.owned_indices()
        assert len(node.indices.live) <= 4  # current + next + MAX_PREVIOUS_KEYPAIRS
    assert end > 0


# --- receive_batch: the fast path is receive(), gathered ----------------------------------------------------
@pytest.mark.slow
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["data", "control", "keepalive", "replay", "flip", "garbage", "short"]),
                          st.integers(0, 1500)), min_size=1, max_size=40))
def test_receive_batch_agrees_with_receive_datagram_by_datagram(ops: list[tuple[str, int]]) -> None:
    import copy

    _net, _a, _b, sa, sb = established_pair()
    deliver(sb, sa.send(DATA, b"first", 1.0)[0], 1.0)  # the peer has used the keypair: the fast path applies
    twin = copy.deepcopy(sb)
    stream: list[bytes] = []
    for op, n in ops:
        if op in ("data", "control", "keepalive"):
            ptype = {"data": DATA, "control": CONTROL, "keepalive": KEEPALIVE}[op]
            stream += transport(sa.send(ptype, b"" if ptype is KEEPALIVE else os.urandom(n), 2.0))
        elif op == "replay" and stream:
            stream.append(stream[n % len(stream)])
        elif op == "flip" and stream and stream[n % len(stream)]:
            d = bytearray(stream[n % len(stream)])
            d[n % len(d)] ^= 1
            stream.append(bytes(d))
        elif op == "garbage":
            stream.append(os.urandom(n))
        elif op == "short":
            stream.append(stream[-1][:HEADER_SIZE + 15] if stream else b"")
    batch = sb.receive_batch(stream, 3.0)
    payloads, replies, errors, last = [], [], [], -1
    undecodable = 0  # receive_batch counts these itself (receive never sees them)
    for i, d in enumerate(stream):
        try:
            header = decode_header(d)
        except RemoteProtocolError as exc:
            errors.append(type(exc))
            undecodable += 1
            continue
        try:
            got = twin.receive(header, d, 3.0)
        except RemoteProtocolError as exc:
            errors.append(type(exc))
            continue
        replies += got.replies
        last = i if got.authenticated else last
        if got.ptype is not None and got.ptype is not KEEPALIVE:
            payloads.append((got.ptype, got.payload))
    assert batch.payloads == payloads
    assert [type(e) for e in batch.errors] == errors
    assert batch.replies == replies and batch.last_authentic == last
    twin.stats.update({"malformed": undecodable, "dropped": undecodable})
    assert sb.stats == twin.stats
    assert sb.last_heard == twin.last_heard and sb.next_deadline() == twin.next_deadline()


@pytest.mark.slow
def test_session_cleanup_ttl_1000_sessions() -> None:
    """The seed's test_session_cleanup_ttl at its size: a node holds 1000 established sessions; 950 peers
    vanish, 50 keep talking (and rekeying). Simulated time runs past SESSION_EXPIRY in 10 s steps, the owner
    drops every session that reports expired, as the peer manager does: exactly the 950 silent ones go, each
    one SESSION_EXPIRY after it last heard its peer, and no receiver index is left behind."""
    hub = Node("hub", 1)
    peers = [Node(f"p{i}", 10_000 + i) for i in range(1000)]
    nets = {}
    for peer in peers:
        net = nets[peer.public] = Network(peer, hub)
        net.send(peer, peer.session_for(hub.public).initiate(0.0))
        net.settle(0.0)
    assert len(hub.sessions) == 1000 and all(s.is_established for s in hub.sessions.values())
    talking = peers[:50]
    silent = {peer.public for peer in peers[50:]}
    removed_at: dict[bytes, float] = {}
    now, step = 0.0, 10.0
    while now < SESSION_EXPIRY + 10 * step:
        now += step
        for peer in talking:
            session = peer.session_for(hub.public)
            nets[peer.public].send(peer, session.send(DATA, numbered(b"ping", int(now)), now) + peer.tick(now))
        for key, session in list(hub.sessions.items()):
            out = session.tick(now)
            if key in silent:
                continue  # that peer is gone: nothing reaches it, nothing comes back
            nets[key].send(hub, out)
        for peer in talking:
            nets[peer.public].settle(now)
        for key, session in list(hub.sessions.items()):
            if session.is_expired:  # the registry's sweep
                del hub.sessions[key]
                removed_at[key] = now
    assert set(removed_at) == silent
    assert all(SESSION_EXPIRY <= t < SESSION_EXPIRY + step + 1e-9 for t in removed_at.values())
    assert {p.public for p in talking} == set(hub.sessions)
    assert all(s.is_established for s in hub.sessions.values())
    assert hub.indices.live == hub.owned_indices()  # every expired session released its indices
    assert len(hub.indices.live) <= 4 * len(talking)
    assert sum(1 for kind, _ in hub.delivered if kind is DATA) == len(talking) * int(now // step)


# --- next_deadline: what the actors sleep until ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_every_timer_fires_at_the_deadline_next_deadline_reports_and_never_before(seed: int) -> None:
    """The session actor is ticked only at next_deadline() (no periodic tick): a tick a hair before it must find
    nothing to do, and a tick at it must do what was due, so that the deadline moves on (a deadline that stayed
    put would tick the actor in a loop; one reported late would delay a retransmission, a rekey, a keepalive or
    an expiry). Two nodes talk at random over a lossy link with blackouts, driven by their deadlines only."""
    from collections import Counter

    rng = random.Random(seed)
    a, b = Node("a", 1 + seed % 2), Node("b", 2 - seed % 2)
    net = Network(a, b, random.Random(seed), loss=0.1)
    sa = a.session_for(b.public)
    now = 0.0
    net.send(a, sa.initiate(now))
    fired: Counter[str] = Counter()
    for _ in range(2500):  # long enough that every seed's walk reaches a give-up (a blackout of 90 s)
        for n in (a, b):
            net.send(n, n.sync(now))  # the indices a send issued, as the actor tells its socket
            n.drain_events()
        pending = [(d, node, s) for node in (a, b) for s in node.sessions.values()
                   if (d := s.next_deadline()) is not None]
        due = min((d for d, _, _ in pending), default=None)
        step = rng.choice((0.05, 0.5, 5.0, 60.0))
        if due is not None and due <= now + step:
            for d, node, s in pending:
                if d == due and d - 1e-6 > now:
                    assert s.tick(d - 1e-6) == [] and s.events() == [] and s.index_commands() == []
                    assert s.next_deadline() == d
            now = max(now, due)
            for node in {id(node): node for d, node, _ in pending if d == due}.values():
                stats = {id(s): dict(s.stats) for s in node.sessions.values()}
                seen = len(node.events)
                net.send(node, node.tick(now))
                for s in node.sessions.values():
                    fired.update(k for k, v in s.stats.items() if v > stats.get(id(s), {}).get(k, 0))
                fired.update(type(e).__name__ for e in node.events[seen:])
            for d, node, s in pending:
                if d == due:
                    after = s.next_deadline()
                    assert after is None or after > d, (d, after)  # consumed: not due again at once
        else:
            now += step
            roll = rng.random()
            if roll < 0.3 and not sa.is_expired:
                net.send(a, sa.send(DATA, b"a", now))
            elif roll < 0.45 and a.public in b.sessions and b.sessions[a.public].is_established:
                net.send(b, b.sessions[a.public].send(DATA, b"b", now))
            elif roll < 0.5:  # a blackout starts or ends
                for link in net.link_to.values():
                    link.loss = 1.0 if link.loss < 1.0 else 0.1
        net.deliver(now)
    # Retransmissions of INIT and FINAL, keepalives, rekeys and silence handshakes, give-ups all came from ticks.
    for what in ("handshake_retransmits", "final_retransmits", "keepalives_sent", "handshakes_started",
                 "HandshakeGaveUp"):
        assert fired[what], (what, fired)


def test_a_deadline_moves_earlier_when_a_handshake_starts_or_a_packet_is_sent() -> None:
    """What the actors must re-arm for: calls into the session that pull its deadline in."""
    node, session = lone_session()
    assert session.next_deadline() is None  # nothing to do until something is sent
    session.send(DATA, b"staged", 5.0)  # no keys: staged, and a handshake starts
    first = session.next_deadline()
    assert first is not None and 5.0 + HANDSHAKE_INITIAL_RETRANSMIT <= first <= 5.0 + HANDSHAKE_INITIAL_RETRANSMIT + 0.34
    net, a, b, sa, sb = established_pair()
    assert sa.next_deadline() == REKEY_AFTER_TIME
    sa.send(DATA, b"hello", 1.0)  # we sent, heard nothing yet: a silence deadline, earlier than the rekey
    assert sa.next_deadline() == 1.0 + NEW_HANDSHAKE_AFTER_SILENCE
    assert types_of(sa.tick(1.0 + NEW_HANDSHAKE_AFTER_SILENCE - 1e-6)) == []
    assert types_of(sa.tick(1.0 + NEW_HANDSHAKE_AFTER_SILENCE)) == [INIT]


def test_a_keypair_past_rekey_after_messages_is_due_at_once() -> None:
    net, a, b, sa, sb = established_pair()
    set_send_counter(sa, REKEY_AFTER_MESSAGES)
    due = sa.next_deadline()
    assert due is not None and due <= 1.0  # due already, long before REKEY_AFTER_TIME
    assert types_of(sa.tick(1.0)) == [INIT]


def test_give_up_and_expiry_fire_exactly_at_their_deadlines() -> None:
    node, session = lone_session()
    session.initiate(0.0)
    give_up = expiry = None
    while not session.is_expired:
        now = session.next_deadline()
        assert now is not None
        session.tick(now)
        kinds = [type(e) for e in session.events()]
        if HandshakeGaveUp in kinds:
            give_up = now
        if Expired in kinds:
            expiry = now
    assert give_up == REKEY_ATTEMPT_TIME and expiry == SESSION_EXPIRY  # exactly: the comparisons are the same
