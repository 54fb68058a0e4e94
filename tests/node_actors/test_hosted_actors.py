"""Hosted actors (actors/base.py HostedActor on an ActorPool): many actors on a few threads, each still one
message at a time and in order; and the link sessions the peer manager hosts that way keep their supervision
(a crashed session is restarted, past the restart intensity the node is told Fatal)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest

from axiomnet.ops.config import PeerSpec
from axiomnet.constants import SESSION_WORKERS
from axiomnet.identity import Identity
from axiomnet.actors import messages as m
from axiomnet.actors.base import ActorPool, DeadlineWheel, HostedActor, SupervisedActor, run_control_or_tell, tell
from axiomnet.actors.peers import PeerManagerActor
from tests.node_actors.fakes import GetOther, wait_for


class Seen:
    """Ask: the numbers told so far, in the order handled."""


class Busy:
    """Tell: hold the worker ``seconds`` (a slow handler)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Probe(HostedActor):
    """Records what it is told, and whether another worker ever ran it at the same time."""

    role = "probe"

    def __init__(self, host: ActorPool | None = None, supervisor: Any = None) -> None:
        super().__init__(supervisor, {}, host=host)
        self.seen: list[int] = []
        self.inside = 0
        self.overlaps = 0
        self.threads: set[str] = set()

    def handle(self, message: Any) -> Any:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        self.threads.add(threading.current_thread().name)
        try:
            if isinstance(message, int):
                self.seen.append(message)
                time.sleep(0)  # let another worker try to run us meanwhile
            elif isinstance(message, Busy):
                time.sleep(message.seconds)
            elif isinstance(message, Seen):
                return (list(self.seen), self.overlaps, set(self.threads))
            elif isinstance(message, m.Snapshot):
                return {"seen": len(self.seen)}
            else:
                return super().handle(message)
            return None
        finally:
            self.inside -= 1


class PoolOwner(SupervisedActor):
    """Owns a pool of three workers, as the peer manager does."""

    role = "owner"

    def setup(self) -> None:
        self.pool = self.start_pool("probes", 3)

    def handle(self, message: Any) -> Any:
        if isinstance(message, str) and message == "pool":
            return self.pool
        return super().handle(message)


@pytest.fixture
def pool():
    owner = PoolOwner.start(None)
    yield owner.ask("pool", timeout=5)
    for ref in pykka.ActorRegistry.get_by_class(Probe):  # hosted actors first, as the peer manager does
        ref.stop(block=True, timeout=5)
    owner.stop(block=True, timeout=5)


def test_many_hosted_actors_run_on_the_pools_few_threads_each_in_order_one_at_a_time(pool):
    threads_before = threading.active_count()
    refs = [Probe.start(pool) for _ in range(300)]
    assert threading.active_count() == threads_before  # no thread per actor
    senders = [threading.Thread(target=lambda r=ref: [r.tell(i) for i in range(50)]) for ref in refs[:100]]
    for t in senders:
        t.start()
    for ref in refs[100:]:
        for i in range(50):
            ref.tell(i)
    for t in senders:
        t.join()
    workers: set[str] = set()
    for ref in refs:
        seen, overlaps, threads = ref.ask(Seen(), timeout=10)
        assert seen == list(range(50))
        assert overlaps == 0
        workers |= threads
    assert workers <= {f"axn-owner-probes{i}" for i in range(3)}
    assert len(workers) > 1  # the load was shared


def test_urgent_messages_pass_data_in_a_hosted_mailbox(pool):
    ref = Probe.start(pool)
    ref.tell(Busy(0.3))  # while it runs, data and a snapshot queue up
    for i in range(20):
        ref.tell(i)
    answer = ref.ask(m.Snapshot(), block=False)
    assert answer.get(timeout=5)["seen"] < 20  # served before the data told earlier
    assert wait_for(lambda: len(ref.ask(Seen(), timeout=5)[0]) == 20)


def test_a_busy_hosted_actor_does_not_starve_the_others(pool):
    hog = Probe.start(pool)
    for _ in range(200):
        hog.tell(Busy(0.005))  # a full second of work, queued at once
    quick = Probe.start(pool)
    started = time.monotonic()
    quick.tell(1)
    assert wait_for(lambda: quick.ask(Seen(), timeout=5)[0] == [1], timeout=5)
    assert time.monotonic() - started < 0.9  # served between the hog's slices, not after its whole mailbox


