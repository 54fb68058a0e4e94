"""RestartPolicy: backoff doubles per child, and crash loops are detected."""

from axiomnet.supervision import RestartPolicy


def test_backoff_doubles_for_a_child_that_keeps_crashing():
    policy = RestartPolicy(intensity=10, window=30.0, backoff_initial=0.1, backoff_max=1.0)
    delays = [policy.record_failure("router", now=float(i)) for i in range(5)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert policy.restarts["router"] == 5


def test_more_failures_than_intensity_within_window_gives_up():
    policy = RestartPolicy(intensity=3, window=10.0)
    assert all(policy.record_failure("x", now=t) is not None for t in (0.0, 1.0, 2.0))
    assert policy.record_failure("y", now=3.0) is None


def test_failures_outside_window_are_forgotten():
    policy = RestartPolicy(intensity=2, window=5.0, backoff_initial=0.1)
    assert policy.record_failure("x", now=0.0) == 0.1
    assert policy.record_failure("x", now=1.0) == 0.2
    # The two early failures leave the window: the child is healthy again and its backoff resets.
    assert policy.record_failure("x", now=20.0) == 0.1
    assert policy.recent_failures(now=20.0) == 1
