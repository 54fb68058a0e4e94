"""AdminActor: the Unix admin socket (mode 0600) that ``axiomnet-inspect`` reads.

An accept thread serves one JSON line request per connection, each read bounded in size and time; it
gathers state by asking the other actors with a timeout (the control path, never the packet path).
``inject-fault`` exists for chaos tests and answers only when AXIOMNET_FAULT_INJECTION=1.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pykka
from loguru import logger

from axiomnet.constants import ADMIN_REQUEST_MAX, ADMIN_TIMEOUT, READER_POLL_TIMEOUT
from axiomnet.identity import Identity
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, tell

FAULT_INJECTION_ENV = "AXIOMNET_FAULT_INJECTION"


class AdminActor(SupervisedActor):
    """Serves ``{"cmd": "state"}`` (and ``inject-fault`` when enabled) on a Unix socket."""

    role = "admin"

    def __init__(self, supervisor: Any, refs: dict[str, Any], path: Path, identity: Identity,
                 tun_name: str | None, started: float) -> None:
        super().__init__(supervisor, refs)
        self.path = Path(path)
        self.identity = identity
        self.tun_name = tun_name
        self.started = started
        self.server: socket.socket | None = None
        self.faults_enabled = os.environ.get(FAULT_INJECTION_ENV) == "1"

    def setup(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        os.chmod(self.path, 0o600)
        server.listen(16)
        server.settimeout(READER_POLL_TIMEOUT)
        self.server = server
        logger.info("admin socket {}", self.path)
        self.spawn_thread(self._serve, "accept")

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.path.unlink(missing_ok=True)

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.Snapshot):
            return {"path": str(self.path), **self.counters}
        return super().handle(message)

    # --- serving (accept thread) -----------------------------------------------------------------
    def _serve(self) -> None:
        server = self.server
        assert server is not None
        while not self._stopping.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            with conn:
                conn.settimeout(ADMIN_TIMEOUT)
                try:
                    request = self._read_line(conn)
                    reply = self._answer(request)
                except (OSError, ValueError) as exc:
                    reply = {"error": f"bad request: {exc}"}
                try:
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
                except OSError:
                    self.counters["reply_failed"] += 1

    @staticmethod
    def _read_line(conn: socket.socket) -> dict[str, Any]:
        buf = b""
        while b"\n" not in buf:
            chunk = conn.recv(ADMIN_REQUEST_MAX)
            if not chunk:
                break
            buf += chunk
            if len(buf) > ADMIN_REQUEST_MAX:
                raise ValueError("request too long")
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
        if cmd == "inject-fault":
            if not self.faults_enabled:
                return {"error": f"fault injection is disabled (start the daemon with {FAULT_INJECTION_ENV}=1)"}
            return self._inject(str(request.get("actor", "")))
        return {"error": f"unknown command {cmd!r} (known: state)"}

    def _ask(self, role: str, message: Any, default: Any) -> Any:
        ref = self.supervisor if role == "supervisor" else self.refs.get(role)
        if ref is None:
            return default
        try:
            return ref.ask(message, timeout=ADMIN_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError):
            return default

    def _sessions(self) -> list[dict[str, Any]]:
        rows = []
        for ref in self._ask("peers", m.ListSessions(), []):
            try:
                rows.append(ref.ask(m.Snapshot(), timeout=ADMIN_TIMEOUT))
            except (pykka.Timeout, pykka.ActorDeadError):
                rows.append({"peer": None, "endpoint": "?", "state": "unresponsive", "initiator": None, "age": 0.0,
                             "rx_packets": 0, "tx_packets": 0, "rx_bytes": 0, "tx_bytes": 0, "dropped": 0})
        return rows

    def state(self) -> dict[str, Any]:
        """The document ``axiomnet-inspect`` prints (schema in docs/ARCHITECTURE.md)."""
        router = self._ask("router", m.Snapshot(), {"peers": [], "coords": None, "counters": {}})
        sock = self._ask("socket", m.Snapshot(), {})
        sessions = self._sessions()
        endpoints = {s.get("peer"): s.get("endpoint") for s in sessions}
        peers = [{**p, "endpoint": endpoints.get(p["public_key"], "?")} for p in router["peers"]]
        actors = self._ask("supervisor", m.Snapshot(), [])
        return {
            "self": {
                "address": str(self.identity.address),
                "public_key": self.identity.public_key.hex(),
                "coords": router.get("coords"),
                "listen": sock.get("listen"),
                "tun": self.tun_name,
                "uptime": round(time.monotonic() - self.started, 3),
            },
            "peers": peers,
            "sessions": sessions,
            "actors": actors,
            "counters": {
                "router": router.get("counters", {}),
                "socket": {k: v for k, v in sock.items() if k != "listen"},
                "peers": self._ask("peers", m.Snapshot(), {}),
            },
        }

    def _inject(self, target: str) -> dict[str, Any]:
        if target == "session":
            refs = self._ask("peers", m.ListSessions(), [])
            if not refs:
                return {"error": "no session to crash"}
            tell(refs[0], m.InjectFault("admin request"))
            return {"ok": True, "actor": "session"}
        ref = self.refs.get(target)
        if ref is None or target == "admin":
            return {"error": f"no actor {target!r} to crash"}
        tell(ref, m.InjectFault("admin request"))
        return {"ok": True, "actor": target}
