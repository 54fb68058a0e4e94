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
