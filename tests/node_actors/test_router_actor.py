"""RouterActor: announcements over fake links, the control lane, liveness, hostile input, contention."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest

from axiomnet.actors import messages as m
from axiomnet.actors.base import TwoLaneInbox, bounded_tell
from axiomnet.actors.router import RouterActor
from axiomnet.announce import ANNOUNCE_PART, PartAssembler, decode_part
from axiomnet.constants import DEAD_PROBE_INTERVAL, MAX_QUEUED_BATCHES, PEER_DEAD_AFTER
from axiomnet.errors import InvalidAnnouncement
from axiomnet.identity import Identity
from axiomnet.tree import Tree
from tests.node_actors.fakes import GetOther, GetWritten, wait_for


def ident(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32)


def ipv6(src: bytes, dst: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 8, 59, 64]) + src + dst + bytes(8)


def sent_control(session: Any) -> list[bytes]:
    return [x.payload for x in session.ask(GetOther()) if isinstance(x, m.SendControl)]


def sent_announcements(session: Any) -> list[list[bytes]]:
    """The announcements sent (complete ones), each as its parts (protocol 4, PROTOCOL §5.7), oldest first."""
    groups: dict[int, list[bytes]] = {}
    for payload in sent_control(session):
        if payload[0] == ANNOUNCE_PART:
            groups.setdefault(decode_part(payload).number, []).append(payload)
    return [parts for parts in groups.values() if len(parts) == decode_part(parts[0]).count]


def feed(router: Any, key: bytes, parts: list[bytes]) -> None:
    for part in parts:
        router.tell(m.Announce(key, part))


def test_two_routers_learn_each_other_through_announcements(recorder):
    a, b = ident(1), ident(2)
    ra = RouterActor.start(None, {}, a, seq_start=10)
    rb = RouterActor.start(None, {}, b, seq_start=10)
    sa, sb = recorder(), recorder()  # sa: a's session to b; sb: b's session to a
    ra.tell(m.SessionUp(sa, b.public_key, ("192.0.2.2", 1), True))
    rb.tell(m.SessionUp(sb, a.public_key, ("192.0.2.1", 1), True))
    lowest = min(a.signing_key, b.signing_key).hex()

    def converged() -> bool:
        snaps = ra.ask(m.Snapshot(), timeout=5), rb.ask(m.Snapshot(), timeout=5)
        return (all(s["tree"]["root"] == lowest for s in snaps)
                and {s["tree"]["depth"] for s in snaps} == {0, 1})

    fed = {id(sa): 0, id(sb): 0}
    probes = {id(sa): 0, id(sb): 0}

    def measured() -> bool:
        return all(r.ask(m.Snapshot(), timeout=5)["peers"][0]["rtt_ms"] is not None for r in (ra, rb))

    for _ in range(12):  # the links: carry the newest announcement each way, one per MIN_ANNOUNCE_INTERVAL
        ra.tell(m.HeartbeatTick())
        rb.tell(m.HeartbeatTick())
        for session, router, sender in ((sa, rb, a), (sb, ra, b)):
            sent = sent_announcements(session)
            if len(sent) > fed[id(session)]:
                fed[id(session)] = len(sent)
                feed(router, sender.public_key, sent[-1])
            other = [p for p in sent_control(session) if p[0] != ANNOUNCE_PART]  # probes and replies, all of them
            for payload in other[probes[id(session)]:]:
                router.tell(m.Announce(sender.public_key, payload))
            probes[id(session)] = len(other)
        if wait_for(lambda: converged() and measured(), timeout=0.4):
            break
    assert converged() and measured()  # each side's RTT from its own probes, answered by the other router
    snap_a = ra.ask(m.Snapshot(), timeout=5)
    assert snap_a["peers"][0]["coords"] is not None and snap_a["peers"][0]["alive"]
    # For the map: each peer's root, and the chain from the root down to us with keys and addresses.
    assert snap_a["peers"][0]["root"] == lowest
    child, root = (a, b) if lowest == b.signing_key.hex() else (b, a)
    chain = (ra if child is a else rb).ask(m.Snapshot(), timeout=5)["coords"]["chain"]
    assert [(row["key"], row["public_key"], row["address"]) for row in chain] == [
        (ident_.signing_key.hex(), ident_.public_key.hex(), str(ident_.address)) for ident_ in (root, child)]
    assert chain[0]["coords"] == [] and len(chain[1]["coords"]) == 1


def test_forged_announcement_is_counted_not_fatal(recorder):
    a, b = ident(1), ident(2)
    router = RouterActor.start(None, {}, a, seq_start=10)
    router.tell(m.SessionUp(recorder(), b.public_key, ("192.0.2.2", 1), True))
    parts = PartAssembler().split(b"\x01" + bytes(2500))  # an announcement that decodes to nothing, in parts
    bad_count = parts[0][:12] + (0xFFFF).to_bytes(2, "big") + parts[0][14:]
    for garbage in (b"", b"\x01" + bytes(500), bytes(20000), b"\x81\xa1t\xa2hb", bad_count, *parts):
        router.tell(m.Announce(b.public_key, garbage))
    snap = router.ask(m.Snapshot(), timeout=5)  # same lane as the announcements: behind them
    assert sum(v for k, v in snap["counters"].items() if k.startswith("announce_")) == 6
    assert snap["counters"]["announce_MalformedPacket"] >= 3  # the whole one outside parts, the bad count, the decode
    assert snap["tree"]["announcements_assembled"] == 1 and snap["tree"]["partial_bytes"] == 0
    assert router.is_alive()


def test_refused_announcements_are_counted_under_the_errors_metric_not_its_class_name(recorder, monkeypatch):
    class RenamedForTheTest(InvalidAnnouncement):  # a class name no metric carries
        pass

    def refuse(self: Any, key: bytes, data: bytes, now: float) -> None:
        raise RenamedForTheTest("refused")

    monkeypatch.setattr(Tree, "receive", refuse)
    a, b = ident(1), ident(2)
    router = RouterActor.start(None, {}, a, seq_start=10)
    router.tell(m.SessionUp(recorder(), b.public_key, ("192.0.2.2", 1), True))
    router.tell(m.Announce(b.public_key, b"anything"))
    counters = router.ask(m.Snapshot(), timeout=5)["counters"]
    assert counters["announce_InvalidAnnouncement"] == 1
    assert not [k for k in counters if "RenamedForTheTest" in k]


def test_datagrams_for_an_unknown_destination_wait_behind_a_lookup_that_has_no_tree(recorder):
    a = ident(1)
    router = RouterActor.start(None, {}, a, seq_start=10)
    router.tell(m.RouteOut(ident(2).address.packed, [b"sealed"]))
    # Snapshots ride the control lane, ahead of data: wait for the batch to be handled.
    assert wait_for(lambda: "fwd_dropped_no_tree" in router.ask(m.Snapshot(), timeout=5)["counters"])
    snap = router.ask(m.Snapshot(), timeout=5)
    assert snap["counters"]["fwd_dropped_no_tree"] == 1  # no neighbour: the lookup has nowhere to go (counted)
    assert snap["lookups"]["pending"][0]["queued"] == 1


def test_a_neighbour_is_resolved_and_reached_directly_before_the_tree_converges(recorder):
    a, b = ident(1), ident(2)
    e2e, session = recorder(), recorder()
    router = RouterActor.start(None, {"e2e": e2e}, a, seq_start=10)
    router.tell(m.SessionUp(session, b.public_key, ("192.0.2.2", 1), True))
    router.tell(m.Resolve(b.address.packed))
    assert wait_for(lambda: any(isinstance(x, m.Resolved) for x in e2e.ask(GetOther())))
    resolved = next(x for x in e2e.ask(GetOther()) if isinstance(x, m.Resolved))
    assert resolved.key == b.public_key
    router.tell(m.RouteOut(b.address.packed, [b"sealed"]))
    assert wait_for(lambda: any(isinstance(x, m.RoutedToLink) for x in session.ask(GetOther())))


def router_with_a_neighbour(recorder, monkeypatch):
    """A router on a settable clock with one neighbour up: (clock, router, neighbour's session, neighbour)."""
    clock = [1000.0]
    monkeypatch.setattr("axiomnet.actors.router.time.monotonic", lambda: clock[0])
    a, b = ident(1), ident(2)
    router = RouterActor.start(None, {}, a, seq_start=10)
    session = recorder()
    router.tell(m.SessionUp(session, b.public_key, ("192.0.2.2", 1), True))
    return clock, router, session, b


def test_silent_neighbour_is_withdrawn_then_only_probed(recorder, monkeypatch):
    clock, router, session, b = router_with_a_neighbour(recorder, monkeypatch)
    router.tell(m.HeartbeatTick())
    assert wait_for(lambda: len(sent_announcements(session)) == 1)
    clock[0] += PEER_DEAD_AFTER + 0.1
    router.tell(m.HeartbeatTick())  # the router keeps no clock of its own on its neighbours: the session's says so
    router.tell(m.PeerSilent(b.public_key, recorder()))  # a session since replaced: changes nothing
    router.tell(m.PeerSilent(b.public_key, session))
    assert wait_for(lambda: router.ask(m.Snapshot(), timeout=5)["counters"].get("peers_withdrawn") == 1)
    router.tell(m.PeerSilent(b.public_key, session))  # told twice: withdrawn once
    for _ in range(3):
        clock[0] += 1.0
        router.tell(m.HeartbeatTick())
    clock[0] += DEAD_PROBE_INTERVAL
    router.tell(m.HeartbeatTick())
    assert wait_for(lambda: any(isinstance(x, m.Probe) for x in session.ask(GetOther())))
    assert len(sent_announcements(session)) == 1  # no announcement since it went silent
    probes = [x for x in session.ask(GetOther()) if isinstance(x, m.Probe)]
    assert len(probes) == 1
    router.tell(m.PeerSeen(b.public_key))  # it answered: routes and announcements again
    router.tell(m.HeartbeatTick())
    assert wait_for(lambda: len(sent_announcements(session)) == 2)
    assert router.ask(m.Snapshot(), timeout=5)["peers"][0]["alive"]
    assert router.ask(m.Snapshot(), timeout=5)["counters"]["peers_withdrawn"] == 1


def test_a_live_neighbour_heard_only_through_its_session_is_never_withdrawn(recorder, monkeypatch):
    """The router no longer ages its neighbours itself: a session that hears its peer (keepalives, which reach the
    router as nothing at all) keeps it routed however long the router has not heard of it."""
    clock, router, session, b = router_with_a_neighbour(recorder, monkeypatch)
    for _ in range(3):
        clock[0] += PEER_DEAD_AFTER
        router.tell(m.HeartbeatTick())
    snap = router.ask(m.Snapshot(), timeout=5)
    assert snap["counters"].get("peers_withdrawn", 0) == 0 and snap["peers"][0]["alive"]


def test_control_lane_is_served_before_data_and_bounded_apart():
    inbox = TwoLaneInbox()
    from pykka._envelope import Envelope

    inbox.put(Envelope(m.RoutedToLink([b"1"])))
    inbox.put(Envelope(m.RoutedToLink([b"2"])))
    inbox.put(Envelope(m.HeartbeatTick()))
    assert isinstance(inbox.get().message, m.HeartbeatTick)
    assert inbox.get().message.packets == [b"1"]
    assert inbox.lane_depth(urgent=False) == 1 and inbox.lane_depth(urgent=True) == 0


class _Blocked(pykka.ThreadingActor):
    """An actor with the two-lane mailbox that blocks on its first message until released."""

    _create_actor_inbox = staticmethod(TwoLaneInbox)

    def __init__(self, gate: threading.Event, entered: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.entered = entered
        self.seen: list[str] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, GetWritten):
            return list(self.seen)
        self.entered.set()
        self.gate.wait(10)
        self.seen.append(type(message).__name__)
        return None


def test_a_saturated_data_lane_sheds_data_but_not_announcements():
    gate, entered = threading.Event(), threading.Event()
    ref = _Blocked.start(gate, entered)
    assert bounded_tell(ref, m.RoutedToLink([b"first"]))
    assert entered.wait(10)  # the actor is stuck in its first message; its data lane is empty
    told = 1 + sum(bounded_tell(ref, m.RoutedToLink([b"x"])) for _ in range(MAX_QUEUED_BATCHES + 50))
    assert told == MAX_QUEUED_BATCHES + 1  # the lane holds MAX_QUEUED_BATCHES; the other 50 were shed
    assert bounded_tell(ref, m.Announce(b"k" * 32, b"a"))
    gate.set()
    assert wait_for(lambda: len(ref.ask(GetWritten(), timeout=5)) == told + 1)
    seen = ref.ask(GetWritten(), timeout=5)
    assert seen.index("Announce") <= 1  # served right after the message that was blocking
    ref.stop()


@pytest.mark.slow
def test_chaos_simulate_lock_contention_1000_concurrent_writers_complete_without_deadlock(recorder):
    """Seed chaos 'simulate lock contention': 1,000 threads hit the router (the routing table) at once."""
    router = RouterActor.start(None, {}, ident(1), seq_start=10)
    peers = [ident(10 + n) for n in range(10)]
    sessions = [recorder() for _ in peers]
    barrier = threading.Barrier(1000)
    me = ident(1).address.packed

    def writer(t: int) -> None:
        barrier.wait()
        peer, session = peers[t % 10], sessions[t % 10]
        router.tell(m.SessionUp(session, peer.public_key, ("192.0.2.1", t), True))
        router.tell(m.Announce(peer.public_key, b"\x01" + bytes(200)))
        router.tell(m.RouteOut(peer.address.packed, [ipv6(me, peer.address.packed)]))
        router.tell(m.PeerSeen(peer.public_key))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(1000)]
    started = time.monotonic()
    for th in threads:
        th.start()
    started = time.monotonic()  # the barrier releases once the last writer is ready
    for th in threads:
        th.join(10)
    assert not any(th.is_alive() for th in threads)
    def announcements_counted() -> int:
        counters = router.ask(m.Snapshot(), timeout=10)["counters"]
        return sum(v for k, v in counters.items() if k.startswith("announce_"))

    assert wait_for(lambda: announcements_counted() == 1000)
    assert time.monotonic() - started < 10.0
    assert len(router.ask(m.Snapshot(), timeout=10)["peers"]) == 10


