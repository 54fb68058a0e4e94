"""Any depth (issue 15 item 5, protocol 4): the depth bound is the routed header's, and what holds paths is bounded
in ports, not only in entries (docs/ROUTING.md "Any depth")."""

from __future__ import annotations

import random
from dataclasses import replace

import networkx as nx
import pytest
from tests.unit.overlay_net import Overlay
from tests.unit.test_tree import signed, tree_of

from axiomnet import fastpath, forward, lookup
from axiomnet.announce import PartAssembler, decode_announcement, encode_announcement
from axiomnet.constants import (
    HOP_LIMIT,
    MAX_ANNOUNCE_PARTS,
    MAX_LINK_PLAINTEXT,
    MAX_TREE_DEPTH,
    MIN_ROUTED_PAYLOAD,
    RING_MAX_TTL,
)
from axiomnet.identity import Identity
from axiomnet.lookup import Coords, Pathfinder
from axiomnet.routed import Kind, decode_routed, encode_routed


def test_the_depth_bound_is_what_the_routed_header_carries() -> None:
    """Two paths of MAX_TREE_DEPTH ports and a 1,280-byte payload fit one link datagram; the hop limit for routes
    that long fits its u16. Protocol 3's bound (606) came from the announcement, which now travels in parts."""
    assert MAX_TREE_DEPTH == 16036 and HOP_LIMIT == 2 * MAX_TREE_DEPTH + 2 <= 0xFFFF
    deepest = tuple(random.Random(1).randint(1, 0xFFFF) for _ in range(MAX_TREE_DEPTH))
    packet = encode_routed(Kind.TRAFFIC, root_tag=1, dst=b"\xfc" * 16, src=b"\xfd" * 16, dst_path=deepest,
                           src_path=deepest[::-1], payload=bytes(MIN_ROUTED_PAYLOAD))
    assert len(packet) <= MAX_LINK_PLAINTEXT < len(packet) + 4
    assert decode_routed(packet).dst_path == deepest
    with pytest.raises(ValueError):
        encode_routed(Kind.TRAFFIC, root_tag=1, dst=b"\xfc" * 16, src=b"\xfd" * 16, dst_path=deepest + (1,),
                      src_path=(), payload=b"")
    assert RING_MAX_TTL == 606  # a flood's radius stays where protocol 3 had it (its cost bound)


def test_a_position_1500_hops_deep_is_taken_from_a_chain_in_parts() -> None:
    """Past protocol 3's 606: a truly signed 1,500-hop chain arrives in parts, the tree takes its place below it
    and announces 1,501 hops, which split again."""
    ids = sorted((Identity.from_seed(i.to_bytes(32, "big")) for i in range(1, 1503)), key=lambda i: i.signing_key)
    root, sender, me = ids[0], ids[-2], ids[-1]
    ann = signed(root, [(x, 1 + k % 2) for k, x in enumerate(ids[1:-1])], me)
    parts = PartAssembler(5).split(encode_announcement(ann))
    assert 130 < len(parts) <= MAX_ANNOUNCE_PARTS
    assembler = PartAssembler()
    random.Random(3).shuffle(parts)
    whole = [w for w in (assembler.receive(sender.public_key, p, 1.0) for p in parts) if w is not None]
    tree = tree_of(me)
    tree.add(sender.public_key, 0.0)
    tree.receive(sender.public_key, whole[0], 1.0)
    assert tree.root == root.signing_key and tree.depth == 1501
    sent = dict(tree.tick(1.5))
    assert decode_announcement(sent[sender.public_key]).path == tree.path


def test_the_lookup_cache_is_bounded_in_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookup, "MAX_CACHED_PORTS", 10_000)
    ident = Identity.from_seed(bytes([9]) * 32)
    pf = Pathfinder(ident.address.packed, ident.signing_secret, ident.signing_key, random.Random(1))
    deep = (1,) * 3000
    for i in range(10):
        pf._remember(bytes([0xFC, i]) + bytes(14), Coords(b"r" * 32, deep), b"k" * 32, 0.0, asked_from=(2,) * 500)
    assert pf._cache_ports <= 10_000 and len(pf._cache) == 2  # the two most recent of 3,500 ports each
    assert pf.route(bytes([0xFC, 9]) + bytes(14), 1.0) == Coords(b"r" * 32, deep)
    assert pf.route(bytes([0xFC, 0]) + bytes(14), 1.0) is None
    pf.forget(bytes([0xFC, 9]) + bytes(14))
    assert pf._cache_ports == 3500 and len(pf._cache) == 1


