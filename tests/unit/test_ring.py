"""The root-independent fallback: a rogue root that black-holes lookups cannot cut honest pairs (expanding-ring
search, source routes, dead-path detection), and the fallback itself is bounded (rate limits, dedupe, TTL)."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from tests.unit.overlay_net import Overlay

from axiomnet.constants import (
    DEAD_PATH_AFTER,
    QUEUE_MAX_WAIT,
    RING_AFTER,
    RING_INTERVAL,
    RING_LINK_BURST,
    RING_MAX_TTL,
    RING_RELAY_BURST,
    RING_RELAY_RATE,
    RING_SEEN_LIFETIME,
    RING_SOURCE_BURST,
    RING_SOURCE_RATE,
)
from axiomnet.errors import InvalidAnnouncement
from axiomnet.forward import Output
from axiomnet.errors import MalformedPacket
from axiomnet.identity import Identity
from axiomnet.lookup import Pathfinder, decode_ring, encode_path_broken, encode_ring, ring_step
from axiomnet.routed import Kind, decode_routed, encode_routed, root_tag
from axiomnet.wire import PacketType
from axiomnet.actors.router import TIMER_FLOOR


def black_hole(overlay: Overlay, v: int) -> None:
    """Node ``v`` keeps building the tree but drops every routed packet it should relay or answer."""
    overlay.nodes[v].forwarder.receive = lambda key, packets, now: Output()  # type: ignore[method-assign]


def rogue_line(seed: int) -> tuple[Overlay, int, list[int]]:
    """Honest line A-B-C-D plus a rogue R (the lowest key) linked to B and C, as in issue 15."""
    overlay = Overlay(nx.empty_graph(5), seed=seed)
    by_key = sorted(overlay.nodes, key=lambda v: overlay.nodes[v].identity.signing_key)
    rogue, line = by_key[0], by_key[1:]
    a, b, c, d = line
    for u, v in ((a, b), (b, c), (c, d), (rogue, b), (rogue, c)):
        overlay.graph.add_edge(u, v)
        overlay.link(u, v)
    overlay.tick(12)
    assert overlay.converged() and all(overlay.nodes[v].tree.root == overlay.nodes[rogue].identity.signing_key
                                       for v in overlay.alive)
    return overlay, rogue, line


def got(overlay: Overlay, v: int, payload: bytes) -> bool:
    return any(p == payload for _, p in overlay.nodes[v].delivered)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_rogue_root_black_holing_lookups_is_routed_around_by_the_ring_search(seed: int) -> None:
    overlay, rogue, (a, b, c, d) = rogue_line(seed)
    black_hole(overlay, rogue)
    overlay.send(a, d, b"first")
    overlay.tick(1)
    src = overlay.nodes[a].forwarder
    assert not got(overlay, d, b"first")
    assert src.pathfinder.stats["lookups_sent"] == 1  # the tree lookup went up to the rogue and died there
    assert src.pathfinder.stats["replies_accepted"] == 0
    for _ in range(4):  # RING_AFTER, then TTL 2, 4 (one round per tick here)
        overlay.tick(1)
        if src.pathfinder.source_route(overlay.address(d), overlay.now) is not None:
            break
    # The packet that waited for the forming route past QUEUE_MAX_WAIT was dropped (counted), not delivered late;
    # the next one follows the ring's route.
    assert not got(overlay, d, b"first") and src.pathfinder.stats["queue_expired"] == 1
    overlay.send(a, d, b"first")
    assert got(overlay, d, b"first"), "the packet followed the ring's route"
    stats = src.pathfinder.stats
    assert stats["ring_searches"] == 1 and stats["ring_replies_accepted"] == 1
    assert src.stats["ring_messages_sent"] == 2  # TTL 2 (D is 3 hops away), then TTL 4: one link, one copy each
    assert sum(n.forwarder.stats["ring_messages_sent"] for n in overlay.nodes.values()) >= 2 + 2 + 3  # relays too
    # D answers over the reverse route it learned from A's signed search, without a lookup of its own; the next
    # packets go straight over the honest line, hop by hop by port.
    back = overlay.send(d, a, b"answer")
    assert got(overlay, a, b"answer") and back == [d, c, b, a]
    assert overlay.nodes[d].forwarder.pathfinder.stats["lookups_sent"] == 0
    assert src.pathfinder.source_route(overlay.address(d), overlay.now) is not None
    trace = overlay.send(a, d, b"second")
    assert got(overlay, d, b"second") and rogue not in trace and trace == [a, b, c, d]


def test_a_source_route_survives_the_root_changing_under_it() -> None:
    overlay, rogue, (a, b, c, d) = rogue_line(4)
    black_hole(overlay, rogue)
    overlay.send(a, d, b"x")
    for _ in range(6):
        overlay.tick(1)
        if not got(overlay, d, b"x"):  # the first waited past QUEUE_MAX_WAIT and was dropped: send again
            overlay.send(a, d, b"x")
        if got(overlay, d, b"x"):
            overlay.send(d, a, b"y")  # something comes back: the route is alive
            break
    assert got(overlay, d, b"x") and got(overlay, a, b"y")
    overlay.kill(rogue)  # the rogue leaves (or flaps to another key): a new root, new coordinates everywhere
    overlay.tick(8)
    assert overlay.converged()
    assert overlay.send(a, d, b"after") == [a, b, c, d] and got(overlay, d, b"after")


KEEPALIVE_PAYLOAD = bytes(4) + bytes([PacketType.KEEPALIVE])  # an end-to-end KEEPALIVE: asks for nothing back


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_route_lost_to_a_root_change_is_searched_for_at_once_not_after_the_tree_lookup_fails(seed: int) -> None:
    """The integration Sybil test's flake (tests/integration/test_rogue.py): a pair that found each other by a tree
    lookup routes greedily on coordinates under the root of that moment. A ground key flapping in takes the root:
    the coordinates are under a root the source has left, so it looks the destination up again, and the lookup
    climbs to the new root and dies there. Before, every packet meanwhile waited RING_AFTER for the ring search
    (those past QUEUE_MAX_WAIT dropped): 5-20 pings of 100 per flap on real daemons, the pairs 1-3 and 2-4 of the
    CI failures. Now the lost route is searched for at once, and the first packet after the flap arrives."""
    overlay = Overlay(nx.empty_graph(5), seed=seed)
    by_key = sorted(overlay.nodes, key=lambda v: overlay.nodes[v].identity.signing_key)
    rogue, (a, b, c, d) = by_key[0], by_key[1:]
    for u, v in ((a, b), (b, c), (c, d)):
        overlay.graph.add_edge(u, v)
        overlay.link(u, v)
    overlay.tick(12)  # the honest tree; the rogue is not linked yet
    assert len({overlay.nodes[v].tree.root for v in (a, b, c, d)}) == 1
    assert overlay.send(a, d, b"before") == [a, b, c, d] and got(overlay, d, b"before")
    overlay.send(d, a, b"answer")
    overlay.send(a, d, KEEPALIVE_PAYLOAD)  # the conversation ends quietly: no dead-path clock runs on either side
    src = overlay.nodes[a].forwarder.pathfinder
    assert got(overlay, a, b"answer") and src.stats["replies_accepted"] == 1 and src.stats["ring_searches"] == 0
    assert src.source_route(overlay.address(d), overlay.now) is None  # A routes on D's coordinates

    black_hole(overlay, rogue)
    for u in (b, c):  # the ground key comes in at B and C and takes the root
        overlay.graph.add_edge(rogue, u)
        overlay.link(rogue, u)
    overlay.tick(12)
    rogue_key = overlay.nodes[rogue].identity.signing_key
    assert all(overlay.nodes[v].tree.root == rogue_key for v in (a, b, c, d))
    assert src.stats["dead_paths"] == 0 and src.stats["ring_searches"] == 0

    overlay.send(a, d, b"after")  # queued: the first ring round (TTL 2) is out at once, but D is 3 hops away
    waited = 0.0
    while not got(overlay, d, b"after") and waited < RING_AFTER:  # the router's own deadline timer, between ticks
        step = max(TIMER_FLOOR, src.next_deadline(overlay.now) - overlay.now)
        overlay.now += step
        waited += step
        overlay._run(a, overlay.nodes[a].forwarder.timers(overlay.now))
    assert got(overlay, d, b"after"), "the first packet after the root change waited for a lookup that dies"
    assert waited < QUEUE_MAX_WAIT / 2, waited  # TTL 2, then TTL 4 after ring_step(2)
    assert src.stats["routes_lost"] == 1 and src.stats["ring_searches"] == 1 and src.stats["queue_expired"] == 0
    assert overlay.send(a, d, b"next") == [a, b, c, d]
    assert src.stats["lookups_sent"] == 2  # the tree lookup went too (in an honest tree it may well answer)
    overlay.send(d, a, b"answer after")  # D answers over the reverse route it learned from A's search
    assert got(overlay, a, b"answer after")
    # A source route: the next flap of the root changes nothing for this pair.
    assert src.source_route(overlay.address(d), overlay.now) is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_route_looked_up_from_where_we_no_longer_are_is_searched_for_at_once(seed: int) -> None:
    """The Sybil test's other loss (C->E, B->E: 5-19 pings): the root's identity vanished, the tree re-formed under
    the same (stale) root for a few seconds, and every position changed while the root did not. Greedy towards
    where the destination was then drops silently (a watermark, a dead end, a black hole), until the dead-path
    detector gives up after DEAD_PATH_AFTER. Our own position moving is the sign: coordinates looked up from where
    we no longer are count as lost, and are searched for at once."""
    overlay = Overlay(nx.cycle_graph(6), seed=seed)
    overlay.tick(12)
    assert overlay.converged()
    root = next(v for v in overlay.nodes if overlay.nodes[v].tree.is_root)
    a = (root + 2) % 6  # depth 2: its parent is root + 1
    d = (root + 4) % 6  # two hops from A the other way round (through root + 3), found by a tree lookup
    assert overlay.nodes[a].tree.depth == 2
    overlay.send(a, d, b"before")
    assert got(overlay, d, b"before")
    overlay.send(a, d, KEEPALIVE_PAYLOAD)  # quiet: no dead-path clock runs
    src = overlay.nodes[a].forwarder.pathfinder
    assert src.stats["replies_accepted"] == 1 and src.source_route(overlay.address(d), overlay.now) is None
    before = overlay.nodes[a].tree.path
    overlay.cut(a, (root + 1) % 6)  # A's parent link: A re-attaches the other way round, under the same root
    overlay.tick(12)
    assert overlay.converged() and overlay.nodes[a].tree.path != before
    overlay.send(a, d, b"after")
    assert src.stats["routes_lost"] == 1 and src.stats["ring_searches"] == 1
    waited = 0.0
    while not got(overlay, d, b"after") and waited < RING_AFTER:
        step = max(TIMER_FLOOR, src.next_deadline(overlay.now) - overlay.now)
        overlay.now += step
        waited += step
        overlay._run(a, overlay.nodes[a].forwarder.timers(overlay.now))
    assert got(overlay, d, b"after") and waited < QUEUE_MAX_WAIT / 2


def test_a_path_broken_report_starts_the_ring_search_at_once() -> None:
    """A relay that can make no progress towards the coordinates we sent to (its tree changed under the route)
    says so; the source searches at once, as for a route it lost to a root change, not after RING_AFTER. Seen in
    the Sybil test: the pair B-D lost 18 pings to a PATH_BROKEN followed by a lookup that found no tree."""
    overlay = Overlay(nx.path_graph(4), seed=5)
    overlay.tick(12)
    a, b, d = 0, 1, 3
    assert overlay.send(a, d, b"warm") == [0, 1, 2, 3]
    src = overlay.nodes[a].forwarder
    relay = overlay.nodes[b]
    broken = encode_routed(Kind.PATH_BROKEN, root_tag=root_tag(relay.tree.root), dst=overlay.address(a),
                           src=overlay.address(b), dst_path=overlay.nodes[a].tree.path, src_path=relay.tree.path,
                           payload=encode_path_broken(overlay.address(d)))
    out = src.receive(relay.identity.public_key, [broken], overlay.now)
    kinds = [decode_routed(p).kind for packets in out.links.values() for p in packets]
    assert Kind.RING_SEARCH in kinds and Kind.LOOKUP in kinds
    assert src.pathfinder.stats["path_broken"] == 1 and src.pathfinder.stats["ring_searches"] == 1


def test_a_dead_data_path_is_detected_end_to_end_and_switched_to_a_ring_route() -> None:
    """The tree lookup works but the greedy data path crosses a black hole: nothing comes back, the source gives
    the route up after DEAD_PATH_AFTER and the ring finds the honest way round."""
    g = nx.cycle_graph(8)
    overlay = Overlay(g, seed=9)
    overlay.tick(16)
    assert overlay.converged()
    a, d = 0, 4
    trace = overlay.send(a, d, b"warm")
    assert got(overlay, d, b"warm")
    hole = trace[1]
    black_hole(overlay, hole)
    replies = 0
    for i in range(12):
        overlay.send(a, d, b"ping %d" % i)
        if got(overlay, d, b"ping %d" % i):
            overlay.send(d, a, b"pong %d" % i)
            replies += got(overlay, a, b"pong %d" % i)
        overlay.tick(1)
    pf = overlay.nodes[a].forwarder.pathfinder
    assert pf.stats["dead_paths"] >= 1 and pf.stats["ring_replies_accepted"] >= 1
    last = overlay.send(a, d, b"last")
    assert got(overlay, d, b"last") and hole not in last
    overlay.send(d, a, b"last pong")
    assert got(overlay, a, b"last pong")
    assert replies >= 12 - (DEAD_PATH_AFTER + 6)  # lost while detecting and searching, then every one


def _pathfinder(seed: int) -> Pathfinder:
    ident = Identity.from_seed(bytes([seed]) * 32)
    return Pathfinder(ident.address.packed, ident.signing_secret, ident.signing_key, random.Random(seed))


def test_a_ring_search_widens_round_by_round_then_gives_up() -> None:
    pf = _pathfinder(1)
    dst = b"\xfc" + bytes(15)
    pf.wait(dst, [b"p"], 0.0)
    assert pf.ring_due(RING_AFTER - 0.1) == []  # the tree lookup gets RING_AFTER first
    t0 = RING_AFTER
    assert [(x, t) for x, _, t in pf.ring_due(t0)] == [(dst, 2)]  # TTL 1 would only reach neighbours
    # Each round waits RING_STEP x TTL (0.2 s to 2 s), then doubles the TTL, up to RING_MAX_TTL (the deepest
    # path the routed header carries); unanswered at the last round's end, the search is given up.
    expected, ttl = [], 2
    while ttl < RING_MAX_TTL:
        ttl = min(RING_MAX_TTL, 2 * ttl)
        expected.append(ttl)
    ttls, now, previous = [], t0, 2
    for _ in range(len(expected)):
        assert pf.ring_due(now + 0.9 * ring_step(previous)) == []  # not before its round's wait
        now += ring_step(previous) + 0.001
        ttls += [t for _, _, t in pf.ring_due(now)]
        previous = ttls[-1]
    assert ttls == expected and expected[:5] == [4, 8, 16, 32, 64]
    assert pf.ring_due(now + 0.9 * ring_step(RING_MAX_TTL)) == [] and pf.stats["ring_exhausted"] == 0
    now += ring_step(RING_MAX_TTL) + 0.001
    first = pf.ring_due(now)  # given up; the packet still waits
    assert pf.stats["ring_exhausted"] == 1
    again = first or pf.ring_due(max(now, t0 + RING_INTERVAL))  # once RING_INTERVAL has passed: a new search
    assert [t for _, _, t in again] == [2]


def test_every_ring_round_fits_the_ttl_field_of_its_payload() -> None:
    """An unanswered search (its destination killed) widens to RING_MAX_TTL: every round's payload must encode.
    After MAX_TREE_DEPTH grew to 655 (u16 lengths), RING_MAX_TTL followed it and the round of TTL 256 made
    encode_ring raise struct.error in the router (a one-byte TTL field): 4 router crashes in a 5-minute soak of 6
    daemons. The field is a u16 now."""
    pf = _pathfinder(2)
    dst = b"\xfc" + b"\x01" * 15
    pf.wait(dst, [b"p"], 0.0)
    now, ttls = RING_AFTER, []
    while pf.stats["ring_exhausted"] == 0 and now < 120.0:
        for x, nonce, ttl in pf.ring_due(now):
            assert decode_ring(pf.ring_payload(x, nonce, ttl)).ttl == ttl
            ttls.append(ttl)
        now += 0.05
    assert pf.stats["ring_exhausted"] == 1 and max(ttls) == RING_MAX_TTL


def test_the_source_limits_its_ring_searches_per_destination_and_in_all() -> None:
    pf, owner = _pathfinder(1), _pathfinder(2)
    dst = owner.address
    pf.learn(dst, (1, 2), bytes(32), 0.0)
    pf.sent(dst, 0.0)
    assert pf.dead_paths(DEAD_PATH_AFTER) == [dst]
    (_, nonce, _), = pf.ring_due(DEAD_PATH_AFTER)
    reply = encode_routed(Kind.RING_REPLY, root_tag=0, dst=pf.address, src=dst, dst_path=(3,), src_path=(1, 4),
                          payload=owner.ring_answer(pf.address, nonce), watermark=1)
    header = decode_routed(reply)
    assert pf.accept_ring(header, reply[header.offset:], 2.5)[0] == dst
    assert pf.source_route(dst, 2.5) == (1, 4)
    # The new route dies at once too: no second search for this destination within RING_INTERVAL of the first.
    pf.sent(dst, 3.0)
    assert pf.dead_paths(3.0 + DEAD_PATH_AFTER) == [dst]
    assert pf.ring_due(3.0 + DEAD_PATH_AFTER) == [] and pf.stats["ring_limited"] == 1
    pf.wait(dst, [b"q"], 6.0)
    assert pf.ring_due(DEAD_PATH_AFTER + RING_INTERVAL - 0.1) == []
    assert [x for x, _, _ in pf.ring_due(DEAD_PATH_AFTER + RING_INTERVAL)] == [dst]
    # Many fresh destinations: RING_SOURCE_BURST searches at once, then RING_SOURCE_RATE per second.
    others = [b"\xfc" + bytes([i]) * 15 for i in range(1, 20)]
    for o in others:
        pf.wait(o, [b"r"], 30.0)
    started = {x for x, _, t in pf.ring_due(30.0 + RING_AFTER) if t == 2}
    assert 1 <= len(started) <= RING_SOURCE_BURST
    assert len({x for x, _, t in pf.ring_due(32.0 + RING_AFTER) if t == 2}) <= 1 + 2 * RING_SOURCE_RATE


def test_dead_paths_need_silence_for_the_full_interval() -> None:
    ident = Identity.from_seed(bytes(32))
    pf = Pathfinder(ident.address.packed, ident.signing_secret, ident.signing_key, random.Random(1))
    dst = b"\xfc" + bytes([7]) * 15
    pf.learn(dst, (1, 2), bytes(32), 0.0)
    pf.sent(dst, 0.0)
    pf.sent(dst, 1.0)  # the first unanswered send counts
    assert pf.dead_paths(DEAD_PATH_AFTER - 0.1) == []
    pf.heard(dst, DEAD_PATH_AFTER - 0.05)
    assert pf.dead_paths(DEAD_PATH_AFTER + 0.5) == []
    pf.sent(dst, 3.0)
    assert pf.dead_paths(3.0 + DEAD_PATH_AFTER) == [dst]
    assert pf.source_route(dst, 5.0) is None
    assert [x for x, _, _ in pf.ring_due(5.0)] == [dst]  # searched for at once


def _search(overlay: Overlay, origin: int, target: bytes, nonce: int, ttl: int, port: int = 1) -> bytes:
    node = overlay.nodes[origin]
    payload = encode_ring(node.identity.signing_secret, node.identity.signing_key, target, overlay.address(origin),
                          nonce, ttl)
    return encode_routed(Kind.RING_SEARCH, root_tag=0, dst=target, src=overlay.address(origin), dst_path=(port,),
                         src_path=(), payload=payload, hop_limit=ttl)


def test_a_relay_floods_each_search_once_within_its_per_origin_budget() -> None:
    overlay = Overlay(nx.star_graph(5), seed=3)
    overlay.tick(10)
    hub = overlay.nodes[0].forwarder
    leaf = overlay.nodes[1].identity.public_key
    target = b"\xfc" + bytes([9]) * 15  # nobody's: the search floods as far as its TTL lets it
    out = hub.receive(leaf, [_search(overlay, 1, target, 7, 4)], overlay.now)
    assert sorted(overlay.by_noise[k] for k in out.links) == [2, 3, 4, 5]  # every link but the sender's
    copy = decode_routed(next(iter(out.links.values()))[0])
    assert copy.hop_limit == 3 and len(copy.dst_path) == 2 and len(copy.src_path) == 1
    assert hub.receive(leaf, [_search(overlay, 1, target, 7, 4)], overlay.now).links == {}
    assert hub.stats["ring_duplicate"] == 1
    flooded = sum(bool(hub.receive(leaf, [_search(overlay, 1, target, 100 + i, 4)], overlay.now).links)
                  for i in range(50))
    assert flooded <= RING_RELAY_BURST and hub.stats["ring_relay_limited"] >= 50 - RING_RELAY_BURST
    assert hub.receive(leaf, [_search(overlay, 1, target, 999, 1)], overlay.now + 100).links == {}  # TTL spent
    # Forged origins and targets, each new, over one link: the link's own budget still holds.
    later = overlay.now + 200
    payload = decode_routed(_search(overlay, 1, target, 1, 4))
    forged = [encode_routed(Kind.RING_SEARCH, root_tag=0, dst=b"\xfc" + bytes([i]) * 15, src=b"\xfd" + bytes([i]) * 15,
                            dst_path=(1,), src_path=(), payload=_search(overlay, 1, target, 1, 4)[payload.offset:],
                            hop_limit=4) for i in range(60)]
    flooded = sum(bool(hub.receive(leaf, [packet], later).links) for packet in forged)
    assert flooded <= RING_LINK_BURST


def test_a_relay_forgets_the_floods_it_saw_after_ring_seen_lifetime() -> None:
    """The duplicate filter holds each flood for RING_SEEN_LIFETIME seconds, not until MAX_RING_SEEN newer ones
    push it out: a relay that saw one search a second for ten minutes remembers the last half minute's, and
    nothing once it has been quiet that long (before, every daemon of the soak filled it toward its 4,096)."""
    overlay = Overlay(nx.star_graph(3), seed=3)
    overlay.tick(10)
    hub = overlay.nodes[0].forwarder
    leaf = overlay.nodes[1].identity.public_key
    target = b"\xfc" + bytes([9]) * 15
    start = overlay.now
    step = 1.0 / RING_RELAY_RATE  # within the per-origin budget, so every search is flooded
    for i in range(600):
        now = start + i * step
        assert hub.receive(leaf, [_search(overlay, 1, target, 1000 + i, 4)], now).links
        assert len(hub._ring_seen) <= RING_SEEN_LIFETIME / step + 1
    # A copy inside the lifetime is a duplicate; the same copy after it is a new flood.
    now = start + 600 * step
    assert hub.receive(leaf, [_search(overlay, 1, target, 1599, 4)], now).links == {}
    assert hub.stats["ring_duplicate"] == 1
    assert hub.receive(leaf, [_search(overlay, 1, target, 1599, 4)], now + RING_SEEN_LIFETIME).links
    # Quiet for RING_SEEN_LIFETIME: the router's timers empty the table.
    hub.timers(now + 2 * RING_SEEN_LIFETIME + 1)
    assert len(hub._ring_seen) == 0


def test_a_forged_search_gets_no_answer_and_a_forged_reply_is_refused() -> None:
    overlay = Overlay(nx.path_graph(3), seed=5)
    overlay.tick(10)
    relay_key = overlay.nodes[1].identity.public_key
    # Node 0 signs a search claiming node 2's address as its origin: the target refuses it.
    forged_payload = encode_ring(overlay.nodes[0].identity.signing_secret, overlay.nodes[0].identity.signing_key,
                                 overlay.address(2), overlay.address(1), 5, 2)
    forged = encode_routed(Kind.RING_SEARCH, root_tag=0, dst=overlay.address(2), src=overlay.address(1),
                           dst_path=(1, 1), src_path=(1,), payload=forged_payload, hop_limit=1)
    target = overlay.nodes[2].forwarder
    assert target.receive(relay_key, [forged], overlay.now).links == {}
    assert target.stats["ring_refused"] == 1
    assert decode_ring(forged_payload).ttl == 2
    # A forged copy that comes first does not shadow the real search with the same nonce: node 1's own is answered.
    real = overlay.nodes[1]
    genuine = encode_routed(Kind.RING_SEARCH, root_tag=0, dst=overlay.address(2), src=overlay.address(1),
                            dst_path=(1,), src_path=(), payload=encode_ring(
                                real.identity.signing_secret, real.identity.signing_key, overlay.address(2),
                                overlay.address(1), 5, 2), hop_limit=2)
    answered = target.receive(relay_key, [genuine], overlay.now)
    assert target.stats["ring_answered"] == 1
    assert decode_routed(next(iter(answered.links.values()))[0]).kind is Kind.RING_REPLY
    # A ring reply nobody asked for, or signed by a key that does not own the address, changes nothing.
    pf = overlay.nodes[0].forwarder.pathfinder
    reply = encode_routed(Kind.RING_REPLY, root_tag=0, dst=overlay.address(0), src=overlay.address(2), dst_path=(1,),
                          src_path=(1, 1), payload=bytes(100), watermark=1)
    with pytest.raises(InvalidAnnouncement):
        pf.accept_ring(decode_routed(reply), bytes(100), overlay.now)
    assert pf.source_route(overlay.address(2), overlay.now) is None


def test_source_routed_packets_follow_their_ports_and_never_run_past_the_route() -> None:
    overlay = Overlay(nx.path_graph(3), seed=6)
    overlay.tick(10)
    relay = overlay.nodes[1].forwarder
    from0 = overlay.nodes[0].identity.public_key
    port_to_2 = overlay.nodes[1].tree.neighbours[overlay.nodes[2].identity.public_key].port
    packet = encode_routed(Kind.SOURCE_ROUTED, root_tag=0, dst=overlay.address(2), src=overlay.address(0),
                           dst_path=(1, port_to_2), src_path=(), payload=b"data", watermark=1)
    out = relay.receive(from0, [packet], overlay.now)
    (key, sent), = out.links.items()
    assert overlay.by_noise[key] == 2 and decode_routed(sent[0]).watermark == 2
    assert overlay.nodes[2].forwarder.receive(overlay.nodes[1].identity.public_key, sent, overlay.now).delivered == [
        (overlay.address(0), b"data")]
    ended = encode_routed(Kind.SOURCE_ROUTED, root_tag=0, dst=b"\xfc" + bytes(15), src=overlay.address(0),
                          dst_path=(1, port_to_2), src_path=(), payload=b"x", watermark=2)
    nowhere = encode_routed(Kind.SOURCE_ROUTED, root_tag=0, dst=b"\xfc" + bytes(15), src=overlay.address(0),
                            dst_path=(1, 999), src_path=(), payload=b"x", watermark=1)
    assert relay.receive(from0, [ended, nowhere], overlay.now).links == {}
    assert relay.stats["dropped_route_end"] == 1 and relay.stats["dropped_no_port"] == 1


def test_a_ring_search_of_the_widest_round_encodes_and_decodes() -> None:
    """Protocol 2 raised RING_MAX_TTL to MAX_TREE_DEPTH (655); a u8 TTL field crashed the router at the round
    past 255 (struct.error in a real daemon of test_routing). The TTL is a u16 now, every value in range."""
    ident = Identity.from_seed(bytes([7]) * 32)
    for ttl in (1, 255, 256, RING_MAX_TTL):
        payload = encode_ring(ident.signing_secret, ident.signing_key, b"\xfc" + bytes(15), ident.address.packed, 9, ttl)
        assert len(payload) == 102 and decode_ring(payload).ttl == ttl
    with pytest.raises(MalformedPacket):
        decode_ring(payload[:4] + (RING_MAX_TTL + 1).to_bytes(2, "big") + payload[6:])
