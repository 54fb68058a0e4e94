"""A fast first packet (issue 15 item 8) and one-way flows: lookups retried after a quarter second, the router's
own deadlines, packets waiting at most QUEUE_MAX_WAIT behind a forming route, no second handshake racing the
first, and the end-to-end passive keepalive that keeps a healthy one-way flow from looking dead."""

from __future__ import annotations

import copy
import random

import networkx as nx
from tests.unit.overlay_net import Overlay
from tests.unit.stack_net import Stack

from axiomnet.constants import (
    DEAD_PATH_AFTER,
    LOOKUP_FIRST_RETRY,
    LOOKUP_RETRY,
    QUEUE_MAX_WAIT,
    RING_AFTER,
)
from axiomnet.e2e import E2E_KEEPALIVE_AFTER, EndToEnd
from axiomnet.identity import Identity
from axiomnet.lookup import Pathfinder
from axiomnet.wire import PacketType, decode_header

EPS = 1e-6


def ident(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32)


def ipv6(src: bytes, dst: bytes, payload: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, len(payload), 17, 64]) + src + dst + payload


def pathfinder() -> Pathfinder:
    me = ident(1)
    return Pathfinder(me.address.packed, me.signing_secret, me.signing_key, random.Random(1))


def test_a_lookup_is_retried_after_a_quarter_second_then_backs_off_to_lookup_retry() -> None:
    pf, dst = pathfinder(), ident(2).address.packed
    assert pf.wait(dst, [], 0.0) is not None
    sent_at, times = 0.0, []
    for wait in (LOOKUP_FIRST_RETRY, 2 * LOOKUP_FIRST_RETRY, LOOKUP_RETRY, LOOKUP_RETRY):
        assert pf.due(sent_at + wait - EPS) == []  # nothing a hair before
        assert [d for d, _ in pf.due(sent_at + wait)] == [dst]
        sent_at += wait
        times.append(sent_at)
    assert times == [0.25, 0.75, 1.75, 2.75]
    assert pf.stats["lookup_retries"] == 4


def test_the_pathfinder_deadline_is_when_it_has_work_and_never_before() -> None:
    pf, dst = pathfinder(), ident(2).address.packed
    assert pf.next_deadline(0.0) is None  # idle: the router's timer sleeps
    pf.wait(dst, [b"p"], 0.0)
    assert pf.next_deadline(0.0) == LOOKUP_FIRST_RETRY
    pf.due(LOOKUP_FIRST_RETRY)
    assert pf.next_deadline(LOOKUP_FIRST_RETRY) == 3 * LOOKUP_FIRST_RETRY
    pf.due(3 * LOOKUP_FIRST_RETRY)
    # Next: the ring search at RING_AFTER (before the lookup's next try at 1.75 s).
    deadline = pf.next_deadline(3 * LOOKUP_FIRST_RETRY)
    assert deadline == RING_AFTER
    assert pf.ring_due(deadline - EPS) == []
    assert [d for d, _, _ in pf.ring_due(deadline)] == [dst]
    # A route we sent over and heard nothing back from: due at DEAD_PATH_AFTER.
    other = ident(3).address.packed
    pf.sent(other, 5.0)
    assert pf.dead_paths(5.0 + DEAD_PATH_AFTER - EPS) == []
    assert pf.next_deadline(5.0) <= 5.0 + DEAD_PATH_AFTER
    assert pf.dead_paths(5.0 + DEAD_PATH_AFTER) == [other]


def test_a_rate_limited_ring_start_is_not_reported_due_before_the_limit_allows_it() -> None:
    """A deadline the work cannot happen at would spin the router's timer."""
    pf, dst = pathfinder(), ident(2).address.packed
    pf.wait(dst, [], 0.0)
    pf._ring_tokens, pf._ring_tokens_at = 0.0, 0.0  # the source's search budget spent
    pf.due(0.25), pf.due(0.75)
    # From RING_AFTER until the token comes (1 / RING_SOURCE_RATE = 2 s), nothing due is ever in the past.
    now = RING_AFTER
    while now < 2.0 - EPS:
        pf.due(now)
        assert copy.deepcopy(pf).ring_due(now) == []  # (a copy: asking takes tokens)
        deadline = pf.next_deadline(now)
        assert deadline is not None and deadline > now
        now = deadline
    assert now == 2.0
    assert [d for d, _, _ in pf.ring_due(now)] == [dst]


def test_a_packet_waits_behind_a_lookup_at_most_queue_max_wait() -> None:
    pf, dst = pathfinder(), ident(2).address.packed
    pf.wait(dst, [b"old"], 0.0)
    pf.wait(dst, [b"new"], 0.9)
    pf.due(QUEUE_MAX_WAIT + 0.05)  # the first waited past the bound: dropped, counted
    assert pf.stats["queue_expired"] == 1
    assert pf.take(dst, 1.1) == [b"new"]
    assert pf.stats["queue_wait_max_ms"] == 200