class Wire(pykka.ThreadingActor):
    """One direction of a perfect link: what a router gives its session for ``key`` arrives at ``other``."""

    def __init__(self, sender_key: bytes) -> None:
        super().__init__()
        self.sender_key = sender_key
        self.other: Any = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, pykka.ActorRef):
            self.other = message
        elif isinstance(message, m.RoutedToLink):
            self.other.tell(m.RoutedFromLink(self.sender_key, message.packets))
        elif isinstance(message, m.SendControl):
            self.other.tell(m.Announce(self.sender_key, message.payload))
        return None


def test_a_lookup_across_a_relay_reports_its_round_trip_and_the_proven_key(recorder, monkeypatch):
    from axiomnet import lookup

    # The tree lookup is what is measured: no ring search may answer first while the lookup filters still spread
    # (with RING_AFTER at 1 s it did, in 1 run of 4 on a loaded machine: a source route, no lookup round trip).
    monkeypatch.setattr(lookup, "RING_AFTER", 60.0)
    ids = [ident(n) for n in (1, 2, 3)]
    e2e = recorder()
    routers = [RouterActor.start(None, {"e2e": e2e} if i == 0 else {}, x, seq_start=10) for i, x in enumerate(ids)]
    for i, j in ((0, 1), (1, 2)):  # a line: 0 - 1 - 2
        for me, other in ((i, j), (j, i)):
            wire = Wire.start(ids[me].public_key)
            wire.tell(routers[other])
            routers[me].tell(m.SessionUp(wire, ids[other].public_key, ("192.0.2.1", 1), True))

    def tick() -> None:  # the heartbeat: announcements (and the lookup filters on them), lookup resends
        for router in routers:
            router.tell(m.HeartbeatTick())

    def one_tree() -> bool:
        tick()
        snaps = [router.ask(m.Snapshot(), timeout=5) for router in routers]
        return len({s["tree"]["root"] for s in snaps}) == 1 and sorted(s["tree"]["depth"] for s in snaps) in (
            [0, 1, 1], [0, 1, 2])

    assert wait_for(one_tree, timeout=20)
    far = ids[2].address.packed
    routers[0].tell(m.Resolve(far))
    assert wait_for(lambda: tick() or any(isinstance(x, m.Resolved) and x.dst == far for x in e2e.ask(GetOther())))
    routes = routers[0].ask(m.Snapshot(), timeout=5)["routes"]
    row = next(r for r in routes if r["address"] == str(ids[2].address))
    assert row["public_key"] == ids[2].public_key.hex()
    assert row["rtt_ms"] is not None and 0 < row["rtt_ms"] < 1000, routers[0].ask(m.Snapshot(), timeout=5)["lookups"]  # from the last send to the reply


