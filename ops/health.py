"""The node's health, judged from the admin state document (pure; documented in docs/OPERATIONS.md).

* **unhealthy** — the data path is down: a data-path actor (socket, router, peers, e2e, and tun when the node
  has a TUN device) is dead or did not answer within the gather deadline, or the supervisor did not answer (the
  actors' state is unknown). ``axiomnet-inspect health`` also says unhealthy (exit 2) when it cannot reach
  the daemon at all.
* **degraded** — the node forwards but something needs attention: another actor is dead or unanswered,
  a session actor did not answer, an actor's mailbox is at least HEALTH_MAILBOX_WARN deep (backpressure),
  or the node has static peers and none of them has an established session HEALTH_PEER_GRACE seconds
  after start.
* **healthy** — none of the above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from axiomnet.constants import HEALTH_MAILBOX_WARN, HEALTH_PEER_GRACE

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
DATA_PATH_ACTORS = ("socket", "router", "peers", "tun", "e2e")


@dataclass(frozen=True)
class Health:
    """A status (healthy/degraded/unhealthy) and the reasons for anything but healthy."""

    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.exit_code, "reasons": list(self.reasons)}


def evaluate(state: Mapping[str, Any], *, peer_grace: float = HEALTH_PEER_GRACE,
             mailbox_warn: int = HEALTH_MAILBOX_WARN) -> Health:
    """Judge ``state`` (the admin actor's document: actors, sessions, unanswered, self.uptime)."""
    bad: list[str] = []
    warn: list[str] = []
    unanswered = [str(name) for name in state.get("unanswered") or []]
    actors = [row for row in state.get("actors") or [] if isinstance(row, dict)]
    if "supervisor" in unanswered:
        bad.append("the supervisor did not answer: the actors' state is unknown")
    for row in actors:
        name = str(row.get("name"))
        if not row.get("alive"):
            (bad if name in DATA_PATH_ACTORS else warn).append(f"actor {name} is not running (restarts: "
                                                               f"{row.get('restarts', 0)})")
        mailbox = row.get("mailbox")
        if isinstance(mailbox, int) and mailbox >= mailbox_warn:
            warn.append(f"actor {name} has {mailbox} messages queued (backpressure)")
    for name in unanswered:
        if name == "supervisor":
            continue
        message = f"{name} did not answer within the deadline"
        (bad if name in DATA_PATH_ACTORS else warn).append(message)
    sessions = [row for row in state.get("sessions") or [] if isinstance(row, dict)]
    static = [row for row in sessions if row.get("static")]
    uptime = (state.get("self") or {}).get("uptime")
    if static and isinstance(uptime, (int, float)) and uptime >= peer_grace:
        if not any(row.get("state") == "established" for row in static):
            warn.append(f"none of the {len(static)} static peer(s) has an established session after "
                        f"{uptime:.0f} s")
    if bad:
        return Health(UNHEALTHY, tuple(bad + warn))
    if warn:
        return Health(DEGRADED, tuple(warn))
    return Health(HEALTHY)
