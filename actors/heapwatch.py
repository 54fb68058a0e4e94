"""A heap profile of a running daemon, for finding what grows (docs/RELIABILITY.md: what grows).

``AXIOMNET_TRACEMALLOC=SECONDS[,FRAMES]`` in the daemon's environment starts ``tracemalloc`` (FRAMES frames per
allocation, default 6) before the actors, and every SECONDS the daemon's main loop logs, at WARNING (so a soak's
logs keep it), one ``heap profile`` line with the totals and up to TOP_SITES lines, the allocation sites (grouped by
their stack) that grew most since the first profile, each with its growth since the previous one:

    heap profile #5 at 1500 s: traced 612 KiB (+90 since #1, +20 since #4); malloc in use 15210 KiB (+...); RSS ...
    heap site +40.2 KiB +410 blocks (+5.1 KiB since #4): actors/forward.py:212 <- actors/router.py:94 <- ...

FRAMES 0 traces nothing: the line has the totals only (RSS and malloc in use), at no cost to the daemon.
"traced" counts what was allocated since tracing started (modules imported before are not in it).

"malloc in use" is glibc's count of the bytes its malloc handed out and not freed (``mallinfo2``: arena chunks
plus mmapped ones) less tracemalloc's own tables: it holds what C libraries (OpenSSL, libsodium, cffi) allocate,
which tracemalloc does not see, Python's blocks above 512 bytes, which it does, and not pymalloc's arenas. A growing malloc total with a flat traced one means the growth is in C.

Bounded: two tables of per-stack totals (the first profile and the last), a log line per site shown. The cost is
tracemalloc's own (allocations 2-3x slower, a trace per live block) and a snapshot per profile, which blocks the
main loop (not the actors) for up to a second: a debugging aid, never on in production.
"""

from __future__ import annotations

import ctypes
import os
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

from loguru import logger

TRACEMALLOC_ENV = "AXIOMNET_TRACEMALLOC"
DEFAULT_FRAMES = 6
TOP_SITES = 12
_IGNORED = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"), tracemalloc.Filter(False, __file__))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_in_use() -> int | None:
    """Bytes glibc's malloc has handed out and not had back (every arena, mmapped chunks too); None if not glibc."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _site(traceback: tracemalloc.Traceback) -> str:
    """The allocating line first, then its callers (a Traceback lists the oldest frame first)."""
    return " <- ".join(f"{_short(frame.filename)}:{frame.lineno}" for frame in reversed(traceback))


def _short(path: str) -> str:
    """site-packages/pkg/mod.py, or the last two parts of the path (actors/peers.py)."""
    at = path.rfind("/site-packages/")
    return path[at + len("/site-packages/"):] if at >= 0 else "/".join(path.split("/")[-2:])


class HeapWatch:
    """tracemalloc, started once, and the per-stack totals of the first and the last profile (see the module)."""

    def __init__(self, interval: float, frames: int = DEFAULT_FRAMES, top: int = TOP_SITES) -> None:
        self.interval = interval
        self.frames = frames
        self.top = top
        self.count = 0
        self.started = 0.0
        self.next_at = 0.0
        self._first: dict[Any, tuple[int, int]] | None = None
        self._last: dict[Any, tuple[int, int]] = {}
        self._totals: list[dict[str, int]] = []  # the named totals of the first profile and of the last

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> HeapWatch | None:
        """The watch AXIOMNET_TRACEMALLOC asks for, or None (unset, or not "SECONDS[,FRAMES]" with SECONDS > 0)."""
        raw = env.get(TRACEMALLOC_ENV, "").strip()
        if not raw:
            return None
        try:
            parts = [float(p) for p in raw.split(",")]
            interval, frames = parts[0], int(parts[1]) if len(parts) > 1 else DEFAULT_FRAMES
        except (ValueError, IndexError):
            logger.warning("{}={!r} is not SECONDS[,FRAMES]: no heap profile", TRACEMALLOC_ENV, raw)
            return None
        if interval <= 0 or not 0 <= frames <= 64:
            logger.warning("{}={!r}: SECONDS must be > 0 and FRAMES 0..64: no heap profile", TRACEMALLOC_ENV, raw)
            return None
        return cls(interval, frames)

    def start(self) -> None:
        if self.frames and not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        self.started = time.monotonic()
        self.next_at = self.started + self.interval
        if self.frames:
            logger.warning("heap profile on ({}={:g},{}): tracemalloc slows every allocation; a debugging aid",
                           TRACEMALLOC_ENV, self.interval, self.frames)
        else:
            logger.warning("heap totals on ({}={:g},0): RSS and malloc in use, no tracing", TRACEMALLOC_ENV,
                           self.interval)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def profile(self) -> list[str]:
        """Log and return the lines: the totals, then (when tracing) the sites that grew most since the first."""
        self.next_at = time.monotonic() + self.interval
        stats: dict[Any, tuple[int, int]] = {}
        totals: dict[str, int] = {}
        if self.frames and tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot().filter_traces(_IGNORED)
            stats = {s.traceback: (s.size, s.count) for s in snapshot.statistics("traceback")}
            totals["traced"] = sum(size for size, _ in stats.values())
        in_use = malloc_in_use()
        if in_use is not None:  # tracemalloc's own tables (a trace per block, every stack it has seen) are malloc's
            totals["malloc in use"] = in_use - tracemalloc.get_tracemalloc_memory()
        rss = _rss()
        if rss is not None:
            totals["RSS"] = rss
        self.count += 1
        if self._first is None:
            self._first = stats
            self._totals = [totals, totals]
        first, last = self._first, self._last or stats
        before = max(1, self.count - 1)
        figures = [f"{name} {value // 1024} KiB ({(value - self._totals[0].get(name, value)) / 1024:+.0f} since #1, "
                   f"{(value - self._totals[1].get(name, value)) / 1024:+.0f} since #{before})"
                   for name, value in totals.items()]
        lines = [f"heap profile #{self.count} at {time.monotonic() - self.started:.0f} s: {'; '.join(figures)}"]
        grown = sorted(((size - first.get(tb, (0, 0))[0], count - first.get(tb, (0, 0))[1], tb, size)
                        for tb, (size, count) in stats.items()), key=lambda row: row[0], reverse=True)
        for growth, blocks, tb, size in grown[: self.top]:
            if growth <= 0:
                break
            recent = size - last.get(tb, (0, 0))[0]
            lines.append(f"heap site {growth / 1024:+.1f} KiB {blocks:+d} blocks ({recent / 1024:+.1f} KiB since "
                         f"#{before}): {_site(tb)}")
        self._last = stats
        self._totals[1] = totals
        for line in lines:
            logger.warning("{}", line)
        return lines


def _rss() -> int | None:
    """This process's resident set size in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