def test_a_source_route_longer_than_any_ring_search_is_not_kept() -> None:
    ident = Identity.from_seed(bytes([9]) * 32)
    pf = Pathfinder(ident.address.packed, ident.signing_secret, ident.signing_key, random.Random(1))
    far = b"\xfc" + bytes(15)
    pf.learn(far, (1,) * (RING_MAX_TTL + 2), b"k" * 32, 0.0)
    assert pf.source_route(far, 0.0) is None and pf.stats["routes_too_long"] == 1
    pf.learn(far, (1,) * (RING_MAX_TTL + 1), b"k" * 32, 0.0)
    assert pf.source_route(far, 0.0) == (1,) * (RING_MAX_TTL + 1)


def test_the_next_hop_cache_is_bounded_in_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "MAX_CACHED_PORTS", 5_000)
    overlay = Overlay(nx.path_graph(3), seed=2)
    overlay.tick(6)
    fwd = overlay.nodes[1].forwarder
    for i in range(1, 8):
        fwd.decide((i,) * 2000, overlay.now)
        assert fwd._hop_ports <= 5_000 and fwd._hop_ports == sum(len(p) for p in fwd._hops)
    assert len(fwd._hops) <= 2


def test_the_relay_fast_path_leaves_long_headers_to_the_router() -> None:
    def packet(ports: int) -> bytes:
        return encode_routed(Kind.TRAFFIC, root_tag=1, dst=b"\xfc" * 16, src=b"\xfd" * 16, dst_path=(1,) * ports,
                             src_path=(2,), payload=b"z", hop_limit=9, watermark=9)

    short, long_ = packet(fastpath.MAX_RELAY_KEY_PORTS - 1), packet(fastpath.MAX_RELAY_KEY_PORTS)
    table = fastpath.learn(fastpath.EMPTY, [short, long_], lambda data: ("link", 1, False), version=1)
    assert table is not None and set(table.hops) == {fastpath.header_key(short)}
    relayed, rest = fastpath.split(table, [short, long_])
    assert relayed == {"link": [relayed["link"][0]]} and rest == [long_]


def test_a_childs_chain_deeper_than_the_signature_cache_is_checked_only_where_it_is_new() -> None:
    """Our own chain was verified hop by hop when we took it. A neighbour's chain that repeats it (a child's, a
    sibling's) is checked only from where it differs: past MAX_VERIFIED_SIGNATURES (2,048) hops the LRU alone
    missed every hop again (a chain read in order evicts its own first hops; tools/sim/verify_cost.py)."""
    from axiomnet.announce import Announcement, Hop, hop_statement, sign
    from axiomnet.constants import MAX_VERIFIED_SIGNATURES
    ids = sorted((Identity.from_seed(i.to_bytes(32, "big")) for i in range(1, 2104)), key=lambda i: i.signing_key)
    root, sender, me, child = ids[0], ids[-3], ids[-2], ids[-1]
    ann = signed(root, [(x, 1) for x in ids[1:-2]], me)
    assert len(ann.chain) == 2100 > MAX_VERIFIED_SIGNATURES
    tree = tree_of(me)
    tree.add(sender.public_key, 0.0)
    tree.add(child.public_key, 0.0)
    tree.receive(sender.public_key, encode_announcement(ann), 1.0)
    assert tree.depth == 2101
    checked = tree._verifier.verifications
    hop = Hop(child.signing_key, 4, 5, sign(me.signing_secret, hop_statement(root.signing_key, 5, me.signing_key,
                                                                             child.signing_key, 4)))
    below = Announcement(root.signing_key, 5, ann.root_sig, tree.chain + (hop,), 0, 0, bytes(64))
    tree.receive(child.public_key, encode_announcement(below), 2.0)
    # Its own hop, and the root's seq (the 2,100 hops checked after it pushed it out of the cache).
    assert tree._verifier.verifications - checked == 2
    assert tree.neighbours[child.public_key].ann == below
    forged = replace(below, chain=below.chain[:-1] + (replace(hop, sig=bytes(64)),))
    with pytest.raises(Exception, match="signature"):
        tree.receive(child.public_key, encode_announcement(forged), 3.0)


def test_the_verification_micro_benchmark_counts_what_it_checks(capsys: pytest.CaptureFixture[str]) -> None:
    """tools/sim/verify_cost.py (docs/ROUTING.md "Any depth"): a cold chain costs every hop, the root's seq and the
    certificate; a sibling's costs its own hop and certificate, and the wave estimate grows with the square."""
    import json

    from tools.sim import verify_cost
    assert verify_cost.main(["--depths", "3", "40", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["cold_checks"] for r in rows] == [3 + 2, 40 + 2]
    assert all(r["sibling_checks"] == 2 and r["sibling_known_checks"] == 2 for r in rows)
    assert [r["parts"] for r in rows] == [1, 4]
    assert rows[1]["whole_chain_wave_s"] > rows[0]["whole_chain_wave_s"]
