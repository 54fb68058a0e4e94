"""Forwarding across the overlay: lookups, greedy delivery, the watermark, path broken, hostile lookups."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.overlay_net import Overlay

from axiomnet.errors import InvalidAnnouncement, MalformedPacket
from axiomnet.lookup import Coords, decode_path_broken, encode_reply
from axiomnet.routed import NO_WATERMARK, Kind, decode_routed, encode_routed, forwarded, root_tag


def delivered(overlay: Overlay, dst: int, payload: bytes) -> bool:
    return any(p == payload for _, p in overlay.nodes[dst].delivered)


def settle(overlay: Overlay, ticks: int = 16) -> Overlay:
    overlay.tick(ticks)
    assert overlay.converged()
    return overlay


@pytest.mark.slow
def test_every_pair_of_a_random_graph_delivers_with_low_stretch() -> None:
    g = nx.random_geometric_graph(40, 0.3, seed=5)
    overlay = settle(Overlay(g, seed=5), 25)
    stretch = []
    for s, d in itertools.permutations(range(12), 2):
        payload = b"hello %d %d" % (s, d)
        trace = overlay.send(s, d, payload)
        assert delivered(overlay, d, payload), (s, d)
        assert trace[0] == s and trace[-1] == d
        stretch.append((len(trace) - 1) / nx.shortest_path_length(g, s, d))
    assert sum(stretch) / len(stretch) < 1.5


def test_the_delivered_payload_names_its_source_address() -> None:
    overlay = settle(Overlay(nx.path_graph(4), seed=6))
    overlay.send(0, 3, b"x")
    assert overlay.nodes[3].delivered == [(overlay.address(0), b"x")]


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(8, 30), st.integers(0, 2**16))
def test_prop_after_convergence_every_pair_delivers_without_loops(n: int, seed: int) -> None:
    g = nx.random_labeled_tree(n, seed=seed)
    rng = random.Random(seed)
    for _ in range(n // 3):
        u, v = rng.sample(range(n), 2)
        g.add_edge(u, v)
    overlay = settle(Overlay(g, seed=seed), 2 * nx.diameter(g) + 10)
    for s, d in rng.sample(list(itertools.permutations(range(n), 2)), 10):
        trace = overlay.send(s, d, b"p")
        assert delivered(overlay, d, b"p")
        assert len(trace) == len(set(trace)), "a packet visited a node twice"


def test_watermark_strictly_falls_along_the_path() -> None:
    overlay = settle(Overlay(nx.grid_2d_graph(4, 4), seed=7), 20)
    nodes = list(overlay.nodes)
    src, dst = nodes[0], nodes[-1]
    overlay.send(src, dst, b"warm up")  # looks the destination up
    sent = overlay.nodes[src].forwarder.send(overlay.address(dst), [b"w"], overlay.now)
    (key, packets), = sent.links.items()
    marks = [decode_routed(packets[0]).watermark]
    at, packet = overlay.by_noise[key], packets[0]
    prev = overlay.nodes[src].identity.public_key
    while at != dst:
        out = overlay.nodes[at].forwarder.receive(prev, [packet], overlay.now)
        (key, packets), = out.links.items()
        marks.append(decode_routed(packets[0]).watermark)
        prev, at, packet = overlay.nodes[at].identity.public_key, overlay.by_noise[key], packets[0]
    assert all(a > b for a, b in zip(marks, marks[1:])), marks


def test_a_packet_that_would_loop_is_dropped_by_the_watermark() -> None:
    overlay = settle(Overlay(nx.path_graph(4), seed=8))
    mid = overlay.nodes[1]
    tree = mid.tree
    far = overlay.nodes[3]  # not a neighbour of mid: greedy routing (and the watermark) decide
    packet = encode_routed(Kind.TRAFFIC, root_tag=root_tag(tree.root), dst=far.identity.address.packed,
                           src=overlay.address(0), dst_path=far.tree.path, src_path=overlay.nodes[0].tree.path,
                           payload=b"x", watermark=0)
    out = mid.forwarder.receive(overlay.nodes[0].identity.public_key, [packet], overlay.now)
    assert not out.links and mid.forwarder.stats["dropped_watermark"] == 1


def test_dead_end_sends_path_broken_and_the_source_looks_up_again() -> None:
    # 0-1-2-3 and 0-4-5; node 3 then moves from under 2 to under 5, where the source's cached path cannot lead.
    g = nx.Graph([(0, 1), (1, 2), (2, 3), (0, 4), (4, 5)])
    overlay = settle(Overlay(g, seed=9), 20)
    overlay.send(0, 3, b"first")
    assert delivered(overlay, 3, b"first")
    old = overlay.nodes[3].tree.path
    overlay.cut(2, 3)
    overlay.graph.remove_edge(2, 3)
    overlay.graph.add_edge(3, 5)
    overlay.link(3, 5)
    overlay.tick(8)
    assert overlay.nodes[3].tree.path != old
    source = overlay.nodes[0].forwarder.pathfinder
    overlay.send(0, 3, b"second")
    assert not delivered(overlay, 3, b"second")
    assert sum(overlay.nodes[v].forwarder.stats["path_broken_sent"] for v in overlay.alive) == 1
    assert sum(overlay.nodes[v].forwarder.stats["dropped_no_route"] for v in overlay.alive) == 1
    assert source.stats["path_broken"] == 1 and source.stats["replies_accepted"] == 2
    fresh = source.route(overlay.address(3), overlay.now)
    assert fresh is not None and fresh.path == overlay.nodes[3].tree.path
    overlay.send(0, 3, b"third")
    assert delivered(overlay, 3, b"third")


def test_hop_limit_is_enforced() -> None:
    overlay = settle(Overlay(nx.path_graph(3), seed=10))
    mid, far = overlay.nodes[1], overlay.nodes[2]
    packet = encode_routed(Kind.TRAFFIC, root_tag=root_tag(mid.tree.root), dst=far.identity.address.packed,
                           src=overlay.address(0), dst_path=far.tree.path, src_path=(), payload=b"x", hop_limit=1)
    out = mid.forwarder.receive(overlay.nodes[0].identity.public_key, [packet], overlay.now)
    assert not out.links and mid.forwarder.stats["dropped_hop_limit"] == 1
    out = mid.forwarder.receive(overlay.nodes[0].identity.public_key, [forwarded(packet, 9, NO_WATERMARK)], overlay.now)
    assert decode_routed(out.links[far.identity.public_key][0]).hop_limit == 8


@pytest.mark.parametrize("data", [b"", bytes(47), b"\x09" + bytes(50), b"\x01\x01" + bytes(46),
                                  b"\x01\x00\x00\x05" + bytes(40) + b"\xff\xff\x00\x00" + bytes(20)])
def test_malformed_routed_packets_are_counted(data: bytes) -> None:
    overlay = settle(Overlay(nx.path_graph(2), seed=11))
    node = overlay.nodes[0]
    out = node.forwarder.receive(overlay.nodes[1].identity.public_key, [data], overlay.now)
    assert not out.links and not out.delivered and node.forwarder.stats["dropped_malformed"] == 1
    with pytest.raises(MalformedPacket):
        decode_routed(data)


def test_lookup_reply_from_a_key_that_does_not_own_the_address_is_refused() -> None:
    overlay = settle(Overlay(nx.path_graph(3), seed=12))
    asker, liar, victim = overlay.nodes[0], overlay.nodes[1], overlay.nodes[2]
    pf = asker.forwarder.pathfinder
    nonce = pf.wait(victim.identity.address.packed, [b"q"], overlay.now)
    assert nonce is not None
    payload = encode_reply(liar.identity.signing_secret, liar.identity.signing_key,
                           Coords(liar.tree.root, liar.tree.path), victim.identity.address.packed, nonce)
    reply = encode_routed(Kind.LOOKUP_REPLY, root_tag=root_tag(liar.tree.root), dst=overlay.address(0),
                          src=victim.identity.address.packed, dst_path=asker.tree.path, src_path=liar.tree.path,
                          payload=payload)
    with pytest.raises(InvalidAnnouncement, match="does not own"):
        pf.accept(decode_routed(reply), payload, overlay.now)
    assert pf.route(victim.identity.address.packed, overlay.now) is None
    assert pf.stats["replies_rejected"] == 1


def test_path_broken_payload_codec() -> None:
    with pytest.raises(MalformedPacket):
        decode_path_broken(b"short")
    assert decode_path_broken(bytes(range(16))) == bytes(range(16))


def test_lookup_queue_is_bounded_and_gives_up() -> None:
    overlay = settle(Overlay(nx.path_graph(2), seed=13))
    pf = overlay.nodes[0].forwarder.pathfinder
    nowhere = bytes([0xFC]) + bytes(15)
    for i in range(100):
        pf.wait(nowhere, [bytes([i])], overlay.now)
    assert pf.snapshot(overlay.now)["pending"][0]["queued"] == 32  # type: ignore[index]
    assert pf.stats["queue_dropped"] == 68
    pf.due(overlay.now + 11.0)
    assert pf.stats["gave_up"] == 1 and pf.stats["gave_up_dropped"] == 32


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["relay", "deliver", "direct", "other_root", "malformed"]),
                          st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=30))
def test_a_batch_is_forwarded_exactly_as_its_packets_one_by_one(ops: list[tuple[str, int, int]]) -> None:
    import copy

    overlay = settle(Overlay(nx.path_graph(5), seed=11))
    relay = overlay.nodes[1]
    sender_key = overlay.nodes[0].identity.public_key

    def traffic_to(dst: int) -> bytes:
        out = overlay.nodes[0].forwarder.send(overlay.address(dst), [b"payload %d" % dst], overlay.now)
        (packet,) = out.links[relay.identity.public_key]
        return packet

    base = {"relay": traffic_to(4), "deliver": traffic_to(1), "direct": traffic_to(2)}
    batch = []
    for kind, hop, watermark in ops:
        if kind == "malformed":
            batch.append(base["relay"][:30])
        elif kind == "other_root":
            p = base["relay"]
            batch.append(p[:8] + bytes(4) + p[12:])
        else:
            batch.append(forwarded(base[kind], hop, watermark))
    together, alone = copy.deepcopy(relay.forwarder), copy.deepcopy(relay.forwarder)
    got = together.receive(sender_key, batch, overlay.now)
    links: dict[bytes, list[bytes]] = {}
    delivered_alone: list[tuple[bytes, bytes]] = []
    for packet in batch:
        one = alone.receive(sender_key, [packet], overlay.now)
        for key, packets in one.links.items():
            links.setdefault(key, []).extend(packets)
        delivered_alone += one.delivered
    assert got.links == links and got.delivered == delivered_alone
    assert together.stats == alone.stats


def test_a_departed_neighbours_cached_coordinates_go_with_it() -> None:
    overlay = settle(Overlay(nx.path_graph(4), seed=14))
    source = overlay.nodes[0].forwarder
    overlay.send(0, 3, b"looked up")  # node 3 is not a neighbour of 0: its coordinates are cached
    assert source.pathfinder.route(overlay.address(3), overlay.now) is not None
    source.neighbour_down(overlay.nodes[3].identity.public_key)
    assert source.pathfinder.route(overlay.address(3), overlay.now) is None
