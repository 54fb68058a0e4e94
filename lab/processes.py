"""Processes of the lab: bounded commands, process-group stops, liveness, CPU and memory, waiting on conditions.

Every child is started in its own session and stopped by process group (SIGTERM, then SIGKILL after a grace
period) and reaped; every command has a timeout. What a process is (alive or a zombie, when it started, its CPU
time and memory) comes from psutil, not from hand-read /proc files (but the peak resident size, which psutil
lacks). Imports nothing from pytest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import psutil

from axiomnet.constants import SHUTDOWN_DEADLINE
from axiomnet.errors import LocalError

KILL_WAIT = 3.0  # after SIGKILL, how long we wait for the kernel to reap
CLI_TIMEOUT = 20.0  # bound on `axiomnet identity show` / `axiomnet-inspect` (Python start-up included)


class HarnessError(LocalError):
    """The lab could not set up, drive or tear down its test network or its processes."""


def require_root() -> None:
    """Raise HarnessError unless running as root (namespaces, veths, TUN devices and cgroups need it)."""
    if os.geteuid() != 0:
        raise HarnessError("network namespaces and TUN devices need root; run as root or with sudo")


# --- running and stopping ------------------------------------------------------------------------------
def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_process(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def run_bounded(
    args: Sequence[str],
    *,
    timeout: float,
    check: bool = False,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Run ``args`` in a new session with captured output; on timeout SIGKILL its whole process group.

    Raises subprocess.TimeoutExpired (after the group is killed and reaped) or, with ``check``,
    subprocess.CalledProcessError.
    """
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        text=text,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:
            # A grandchild that left the group still holds the pipes: stop reading, reap the child.
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
            proc.wait(timeout=KILL_WAIT)
            out, err = None, None
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=KILL_WAIT)
        raise
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def terminate_processes(procs: Sequence[subprocess.Popen[Any]], grace: float = SHUTDOWN_DEADLINE) -> None:
    """Stop each process group (SIGTERM, then SIGKILL after ``grace`` seconds) and reap every leader.

    Processes that had already been reaped are left alone: their group id may no longer be ours.
    """
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in running:
        # The group id stays reserved while any member lives, so this reaches only our stragglers.
        signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_WAIT)


# --- what a process is ----------------------------------------------------------------------------------
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (what /proc/PID/stat says; markers written by earlier
    versions hold the same number), None if it is gone."""
    try:
        started = psutil.Process(pid).create_time()  # boot time + ticks / CLK_TCK
    except _GONE:
        return None
    return round((started - psutil.boot_time()) * os.sysconf("SC_CLK_TCK"))


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie (and, if given, started at ``start_time``: no PID reuse)."""
    try:
        if psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
    except _GONE:
        return False
    return start_time is None or process_start_time(pid) == start_time


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far."""
    try:
        times = psutil.Process(pid).cpu_times()
    except _GONE as exc:
        raise HarnessError(f"process {pid} is gone") from exc
    return float(times.user + times.system)


def process_threads(pid: int) -> int | None:
    """How many threads ``pid`` has, None if it is gone."""
    try:
        return psutil.Process(pid).num_threads()
    except _GONE:
        return None


def process_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (current resident) and VmHWM (peak resident) of ``pid`` in KiB.

    The peak is the one figure psutil does not give on Linux (giampaolo/psutil#383): it is read from the
    ``VmHWM:`` line of /proc/PID/status, the only /proc file this module reads itself.
    """
    try:
        rss = psutil.Process(pid).memory_info().rss // 1024
        status = Path(f"/proc/{pid}/status").read_text()
    except (*_GONE, FileNotFoundError) as exc:
        raise HarnessError(f"process {pid} is gone") from exc
    peak = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), rss)
    return {"VmHWM": max(peak, rss), "VmRSS": rss}


# --- waiting and measuring --------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Call ``predicate`` until it returns true (-> True) or ``timeout`` seconds pass (-> False).

    It is called at least once; exceptions it raises propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))


class PeakMemory:
    """Samples a process's VmRSS (KiB) every ``interval`` seconds in a thread while in use (a context manager);
    ``peak`` is the largest sample, ``samples`` how many were taken. Stops by itself when the process goes."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = process_memory_kib(pid)["VmRSS"]
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="axnt-peak-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = process_memory_kib(self.pid)["VmRSS"]
            except HarnessError:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