def test_a_lookup_nobody_answers_widens_into_a_ring_search_between_heartbeats(recorder, monkeypatch):
    """No heartbeat at all: the packets for the destination drive the fallback (RING_TICK)."""
    from axiomnet import lookup
    from axiomnet.routed import Kind, decode_routed
    monkeypatch.setattr(lookup, "RING_AFTER", 0.05)
    a, b, far = ident(1), ident(2), ident(3)
    router = RouterActor.start(None, {}, a, seq_start=10)
    link = recorder()
    router.tell(m.SessionUp(link, b.public_key, ("192.0.2.2", 1), True))

    def searched() -> bool:
        router.tell(m.RouteOut(far.address.packed, [b"sealed"]))
        return any(isinstance(x, m.RoutedToLink) and any(decode_routed(p).kind is Kind.RING_SEARCH for p in x.packets)
                   for x in link.ask(GetOther()))
    assert wait_for(searched, timeout=5)
    snap = router.ask(m.Snapshot(), timeout=5)
    assert snap["counters"]["fwd_ring_messages_sent"] >= 1 and snap["lookups"]["ring_searches"] == 1
    assert snap["lookups"]["pending"][0]["ring_ttl"] >= 2


def _pump(routers: dict[str, Any], idents: dict[str, Identity], links: list[tuple[str, str, Any]],
          done: Any, rounds: int = 16) -> bool:
    """Tick every router and carry the newest announcement over each fake link until ``done()``."""
    fed = {id(session): 0 for _, _, session in links}
    for _ in range(rounds):
        for router in routers.values():
            router.tell(m.HeartbeatTick())
        for src, dst, session in links:
            sent = sent_announcements(session)
            if len(sent) > fed[id(session)]:
                fed[id(session)] = len(sent)
                feed(routers[dst], idents[src].public_key, sent[-1])
        if wait_for(done, timeout=0.4):
            return True
    return done()