def test_a_stopped_hosted_actor_answers_what_is_left_dead_and_leaves_the_registry(pool):
    ref = Probe.start(pool)
    ref.tell(Busy(0.2))
    stopped = ref.stop(block=False)
    late = ref.ask(Seen(), block=False)  # queued behind the stop
    assert stopped.get(timeout=5) is True
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=5)
    assert not ref.is_alive()
    assert ref not in pykka.ActorRegistry.get_all()


def test_a_crash_in_a_hosted_actor_is_reported_and_its_pool_keeps_serving(recorder, pool):
    supervisor = recorder()
    crashing, other = Probe.start(pool, supervisor), Probe.start(pool)
    crashing.tell(m.InjectFault("test"))
    other.tell(7)
    assert wait_for(lambda: any(isinstance(x, m.ChildFailed) and x.urn == crashing.actor_urn
                                for x in supervisor.ask(GetOther(), timeout=5)))
    assert wait_for(lambda: not crashing.is_alive())
    assert other.ask(Seen(), timeout=5)[0] == [7]


class FailsToStart(Probe):
    def setup(self) -> None:
        raise OSError("no socket today")


def test_a_hosted_actor_whose_setup_fails_is_reported_and_answers_dead(recorder, pool):
    supervisor = recorder()
    ref = FailsToStart.start(pool, supervisor)
    told_early = ref.ask(Seen(), block=False)  # queued before its setup ran on a worker
    assert wait_for(lambda: any(isinstance(x, m.ChildFailed) and x.urn == ref.actor_urn
                                for x in supervisor.ask(GetOther(), timeout=5)))
    with pytest.raises(pykka.ActorDeadError):
        told_early.get(timeout=5)
    assert not ref.is_alive()


def test_a_hosted_actor_owns_no_threads(pool):
    with pytest.raises(TypeError):
        Probe(pool).spawn_thread(lambda: None, "reader")


def test_actors_left_on_a_closed_pool_answer_dead_instead_of_hanging():
    owner = PoolOwner.start(None)
    pool = owner.ask("pool", timeout=5)
    left = Probe.start(pool)
    assert left.ask(Seen(), timeout=5)[0] == []
    owner.stop(block=True, timeout=5)  # its owner forgot to stop it first
    answer = left.ask(Seen(), block=False)
    with pytest.raises(pykka.ActorDeadError):
        answer.get(timeout=5)
    assert not left.is_alive()


# --- the peer manager's sessions --------------------------------------------------------------------------
def _manager(recorder, peers: int, supervisor: Any = None, refs: dict[str, Any] | None = None
             ) -> tuple[Any, list[PeerSpec]]:
    me = Identity.generate()
    static = [PeerSpec(f"192.0.2.{i + 1}", 7443, Identity.generate().public_key) for i in range(peers)]
    mgr = PeerManagerActor.start(supervisor, refs or {"socket": recorder(), "router": recorder()},
                                 static_private=me.private_key, static_public=me.public_key,
                                 self_address=me.address.packed, static_peers=tuple(static))
    return mgr, static


def test_the_peer_managers_sessions_run_on_its_pool_not_a_thread_each(recorder):
    refs = {"socket": recorder(), "router": recorder()}
    before = threading.active_count()
    mgr, _ = _manager(recorder, 40, refs=refs)
    sessions = mgr.ask(m.ListSessions(), timeout=5)
    assert len(sessions) == 40
    assert all(s.ask(m.Snapshot(), timeout=5)["state"] == "handshaking" for s in sessions)
    # its deadline timer and its pool's workers; nothing per session
    # the manager's own thread, its deadline timer, its sessions' timer wheel and its pool's workers; none per session
    assert threading.active_count() == before + 3 + SESSION_WORKERS, [t.name for t in threading.enumerate()]
    assert len([t for t in threading.enumerate() if t.name.startswith("axn-peers-sessions")]) == SESSION_WORKERS
    mgr.stop(block=True, timeout=10)
    assert not any(s.is_alive() for s in sessions)
    assert not [t for t in threading.enumerate() if t.name.startswith("axn-peers-")]


