"""HeartbeatActor: the node's heartbeat clock.

Every HEARTBEAT_INTERVAL it tells the router one HeartbeatTick (on the control lane): the router then sends each
neighbour its signed announcement, checks liveness and resends due lookups. Keeping the clock in its own actor
means a busy router never delays its own next beat: ticks queue ahead of data, and the router catches up.
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from axiomnet.constants import HEARTBEAT_INTERVAL
from axiomnet.actors import messages as m
from axiomnet.actors.base import Periodic, SupervisedActor, bounded_tell


class _Beat(m.Urgent):
    """The clock's own wake-up (never leaves this actor)."""


class HeartbeatActor(SupervisedActor):
    """Tells the router HeartbeatTick every HEARTBEAT_INTERVAL."""

    role = "heartbeat"

    def __init__(self, supervisor: Any, refs: dict[str, Any], interval: float = HEARTBEAT_INTERVAL) -> None:
        super().__init__(supervisor, refs)
        self.interval = interval
        self.beats = 0
        self._last_missed_log = 0.0
        self._clock: Periodic | None = None

    def setup(self) -> None:
        self._clock = self.start_periodic(self.interval, _Beat())

    def handle(self, message: Any) -> Any:
        if isinstance(message, _Beat):
            self._beat()
            assert self._clock is not None
            self._clock.next()
            return None
        if isinstance(message, m.Snapshot):
            return {"beats": self.beats, **self.counters}
        return super().handle(message)

    def _beat(self) -> None:
        now = time.monotonic()
        self.beats += 1
        if bounded_tell(self.refs.get("router"), m.HeartbeatTick(now)):
            self.counters["ticks_sent"] += 1
            return
        self.counters["ticks_missed"] += 1
        if now - self._last_missed_log > 30.0:
            self._last_missed_log = now
            logger.warning("heartbeat: router unavailable or its control lane is full; tick missed")