def test_a_private_network_keeps_its_trusted_root_when_a_stranger_with_a_lower_key_joins(recorder):
    """trusted_roots (issue 15 item 2) in the router actor: the line trusted - honest - stranger, where the
    stranger holds the lowest key and the trusted root the highest. The honest node takes the trusted root; without
    the setting it takes the stranger's tree."""
    by_key = sorted((ident(n) for n in range(1, 12)), key=lambda i: i.signing_key)
    idents = {"stranger": by_key[0], "honest": by_key[5], "trusted": by_key[-1]}

    def run(trust: bool) -> dict[str, Any]:
        roots = frozenset({idents["trusted"].public_key}) if trust else None
        routers = {"stranger": RouterActor.start(None, {}, idents["stranger"], seq_start=10),
                   "honest": RouterActor.start(None, {}, idents["honest"], seq_start=10, trusted_roots=roots),
                   "trusted": RouterActor.start(None, {}, idents["trusted"], seq_start=10, trusted_roots=roots)}
        links = []
        for a, b in (("honest", "stranger"), ("honest", "trusted")):
            for src, dst in ((a, b), (b, a)):
                session = recorder()
                routers[src].tell(m.SessionUp(session, idents[dst].public_key, ("192.0.2.9", 1), True))
                links.append((src, dst, session))
        want = (idents["trusted"] if trust else idents["stranger"]).signing_key.hex()

        def settled() -> bool:  # the right root, and (private) the stranger's certified claim seen and refused
            tree = routers["honest"].ask(m.Snapshot(), timeout=5)["tree"]
            return tree["root"] == want and (not trust or tree["untrusted_root"] > 0)

        _pump(routers, idents, links, settled)
        snap = routers["honest"].ask(m.Snapshot(), timeout=5)
        for router in routers.values():
            router.stop()
        return snap

    open_net = run(trust=False)
    assert open_net["tree"]["root"] == idents["stranger"].signing_key.hex()
    private = run(trust=True)
    assert private["tree"]["root"] == idents["trusted"].signing_key.hex() and private["tree"]["depth"] == 1
    assert private["tree"]["parent"] == idents["trusted"].public_key.hex()
    assert private["tree"]["trusted_roots"] == 1 and private["tree"]["untrusted_root"] > 0


