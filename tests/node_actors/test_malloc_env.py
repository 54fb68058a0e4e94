"""The daemon runs without glibc's per-thread malloc caches (actors/malloc_env.py; docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from axiomnet.actors.malloc_env import (MALLOC_TUNABLES, STOP_SIGNALS, TUNED_ENV, malloc_tuned_env,
                                        reexec_with_malloc_tuned, unblock_stop_signals)
from axiomnet.lab.processes import wait_until

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the per-thread cache is glibc's")


def test_the_tuned_environment_adds_the_tunable_once_and_leaves_an_operators_choice_alone() -> None:
    tuned = malloc_tuned_env({"PATH": "/bin"}, glibc=True)
    assert tuned == {"PATH": "/bin", "GLIBC_TUNABLES": MALLOC_TUNABLES, TUNED_ENV: "1"}
    other = malloc_tuned_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, glibc=True)
    assert other is not None and other["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{MALLOC_TUNABLES}"
    assert malloc_tuned_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}, glibc=True) is None  # theirs wins
    assert malloc_tuned_env(tuned, glibc=True) is None  # the re-executed process does not do it again
    assert malloc_tuned_env({}, glibc=False) is None  # musl and others: nothing to tune


@glibc_only
def test_the_reexec_keeps_the_arguments_and_holds_stop_signals_until_the_daemon_handles_them() -> None:
    calls: list[tuple[str, list[str], dict[str, str], set[int]]] = []

    def fake_execve(path: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        calls.append((path, list(args), dict(env), set(signal.pthread_sigmask(signal.SIG_BLOCK, []))))

    try:
        assert reexec_with_malloc_tuned(env={"HOME": "/x"}, argv=["python", "-m", "axiomnet", "daemon"],
                                        execve=fake_execve) is True
    finally:
        unblock_stop_signals()
    path, args, env, blocked = calls[0]
    assert path == sys.executable and args == ["python", "-m", "axiomnet", "daemon"]
    assert env["GLIBC_TUNABLES"] == MALLOC_TUNABLES and env[TUNED_ENV] == "1" and env["HOME"] == "/x"
    assert set(STOP_SIGNALS) <= blocked  # a SIGTERM during the exec waits for the new process's handler
    assert not set(STOP_SIGNALS) & set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    assert reexec_with_malloc_tuned(env={TUNED_ENV: "1"}, argv=["x"], execve=fake_execve) is False
    assert len(calls) == 1


# Eight threads each malloc and free 8 chunks of every size from 24 to 1,016 bytes, then wait: what glibc's
# per-thread caches keep of it still counts as malloc'd (mallinfo2's uordblks), and malloc_trim cannot return it.
_CACHED = """
import ctypes, threading
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                                "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
done, release = threading.Barrier(9), threading.Event()
def work():
    for size in range(24, 1032, 16):
        chunks = [libc.malloc(size) for _ in range(8)]
        for chunk in chunks:
            libc.free(chunk)
    done.wait()
    release.wait()
before = libc.mallinfo2().uordblks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
done.wait()
print((libc.mallinfo2().uordblks - before) // 1024)
release.set()
for t in threads:
    t.join()
"""


def _kept_kib(env: Mapping[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", _CACHED], env=dict(env), capture_output=True, text=True, timeout=60,
                         check=True)
    return int(out.stdout)


@glibc_only
def test_freed_chunks_stay_in_use_in_per_thread_caches_unless_the_tunable_turns_them_off() -> None:
    plain = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", TUNED_ENV)}
    tuned = malloc_tuned_env(plain)
    assert tuned is not None
    cached, uncached = _kept_kib(plain), _kept_kib(tuned)
    assert cached > 1024 and uncached < 256, (cached, uncached)  # 1.8 MiB and 33 KiB here


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@glibc_only
@pytest.mark.slow
def test_the_daemon_restarts_itself_once_with_the_tunable_and_still_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", TUNED_ENV)}
    sock = tmp_path / "admin.sock"
    proc = subprocess.Popen([sys.executable, "-m", "axiomnet", "daemon", "--no-tun", "--listen",
                             f"127.0.0.1:{_free_port()}", "--data-dir", str(tmp_path / "data"), "--admin-socket",
                             str(sock), "--log-level", "INFO"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(sock.exists, timeout=60), "the daemon never opened its admin socket"
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")  # the same PID, re-executed
        assert f"GLIBC_TUNABLES={MALLOC_TUNABLES}".encode() in environ and f"{TUNED_ENV}=1".encode() in environ
        mask = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if line.startswith("SigBlk:"))
        assert int(mask.split()[1], 16) & (1 << (signal.SIGTERM - 1)) == 0  # stop signals let in again
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, out[-2000:]
    assert "SIGTERM received: shutting down" in out
