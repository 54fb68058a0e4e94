"""tools/soak.py's RSS trend (rss_slope_windows): growth that levels off falls window after window, a leak not."""

from __future__ import annotations

from tools.soak import SAMPLE_INTERVAL, window_slopes


def samples(kib_per_min: list[float], minutes: float, start_kib: float = 65_000.0) -> list[tuple[float, float]]:
    """(t, RSS KiB) every SAMPLE_INTERVAL for ``minutes``; ``kib_per_min[i]`` is the growth rate in minute i."""
    points, rss, t = [], start_kib, 0.0
    while t <= minutes * 60:
        points.append((t, rss))
        rss += kib_per_min[min(int(t // 60), len(kib_per_min) - 1)] * SAMPLE_INTERVAL / 60
        t += SAMPLE_INTERVAL
    return points


def test_growth_that_levels_off_falls_to_zero_and_a_leak_stays():
    levelling = samples([200] * 5 + [50] * 5 + [0] * 20, minutes=30)
    leak = samples([80] * 30, minutes=30)
    rows = window_slopes([levelling], 0, 1800, width=300)
    assert [r["from_s"] for r in rows] == [0, 300, 600, 900, 1200, 1500]
    assert abs(rows[0]["median"] - 200) < 1 and abs(rows[1]["median"] - 50) < 1
    assert all(abs(r["median"]) < 1 for r in rows[2:])
    both = window_slopes([levelling, leak], 0, 1800, width=300)
    assert all(abs(r["max"] - 80) < 1 for r in both[2:])  # the leak's slope never falls
    assert all(abs(r["min"]) < 1 for r in both[2:])


def test_the_windows_start_after_the_warm_up_and_a_short_last_one_is_kept():
    rows = window_slopes([samples([60] * 12, minutes=12)], 120, 720, width=300)
    assert [(r["from_s"], r["to_s"]) for r in rows] == [(120, 420), (420, 720)]
    rows = window_slopes([samples([60] * 12, minutes=12)], 120, 650, width=300)
    assert [(r["from_s"], r["to_s"]) for r in rows] == [(120, 420), (420, 650)]
    assert all(abs(r["median"] - 60) < 1 for r in rows)
    assert window_slopes([], 0, 600) == []
