"""AdminActor: the Unix admin socket behind ``axiomnet-inspect`` and ``axiomnet peers``, and the metrics listener.

The socket is 0600 (0660 with ``admin_group``) in a directory that belongs to us or root and that nobody
else may write to. Every connection's caller is checked with SO_PEERCRED: root, the daemon's own user and
members of ``admin_group`` are served; anyone else is refused, counted and logged (rate-limited). An accept
thread serves one JSON line request per connection, each read bounded in size and time:

    {"cmd": "state"}                        the whole document (actors/gather.py)
    {"cmd": "metrics"}                      {"metrics": "<Prometheus text exposition>"}
    {"cmd": "health"}                       {"health": {...}, "unanswered": [...]}
    {"cmd": "peers"}                        {"peers": ["HOST:PORT[#KEY]", ...]}
    {"cmd": "peer-add", "peer": "..."}      {"ok": true, "added": bool, "peers": [...]}
    {"cmd": "peer-remove", "peer": "..."}   {"ok": true, "removed": int, "peers": [...]}
    {"cmd": "inject-fault", "actor": "..."} chaos tests only: needs --fault-injection AND AXIOMNET_FAULT_INJECTION=1
    {"cmd": "corrupt-relayed", "count": n}  the same gate: the router flips a bit in the next n relayed packets

The optional HTTP listener (``metrics_listen``, off by default, loopback when only a port is given) serves
the same metrics at /metrics through prometheus_client. A thread logs a summary of drops every
DROP_SUMMARY_INTERVAL when there were any.
"""

from __future__ import annotations

import grp
import json
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
from loguru import logger

from axiomnet.ops.config import PeerSpec
from axiomnet.constants import (
    ADMIN_REFUSAL_LOG_INTERVAL,
    ADMIN_REQUEST_MAX,
    ADMIN_TIMEOUT,
    DROP_SUMMARY_INTERVAL,
    DROP_SUMMARY_WARN,
)
from axiomnet.errors import ConfigError
from axiomnet.identity import Identity
from axiomnet.ops.metrics import drop_totals, registry_for, render
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, tell
from axiomnet.actors.gather import gather_state

