"""Memory limits for lab processes: cgroup v1 memory groups named after the run that made them.

A group is ``/sys/fs/cgroup/memory/axnt-<run id>-<suffix>`` (the run's naming, :meth:`NetnsLab.resource_name`),
with a hard limit; processes join it by PID (or are born in it: :attr:`Namespace.memory_cgroup`). Closing a group
SIGKILLs what is still inside, by PID, and removes it; :func:`axiomnet.lab.namespaces.cleanup_leftovers` removes the
groups of runs whose owner died (:func:`run_groups` lists them).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from axiomnet.lab.processes import KILL_WAIT, HarnessError, signal_process

if TYPE_CHECKING:
    from axiomnet.lab.namespaces import NetnsLab

MEMORY_CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def memory_cgroup_unavailable_reason() -> str | None:
    """Why a cgroup v1 memory limit cannot be set here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create a memory cgroup"
    if not (MEMORY_CGROUP_ROOT / "memory.limit_in_bytes").exists():
        return f"no cgroup v1 memory controller at {MEMORY_CGROUP_ROOT}"
    return None


class MemoryCgroup:
    """A cgroup v1 memory group ``axnt-<run id>-<suffix>`` with a hard limit; processes are added by PID.

    ``close`` SIGKILLs what is still inside (by PID) and removes the group; :func:`cleanup_leftovers` removes
    groups of dead runs. Use as a context manager.
    """

    def __init__(self, lab: NetnsLab, suffix: str, limit_bytes: int) -> None:
        reason = memory_cgroup_unavailable_reason()
        if reason is not None:
            raise HarnessError(reason)
        self.path = MEMORY_CGROUP_ROOT / lab.resource_name(suffix)
        self.path.mkdir()
        self.limit_bytes = limit_bytes
        (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (and its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def stats(self) -> dict[str, int]:
        """usage, max_usage (bytes), failcnt (times the limit was hit), oom_kill (processes OOM-killed)."""
        read = lambda name: int((self.path / name).read_text().split()[0])  # noqa: E731
        control = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
        return {"usage": read("memory.usage_in_bytes"), "max_usage": read("memory.max_usage_in_bytes"),
                "failcnt": read("memory.failcnt"), "oom_kill": int(control.get("oom_kill", 0)),
                "under_oom": int(control.get("under_oom", 0))}

    def close(self) -> None:
        """SIGKILL every process left inside, then remove the group."""
        remove_cgroup(self.path)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_groups(prefix: str) -> list[Path]:
    """The memory groups whose name starts with ``prefix`` (the lab's, of every run), [] without cgroup v1."""
    if not MEMORY_CGROUP_ROOT.is_dir():
        return []
    return [group for group in MEMORY_CGROUP_ROOT.glob(f"{prefix}*") if group.is_dir()]


def remove_cgroup(path: Path) -> None:
    """SIGKILL every process in the group at ``path`` (by PID), then remove it; HarnessError if it stays."""
    deadline = time.monotonic() + KILL_WAIT
    while path.exists():
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        for pid in pids:
            signal_process(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise HarnessError(f"cannot remove memory cgroup {path}: processes {pids} remain") from None
            time.sleep(0.05)
