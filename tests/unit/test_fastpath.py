"""The relay fast path (axiomnet/fastpath.py): a published decision relays exactly as the forwarder would."""

from __future__ import annotations

import networkx as nx

from axiomnet import fastpath
from axiomnet.forward import _DIRECT, _RELAY, Forwarder
from axiomnet.routed import Kind, decode_routed, encode_routed, forwarded, root_tag
from tests.unit.overlay_net import Overlay


def decider(fwd: Forwarder, now: float):
    def decide(data: bytes) -> fastpath.Decision | None:
        decision = fwd._traffic_decision(data, now)
        if decision is None or decision[0] not in (_DIRECT, _RELAY):
            return None
        return (decision[1], decision[2], decision[0] == _DIRECT)
    return decide


def line(n: int) -> Overlay:
    net = Overlay(nx.path_graph(n))
    net.tick(2 * n)
    assert net.converged()
    return net


def originate(net: Overlay, src: int, dst: int, payloads: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The TRAFFIC packets ``src`` sends towards ``dst`` (after a first packet resolved its coordinates)."""
    net.send(src, dst, b"first")
    out = net.nodes[src].forwarder.send(net.address(dst), payloads, net.now)
    ((key, packets),) = out.links.items()
    return key, packets


def test_a_learned_decision_relays_exactly_what_the_forwarder_relays() -> None:
    net = line(5)
    relay = net.nodes[1]
    _, packets = originate(net, 0, 4, [bytes([i]) * 100 for i in range(6)])
    sender = net.nodes[0].identity.public_key
    expected = relay.forwarder.receive(sender, packets, net.now).links
    table = fastpath.learn(fastpath.EMPTY, packets, decider(relay.forwarder, net.now), relay.tree.version)
    assert table is not None and len(table) == 1  # one flow, one header
    relayed, rest = fastpath.split(table, packets)
    assert rest == [] and relayed == expected
    assert all(decode_routed(p).hop_limit == decode_routed(q).hop_limit - 1 for p, q in zip(relayed[next(iter(relayed))], packets))


def test_to_the_destinations_own_neighbour_there_is_no_watermark_to_check() -> None:
    net = line(3)
    _, packets = originate(net, 0, 2, [b"x" * 50])
    relay = net.nodes[1]
    table = fastpath.learn(fastpath.EMPTY, packets, decider(relay.forwarder, net.now), relay.tree.version)
    assert table is not None
    ((link, distance, direct),) = table.hops.values()
    assert direct and distance == 0 and link == net.nodes[2].identity.public_key
    relayed, rest = fastpath.split(table, packets)
    assert rest == [] and relayed == relay.forwarder.receive(net.nodes[0].identity.public_key, packets, net.now).links


def test_what_the_checks_refuse_goes_to_the_router() -> None:
    net = line(5)
    relay = net.nodes[1]
    _, packets = originate(net, 0, 4, [b"p" * 40])
    table = fastpath.learn(fastpath.EMPTY, packets, decider(relay.forwarder, net.now), relay.tree.version)
    assert table is not None
    ((_, distance, direct),) = table.hops.values()
    assert not direct
    last_hop = forwarded(packets[0], 1, decode_routed(packets[0]).watermark)  # hop limit 1: dropped by the router
    flat = forwarded(packets[0], 64, distance)  # the watermark would not fall
    relayed, rest = fastpath.split(table, [last_hop, flat, packets[0]])
    assert rest == [last_hop, flat] and sum(len(v) for v in relayed.values()) == 1


def test_ours_lookups_and_unknown_headers_are_not_learned_nor_relayed() -> None:
    net = line(3)
    dest = net.nodes[2]
    _, packets = originate(net, 0, 2, [b"d" * 30])
    at_dest = [forwarded(p, 60, 0) for p in packets]
    assert fastpath.learn(fastpath.EMPTY, at_dest, decider(dest.forwarder, net.now), dest.tree.version) is None
    lookup = encode_routed(Kind.LOOKUP, root_tag=root_tag(dest.tree.root), dst=net.address(0), src=net.address(2),
                           dst_path=(), src_path=dest.tree.path, payload=b"\0" * 8)
    assert fastpath.header_key(lookup) is None
    relayed, rest = fastpath.split(fastpath.EMPTY, at_dest + [lookup])
    assert relayed == {} and rest == at_dest + [lookup]


def test_a_table_for_another_tree_version_is_dropped_and_the_size_is_bounded(monkeypatch) -> None:
    asked: list[bytes] = []

    def decide(data: bytes) -> fastpath.Decision:
        asked.append(data)
        return ("link", 3, False)

    def packet(i: int) -> bytes:
        return encode_routed(Kind.TRAFFIC, root_tag=1, dst=bytes([0xFC]) + i.to_bytes(15, "big"), src=b"\xfc" * 16,
                             dst_path=(1, 2), src_path=(3,), payload=b"z", hop_limit=9, watermark=9)

    old = fastpath.learn(fastpath.EMPTY, [packet(1), packet(1), packet(2)], decide, version=4)
    assert old is not None and len(old) == 2 and len(asked) == 2  # asked once per header
    assert fastpath.learn(old, [packet(1)], decide, version=4) is None  # nothing new: no new table
    new = fastpath.learn(old, [packet(3)], decide, version=5)
    assert new is not None and set(new.hops) == {fastpath.header_key(packet(3))} and len(old) == 2  # old untouched
    monkeypatch.setattr(fastpath, "MAX_RELAY_ENTRIES", 2)
    full = fastpath.learn(old, [packet(7)], decide, version=4)
    assert full is not None and len(full) == 1


# --- source routes, the origin's decision, delivery (the relayed path's ends skip the router too) -------------------
def source_decider(fwd: Forwarder, now: float):
    """The router's decision for SOURCE_ROUTED headers (actors/router.py), with noise keys for links."""
    def decide(data: bytes) -> fastpath.Decision | None:
        decision = fwd.source_decision(data, now)
        return None if decision is None else (decision[0], decision[1], None)
    return decide


def source_routed(net: Overlay, src: int, dst: int, payloads: list[bytes]) -> list[bytes]:
    """The SOURCE_ROUTED packets ``src`` sends to ``dst`` once a ring search gave it the route along the line."""
    ports = tuple(net.nodes[v].tree.neighbours[net.nodes[v + 1].identity.public_key].port for v in range(src, dst))
    node = net.nodes[src]
    node.forwarder.pathfinder.learn(net.address(dst), ports, net.nodes[dst].identity.signing_key, net.now)
    ((_, packets),) = node.forwarder.send(net.address(dst), payloads, net.now).links.items()
    assert all(decode_routed(p).kind is Kind.SOURCE_ROUTED for p in packets)
    return packets


def test_a_source_routed_flow_is_relayed_exactly_as_the_forwarder_relays_it_at_every_hop() -> None:
    """Ring-found routes carry bulk flows too (a first packet's lookup that lost the race to a ring search): each
    relay's decision names the port its index reads, and the packet leaves with the next index, as _relay_source."""
    net = line(5)
    packets = source_routed(net, 0, 4, [bytes([i]) * 80 for i in range(5)])
    for hop in (1, 2, 3):
        relay = net.nodes[hop]
        came_from = net.nodes[hop - 1].identity.public_key
        expected = relay.forwarder.receive(came_from, packets, net.now).links
        table = fastpath.learn(fastpath.EMPTY, packets, source_decider(relay.forwarder, net.now), relay.tree.version)
        assert table is not None and len(table) == 1
        relayed, rest = fastpath.split(table, packets)
        assert rest == [] and relayed == expected
        ((packets),) = relayed.values()
        assert {decode_routed(p).watermark for p in packets} == {hop + 1}
    # At the destination: nothing to learn (it is ours); delivered as the forwarder delivers it.
    dest = net.nodes[4]
    assert fastpath.learn(fastpath.EMPTY, packets, source_decider(dest.forwarder, net.now), dest.tree.version) is None
    delivered, rest = fastpath.deliverable(packets, net.address(4))
    assert rest == [] and delivered == dest.forwarder.receive(net.nodes[3].identity.public_key, packets,
                                                               net.now).delivered


def test_a_source_route_decision_relays_only_its_own_index_and_kind() -> None:
    net = line(4)
    packets = source_routed(net, 0, 3, [b"s" * 20])
    relay = net.nodes[1]
    table = fastpath.learn(fastpath.EMPTY, packets, source_decider(relay.forwarder, net.now), relay.tree.version)
    assert table is not None
    replayed = forwarded(packets[0], 60, 2)  # another index than the one decided: the router reads it
    last = forwarded(packets[0], 1, 1)  # hop limit 1: the router drops it
    as_traffic = bytes([int(Kind.TRAFFIC)]) + packets[0][1:]  # same key bytes, another kind: not this decision
    relayed, rest = fastpath.split(table, [replayed, last, as_traffic, packets[0]])
    assert rest == [replayed, last, as_traffic] and sum(len(v) for v in relayed.values()) == 1


def test_only_well_formed_traffic_for_us_is_delivered_past_the_router() -> None:
    net = line(3)
    dest = net.nodes[2]
    _, packets = originate(net, 0, 2, [b"a" * 30, b"b" * 30])
    at_dest = [forwarded(p, 60, 0) for p in packets]
    delivered, rest = fastpath.deliverable(at_dest, net.address(2))
    assert rest == [] and delivered == [(net.address(0), b"a" * 30), (net.address(0), b"b" * 30)]
    assert delivered == dest.forwarder.receive(net.nodes[1].identity.public_key, at_dest, net.now).delivered
    other = fastpath.deliverable(at_dest, net.address(1))  # not ours: all for the router
    assert other == ([], at_dest)
    bad_port = at_dest[0][:48] + b"\0\0" + at_dest[0][50:]  # a path holding port 0: refused by decode_routed
    reserved = at_dest[0][:1] + b"\x01" + at_dest[0][2:]
    lookup = encode_routed(Kind.LOOKUP_REPLY, root_tag=root_tag(dest.tree.root), dst=net.address(2),
                           src=net.address(0), dst_path=(), src_path=(), payload=b"r")
    assert fastpath.deliverable([bad_port, reserved, lookup], net.address(2)) == ([], [bad_port, reserved, lookup])


def test_the_origin_decision_is_the_header_send_puts_in_front() -> None:
    """Forwarder.origin, which the router publishes to the e2e actor, gives the link and header Forwarder.send uses:
    greedy with looked-up coordinates, along a source route, or to a neighbour; None while a lookup is needed."""
    net = line(4)
    src = net.nodes[0]
    assert src.forwarder.origin(net.address(3), net.now) is None  # nothing looked up yet
    net.send(0, 3, b"first")  # looks the destination up
    for dst in (3, 1):
        key, head, clocked = src.forwarder.origin(net.address(dst), net.now)
        ((link, packets),) = src.forwarder.send(net.address(dst), [b"p1", b"p2"], net.now).links.items()
        assert link == key and packets == [head + b"p1", head + b"p2"] and clocked == (dst == 3)
    source_routed(net, 0, 3, [b"x"])
    key, head, clocked = src.forwarder.origin(net.address(3), net.now)
    ((link, packets),) = src.forwarder.send(net.address(3), [b"q"], net.now).links.items()
    assert link == key and packets == [head + b"q"] and clocked and decode_routed(head).kind is Kind.SOURCE_ROUTED