FAULT_INJECTION_ENV = "AXIOMNET_FAULT_INJECTION"
PEER_CHANGE_TIMEOUT = 5.0  # the peer manager's answer to AddPeer/RemovePeer


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def supplementary_groups(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (from /proc; empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def caller_allowed(uid: int, gids: set[int], own_uid: int, group: int | None) -> bool:
    """Root, the daemon's own user, and members of the admin group may use the admin socket."""
    return uid == 0 or uid == own_uid or (group is not None and group in gids)


def resolve_group(name: str | None) -> int | None:
    """The gid of ``admin_group`` (a name or a number); ConfigError when there is no such group."""
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"admin_group = {name!r}: no such group") from None


def check_socket_directory(directory: Path, euid: int) -> str | None:
    """Why ``directory`` is unfit to hold the admin socket, or None: it must belong to us or root and be
    writable by nobody else (a sticky directory such as /tmp is accepted: others cannot replace our socket)."""
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    if st.st_uid not in (euid, 0):
        return f"{directory} belongs to uid {st.st_uid}, not to this user ({euid}) or root"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return (f"{directory} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"anyone could replace the admin socket; fix: chmod 700 {directory}")
    return None


class AdminActor(SupervisedActor):
    """The admin socket, its commands and the optional Prometheus HTTP listener."""

    role = "admin"

    def __init__(self, supervisor: Any, refs: dict[str, Any], path: Path, identity: Identity,
                 tun_name: str | None, started: float, *, admin_group: str | None = None,
                 metrics_listen: tuple[str, int] | None = None, faults_enabled: bool = False,
                 peer_book: Any = None, resolve: Callable[[tuple[PeerSpec, ...]], tuple[PeerSpec, ...]] | None = None,
                 drop_interval: float = DROP_SUMMARY_INTERVAL) -> None:
        super().__init__(supervisor, refs)
        self.path = Path(path)
        self.identity = identity
        self.tun_name = tun_name
        self.started = started
        self.admin_group = admin_group
        self.metrics_listen = metrics_listen
        self.faults_enabled = faults_enabled
        self.peer_book = peer_book
        self.resolve = resolve
        self.drop_interval = drop_interval
        self.server: socket.socket | None = None
        self.http: Any = None
        self.http_thread: threading.Thread | None = None
        self.group_id: int | None = None
        self._refused_logged: dict[int, float] = {}
        self._last_drops: dict[tuple[str, str], float] = {}

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        self.group_id = resolve_group(self.admin_group)
        self._bind()
        logger.info("admin socket {} (mode {:04o})", self.path, stat.S_IMODE(self.path.stat().st_mode))
        self.wakeup_fd()  # before the accept thread starts: stopping must find it
        self.spawn_thread(self._serve, "accept")
        self.spawn_thread(self._summarise_drops, "drops")
        if self.metrics_listen is not None:
            self._start_http()

    def _bind(self) -> None:
        directory = self.path.parent
        created = not directory.exists()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if created:
            os.chmod(directory, 0o750 if self.group_id is not None else 0o700)  # no umask surprise
            if self.group_id is not None:
                os.chown(directory, -1, self.group_id)
        problem = check_socket_directory(directory, os.geteuid())
        if problem is not None:
            raise PermissionError(f"refusing to serve the admin socket: {problem}")
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_socket():
                raise FileExistsError(f"admin socket path {self.path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(0.5)
            try:
                probe.connect(str(self.path))
                raise RuntimeError(f"another daemon is already serving {self.path}")
            except (ConnectionRefusedError, FileNotFoundError, socket.timeout):
                self.path.unlink(missing_ok=True)  # stale socket of a dead daemon
            finally:
                probe.close()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600: no window where others could connect
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old_umask)
        if self.group_id is not None:
            os.chown(self.path, -1, self.group_id)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)
        server.listen(16)
        server.setblocking(False)  # the accept thread polls it beside the wake-up eventfd (no timeout, no wake-ups)
        self.server = server

    def _start_http(self) -> None:
        from prometheus_client.exposition import start_wsgi_server

        assert self.metrics_listen is not None
        host, port = self.metrics_listen
        try:
            self.http, self.http_thread = start_wsgi_server(port, addr=host, registry=registry_for(self.state))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        logger.info("metrics on http://{}/metrics", shown)
        if host not in ("127.0.0.1", "::1", "localhost"):
            logger.warning("the metrics listener {} is not on loopback: anyone who can reach it sees this "
                           "node's peers and traffic counters", shown)

    def teardown(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            if self.http_thread is not None:
                self.http_thread.join(2.0)
            self.http = None

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.path.unlink(missing_ok=True)

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Snapshot):
            return self._own_snapshot()
        return super().handle(message)

    def _own_snapshot(self) -> dict[str, Any]:
        return {"path": str(self.path), "metrics_listener": self.metrics_listen is not None, **self.counters}

    # --- the state document ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Ask every actor at once (ADMIN_GATHER_DEADLINE) and build the document (actors/gather.py)."""
        return gather_state(
            supervisor=self.supervisor,
            refs=dict(self.refs),
            self_info={"address": str(self.identity.address), "public_key": self.identity.public_key.hex(),
                       "tun": self.tun_name, "started": self.started},
            own_snapshot=self._own_snapshot(),
            own_counters=dict(self.counters),
        )

    # --- serving (accept thread) -----------------------------------------------------------------
    def _serve(self) -> None:
        server = self.server
        assert server is not None
        poller = select.poll()
        poller.register(server.fileno(), select.POLLIN)
        poller.register(self.wakeup_fd(), select.POLLIN)  # readable once we stop
        while not self._stopping.is_set():
            poller.poll()
            if self._stopping.is_set():
                return
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                continue  # the caller gave up between poll and accept
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            with conn:
                conn.settimeout(ADMIN_TIMEOUT)
                refusal = self._refusal(conn)
                try:
                    # A refused caller's request is read too (bounded, never parsed), so that it gets the
                    # refusal as its reply instead of a broken pipe.
                    request = self._read_line(conn, parse=refusal is None)
                    reply = {"error": refusal} if refusal is not None else self._answer(request)
                except (OSError, ValueError) as exc:
                    reply = {"error": refusal or f"bad request: {exc}"}
                try:
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
                except OSError:
                    self.counters["reply_failed"] += 1

    def _refusal(self, conn: socket.socket) -> str | None:
        """Why this caller is refused (logged, counted), or None when it may ask."""
        pid, uid, gid = peer_credentials(conn)
        own = os.geteuid()
        if caller_allowed(uid, {gid} | (supplementary_groups(pid) if self.group_id is not None else set()),
                          own, self.group_id):
            return None
        self.counters["refused_callers"] += 1
        now = time.monotonic()
        if now - self._refused_logged.get(uid, -1e9) >= ADMIN_REFUSAL_LOG_INTERVAL:
            if len(self._refused_logged) > 1024:
                self._refused_logged.clear()
            self._refused_logged[uid] = now
            logger.warning("admin socket: refused a caller with uid {} (pid {}): only root, uid {}{} may use it",
                           uid, pid, own, f" and group {self.admin_group}" if self.admin_group else "")
        return f"permission denied: uid {uid} may not use this admin socket (root or uid {own} only)"

    @staticmethod
    def _read_line(conn: socket.socket, parse: bool = True) -> dict[str, Any]:
        buf = b""
        while b"\n" not in buf:
            chunk = conn.recv(ADMIN_REQUEST_MAX)
            if not chunk:
                break
            buf += chunk
            if len(buf) > ADMIN_REQUEST_MAX:
                raise ValueError("request too long")
        if not parse:
            return {}
        try:
            request = json.loads(buf.split(b"\n", 1)[0] or b"{}")
        except RecursionError:  # "[[[[..." deeper than the interpreter allows: found by tools/fuzz.py
            raise ValueError("request nested too deeply") from None
        if not isinstance(request, dict):
            raise ValueError("request must be a JSON object")
        return request

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        self.counters["requests"] += 1
        if cmd == "state":
            return self.state()
        if cmd == "metrics":
            return {"metrics": render(self.state())}
        if cmd == "health":
            state = self.state()
            return {"health": state["health"], "unanswered": state["unanswered"]}
        if cmd == "peers":
            return self._peer_command(m.ListStaticPeers())
        if cmd in ("peer-add", "peer-remove"):
            return self._change_peer(cmd, request.get("peer"))
        if cmd in ("inject-fault", "corrupt-relayed"):
            if not self.faults_enabled:
                return {"error": "fault injection is disabled (it needs the daemon flag --fault-injection and "
                                 f"{FAULT_INJECTION_ENV}=1 in its environment)"}
            if cmd == "corrupt-relayed":
                return self._corrupt_relayed(request.get("count", 1))
            return self._inject(str(request.get("actor", "")))
        return {"error": f"unknown command {cmd!r} (known: state, metrics, health, peers, peer-add, peer-remove)"}

    # --- static peers ----------------------------------------------------------------------------
    def _peer_command(self, message: Any) -> dict[str, Any]:
        peers = self.refs.get("peers")
        if peers is None:
            return {"error": "the peer manager is not running"}
        try:
            reply = peers.ask(message, timeout=PEER_CHANGE_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError):
            return {"error": f"the peer manager did not answer within {PEER_CHANGE_TIMEOUT:g} s"}
        if isinstance(reply, dict):
            return dict(reply) if "error" in reply else {"ok": True, **reply}
        return {"ok": True, "peers": reply}

    def _change_peer(self, cmd: str, text: object) -> dict[str, Any]:
        try:
            spec = PeerSpec.parse(str(text) if text is not None else "", key="peer")
            if self.resolve is not None:
                (spec,) = self.resolve((spec,))
        except ConfigError as exc:
            return {"error": str(exc)}
        if cmd == "peer-add":
            reply = self._peer_command(m.AddPeer(spec.host, spec.port, spec.public_key))
        else:
            reply = self._peer_command(m.RemovePeer(spec.host, spec.port))
        if reply.get("ok") and self.peer_book is not None:
            self.peer_book.replace(reply.get("peers", []))
        if reply.get("ok"):
            logger.info("admin: {} {} -> {}", cmd, spec, {k: v for k, v in reply.items() if k != "peers"})
        return reply

    # --- drop summaries (own thread) -------------------------------------------------------------
    def _summarise_drops(self) -> None:
        while not self._stopping.wait(self.drop_interval):
            state = self.state()
            if state["unanswered"]:
                continue  # a partial picture would show a drop in totals as no drops, or a burst later
            totals = drop_totals(state)
            new = {key: value - self._last_drops.get(key, 0.0) for key, value in totals.items()}
            new = {key: value for key, value in new.items() if value > 0}
            self._last_drops = totals
            if not new:
                continue
            total = sum(new.values())
            detail = ", ".join(f"{role} {reason} {int(count)}" for (role, reason), count in sorted(new.items()))
            level = "WARNING" if total > DROP_SUMMARY_WARN else "INFO"
            logger.log(level, "dropped {} packets/datagrams in the last {:.0f} s: {}", int(total),
                       self.drop_interval, detail)

    # --- fault injection -------------------------------------------------------------------------
    def _inject(self, target: str) -> dict[str, Any]:
        logger.warning("admin: injecting a fault into {} (fault injection is enabled)", target or "?")
        if target == "session":
            refs = self._ask_sessions()
            if not refs:
                return {"error": "no session to crash"}
            tell(refs[0], m.InjectFault("admin request"))
            return {"ok": True, "actor": "session"}
        ref = self.refs.get(target)
        if ref is None or target == "admin":
            return {"error": f"no actor {target!r} to crash"}
        tell(ref, m.InjectFault("admin request"))
        return {"ok": True, "actor": target}

    def _corrupt_relayed(self, count: object) -> dict[str, Any]:
        """Have the router flip a bit in the next ``count`` packets it relays (end-to-end integrity tests)."""
        if type(count) is not int or not 1 <= count <= 1000:
            return {"error": "count must be an integer in 1..1000"}
        logger.warning("admin: corrupting the next {} relayed packet(s) (fault injection is enabled)", count)
        tell(self.refs.get("router"), m.CorruptRelayed(count))
        return {"ok": True, "count": count}

    def _ask_sessions(self) -> list[Any]:
        peers = self.refs.get("peers")
        if peers is None:
            return []
        try:
            refs = peers.ask(m.ListSessions(), timeout=ADMIN_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError):
            return []
        return list(refs) if isinstance(refs, list) else []
