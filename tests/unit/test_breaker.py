"""Per-destination circuit breaker (seed hardening item 10): pure logic, time passed in."""

from __future__ import annotations

import pytest

from axiomnet.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard, CircuitBreaker
from axiomnet.constants import BREAKER_COOLDOWN_INITIAL, BREAKER_COOLDOWN_MAX, BREAKER_FAILURE_THRESHOLD


def test_circuit_breaker_opens():
    """The seed's test: record 5 failures -> is_open() is true."""
    breaker = CircuitBreaker()
    assert BREAKER_FAILURE_THRESHOLD == 5
    opened = [breaker.record_failure(now=0.1 * i) for i in range(5)]
    assert opened == [False, False, False, False, True]
    assert breaker.is_open(now=0.5) and not breaker.allow(now=0.5)
    assert breaker.state(now=0.5) == OPEN and breaker.opened == 1


def test_circuit_breaker_stays_closed_below_threshold_and_a_success_resets_the_count():
    breaker = CircuitBreaker(threshold=3)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.record_success(0.0) is False  # closing a closed breaker is not a transition
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) == CLOSED and breaker.allow(0.0)  # the success reset the streak
    assert breaker.record_failure(0.0) is True


def test_circuit_breaker_half_opens_after_the_cooldown_and_a_good_probe_closes_it():
    breaker = CircuitBreaker(threshold=1, cooldown=2.0, cooldown_max=10.0)
    assert breaker.record_failure(10.0)
    assert breaker.state(11.9) == OPEN and breaker.retry_in(11.0) == pytest.approx(1.0)
    assert breaker.state(12.0) == HALF_OPEN and breaker.allow(12.0)
    assert breaker.record_success(12.0) is True
    assert breaker.state(12.0) == CLOSED and breaker.failures == 0 and breaker.retry_in(12.0) == 0.0


def test_failed_probes_double_the_cooldown_up_to_the_cap():
    breaker = CircuitBreaker(threshold=1, cooldown=1.0, cooldown_max=5.0)
    now, waits = 0.0, []
    breaker.record_failure(now)
    for _ in range(5):
        wait = breaker.retry_in(now)
        waits.append(wait)
        now += wait
        assert breaker.state(now) == HALF_OPEN
        assert breaker.record_failure(now) is True  # the probe failed: open again
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert breaker.opened == 6
    breaker.record_success(now + 5.0)
    breaker.record_failure(now + 5.0)
    assert breaker.retry_in(now + 5.0) == 1.0  # a success resets the cool-down too


def test_failures_racing_the_opening_do_not_extend_the_cooldown():
    breaker = CircuitBreaker(threshold=2, cooldown=1.0)
    breaker.record_failure(0.0)
    assert breaker.record_failure(0.0)
    assert breaker.record_failure(0.5) is False  # already open: a send that was already in flight
    assert breaker.retry_in(0.5) == 0.5 and breaker.opened == 1


@pytest.mark.parametrize(("threshold", "cooldown", "cap"), [(0, 1.0, 2.0), (1, 0.0, 1.0), (1, 3.0, 2.0)])
def test_bad_breaker_parameters_are_refused(threshold, cooldown, cap):
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, cooldown, cap)


def test_board_keeps_one_breaker_per_destination_and_forgets_healthy_ones():
    board: BreakerBoard[str] = BreakerBoard(threshold=2, cooldown=1.0)
    for _ in range(2):
        board.failure("a", 0.0)
    board.failure("b", 0.0)
    assert not board.allow("a", 0.0) and board.allow("b", 0.0) and board.allow("never-failed", 0.0)
    assert board.open_count(0.0) == 1
    rows = {row["endpoint"]: row for row in board.snapshot(0.0)}
    assert rows["a"]["state"] == OPEN and rows["a"]["failures"] == 2 and rows["b"]["state"] == CLOSED
    assert board.success("b", 0.0).closed is False and len(board) == 1  # nothing left to track for b
    assert board.is_tracked("a") and not board.is_tracked("b")  # batched sends to "a" go one by one
    assert board.allow("a", 1.0)  # half-open: one probe
    assert board.success("a", 1.0).closed is True and len(board) == 0 and not board.is_tracked("a")


def test_board_is_bounded_and_evicts_closed_breakers_before_open_ones():
    board: BreakerBoard[int] = BreakerBoard(limit=3, threshold=1, cooldown=BREAKER_COOLDOWN_INITIAL,
                                            cooldown_max=BREAKER_COOLDOWN_MAX)
    board.failure(1, 0.0)  # open
    big: BreakerBoard[int] = BreakerBoard(limit=3, threshold=5)
    for key in range(10):
        big.failure(key, 0.0)
        assert len(big) <= 3
    assert {row["endpoint"] for row in big.snapshot(0.0)} == {7, 8, 9}
    mixed: BreakerBoard[int] = BreakerBoard(limit=3, threshold=2)
    mixed.failure(1, 0.0)
    mixed.failure(1, 0.0)  # open, and the oldest entry
    mixed.failure(2, 0.0)
    mixed.failure(3, 0.0)
    mixed.failure(4, 0.0)  # full: the oldest *closed* breaker (2) goes, the open one stays
    assert {row["endpoint"] for row in mixed.snapshot(0.0)} == {1, 3, 4} and not mixed.allow(1, 0.0)
    board.failure(2, 0.0)
    board.failure(3, 0.0)
    board.failure(4, 0.0)  # everything is open: the oldest open one goes
    assert len(board) == 3 and board.allow(1, 0.0) and not board.allow(4, 0.0)