def test_the_e2e_queue_sends_what_waited_less_than_queue_max_wait_and_drops_the_rest() -> None:
    me, other = ident(1), ident(2)
    node, dst = EndToEnd(me.private_key, me.public_key, rng=random.Random(1)), other.address.packed
    node.outbound([ipv6(node.address, dst, b"late")], 0.0)
    node.outbound([ipv6(node.address, dst, b"fresh")], 0.7)
    node.resolved(dst, other.public_key, 1.2)  # the key came 1.2 s after the first packet
    session = node.sessions[dst]
    assert node.stats["queue_expired"] == 1
    assert session.snapshot(1.2)["staged"] == 0 and [p[-5:] for _, p in node._held[dst]] == [b"fresh"]


def handshake(alice: EndToEnd, bob: EndToEnd, first: list[bytes], t: float) -> list[bytes]:
    """Run alice's handshake with bob from ``first`` (her INIT) at time ``t``: the IPv6 packets bob's TUN got."""
    got, out = [], first
    for _ in range(6):
        back = bob.inbound([(alice.address, d) for d in out], t)
        got += back.tun
        out = alice.inbound([(bob.address, d) for d in back.sends.get(alice.address, [])], t).sends.get(bob.address, [])
    return got


def test_packets_behind_a_handshake_wait_at_most_queue_max_wait_from_when_they_were_read() -> None:
    """issue 15 item 8: no packet waits more than 1 s behind a forming route, the end-to-end handshake included.
    The wait is counted from when the packet was read from the TUN, so a packet that waited for its key and then
    for the handshake is dropped (counted) once the two together pass QUEUE_MAX_WAIT; what is younger goes when the
    session has its keys, never staged without a time bound inside the session."""
    a, b = ident(1), ident(2)
    alice = EndToEnd(a.private_key, a.public_key, rng=random.Random(1))
    bob = EndToEnd(b.private_key, b.public_key, rng=random.Random(2))
    dst = bob.address
    alice.outbound([ipv6(alice.address, dst, b"read at 0.0")], 0.0)  # waits for the key
    init = alice.resolved(dst, b.public_key, 0.6).sends[dst]  # the key after 0.6 s: the handshake starts
    assert alice.sessions[dst].snapshot(0.6)["staged"] == 0
    alice.outbound([ipv6(alice.address, dst, b"read at 0.7")], 0.7)  # behind the handshake
    alice.outbound([ipv6(alice.address, dst, b"read at 0.9")], 0.9)
    assert alice.stats["queue_expired"] == 0
    # The e2e actor's timer wakes by the time the oldest packet's wait runs out (or sooner: a retransmission).
    assert alice.next_deadline() <= QUEUE_MAX_WAIT
    init = alice.tick(QUEUE_MAX_WAIT - EPS).sends.get(dst) or init  # (its INIT may be sent again meanwhile)
    assert alice.stats["queue_expired"] == 0
    init = alice.tick(QUEUE_MAX_WAIT + EPS).sends.get(dst) or init
    assert alice.stats["queue_expired"] == 1  # waited 0.6 s for the key and 0.4 s more for the handshake
    # The handshake completes 1.2 s after the first packet: the two younger ones go, waited 0.5 and 0.3 s.
    got = handshake(alice, bob, init, 1.2)
    assert [p[-11:] for p in got] == [b"read at 0.7", b"read at 0.9"]
    assert alice.stats["queue_wait_max_ms"] == 500 and alice.stats["queue_expired"] == 1
    assert not alice._held
    # A late handshake: everything behind it has waited too long and is dropped, none sent late.
    c = ident(3)
    carol = EndToEnd(c.private_key, c.public_key, rng=random.Random(3))
    init = alice.dial(carol.address, c.public_key, 5.0).sends[carol.address]
    alice.outbound([ipv6(alice.address, carol.address, b"stale")], 5.0)
    assert handshake(alice, carol, init, 6.5) == [] and alice.stats["queue_expired"] == 2


def test_a_key_the_router_resolved_for_its_own_reasons_opens_no_second_handshake() -> None:
    """The responder's router looks the initiator up to route its HANDSHAKE_RESP; that lookup's answer reaches the
    e2e layer as Resolved. It used to open a session of its own and start a second handshake racing the first."""
    a, b = ident(1), ident(2)
    alice = EndToEnd(a.private_key, a.public_key, rng=random.Random(1))
    bob = EndToEnd(b.private_key, b.public_key, rng=random.Random(2))
    (init,) = alice.dial(bob.address, b.public_key, 0.0).sends[bob.address]
    assert bob.inbound([(alice.address, init)], 0.0).sends[alice.address]  # the RESP, waiting for a lookup
    out = bob.resolved(alice.address, a.public_key, 0.01)
    assert not out.sends and alice.address not in bob.sessions


