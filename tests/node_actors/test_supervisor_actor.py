"""SupervisorActor with stand-in children: start order, restart with rewiring, crash loop -> fatal."""

from __future__ import annotations

import threading
import time
from typing import Any

from axiomnet.supervision import RestartPolicy
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor
from axiomnet.actors.supervisor import ChildSpec, StartAll, StopAll, SupervisorActor
from tests.node_actors.fakes import wait_for

EVENTS: list[str] = []


class Child(SupervisedActor):
    def __init__(self, supervisor: Any, refs: dict[str, Any], role: str) -> None:
        super().__init__(supervisor, refs)
        self.role = role

    def setup(self) -> None:
        EVENTS.append(f"start {self.role}")

    def teardown(self) -> None:
        EVENTS.append(f"stop {self.role}")

    def handle(self, message: Any) -> Any:
        if message == "refs":
            return {k: v.actor_urn for k, v in self.refs.items()}
        return super().handle(message)


def specs(*roles: str) -> list[ChildSpec]:
    return [ChildSpec(r, lambda sup, refs, r=r: Child.start(sup, refs, r)) for r in roles]


def test_children_start_in_order_stop_in_reverse_and_know_each_other():
    EVENTS.clear()
    sup = SupervisorActor.start(specs("a", "b", "c"), on_fatal=lambda reason: None)
    assert sup.ask(StartAll(), timeout=10) == ["a", "b", "c"]
    a = sup.ask(m.GetRef("a"), timeout=5)
    assert wait_for(lambda: set(a.ask("refs", timeout=5)) == {"b", "c"})
    assert sup.ask(StopAll(), timeout=10) == ["c", "b", "a"]
    assert EVENTS == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    sup.stop()


def test_an_earlier_child_knows_a_later_one_before_the_next_starts():
    """Found by the bench's first ping: the router learned the e2e actor's ref only after every child had started,
    while the TUN reader (started in between) already sent traffic whose answer had to go router -> e2e."""
    seen: dict[str, set[str]] = {}

    def start_c(sup: Any, refs: dict[str, Any]) -> Any:
        seen["a"] = set(refs["a"].ask("refs", timeout=5))  # what "a" knows as "c" starts
        return Child.start(sup, refs, "c")

    sup = SupervisorActor.start([*specs("a", "b"), ChildSpec("c", start_c)], on_fatal=lambda reason: None)
    assert sup.ask(StartAll(), timeout=10) == ["a", "b", "c"]
    assert seen["a"] == {"b"}
    sup.ask(StopAll(), timeout=10)
    sup.stop()


def test_crashed_child_is_restarted_and_the_others_are_rewired():
    sup = SupervisorActor.start(specs("a", "b"), on_fatal=lambda reason: None,
                                policy=RestartPolicy(backoff_initial=0.01))
    sup.ask(StartAll(), timeout=10)
    old_b = sup.ask(m.GetRef("b"), timeout=5)
    old_b.tell(m.InjectFault("test"))
    assert wait_for(lambda: (r := sup.ask(m.GetRef("b"), timeout=5)) is not None and r.actor_urn != old_b.actor_urn
                    and r.is_alive())
    new_b = sup.ask(m.GetRef("b"), timeout=5)
    a = sup.ask(m.GetRef("a"), timeout=5)
    assert wait_for(lambda: a.ask("refs", timeout=5)["b"] == new_b.actor_urn)
    rows = {row["name"]: row for row in sup.ask(m.Snapshot(), timeout=5)}
    assert rows["b"]["restarts"] == 1 and rows["b"]["alive"]
    sup.ask(StopAll(), timeout=10)
    sup.stop()


def test_crash_loop_beyond_intensity_is_fatal():
    fatal = threading.Event()
    reasons: list[str] = []
    sup = SupervisorActor.start(specs("a"), on_fatal=lambda reason: (reasons.append(reason), fatal.set()),
                                policy=RestartPolicy(intensity=2, window=30.0, backoff_initial=0.01))
    sup.ask(StartAll(), timeout=10)
    for _ in range(3):
        ref = sup.ask(m.GetRef("a"), timeout=5)
        assert wait_for(lambda: ref.is_alive())
        ref.tell(m.InjectFault("loop"))
        wait_for(lambda: fatal.is_set() or (sup.ask(m.GetRef("a"), timeout=5).actor_urn != ref.actor_urn))
    assert fatal.wait(5)
    assert "crashed more than 2 times" in reasons[0]
    sup.ask(StopAll(), timeout=10)
    sup.stop()


def test_a_crashed_child_is_restarted_after_its_backoff_not_before():
    """The backoff runs on the supervisor's deadline timer (actors/base.py Later), its only clock."""
    starts: list[float] = []

    def start(sup: Any, refs: dict[str, Any]) -> Any:
        starts.append(time.monotonic())
        return Child.start(sup, refs, "a")

    sup = SupervisorActor.start([ChildSpec("a", start)], on_fatal=lambda reason: None,
                                policy=RestartPolicy(backoff_initial=0.3))
    sup.ask(StartAll(), timeout=10)
    sup.ask(m.GetRef("a"), timeout=5).tell(m.InjectFault("test"))
    assert wait_for(lambda: len(starts) == 2)
    assert starts[1] - starts[0] >= 0.3
    sup.ask(StopAll(), timeout=10)
    sup.stop()  # the autouse fixture checks that no axn- thread (its timer) outlived it
