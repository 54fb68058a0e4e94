"""The daemon starts glibc's malloc without per-thread caches (docs/RELIABILITY.md: "What grew, and the fix").

glibc keeps, for every thread, a cache of freed chunks (tcache: up to 7 per size class, 64 classes up to 1 KiB).
Those chunks count as in use: ``malloc_trim`` cannot hand them back, and no other thread can reuse them. The daemon
runs about 20 threads that each allocate packets, handshakes and messages of many sizes, so its malloc in use
grew 30-50 KiB a minute for half an hour while heaptrack saw its live allocations grow 7-9 KiB a minute; with the
caches off (one 12-node soak, three long-lived daemons with them and three without) malloc in use stayed nearly
flat and RSS grew about half as fast. Python's own allocator serves objects up to 512 bytes, so the daemon calls
malloc only a few hundred times a second (heaptrack: 226/s in the soak): the cache saves it little.

The cache size is a tunable glibc reads once, when the process starts (``GLIBC_TUNABLES``); no call changes it
later. So ``axiomnet daemon`` re-executes itself once, at the very start (same PID, arguments and descriptors),
with ``glibc.malloc.tcache_count=0`` added. It does not when the operator's ``GLIBC_TUNABLES`` already sets
``glibc.malloc.tcache_count`` (their choice wins: ``=7`` is glibc's default), when the C library is not glibc, or
when this process is already the re-executed one (``AXIOMNET_MALLOC_TUNED`` in its environment).

A stop signal sent while the process re-executes must not kill it half-started nor be lost: the stop signals are
blocked across the exec (a blocked signal stays pending through it) and ``run_daemon`` unblocks them once its
handlers are in (:func:`unblock_stop_signals`), so such a signal is handled as any other.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

TCACHE_TUNABLE = "glibc.malloc.tcache_count"
MALLOC_TUNABLES = f"{TCACHE_TUNABLE}=0"
TUNED_ENV = "AXIOMNET_MALLOC_TUNED"  # set in the re-executed process: never a second time
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


def malloc_tuned_env(env: Mapping[str, str], glibc: bool | None = None) -> dict[str, str] | None:
    """The environment to re-execute the daemon in, or None when there is nothing to do (see the module)."""
    if TUNED_ENV in env or not (_glibc() if glibc is None else glibc):
        return None
    current = env.get("GLIBC_TUNABLES", "")
    if TCACHE_TUNABLE in current:
        return None
    return {**env, "GLIBC_TUNABLES": f"{current}:{MALLOC_TUNABLES}" if current else MALLOC_TUNABLES, TUNED_ENV: "1"}


def reexec_with_malloc_tuned(env: Mapping[str, str] = os.environ, argv: Sequence[str] | None = None,
                             execve: Callable[..., object] = os.execve) -> bool:
    """Replace this process by itself with :func:`malloc_tuned_env` (does not return then); False when there was
    nothing to do or the exec failed (the daemon then runs as it is)."""
    new_env = malloc_tuned_env(env)
    args = list(sys.orig_argv if argv is None else argv)
    if new_env is None or not args or not sys.executable:
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        execve(sys.executable, args, new_env)
    except OSError:
        unblock_stop_signals()
        return False
    return True


def unblock_stop_signals() -> None:
    """Let the stop signals in (those blocked across the re-exec are delivered now); a no-op when none were."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
