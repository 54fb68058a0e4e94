"""Restart policy for supervised actors: exponential backoff and a restart-intensity limit (pure logic)."""

from __future__ import annotations

from collections import deque

from axiomnet.constants import (
    RESTART_BACKOFF_INITIAL,
    RESTART_BACKOFF_MAX,
    RESTART_INTENSITY,
    RESTART_WINDOW,
)


class RestartPolicy:
    """Decides whether a crashed child is restarted and after what delay.

    More than ``intensity`` failures (of all children together) within ``window`` seconds means the node
    is crash-looping: :meth:`record_failure` returns None and the daemon must exit non-zero so that its
    service manager restarts the whole process. Each child's delay doubles with its recent failures.
    """

    def __init__(
        self,
        intensity: int = RESTART_INTENSITY,
        window: float = RESTART_WINDOW,
        backoff_initial: float = RESTART_BACKOFF_INITIAL,
        backoff_max: float = RESTART_BACKOFF_MAX,
    ) -> None:
        self.intensity = intensity
        self.window = window
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._failures: deque[tuple[float, str]] = deque()
        self.restarts: dict[str, int] = {}

    def _forget_old(self, now: float) -> None:
        while self._failures and now - self._failures[0][0] > self.window:
            self._failures.popleft()

    def record_failure(self, role: str, now: float) -> float | None:
        """Note a crash of ``role``; return the delay before restarting it, or None to give up."""
        self._forget_old(now)
        self._failures.append((now, role))
        if len(self._failures) > self.intensity:
            return None
        recent_of_role = sum(1 for _, r in self._failures if r == role)
        self.restarts[role] = self.restarts.get(role, 0) + 1
        return min(self.backoff_max, self.backoff_initial * (2 ** (recent_of_role - 1)))

    def recent_failures(self, now: float) -> int:
        """Failures still inside the window."""
        self._forget_old(now)
        return len(self._failures)