def established_pair() -> tuple[EndToEnd, EndToEnd]:
    a, b = ident(1), ident(2)
    alice = EndToEnd(a.private_key, a.public_key, rng=random.Random(1))
    bob = EndToEnd(b.private_key, b.public_key, rng=random.Random(2))
    out = alice.dial(bob.address, b.public_key, 0.0)
    for _ in range(6):
        back = bob.inbound([(alice.address, d) for d in out.sends.get(bob.address, [])], 0.0)
        out = alice.inbound([(bob.address, d) for d in back.sends.get(alice.address, [])], 0.0)
    assert alice.sessions[bob.address].is_established and bob.sessions[alice.address].is_established
    return alice, bob


def test_the_receiver_of_data_answers_with_a_keepalive_before_the_dead_path_detector_looks() -> None:
    alice, bob = established_pair()
    t = 10.0
    (datagram,) = alice.outbound([ipv6(alice.address, bob.address, b"stream")], t).sends[bob.address]
    assert bob.inbound([(alice.address, datagram)], t).tun
    assert E2E_KEEPALIVE_AFTER < DEAD_PATH_AFTER
    assert not bob.tick(t + E2E_KEEPALIVE_AFTER - EPS).sends
    (keepalive,) = bob.tick(t + E2E_KEEPALIVE_AFTER).sends[alice.address]
    assert decode_header(keepalive).ptype is PacketType.KEEPALIVE
    # The keepalive asks for nothing: Alice, who sent data since, owes Bob nothing for it (no ping-pong).
    alice.inbound([(bob.address, keepalive)], t + E2E_KEEPALIVE_AFTER)
    assert not alice.tick(t + 5 * E2E_KEEPALIVE_AFTER).sends.get(bob.address)


def test_a_keepalive_starts_no_dead_path_clock_but_data_does() -> None:
    overlay = Overlay(nx.path_graph(4), seed=3)
    overlay.tick(12)
    assert overlay.converged()
    a, d = 0, 3
    src = overlay.nodes[a].forwarder.pathfinder
    overlay.send(a, d, bytes([1, 0, 0, 0, PacketType.DATA]) + bytes(27))  # a lookup first, then delivered
    overlay.tick(1)
    overlay.send(d, a, bytes([1, 0, 0, 0, PacketType.DATA]) + bytes(27))  # heard back: the route works
    keepalive = bytes([1, 0, 0, 0, PacketType.KEEPALIVE]) + bytes(27)
    overlay.send(a, d, keepalive)
    overlay.tick(int(DEAD_PATH_AFTER) + 2)
    assert src.stats["dead_paths"] == 0
    overlay.send(a, d, bytes([1, 0, 0, 0, PacketType.DATA]) + bytes(27))
    overlay.tick(int(DEAD_PATH_AFTER) + 2)
    assert src.stats["dead_paths"] == 1  # data unanswered is still found dead


def test_a_healthy_one_way_flow_costs_no_ring_search() -> None:
    """UDP streaming A -> D over two relays on the whole stack (link sessions, tree, lookups, e2e sessions), D
    sending nothing: D's passive keepalive answers it, so A never finds the path dead, during the flow or after."""
    stack = Stack(4, [(0, 1), (1, 2), (2, 3)])
    stack.run(12)
    src, dst = stack.nodes[0], stack.nodes[3]
    sent = []
    for k in range(40):  # 10 s of a packet every 0.25 s
        packet = ipv6(src.address, dst.address, b"%d" % k)
        sent.append(packet)
        stack.tun_send(0, [packet])
        stack.run(0.25)
    stack.run(6.0)  # and after it ends
    assert dst.tun == sent
    for node in (src, dst):
        stats = node.forwarder.pathfinder.stats
        assert stats["dead_paths"] == 0 and stats["ring_searches"] == 0, stats
    assert dst.e2e.sessions[src.address].stats["tx_packets"] >= 5  # its keepalives (and key confirmation)


def test_the_demo_table_shows_each_pairs_first_reply() -> None:
    from rich.console import Console

    from axiomnet.lab import demo, topology

    board = demo.Board(topology.build("line", 3))
    board.set("A -> C", hops="2", status="pinging", first="0.07")
    console = Console(width=160, record=True)
    console.print(board.table())
    text = console.export_text()
    assert "FIRST REPLY" in text
    row = next(line for line in text.splitlines() if "A -> C" in line)
    assert "0.07" in row