def test_the_router_publishes_its_relay_decisions_and_withdraws_them_each_heartbeat(recorder):
    """A relayed flow's first batch goes through the router, which then tells every link session the decision
    (the relay fast path); a heartbeat, or an injected fault, replaces the table with an empty one."""
    from axiomnet.routed import Kind, encode_routed, root_tag

    a, b, c = ident(1), ident(2), ident(3)
    router = RouterActor.start(None, {}, a, seq_start=10)
    sb, sc = recorder(), recorder()
    router.tell(m.SessionUp(sb, b.public_key, ("192.0.2.2", 1), True))
    router.tell(m.SessionUp(sc, c.public_key, ("192.0.2.3", 1), True))
    tag = root_tag(bytes.fromhex(router.ask(m.Snapshot(), timeout=5)["tree"]["root"]))
    packet = encode_routed(Kind.TRAFFIC, root_tag=tag, dst=c.address.packed, src=b.address.packed, dst_path=(),
                           src_path=(), payload=b"sealed", hop_limit=9, watermark=0)

    def tables(session: Any) -> list[Any]:
        return [x.table for x in session.ask(GetOther()) if isinstance(x, m.RelayDecisions)]

    router.tell(m.RoutedFromLink(b.public_key, [packet]))
    assert wait_for(lambda: any(isinstance(x, m.RoutedToLink) for x in sc.ask(GetOther())))
    assert wait_for(lambda: tables(sb) and tables(sc))
    ((ref, distance, direct),) = tables(sb)[-1].hops.values()
    assert ref == sc and distance == 0 and direct  # c is the destination's own neighbour: straight to it
    router.tell(m.HeartbeatTick())
    assert wait_for(lambda: len(tables(sb)) == 2 and not tables(sb)[-1].hops)
    router.tell(m.RoutedFromLink(b.public_key, [packet]))
    assert wait_for(lambda: len(tables(sb)) == 3 and tables(sb)[-1].hops)
    router.tell(m.CorruptRelayed(2))
    assert wait_for(lambda: len(tables(sb)) == 4 and not tables(sb)[-1].hops)
    router.tell(m.RoutedFromLink(b.public_key, [packet]))  # corrupted here, not learned while faults are due
    assert wait_for(lambda: router.ask(m.Snapshot(), timeout=5)["counters"].get("fault_corrupted") == 1)
    assert len(tables(sb)) == 4
    router.tell(m.RoutedFromLink(b.public_key, [packet]))  # the last fault: learned again after it
    assert wait_for(lambda: len(tables(sb)) == 5 and tables(sb)[-1].hops)


