"""The daemon's identity load in a child process, so that a hung file system cannot keep the daemon alive.

load_or_create_identity bounds every file operation with a helper thread and raises IOTimeout in time, but a
thread stuck inside the kernel (FUSE or NFS waiting for its server: uninterruptible) cannot be cancelled,
and a process does not finish exiting while any of its threads is in such a wait: the daemon would log the
timeout and then linger, unkillable, until the file system answers (found by the FUSE slow-disk test). A
forked child does the file work instead; on timeout the daemon abandons it (SIGKILL; the kernel reaps it
once the file system lets go) and exits at once.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path

from loguru import logger

from axiomnet import errors
from axiomnet.constants import FILE_IO_TIMEOUT
from axiomnet.errors import IdentityError, IOTimeout
from axiomnet.identity import IDENTITY_FILE_SIZE, Identity, decode_identity, encode_identity
from axiomnet.ops.identity_store import load_or_create_identity

_REPLY_MAX = 64 * 1024
_CHILD_GRACE = 1.0  # the child's own timeout fires first; this much later the parent stops waiting
# What a failure in the child is raised as in the parent, most specific first: the reply carries the index of the
# first class the child's exception is an instance of (a type, never its name); anything else is an IdentityError.
_RERAISED: tuple[type[errors.AxiomNetError], ...] = (
    errors.UnsupportedIdentityVersion, errors.CorruptIdentity, errors.InsecureIdentityPermissions,
    errors.IdentityWriteError, errors.IdentityError, errors.IOTimeout, errors.ConfigError, errors.LocalError,
    errors.AxiomNetError,
)
_UNLISTED = 255


def load_or_create_identity_isolated(data_dir: Path, timeout: float = FILE_IO_TIMEOUT) -> tuple[Identity, bool]:
    """load_or_create_identity run in a forked child; the same result and errors, never late by more than
    about a second. Falls back to running in this process when no child can be made (no descriptors, no
    processes left), which is no worse than before."""
    pipes: list[int] = []
    try:
        reply_r, reply_w = os.pipe()
        pipes += [reply_r, reply_w]
        log_r, log_w = os.pipe()
        pipes += [log_r, log_w]
        pid = os.fork()
    except OSError as exc:
        for fd in pipes:
            os.close(fd)
        logger.debug("identity: cannot start a child ({}); loading in-process", exc)
        return load_or_create_identity(data_dir, timeout=timeout)
    if pid == 0:  # the child: do the file work, report, leave without running the parent's cleanup
        _child(data_dir, timeout, reply_w, log_w, (reply_r, log_r))
    os.close(reply_w)
    os.close(log_w)
    try:
        reply = _relay_until_reply(reply_r, log_r, timeout + _CHILD_GRACE)
    finally:
        os.close(reply_r)
        os.close(log_r)
    threading.Thread(target=_reap, args=(pid,), name="axn-identity-reaper", daemon=True).start()
    if reply is None:
        _kill(pid)
        raise IOTimeout(f"identity file operations in {data_dir} did not finish within {timeout:g} s: the disk or "
                        "file system is hung or very slow (the process doing them was abandoned)")
    if not reply:
        raise IdentityError(f"loading the identity in {data_dir} failed: the process doing it died")
    if reply[:2] == b"ok" and len(reply) == 3 + IDENTITY_FILE_SIZE:
        return decode_identity(reply[3:], data_dir), bool(reply[2])
    index, message = reply[2] if len(reply) > 2 else _UNLISTED, reply[3:].decode(errors="replace")
    if index < len(_RERAISED):
        raise _RERAISED[index](message)
    raise IdentityError(f"loading the identity in {data_dir} failed: {message}")


def _child(data_dir: Path, timeout: float, reply_w: int, log_w: int, parent_ends: tuple[int, int]) -> None:
    """In the child: log through the parent (so a child stuck in the kernel never holds the daemon's own
    stdout/stderr open), load, send a length-prefixed reply (its end may never close), exit."""
    status = 1
    try:
        for fd in parent_ends:
            os.close(fd)
        os.dup2(log_w, 1)
        os.dup2(log_w, 2)
        try:
            identity, created = load_or_create_identity(data_dir, timeout=timeout)
            reply = b"ok" + bytes([created]) + encode_identity(identity)
            status = 0
        except BaseException as exc:  # reported to the parent, which re-raises it as the same class
            index = next((i for i, error in enumerate(_RERAISED) if isinstance(exc, error)), _UNLISTED)
            text = str(exc) if index != _UNLISTED else f"{type(exc).__name__}: {exc}"
            reply = b"er" + bytes([index]) + text.encode(errors="replace")
        os.write(reply_w, len(reply).to_bytes(4, "big") + reply)
    finally:
        os._exit(status)


def _relay_until_reply(reply_fd: int, log_fd: int, timeout: float) -> bytes | None:
    """Copy the child's log output to our stderr until its whole reply arrived; None after ``timeout``."""
    buf = b""
    deadline = _now() + timeout
    fds = [reply_fd, log_fd]
    while True:
        remaining = deadline - _now()
        if remaining <= 0:
            return None
        ready, _, _ = select.select(fds, [], [], remaining)
        if log_fd in ready:
            chunk = os.read(log_fd, _REPLY_MAX)
            if chunk:
                os.write(2, chunk)
            else:
                fds.remove(log_fd)
        if reply_fd in ready:
            chunk = os.read(reply_fd, _REPLY_MAX)
            if not chunk:
                return b""  # the child died without a reply
            buf += chunk
            if len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                _drain(log_fd, fds)
                return buf[4 : 4 + int.from_bytes(buf[:4], "big")]


def _drain(log_fd: int, fds: list[int]) -> None:
    """Copy what the child logged before its reply (it is all in the pipe already)."""
    while log_fd in fds and select.select([log_fd], [], [], 0)[0]:
        chunk = os.read(log_fd, _REPLY_MAX)
        if not chunk:
            return
        os.write(2, chunk)


def _now() -> float:
    return os.times().elapsed


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the child's exit status whenever it comes (it may sit in the kernel until the disk answers)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