def test_a_crashed_hosted_session_is_restarted_and_its_neighbours_are_untouched(recorder):
    mgr, static = _manager(recorder, 3)
    sessions = mgr.ask(m.ListSessions(), timeout=5)
    victim, others = sessions[0], sessions[1:]
    victim.tell(m.InjectFault("test"))
    assert wait_for(lambda: mgr.ask(m.Snapshot(), timeout=5).get("session_restarts") == 1, timeout=10)
    now = mgr.ask(m.ListSessions(), timeout=5)
    assert len(now) == 3 and victim not in now and all(o in now for o in others)
    assert not victim.is_alive() and all(o.is_alive() for o in others)
    assert mgr.ask(m.Snapshot(), timeout=5)["session_crashes"] == 1
    replacement = next(s for s in now if s not in others)
    assert replacement.ask(m.Snapshot(), timeout=5)["endpoint"] == victim_endpoint(static, others)


def victim_endpoint(static: list[PeerSpec], others: list[Any]) -> str:
    """The endpoint of the one static peer whose session is not among ``others``."""
    taken = {o.ask(m.Snapshot(), timeout=5)["endpoint"] for o in others}
    (left,) = [f"{p.host}:{p.port}" for p in static if f"{p.host}:{p.port}" not in taken]
    return left


def test_hosted_sessions_crashing_in_a_loop_make_the_node_fatal(recorder):
    supervisor = recorder()
    mgr, _ = _manager(recorder, 1, supervisor)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(isinstance(x, m.Fatal) for x in supervisor.ask(GetOther(), timeout=5)):
            break
        for session in mgr.ask(m.ListSessions(), timeout=5):
            tell(session, m.InjectFault("loop"))  # it may have crashed since the list was made
        time.sleep(0.02)
    fatal = [x for x in supervisor.ask(GetOther(), timeout=5) if isinstance(x, m.Fatal)]
    assert fatal and "session actors crashed" in fatal[0].reason


# --- the sessions' timer wheel ----------------------------------------------------------------------------
class Ticked(Probe):
    """Counts the TimerDue it is told, with when."""

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.TimerDue):
            self.seen.append(int(time.monotonic() * 1000))
            return None
        return super().handle(message)


def test_a_deadline_wheel_tells_each_actor_once_at_its_earliest_booking(pool):
    stopping = threading.Event()
    wheel = DeadlineWheel(m.TimerDue(), stopping)
    runner = threading.Thread(target=wheel.run, name="test-wheel", daemon=True)
    runner.start()
    try:
        a, b = Ticked.start(pool), Ticked.start(pool)
        now = time.monotonic()
        wheel.at(a, now + 0.6)
        wheel.at(a, now + 0.2)  # earlier: supersedes
        wheel.at(a, now + 0.4)  # later than booked: ignored
        wheel.at(b, now + 0.3)
        assert len(wheel) == 2
        assert wait_for(lambda: len(a.ask(Seen(), timeout=5)[0]) == 1 and len(b.ask(Seen(), timeout=5)[0]) == 1)
        (told_a,), (told_b,) = a.ask(Seen(), timeout=5)[0], b.ask(Seen(), timeout=5)[0]
        assert told_a >= int((now + 0.2) * 1000) and told_b >= int((now + 0.3) * 1000)
        time.sleep(0.6)  # past the superseded bookings: neither is told again
        assert len(a.ask(Seen(), timeout=5)[0]) == 1 and len(b.ask(Seen(), timeout=5)[0]) == 1
        assert len(wheel) == 0 and wheel.told == 2
        wheel.at(a, time.monotonic())  # booked again after its time passed: told again
        assert wait_for(lambda: len(a.ask(Seen(), timeout=5)[0]) == 2)
    finally:
        stopping.set()
        wheel.wake()
        runner.join(5)
    assert not runner.is_alive()


class TickedWhere(Probe):
    """Records the thread each TimerDue or SendControl ran on."""

    def handle(self, message: Any) -> Any:
        if isinstance(message, (m.TimerDue, m.SendControl)):
            self.threads.add(threading.current_thread().name)
            self.seen.append(len(self.seen))
            return None
        return super().handle(message)


@pytest.fixture
def wheel_thread():
    """A DeadlineWheel telling TimerDue, run by a thread named "wheel-under-test"; stopped and joined after."""
    stopping = threading.Event()
    wheel = DeadlineWheel(m.TimerDue(), stopping)
    thread = threading.Thread(target=wheel.run, name="wheel-under-test", daemon=True)
    thread.start()
    yield wheel
    stopping.set()
    wheel.wake()
    thread.join(5)
    assert not thread.is_alive()