def test_a_lookup_is_retried_and_a_ring_search_started_at_the_routers_own_deadlines_not_at_heartbeats(recorder):
    """No HeartbeatTick at all: the router's deadline timer alone sends the lookup again after LOOKUP_FIRST_RETRY
    (0.25 s, then 0.5 s) and starts the ring search at RING_AFTER (issue 15 item 8: a lookup lost while the tree
    forms costs a quarter second, not the next heartbeat)."""
    from axiomnet.constants import LOOKUP_FIRST_RETRY, RING_AFTER

    a, b, far = ident(1), ident(2), ident(3)
    router = RouterActor.start(None, {}, a, seq_start=10)
    link = recorder()
    router.tell(m.SessionUp(link, b.public_key, ("192.0.2.2", 1), True))
    started = time.monotonic()
    router.tell(m.Resolve(far.address.packed))

    def lookups() -> dict[str, Any]:
        return router.ask(m.Snapshot(), timeout=5)["lookups"]

    assert wait_for(lambda: lookups()["lookup_retries"] >= 2, timeout=5.0), lookups()
    took = time.monotonic() - started
    assert took >= 3 * LOOKUP_FIRST_RETRY - 0.05  # 0.25 s, then 0.5 s later: never earlier than asked
    assert wait_for(lambda: lookups()["ring_searches"] >= 1, timeout=5.0), lookups()
    assert time.monotonic() - started >= RING_AFTER - 0.05
    from axiomnet.routed import Kind

    rounds = [p for x in link.ask(GetOther()) if isinstance(x, m.RoutedToLink) for p in x.packets
              if p[0] == Kind.RING_SEARCH]
    assert rounds, "the ring round went out over the link"


