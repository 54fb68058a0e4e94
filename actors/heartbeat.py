"""HeartbeatActor: the node's heartbeat clock.

Every HEARTBEAT_INTERVAL it tells the router one HeartbeatTick (on the control lane): the router then sends what the
tree owes (the root's beat, announcements due, probes) and resends due lookups. Keeping the clock out of the router
means a busy router never delays its own next beat: ticks queue ahead of data, and the router catches up.

The clock is a thread this actor owns that tells the router itself (a metronome): one wake-up a second in an idle
daemon, not a timer thread waking this actor's thread to wake the router's (two hand-offs a second that were a
tenth of an idle 10-peer hub's CPU). The actor's own thread only answers Snapshot and supervision.
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from axiomnet.constants import HEARTBEAT_INTERVAL
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell


class HeartbeatActor(SupervisedActor):
    """Tells the router HeartbeatTick every HEARTBEAT_INTERVAL, from its own clock thread."""

    role = "heartbeat"

    def __init__(self, supervisor: Any, refs: dict[str, Any], interval: float = HEARTBEAT_INTERVAL) -> None:
        super().__init__(supervisor, refs)
        self.interval = interval
        self.beats = 0
        self._last_missed_log = 0.0
        # Both keys exist from the start: the clock thread only changes values, never the dict's size, while a
        # Snapshot on the actor's thread copies it.
        self.counters.update(ticks_sent=0, ticks_missed=0)

    def setup(self) -> None:
        self.spawn_thread(self._metronome, "clock")

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Snapshot):
            return {"beats": self.beats, **self.counters}
        return super().handle(message)

    def _metronome(self) -> None:
        """Beat every interval from the start, without drift; a late beat is followed by the next one an interval
        later (never a burst). Stops as soon as the actor does (the stopping event wakes the wait)."""
        due = time.monotonic() + self.interval
        stopping = self._stopping
        while not stopping.wait(max(0.0, due - time.monotonic())):
            now = time.monotonic()
            self._beat(now)
            due += self.interval
            if due <= now:
                due = now + self.interval

    def _beat(self, now: float) -> None:
        self.beats += 1
        if bounded_tell(self.refs.get("router"), m.HeartbeatTick(now)):
            self.counters["ticks_sent"] += 1
            return
        self.counters["ticks_missed"] += 1
        if now - self._last_missed_log > 30.0:
            self._last_missed_log = now
            logger.warning("heartbeat: router unavailable or its control lane is full; tick missed")
