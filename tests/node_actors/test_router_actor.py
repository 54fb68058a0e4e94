"""RouterActor: many concurrent writers never deadlock it, and forwarding groups packets by next hop."""

from __future__ import annotations

import threading
import time

from axiomnet.geometry import Coords
from axiomnet.identity import derive_address
from axiomnet.actors import messages as m
from axiomnet.actors.router import RouterActor
from tests.node_actors.fakes import GetOther, wait_for


def key(n: int) -> bytes:
    return n.to_bytes(2, "big") * 16


def packet(dst_key: bytes, hop_limit: int = 64) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 0, 59, hop_limit]) + bytes(16) + derive_address(dst_key).packed


def test_chaos_simulate_lock_contention_1000_concurrent_writers_complete_without_deadlock(recorder):
    """Seed chaos 'simulate lock contention': 1000 threads update the routing table at the same moment (each a
    session coming up, a heartbeat, a packet to forward, and an ask on the control path); no deadlock, every
    update lands, all within the seed's 10 s."""
    writers = 1000
    router = RouterActor.start(None, {}, key(0), Coords(0.0, 0.0))
    sessions = [recorder() for _ in range(10)]
    barrier = threading.Barrier(writers)
    answers: list[object] = []
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            n = 1 + t % 10
            barrier.wait(timeout=60)
            router.tell(m.SessionUp(sessions[n - 1], key(n), ("192.0.2.1", n), True))
            router.tell(m.PeerHeartbeat(key(n), t + 1, Coords(0.5, n / 10), 0.1))
            router.tell(m.TunPackets([packet(key(n))]))
            answers.append(router.ask(m.HeartbeatInfo(), timeout=10))
        except BaseException as exc:  # noqa: BLE001 - any failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(writers)]
    for th in threads:
        th.start()
    started = time.monotonic()  # the barrier releases once the last writer is ready
    for th in threads:
        th.join(30)
    snap = router.ask(m.Snapshot(), timeout=10)
    took = time.monotonic() - started
    assert not errors and not any(th.is_alive() for th in threads)
    assert len(answers) == writers
    assert took < 10.0, f"1000 writers took {took:.1f} s"
    assert len(snap["peers"]) == 10
    forwarded = snap["counters"].get("forwarded", 0)
    assert forwarded + snap["counters"].get("dropped_backpressure", 0) == writers
    delivered = sum(len(x.packets) for s in sessions for x in s.ask(GetOther()) if isinstance(x, m.TunPackets))
    assert delivered == forwarded


def test_packets_are_grouped_per_next_hop_and_unroutable_ones_counted(recorder):
    router = RouterActor.start(None, {}, key(0), Coords(0.0, 0.0))
    s1, s2 = recorder(), recorder()
    router.tell(m.SessionUp(s1, key(1), ("192.0.2.1", 1), True))
    router.tell(m.SessionUp(s2, key(2), ("192.0.2.2", 1), True))
    router.tell(m.TunPackets([packet(key(1)), packet(key(2)), packet(key(1)), packet(key(9)), b"\x45" * 40]))
    snap = router.ask(m.Snapshot(), timeout=5)
    assert snap["counters"] == {"forwarded": 3, "dropped_no_route": 1, "dropped_not_ipv6": 1}
    batches1 = [x for x in s1.ask(GetOther()) if isinstance(x, m.TunPackets)]
    assert [len(b.packets) for b in batches1] == [2]


def test_relayed_packets_lose_one_hop_and_die_at_zero(recorder):
    router = RouterActor.start(None, {}, key(0), Coords(0.0, 0.0))
    s1 = recorder()
    router.tell(m.SessionUp(s1, key(1), ("192.0.2.1", 1), True))
    router.tell(m.RelayPackets([packet(key(1), hop_limit=5), packet(key(1), hop_limit=1)]))
    snap = router.ask(m.Snapshot(), timeout=5)
    assert snap["counters"]["dropped_hop_limit"] == 1
    (batch,) = [x for x in s1.ask(GetOther()) if isinstance(x, m.TunPackets)]
    assert batch.packets[0][7] == 4


def test_heartbeat_info_lists_up_sessions_and_a_bounded_load(recorder):
    router = RouterActor.start(None, {}, key(0), Coords(0.25, 1.0))
    s1 = recorder()
    router.tell(m.SessionUp(s1, key(1), ("192.0.2.1", 1), True))
    coords, load, sessions = router.ask(m.HeartbeatInfo(), timeout=5)
    assert coords == Coords(0.25, 1.0)
    assert 0.0 <= load <= 1.0
    assert sessions == [(key(1), s1)]
    router.tell(m.SessionDown(s1, key(1), "test"))
    assert router.ask(m.HeartbeatInfo(), timeout=5)[2] == []
    assert wait_for(lambda: router.ask(m.Snapshot(), timeout=5)["peers"] == [])