def test_a_beat_from_our_parent_goes_on_to_our_child_at_once(recorder):
    """Protocol 3: the router forwards its parent's ROOT_BEAT, the same bytes, to each child's session as it
    arrives (not at its own tick). Parent and child are core Trees on the other ends of two recorded links."""
    from axiomnet.announce import ROOT_BEAT

    parent, me, child = sorted((ident(n) for n in (71, 72, 73, 74, 75)), key=lambda i: i.signing_key)[:3]
    router = RouterActor.start(None, {}, me, seq_start=10)
    to_parent, to_child = recorder(), recorder()
    router.tell(m.SessionUp(to_parent, parent.public_key, ("192.0.2.2", 1), True))
    router.tell(m.SessionUp(to_child, child.public_key, ("192.0.2.3", 1), True))
    ends = {parent.public_key: (Tree(parent.signing_secret, parent.signing_key, parent.address.packed,
                                     now=time.monotonic(), seq_start=1000), to_parent),
            child.public_key: (Tree(child.signing_secret, child.signing_key, child.address.packed,
                                    now=time.monotonic(), seq_start=1), to_child)}
    fed = {key: 0 for key in ends}
    wires = {key: PartAssembler() for key in ends}  # the ends' own parts layer (PROTOCOL §5.7)
    beats: list[bytes] = []  # what the parent's tree beat to us
    for tree, _ in ends.values():
        tree.add(me.public_key, time.monotonic())

    def pump() -> None:  # one heartbeat on both ends, and everything in flight delivered
        router.tell(m.HeartbeatTick())
        for key, (tree, session) in ends.items():
            now = time.monotonic()
            payloads = sent_control(session)
            for payload in payloads[fed[key]:]:
                try:
                    whole = wires[key].receive(me.public_key, payload, now)
                    for _, reply in tree.receive(me.public_key, whole, now) if whole is not None else ():
                        router.tell(m.Announce(key, reply))
                except InvalidAnnouncement:
                    pass
            fed[key] = len(payloads)
            for _, data in tree.tick(now):
                if key == parent.public_key and data[0] == ROOT_BEAT:
                    beats.append(data)
                feed(router, key, wires[key].split(data))

    def placed() -> bool:
        pump()
        tree = router.ask(m.Snapshot(), timeout=5)["tree"]
        ptree = ends[parent.public_key][0]
        return (tree["depth"] == 1 and ends[child.public_key][0].depth == 2
                and ptree.is_child(ptree.neighbours[me.public_key]))

    assert wait_for(placed, timeout=15.0)
    del beats[:]

    def forwarded() -> bool:  # the parent beats at each pump (a new seq each time; the router takes one per H/4)
        pump()
        return bool(set(beats) & set(sent_control(to_child)))

    assert wait_for(forwarded, timeout=15.0)
    got = [p for p in sent_control(to_child) if p in set(beats)]
    snap = router.ask(m.Snapshot(), timeout=5)["tree"]
    assert got and snap["beats"] >= 1 and snap["root_seq"] > 1000  # taken as its own seq, and passed on


