"""Nothing dies silently: a crash in an actor's handler, its start, or a thread it owns is logged with the
actor's state and reaches the supervisor; an exception in any other thread is logged by the crash hooks."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, install_crash_hooks
from tests.node_actors.fakes import GetOther, wait_for


class Fragile(SupervisedActor):
    """A supervised actor with some state, that crashes on request (in its handler, start or reader)."""

    role = "fragile"

    def __init__(self, supervisor: Any, fail_start: bool = False) -> None:
        super().__init__(supervisor)
        self.fail_start = fail_start
        self.items: list[int] = []

    def setup(self) -> None:
        if self.fail_start:
            raise OSError(98, "cannot bind: address in use")

    def handle(self, message: Any) -> Any:
        if message == "crash":
            self.counters["crashes_asked"] += 1
            raise ZeroDivisionError("bug in a handler")
        if message == "crash-thread":
            def reader() -> None:
                raise ValueError("bug in a reader thread")
            self.spawn_thread(reader, "reader")
            return None
        if isinstance(message, int):
            self.items.append(message)
            self.counters["items"] += 1
            return None
        if isinstance(message, m.Snapshot):
            return {"items": len(self.items), "last": self.items[-1:], **self.counters}
        return super().handle(message)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda msg: lines.append(str(msg)), level="DEBUG")
    yield lines
    logger.remove(sink)


def failures(supervisor) -> list[m.ChildFailed]:
    return [x for x in supervisor.ask(GetOther()) if isinstance(x, m.ChildFailed)]


def test_crash_in_a_handler_is_logged_with_the_actors_state_and_reaches_the_supervisor(recorder, log_lines):
    supervisor = recorder()
    actor = Fragile.start(supervisor)
    for n in (7, 8, 9):
        actor.tell(n)
    actor.tell("crash")
    assert wait_for(lambda: len(failures(supervisor)) == 1)
    (failed,) = failures(supervisor)
    assert failed.role == "fragile" and "ZeroDivisionError" in failed.error
    (line,) = [x for x in log_lines if "fragile crashed" in x]
    assert "bug in a handler" in line and "'items': 3" in line and "'last': [9]" in line and "crashes_asked" in line
    assert not actor.is_alive()


def test_crash_in_an_owned_thread_is_logged_and_reaches_the_supervisor(recorder, log_lines):
    supervisor = recorder()
    actor = Fragile.start(supervisor)
    actor.tell(1)
    actor.tell("crash-thread")
    assert wait_for(lambda: len(failures(supervisor)) == 1)
    assert "bug in a reader thread" in failures(supervisor)[0].error
    assert any("thread reader crashed" in x and "ValueError" in x for x in log_lines)  # with the traceback
    assert any("fragile crashed" in x and "'items': 1" in x for x in log_lines)


def test_failure_to_start_is_logged_with_state_and_reaches_the_supervisor(recorder, log_lines):
    supervisor = recorder()
    with pytest.raises(Exception):
        Fragile.start(supervisor, fail_start=True).ask(m.GetCounters(), timeout=5)
    assert wait_for(lambda: len(failures(supervisor)) == 1)
    assert "address in use" in failures(supervisor)[0].error
    assert any("fragile failed to start" in x and "state:" in x for x in log_lines)


def test_an_exception_in_an_ask_goes_back_to_the_caller_and_the_actor_lives(recorder):
    supervisor = recorder()
    actor = Fragile.start(supervisor)
    with pytest.raises(ZeroDivisionError):
        actor.ask("crash", timeout=5)
    assert actor.is_alive() and actor.ask(m.GetCounters(), timeout=5)["crashes_asked"] == 1
    assert failures(supervisor) == []


@pytest.fixture
def crash_hooks() -> Iterator[None]:
    saved = (threading.excepthook, sys.excepthook, sys.unraisablehook)
    install_crash_hooks()
    yield
    threading.excepthook, sys.excepthook, sys.unraisablehook = saved


def test_uncaught_exception_in_any_other_thread_is_logged_critical_with_traceback(crash_hooks, log_lines):
    def stray() -> None:
        raise KeyError("nobody catches this")

    thread = threading.Thread(target=stray, name="axn-test-stray")
    thread.start()
    thread.join(5)
    (line,) = [x for x in log_lines if "uncaught exception in thread axn-test-stray" in x]
    assert "CRITICAL" in line and "Traceback" in line and "nobody catches this" in line


def test_uncaught_exception_in_the_main_thread_is_logged_critical(crash_hooks, log_lines):
    try:
        raise RuntimeError("main thread bug")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())  # what the interpreter calls for an uncaught exception
    assert any("uncaught exception in the main thread" in x and "main thread bug" in x for x in log_lines)
