"""The daemon limits glibc's malloc arenas (actors/node.py limit_malloc_arenas; docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from axiomnet.actors.node import MALLOC_ARENAS, limit_malloc_arenas

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
