"""The client side of the admin socket, for `axiomnet-inspect` and `axiomnet peers` (command-line layer).

Like cli.py this module talks to a socket; the daemon never imports it. One JSON line out, one JSON line
(at most ADMIN_REPLY_MAX bytes) back, within a timeout. Without an explicit path it looks where this
user's daemon would listen and then where a root daemon listens, and when it cannot get in it says why
(no daemon, the directory or socket belongs to someone else, the daemon refused this uid).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from axiomnet.ops.config import ROOT_ADMIN_SOCKET, Config, default_admin_socket
from axiomnet.constants import ADMIN_REPLY_MAX


class AdminError(Exception):
    """The admin socket could not be asked or did not answer usefully; the message is for the operator."""


class NoDaemon(AdminError):
    """Nothing listens at the path (no file, or a stale socket)."""


def _euid() -> int:
    return os.geteuid()


def socket_candidates(config: Config, env: Mapping[str, str], explicit: bool, euid: int | None = None) -> list[Path]:
    """Where to look: the configured path; when it is only this user's default and we are not root, then
    also the root daemon's default (a root daemon is the usual case: systemd, containers)."""
    euid = _euid() if euid is None else euid
    paths = [config.admin_socket]
    default = default_admin_socket(config.data_dir, env, euid)
    if not explicit and euid != 0 and config.admin_socket == default and ROOT_ADMIN_SOCKET not in paths:
        paths.append(ROOT_ADMIN_SOCKET)
    return paths


def _permission_problem(path: Path) -> str:
    """Why this user cannot connect to ``path`` (which exists or whose directory we cannot look into)."""
    me = _euid()
    for place in (path, path.parent):
        try:
            st = place.stat()
        except PermissionError:
            continue
        except OSError:
            break
        what = "socket" if place == path else "directory"
        return (f"permission denied: the admin {what} {place} belongs to uid {st.st_uid} (mode "
                f"{stat.S_IMODE(st.st_mode):04o}) and this is uid {me}; run as root (sudo) or as that user, "
                "or ask for admin_group in the daemon's configuration")
    return f"permission denied connecting to {path} (uid {me}); run as root (sudo) or as the daemon's user"


def request(path: Path, message: Mapping[str, Any], timeout: float, *, errors: bool = True) -> dict[str, Any]:
    """Send ``message`` to the daemon at ``path``; its reply (a JSON object) or AdminError.

    An ``{"error": ...}`` reply raises AdminError too, unless ``errors`` is False (then it is returned).
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    reply = bytearray()
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NoDaemon(f"no daemon running at {path} (start one with `axiomnet daemon`)") from None
        except PermissionError:
            raise AdminError(_permission_problem(Path(path))) from None
        except TimeoutError:
            raise AdminError(f"the daemon at {path} did not accept the connection within {timeout:g} s") from None
        try:
            sock.sendall(json.dumps(dict(message)).encode() + b"\n")
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                newline = chunk.find(b"\n")
                reply += chunk if newline < 0 else chunk[:newline]
                if len(reply) > ADMIN_REPLY_MAX:
                    raise AdminError(f"bad reply from the daemon at {path}: longer than {ADMIN_REPLY_MAX} bytes")
                if newline >= 0:
                    break
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            raise AdminError(f"the daemon at {path} did not answer within {timeout:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise AdminError(f"the daemon at {path} closed the connection before answering") from None
    except OSError as exc:
        raise AdminError(f"cannot talk to the daemon at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not reply.strip():
        raise AdminError(f"the daemon at {path} closed the connection without a reply")
    try:
        answer = json.loads(reply)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(f"bad reply from the daemon at {path}: not JSON ({exc})") from None
    if not isinstance(answer, dict):
        raise AdminError(f"bad reply from the daemon at {path}: expected a JSON object")
    if errors and "error" in answer and "self" not in answer:
        raise AdminError(f"the daemon at {path} answered with an error: {answer['error']}")
    return answer


def request_first(paths: Sequence[Path], message: Mapping[str, Any], timeout: float) -> tuple[Path, dict[str, Any]]:
    """Ask the first of ``paths`` where a daemon listens; AdminError naming every place looked at."""
    missing: list[NoDaemon] = []
    for path in paths:
        try:
            return path, request(path, message, timeout)
        except NoDaemon as exc:
            missing.append(exc)
    if len(missing) == 1:
        raise missing[0]
    raise NoDaemon("no daemon running: looked at " + " and ".join(str(p) for p in paths)
                   + " (start one with `axiomnet daemon`, or name its socket with --admin-socket)")
