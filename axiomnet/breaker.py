"""Per-destination circuit breakers for repeated send failures (the seed's hardening item 10); no I/O.

A breaker counts consecutive failures to one destination. At ``threshold`` failures it *opens*: the caller
stops trying (and counts what it did not send) for a cool-down. After the cool-down one probe is let
through (*half-open*): success closes the breaker, failure re-opens it with the cool-down doubled, up to a
cap. Time is an argument (``now``, monotonic seconds), so every transition is unit-tested with numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

from axiomnet.constants import (
    BREAKER_COOLDOWN_INITIAL,
    BREAKER_COOLDOWN_MAX,
    BREAKER_FAILURE_THRESHOLD,
    MAX_BREAKERS,
)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker:
    """One destination's breaker: closed -> open after ``threshold`` consecutive failures -> half-open after
    the cool-down (one probe) -> closed on success, open again (cool-down doubled, capped) on failure."""

    __slots__ = ("threshold", "cooldown_initial", "cooldown_max", "failures", "opened", "_state",
                 "_cooldown", "_retry_at")

    def __init__(self, threshold: int = BREAKER_FAILURE_THRESHOLD, cooldown: float = BREAKER_COOLDOWN_INITIAL,
                 cooldown_max: float = BREAKER_COOLDOWN_MAX) -> None:
        if threshold < 1 or not 0 < cooldown <= cooldown_max:
            raise ValueError("threshold must be >= 1 and 0 < cooldown <= cooldown_max")
        self.threshold = threshold
        self.cooldown_initial = cooldown
        self.cooldown_max = cooldown_max
        self.failures = 0  # consecutive failures since the last success
        self.opened = 0  # how many times this breaker opened
        self._state = CLOSED
        self._cooldown = cooldown
        self._retry_at = 0.0

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half-open`` (an open breaker whose cool-down has passed)."""
        if self._state == OPEN and now >= self._retry_at:
            return HALF_OPEN
        return self._state

    def is_open(self, now: float) -> bool:
        """True while sends must not be attempted (open and still cooling down)."""
        return self.state(now) == OPEN

    def allow(self, now: float) -> bool:
        """May a send be attempted now? Closed: yes. Open: no. Half-open: yes, as the probe."""
        return self.state(now) != OPEN

    def record_success(self, now: float) -> bool:
        """A send went through; True if this closed an open (half-open) breaker."""
        was_open = self._state == OPEN
        self.failures = 0
        self._state = CLOSED
        self._cooldown = self.cooldown_initial
        return was_open

    def record_failure(self, now: float) -> bool:
        """A send failed; True if this failure (re-)opened the breaker."""
        self.failures += 1
        if self._state == OPEN:
            if now < self._retry_at:
                return False  # a send that raced the opening; the cool-down stands
            self._cooldown = min(self.cooldown_max, self._cooldown * 2)  # the probe failed
        elif self.failures < self.threshold:
            return False
        self._state = OPEN
        self._retry_at = now + self._cooldown
        self.opened += 1
        return True

    def retry_in(self, now: float) -> float:
        """Seconds until the next probe is allowed (0 when not open)."""
        return max(0.0, self._retry_at - now) if self._state == OPEN else 0.0


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Transition:
    """What a recorded outcome changed: the breaker opened (``opened``) or closed again (``closed``)."""

    opened: bool = False
    closed: bool = False


class BreakerBoard(Generic[K]):
    """Breakers by destination, bounded: at most ``limit`` tracked; the least recently failing closed one is
    forgotten first (an open breaker is only dropped when every tracked one is open)."""

    def __init__(self, limit: int = MAX_BREAKERS, **breaker_args: float) -> None:
        self.limit = limit
        self._args = breaker_args
        self._breakers: OrderedDict[K, CircuitBreaker] = OrderedDict()

    def __len__(self) -> int:
        return len(self._breakers)

    def is_tracked(self, key: K) -> bool:
        """Has ``key`` failed recently (its breaker is kept, open or not)? Batched sends go one by one then."""
        return key in self._breakers

    def tracked(self) -> frozenset[K]:
        """Every key that failed recently (open or not): what a caller sending on its own should leave to us."""
        return frozenset(self._breakers)

    def allow(self, key: K, now: float) -> bool:
        """May a send to ``key`` be attempted now?"""
        breaker = self._breakers.get(key)
        return breaker is None or breaker.allow(now)

    def success(self, key: K, now: float) -> Transition:
        """A send to ``key`` went through (a closed breaker with no failures is forgotten: nothing to track)."""
        breaker = self._breakers.pop(key, None)
        if breaker is None:
            return Transition()
        return Transition(closed=breaker.record_success(now))

    def failure(self, key: K, now: float) -> Transition:
        """A send to ``key`` failed."""
        breaker = self._breakers.pop(key, None)
        if breaker is None:
            breaker = CircuitBreaker(**self._args)  # type: ignore[arg-type]
            self._make_room(now)
        self._breakers[key] = breaker  # most recently failing last
        return Transition(opened=breaker.record_failure(now))

    def _make_room(self, now: float) -> None:
        while len(self._breakers) >= self.limit:
            victim = next((k for k, b in self._breakers.items() if not b.is_open(now)), None)
            if victim is None:
                victim = next(iter(self._breakers))
            del self._breakers[victim]

    def retry_in(self, key: K, now: float) -> float:
        """Seconds until ``key``'s breaker lets a probe through (0 when closed or untracked)."""
        breaker = self._breakers.get(key)
        return breaker.retry_in(now) if breaker is not None else 0.0

    def open_count(self, now: float) -> int:
        """How many destinations are open (cooling down) right now."""
        return sum(1 for b in self._breakers.values() if b.is_open(now))

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """Every tracked breaker (destinations with recent failures) as plain data, for inspection."""
        return [
            {"endpoint": key, "state": b.state(now), "failures": b.failures, "opened": b.opened,
             "retry_in": round(b.retry_in(now), 3)}
            for key, b in self._breakers.items()
        ]
