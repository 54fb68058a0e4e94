"""RouterActor: announcements over fake links, the control lane, liveness, hostile input, contention."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka

from axiomnet.actors import messages as m
from axiomnet.actors.base import TwoLaneInbox, bounded_tell
from axiomnet.actors.router import RouterActor
from axiomnet.constants import DEAD_PROBE_INTERVAL, MAX_QUEUED_BATCHES, PEER_DEAD_AFTER
from axiomnet.identity import Identity
from tests.node_actors.fakes import GetOther, GetWritten, wait_for


def ident(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32)


def ipv6(src: bytes, dst: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 8, 59, 64]) + src + dst + bytes(8)


def sent_announcements(session: Any) -> list[bytes]:
    return [x.payload for x in session.ask(GetOther()) if isinstance(x, m.SendControl)]


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
    for _ in range(12):  # the links: carry the newest announcement each way, one per MIN_ANNOUNCE_INTERVAL
        ra.tell(m.HeartbeatTick())
        rb.tell(m.HeartbeatTick())
        for session, router, sender in ((sa, rb, a), (sb, ra, b)):
            sent = sent_announcements(session)
            if len(sent) > fed[id(session)]:
                fed[id(session)] = len(sent)
                router.tell(m.Announce(sender.public_key, sent[-1]))
        if wait_for(converged, timeout=0.4):
            break
    assert converged()
    snap_a = ra.ask(m.Snapshot(), timeout=5)
    assert snap_a["peers"][0]["coords"] is not None and snap_a["peers"][0]["alive"]


def test_forged_announcement_is_counted_not_fatal(recorder):
    a, b = ident(1), ident(2)
    router = RouterActor.start(None, {}, a, seq_start=10)
    router.tell(m.SessionUp(recorder(), b.public_key, ("192.0.2.2", 1), True))
    for garbage in (b"", b"\x01" + bytes(500), bytes(20000), b"\x81\xa1t\xa2hb"):
        router.tell(m.Announce(b.public_key, garbage))
    counters = router.ask(m.Snapshot(), timeout=5)["counters"]  # same lane as the announcements: behind them
    assert sum(v for k, v in counters.items() if k.startswith("announce_")) == 4
    assert router.is_alive()


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


def test_silent_neighbour_is_withdrawn_then_only_probed(recorder, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("axiomnet.actors.router.time.monotonic", lambda: clock[0])
    a, b = ident(1), ident(2)
    router = RouterActor.start(None, {}, a, seq_start=10)
    session = recorder()
    router.tell(m.SessionUp(session, b.public_key, ("192.0.2.2", 1), True))
    router.tell(m.HeartbeatTick())
    assert wait_for(lambda: len(sent_announcements(session)) == 1)
    clock[0] += PEER_DEAD_AFTER + 0.1
    router.tell(m.HeartbeatTick())
    assert wait_for(lambda: router.ask(m.Snapshot(), timeout=5)["counters"].get("peers_withdrawn") == 1)
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
