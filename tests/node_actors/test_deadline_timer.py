"""Deadline timers and wake-up pipes (actors/base.py): an idle actor sleeps without a timeout, is told its message
at the earliest deadline asked for (an earlier one re-arms the timer), and still stops at once. The heartbeat's
clock (Periodic) and the restart backoffs (Later) are built on the same timer: there is no other."""

from __future__ import annotations

import os
import select
import time
from typing import Any

import pytest

from axiomnet.actors import messages as m
from axiomnet.actors.base import Later, Periodic, SupervisedActor
from axiomnet.actors.heartbeat import HeartbeatActor
from axiomnet.actors.session import SessionActor
from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from tests.node_actors.fakes import GetOther, wait_for

FAR = 3600.0  # a deadline no test waits for: its message arriving would fail the test


class Sleeper(SupervisedActor):
    """Records when its deadline timer told it ``due``; a reader thread blocks on the wake-up pipe only."""

    role = "sleeper"

    def __init__(self) -> None:
        super().__init__(None)
        self.due: list[float] = []
        self.fds: tuple[int, ...] = ()

    def setup(self) -> None:
        self.timer = self.start_deadline_timer("due")
        fd = self.wakeup_fd()
        self.fds = (fd,)

        def read() -> None:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while not self._stopping.is_set():
                poller.poll()  # no timeout: only stopping wakes it

        self.spawn_thread(read, "reader")

    def handle(self, message: Any) -> Any:
        if message == "due":
            self.due.append(time.monotonic())
        elif isinstance(message, tuple) and message[0] == "at":
            self.timer.at(message[1])
        elif message == "due?":
            return list(self.due)
        elif message == "fds":
            return self.fds
        else:
            return super().handle(message)
        return None


@pytest.fixture
def sleeper():
    ref = Sleeper.start()
    yield ref
    if ref.is_alive():
        ref.stop(block=True, timeout=5)


def test_the_message_comes_at_the_deadline_not_before(sleeper) -> None:
    asked = time.monotonic() + 0.2
    sleeper.tell(("at", asked))
    assert wait_for(lambda: len(sleeper.ask("due?", timeout=5)) == 1)
    assert sleeper.ask("due?", timeout=5)[0] >= asked


def test_an_earlier_deadline_re_arms_a_timer_sleeping_until_a_later_one(sleeper) -> None:
    sleeper.tell(("at", time.monotonic() + FAR))
    assert sleeper.ask("due?", timeout=5) == []
    sleeper.tell(("at", time.monotonic() + 0.05))  # e.g. a handshake started: its retransmission is sooner
    assert wait_for(lambda: len(sleeper.ask("due?", timeout=5)) == 1)


def test_a_later_deadline_does_not_postpone_an_earlier_one(sleeper) -> None:
    sleeper.tell(("at", time.monotonic() + 0.05))
    sleeper.tell(("at", time.monotonic() + FAR))
    assert wait_for(lambda: len(sleeper.ask("due?", timeout=5)) == 1)


def test_stop_wakes_the_timer_and_the_readers_blocked_without_a_timeout(sleeper) -> None:
    sleeper.tell(("at", time.monotonic() + FAR))  # the timer sleeps until then; the reader polls forever
    fds = sleeper.ask("fds", timeout=5)
    sleeper.stop(block=True, timeout=5)  # raises pykka.Timeout if a thread held the stop up
    # The autouse fixture checks no axn- thread outlived the actor; the pipe is closed once they are joined.
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_session_actor_asks_the_peer_manager_to_tick_it_at_its_next_deadline(recorder) -> None:
    """No periodic tick: a dialling session reports its retransmission deadline (WakeAt), and, ticked at it,
    reports the next one (later: the backoff)."""
    me, peer = Identity.generate(), Identity.generate()
    sock, router, peers = recorder(), recorder(), recorder()
    actor = SessionActor.start(None, {"socket": sock, "router": router, "peers": peers},
                               static_private=me.private_key, static_public=me.public_key,
                               self_address=me.address.packed, endpoint=("192.0.2.7", 7443),
                               expected_key=peer.public_key, dial=True, local_payload=HandshakePayload())

    def wakes() -> list[float]:
        return [x.when for x in peers.ask(GetOther(), timeout=5) if isinstance(x, m.WakeAt)]

    assert wait_for(lambda: len(wakes()) == 1)
    first = wakes()[0]
    assert first > time.monotonic() - 1.0  # a real deadline of this dial, not a stale one
    # The peer manager would tick it at ``first``; ticks before it change nothing and report nothing new.
    actor.tell(m.TimerDue())
    assert actor.ask(m.Snapshot(), timeout=5)["state"] == "handshaking"
    if time.monotonic() < first:  # the tick was handled before the deadline (a loaded machine may be past it)
        assert wakes() == [first]
    assert wait_for(lambda: time.monotonic() >= first)
    actor.tell(m.TimerDue())
    assert wait_for(lambda: len(wakes()) == 2)
    assert wakes()[1] > first


# --- the clocks built on the deadline timer: Periodic (the heartbeat) and Later (restart backoffs) ---------------
class _FakeTimer:
    """Records what a clock arms, in place of a DeadlineTimer (``at`` keeps the earliest, as the real one does)."""

    def __init__(self) -> None:
        self.when: float | None = None

    def at(self, when: float) -> None:
        self.when = when if self.when is None or when < self.when else self.when


def test_a_periodic_clock_stays_on_its_beat_and_never_bursts_after_a_stall() -> None:
    timer = _FakeTimer()
    clock = Periodic(timer, 1.0, now=100.0)  # type: ignore[arg-type]
    assert timer.when == 101.0
    timer.when = None  # fired
    assert clock.next(now=101.3) == 102.0  # handled late: the next beat keeps the schedule
    timer.when = None
    assert clock.next(now=110.0) == 111.0  # stalled for 8 beats: one beat an interval on, not 8 at once


def test_later_hands_back_due_messages_in_time_order_and_re_arms_for_the_next() -> None:
    timer = _FakeTimer()
    later = Later(timer)  # type: ignore[arg-type]
    later.after(3.0, "c", now=0.0)
    later.after(1.0, "a", now=0.0)
    later.after(1.0, "b", now=0.0)  # same time: kept in the order given
    assert timer.when == 1.0
    assert later.due(now=0.5) == []
    timer.when = None  # fired
    assert later.due(now=1.0) == ["a", "b"]
    assert timer.when == 3.0 and later.next_deadline() == 3.0
    later.clear()
    assert later.due(now=10.0) == [] and len(later) == 0


def test_the_heartbeat_tells_the_router_on_its_clock_and_stops_with_its_thread(recorder) -> None:
    router = recorder()
    beat = HeartbeatActor.start(None, {"router": router}, interval=0.05)
    started = time.monotonic()

    def ticks() -> int:
        return len([x for x in router.ask(GetOther(), timeout=5) if isinstance(x, m.HeartbeatTick)])

    assert wait_for(lambda: ticks() >= 4)
    assert time.monotonic() - started >= 3 * 0.05  # not all at once: one per interval
    assert beat.ask(m.Snapshot(), timeout=5)["ticks_sent"] >= 4
    beat.stop(block=True, timeout=5)  # the autouse fixture checks its timer thread is gone
