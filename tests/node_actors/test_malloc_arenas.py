"""The daemon limits glibc's malloc arenas (actors/node.py limit_malloc_arenas; docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from axiomnet.actors.node import (MALLOC_ARENAS, MALLOC_TRIM_ENV, MALLOC_TRIM_INTERVAL, PeerBook, _main_loop,
                                  limit_malloc_arenas, malloc_trimmer)
from axiomnet.lab.processes import wait_until
from axiomnet.ops.config import Config

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")

# 16 threads malloc and free at once (ctypes releases the GIL, so they contend), then glibc's malloc_info()
# lists one <heap> per arena. Without a limit this machine's glibc makes 16 of them.
_PROBE = """
import ctypes, re, sys, threading
from axiomnet.actors.node import limit_malloc_arenas
took = limit_malloc_arenas() if sys.argv[1] == "limit" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def work():
    for _ in range(20000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
print(took, len(re.findall(r"<heap nr=", open(sys.argv[2]).read())))
"""


def _arenas(tmp_path: Path, mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode, str(tmp_path / f"{mode}.xml")], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


def test_the_daemon_keeps_its_threads_to_two_malloc_arenas(tmp_path: Path) -> None:
    took, limited = _arenas(tmp_path, "limit")
    _, free = _arenas(tmp_path, "none")
    assert took == "True" and limited <= MALLOC_ARENAS < free


def test_an_operators_malloc_arena_max_is_left_alone() -> None:
    assert limit_malloc_arenas(env={"MALLOC_ARENA_MAX": "8"}) is False


# A thread allocates 40,000 bytes objects of 1 KiB (40 MiB, from malloc: pymalloc only serves <= 512 bytes) and
# frees all but every 50th: the survivors pin the freed pages between them, so glibc cannot shrink the arena
# from its top and RSS stays up until malloc_trim(0) hands back the free pages wherever they lie.
_FRAGMENT = """
import sys, threading
from axiomnet.actors.node import malloc_trimmer
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
keep = []
def work():
    objs = [bytes([i % 251]) * 1024 for i in range(40000)]
    keep.extend(objs[::50])
t = threading.Thread(target=work); t.start(); t.join()
before = rss_kib()
trim, every = malloc_trimmer(env={})
trim()
print(before, rss_kib(), every)
"""


def test_malloc_trim_hands_the_free_pages_of_a_fragmented_arena_back() -> None:
    out = subprocess.run([sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    before, after, every = int(out[0]), int(out[1]), float(out[2])
    assert every == MALLOC_TRIM_INTERVAL
    assert before - after > 20 * 1024  # of the ~40 MiB freed, more than half goes back


def test_the_trim_is_off_when_the_operator_says_0() -> None:
    assert malloc_trimmer(env={MALLOC_TRIM_ENV: "0"}) == (None, 0.0)
    assert malloc_trimmer(env={MALLOC_TRIM_ENV: "5"})[1] == 5.0


def test_the_daemons_main_loop_trims_on_its_schedule() -> None:
    """The main loop (the one thread the daemon keeps besides its actors) calls the trim every interval."""
    calls: list[float] = []
    stop, hangup = threading.Event(), threading.Event()
    config = Config()
    loop = threading.Thread(target=_main_loop, args=(None, stop, hangup, config, None, PeerBook([])),
                            kwargs={"trimmer": (lambda: calls.append(time.monotonic()) or 1, 0.01)})
    loop.start()
    try:
        assert wait_until(lambda: len(calls) >= 3, timeout=10)
    finally:
        stop.set()
        loop.join(timeout=5)
    assert not loop.is_alive()
    assert calls[1] - calls[0] >= 0.01
