"""Fixtures for actor tests: recording stand-ins for the socket and TUN actors; no actor outlives a test."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pykka
import pytest

from tests.node_actors.fakes import RecordingActor


@pytest.fixture
def recorder() -> Iterator[Callable[[], pykka.ActorRef[Any]]]:
    started: list[pykka.ActorRef[Any]] = []

    def make() -> pykka.ActorRef[Any]:
        ref = RecordingActor.start()
        started.append(ref)
        return ref

    yield make
    for ref in started:
        ref.stop(block=False)


@pytest.fixture(autouse=True)
def _no_actor_left_behind() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5.0)
    leaked = [t for t in threading.enumerate() if t.name.startswith("axn-")]
    for t in leaked:
        t.join(timeout=2.0)
    assert not [t for t in leaked if t.is_alive()], "actor-owned threads survived their actors"