def test_a_deadline_wheel_runs_an_idle_actors_timer_on_its_own_thread_and_tells_a_busy_one(pool, wheel_thread):
    """An idle session's deadline costs the wheel's one wake-up, not a pool worker's as well; a session that is
    running (or has messages waiting) is told, so it never runs on two threads at once."""
    idle, busy = TickedWhere.start(pool), TickedWhere.start(pool)
    assert wait_for(lambda: idle.ask(Seen(), timeout=5) is not None and busy.ask(Seen(), timeout=5) is not None)
    busy.tell(Busy(0.5))
    now = time.monotonic()
    wheel_thread.at(idle, now + 0.1)
    wheel_thread.at(busy, now + 0.1)
    assert wait_for(lambda: len(idle.ask(Seen(), timeout=5)[0]) == 1 and len(busy.ask(Seen(), timeout=5)[0]) == 1)
    _, overlaps_idle, threads_idle = idle.ask(Seen(), timeout=5)
    _, overlaps_busy, threads_busy = busy.ask(Seen(), timeout=5)
    assert "wheel-under-test" in threads_idle
    assert "wheel-under-test" not in threads_busy and overlaps_busy == 0 and overlaps_idle == 0


def test_run_control_or_tell_runs_an_idle_hosted_actor_here_and_queues_for_a_busy_one(pool):
    """The router hands a beat to each child's session: run on the router's thread when the session is idle (no
    pool wake-up per child), queued in order on its control lane when it is busy."""
    ref = TickedWhere.start(pool)
    assert wait_for(lambda: ref.ask(Seen(), timeout=5) is not None)
    assert run_control_or_tell(ref, m.SendControl(b"beat"))
    assert threading.current_thread().name in ref.ask(Seen(), timeout=5)[2]
    ref.tell(Busy(0.3))
    time.sleep(0.05)  # the worker has taken it
    assert run_control_or_tell(ref, m.SendControl(b"beat"))
    assert wait_for(lambda: len(ref.ask(Seen(), timeout=5)[0]) == 2)
    seen, overlaps, threads = ref.ask(Seen(), timeout=5)
    assert overlaps == 0 and any(t.startswith("axn-owner-probes") for t in threads)
    assert not run_control_or_tell(None, m.SendControl(b"beat"))


def test_the_peer_managers_sessions_book_their_timers_on_its_wheel_not_its_mailbox(recorder):
    mgr, _ = _manager(recorder, 5)
    wheel = mgr.proxy().session_timers.get(timeout=5)
    # five dialling sessions, each with a handshake retransmission deadline booked (no WakeAt message sent)
    assert wait_for(lambda: len(wheel) == 5)


def test_a_shed_keepalive_is_retried_later_not_in_a_spin(recorder):
    """A session whose keepalive the socket sheds (its lane full: here no socket at all) must not book the overdue
    keepalive again at once: with the timer wheel that is a spin per session (10,000 of them kept a daemon at 89%)."""
    from axiomnet.control import HandshakePayload
    from tests.node_actors.test_session_actor import ENDPOINT, Peer, answer_dial

    stopping = threading.Event()
    wheel = DeadlineWheel(m.TimerDue(), stopping)
    runner = threading.Thread(target=wheel.run, name="test-wheel", daemon=True)
    runner.start()
    try:
        me, peer, sock = Identity.generate(), Peer(), recorder()
        from axiomnet.actors.session import SessionActor

        actor = SessionActor.start(None, {"socket": sock, "router": recorder()}, static_private=me.private_key,
                                   static_public=me.public_key, self_address=me.address.packed, endpoint=ENDPOINT,
                                   expected_key=None, dial=True, local_payload=HandshakePayload(), keepalive=0.2,
                                   timers=wheel)
        answer_dial(actor, sock, peer)
        assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["state"] == "established")
        actor.tell(m.Rewire("socket", None))  # from now on every send is shed
        told = wheel.told
        time.sleep(1.5)
        shed = actor.ask(m.Snapshot(), timeout=5)["counters"].get("tx_dropped_backpressure", 0)
        assert wheel.told - told <= 4, f"{wheel.told - told} ticks in 1.5 s"
        assert 1 <= shed <= 8  # a keepalive about every SHED_RETRY (and what else was sent then), not thousands
    finally:
        stopping.set()
        wheel.wake()
        runner.join(5)