def test_the_router_publishes_its_origin_decisions_to_the_e2e_actor_and_withdraws_them(recorder):
    """After datagrams for a destination came through the router once, the e2e actor gets the decision (the next
    hop's session and the routed header Forwarder.send puts in front), so the rest of the flow skips the router; a
    link that goes down takes its decisions with it."""
    from axiomnet.routed import decode_routed

    a, b, c = ident(1), ident(2), ident(3)
    e2e = recorder()
    router = RouterActor.start(None, {"e2e": e2e}, a, seq_start=10)
    sb, sc = recorder(), recorder()
    router.tell(m.SessionUp(sb, b.public_key, ("192.0.2.2", 1), True))
    router.tell(m.SessionUp(sc, c.public_key, ("192.0.2.3", 1), True))

    def tables() -> list[Any]:
        return [x.table for x in e2e.ask(GetOther()) if isinstance(x, m.OriginRoutes)]

    router.tell(m.RouteOut(c.address.packed, [b"sealed"]))
    assert wait_for(lambda: tables())
    ((ref, head, clocked),) = tables()[-1].routes.values()
    assert ref == sc and not clocked  # a neighbour: no dead-path clock, as Forwarder.send starts none for it
    assert wait_for(lambda: any(isinstance(x, m.RoutedToLink) for x in sc.ask(GetOther())))
    (packet,) = next(x.packets for x in sc.ask(GetOther()) if isinstance(x, m.RoutedToLink))
    assert packet == head + b"sealed" and decode_routed(head).dst == c.address.packed
    router.tell(m.RouteOut(c.address.packed, [b"again"]))  # the same decision: nothing published
    router.tell(m.SessionDown(sc, c.public_key, "test"))
    assert wait_for(lambda: len(tables()) == 2 and not tables()[-1].routes)


def test_path_activity_feeds_the_dead_path_clocks_and_the_counters(recorder):
    """What the e2e actor sent and heard past the router (PathActivity) runs the pathfinder's dead-path clocks as
    if it had crossed the router: a send unanswered for DEAD_PATH_AFTER finds the path dead; one heard is not."""
    from axiomnet.constants import DEAD_PATH_AFTER

    a = ident(1)
    router = RouterActor.start(None, {}, a, seq_start=10)
    gone, alive = b"\xfc" + bytes(15), b"\xfc" + bytes(14) + b"\x01"
    long_ago = time.monotonic() - DEAD_PATH_AFTER - 1.0
    router.tell(m.PathActivity(heard=((alive, long_ago + 0.5),), sent=((gone, long_ago), (alive, long_ago + 0.6)),
                               originated=5, delivered=7))
    router.tell(m.PathActivity(heard=((alive, time.monotonic()),), sent=(), originated=1, delivered=0))

    def snap() -> dict[str, Any]:
        return router.ask(m.Snapshot(), timeout=5)

    assert wait_for(lambda: snap()["lookups"]["dead_paths"] == 1)  # `gone` only: `alive` was heard since
    counters = snap()["counters"]
    assert counters["fwd_originated"] == 6 and counters["fwd_delivered"] == 7
    router.stop()
