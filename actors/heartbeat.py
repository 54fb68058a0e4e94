"""HeartbeatActor: every HEARTBEAT_INTERVAL, an authenticated heartbeat to every peer, and a liveness check.

Heartbeats ride inside each link session (CONTROL packets), carrying our coordinates and load. A peer we
cannot send to (its session is still handshaking) is logged per peer, rate-limited, never silently skipped.
"""

from __future__ import annotations

import time
from typing import Any

import pykka
from loguru import logger

from axiomnet.constants import ADMIN_TIMEOUT, HEARTBEAT_INTERVAL
from axiomnet.control import Heartbeat, encode_control
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, tell, bounded_tell


class HeartbeatActor(SupervisedActor):
    """The node's heartbeat clock."""

    role = "heartbeat"

    def __init__(self, supervisor: Any, refs: dict[str, Any], interval: float = HEARTBEAT_INTERVAL) -> None:
        super().__init__(supervisor, refs)
        self.interval = interval
        self.seq = int(time.time() * 1000)  # strictly increasing across restarts of the actor or the node
        self._router_silent_since: float | None = None

    def setup(self) -> None:
        self.start_ticker(self.interval, m.Tick())

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Tick):
            self._beat()
            return None
        if isinstance(message, m.Snapshot):
            return {"seq": self.seq, **self.counters}
        return super().handle(message)

    def _beat(self) -> None:
        router = self.refs.get("router")
        now = time.monotonic()
        if router is None:
            return
        try:
            coords, load, sessions = router.ask(m.HeartbeatInfo(), timeout=ADMIN_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError) as exc:
            self.counters["router_unanswered"] += 1
            if self._router_silent_since is None:
                self._router_silent_since = now
                logger.warning("heartbeat: router did not answer ({}); skipping this beat", type(exc).__name__)
            return
        self._router_silent_since = None
        self.seq += 1
        payload = encode_control(Heartbeat(seq=self.seq, coords=coords, load=load))
        for key, ref in sessions:
            if not bounded_tell(ref, m.SendControl(payload)):
                self.counters["send_failed"] += 1
                logger.warning("heartbeat to peer {} not queued: session busy or gone", key.hex()[:16])
            else:
                self.counters["sent"] += 1
        tell(router, m.CheckLiveness(now))
