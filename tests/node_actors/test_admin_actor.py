"""AdminActor and the state gatherer with stand-in actors: one deadline for all, slow actors marked unanswered,
the caller check, the socket directory check, peers commands, metrics (socket and HTTP), drop summaries."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from axiomnet.ops import admin_client
from axiomnet.ops.config import PeerSpec
from axiomnet.identity import Identity
from axiomnet.actors import messages as m
from axiomnet.actors.admin import AdminActor, caller_allowed, check_socket_directory
from axiomnet.actors.gather import gather_state
from axiomnet.actors.node import PeerBook
from tests.node_actors.fakes import wait_for

ROLES = ("socket", "router", "peers", "heartbeat")


class FakeActor(pykka.ThreadingActor):
    """Answers the admin's questions like the real actors, the first one ``delay`` seconds late, with mutable
    counters."""

    def __init__(self, role: str, delay: float = 0.0) -> None:
        super().__init__()
        self.role = role
        self.delay = delay
        self.counters: dict[str, int] = {"dropped_no_route": 0} if role == "router" else {}
        self.static: list[str] = []

    def on_receive(self, message: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
            self.delay = 0.0
        if isinstance(message, m.GetCounters):
            return dict(self.counters)
        if isinstance(message, m.Snapshot):
            if self.role == "router":
                return {"peers": [], "coords": [0.5, 1.0], "counters": dict(self.counters)}
            if self.role == "socket":
                return {"listen": "198.18.0.1:7443", **self.counters}
            if self.role == "peers":
                return {"sessions": 0, "pending_handshakes": 0, "responder": {"completed": 1}}
            raise TypeError("no snapshot")  # like an actor without a Snapshot handler
        if isinstance(message, m.ListSessions):
            return []
        if isinstance(message, m.AddPeer):
            self.static.append(str(PeerSpec(message.host, message.port, message.public_key)))
            return {"added": True, "peers": list(self.static)}
        if isinstance(message, m.RemovePeer):
            return {"removed": 0, "peers": list(self.static)}
        if message == "drop":
            self.counters["dropped_no_route"] += 5
            return None
        return None


class FakeSupervisor(pykka.ThreadingActor):
    def __init__(self, roles: tuple[str, ...]) -> None:
        super().__init__()
        self.roles = roles

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, m.Snapshot):
            return [{"name": role, "alive": True, "restarts": 0, "mailbox": 0} for role in self.roles]
        return None


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory any user may traverse (0711) holding a 0700 one for the admin socket; removed after."""
    top = Path(tempfile.mkdtemp(prefix="axn-admin-"))
    top.chmod(0o711)
    try:
        yield top / "run"
    finally:
        for path in sorted(top.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        top.rmdir()


def start_admin(path: Path, delays: dict[str, float] | None = None, **options: Any) -> tuple[Any, dict[str, Any]]:
    refs = {role: FakeActor.start(role, (delays or {}).get(role, 0.0)) for role in ROLES}
    supervisor = FakeSupervisor.start(ROLES + ("admin",))
    admin = AdminActor.start(supervisor, refs, path, Identity.generate(), "axn0", time.monotonic(), **options)
    admin.ask(m.GetCounters(), timeout=10)  # set up (socket bound) once it answers
    refs["admin"] = admin
    return admin, refs


def ask(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    return admin_client.request(path, request, timeout)


def raw(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One request, and the reply as it is (errors included)."""
    return admin_client.request(path, request, 10.0, errors=False)


def test_state_has_every_section_and_is_healthy(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    start_admin(path)
    state = ask(path, {"cmd": "state"})
    assert state["self"]["listen"] == "198.18.0.1:7443" and state["self"]["coords"] == [0.5, 1.0]
    assert state["unanswered"] == [] and state["health"]["status"] == "healthy"
    assert {row["name"] for row in state["actors"]} == set(ROLES) | {"admin"}
    assert set(state["counters"]) == set(ROLES) | {"admin"}
    assert state["snapshots"]["peers"]["responder"] == {"completed": 1}
    assert "heartbeat" not in state.get("errors", {})  # no snapshot is not an error: it has counters
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(socket_dir.stat().st_mode) == 0o700


def test_a_slow_actor_is_marked_unanswered_and_the_reply_still_comes(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    start_admin(path, delays={"heartbeat": 2.5})  # past the 1.5 s gather deadline
    started = time.monotonic()
    state = ask(path, {"cmd": "state"}, timeout=5.0)  # the old admin asked one actor after another, 2 s each
    assert time.monotonic() - started < 5.0
    assert state["unanswered"] == ["heartbeat"]
    assert state["health"]["status"] == "degraded" and "heartbeat did not answer" in state["health"]["reasons"][0]
    assert "heartbeat" not in state["counters"] and "router" in state["counters"]


def test_actors_are_asked_at_once_under_one_deadline() -> None:
    refs = {role: FakeActor.start(role, 1.5 if role in ("router", "socket") else 0.0) for role in ROLES}
    supervisor = FakeSupervisor.start(ROLES)
    # Asked one after the other, the two slow actors would need 3 s: more than the deadline.
    state = gather_state(supervisor=supervisor, refs=refs, self_info={"started": time.monotonic()}, deadline=2.5)
    assert state["unanswered"] == []
    assert state["self"]["listen"] == "198.18.0.1:7443" and state["self"]["coords"] == [0.5, 1.0]


def test_a_dead_actor_is_unanswered_not_an_error() -> None:
    refs = {role: FakeActor.start(role) for role in ROLES}
    supervisor = FakeSupervisor.start(ROLES)
    refs["router"].stop()
    state = gather_state(supervisor=supervisor, refs=refs, self_info={"started": time.monotonic()}, deadline=2.0)
    assert state["unanswered"] == ["router"] and state["health"]["status"] == "unhealthy"


def test_metrics_and_health_commands(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    start_admin(path)
    families = {f.name for f in text_string_to_metric_families(ask(path, {"cmd": "metrics"})["metrics"])}
    assert len(families) >= 12 and "axiomnet_router_dropped_no_route" in families
    assert ask(path, {"cmd": "health"}) == {"health": {"status": "healthy", "code": 0, "reasons": []},
                                            "unanswered": []}


def test_metrics_over_http_on_loopback(socket_dir: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    admin, _ = start_admin(socket_dir / "admin.sock", metrics_listen=("127.0.0.1", port))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert len(list(text_string_to_metric_families(text))) >= 12
    admin.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_peer_commands_reach_the_peer_manager_and_update_the_book(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    book = PeerBook(())
    start_admin(path, peer_book=book)
    reply = ask(path, {"cmd": "peer-add", "peer": "192.0.2.9:7443"})
    assert reply == {"ok": True, "added": True, "peers": ["192.0.2.9:7443"]}
    assert [str(p) for p in book.current()] == ["192.0.2.9:7443"]
    assert "HOST:PORT" in raw(path, {"cmd": "peer-add", "peer": "no-port"})["error"]


def test_fault_injection_is_refused_unless_enabled(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    start_admin(path)
    assert "--fault-injection" in raw(path, {"cmd": "inject-fault", "actor": "router"})["error"]


def test_drops_are_summarised_in_the_log(socket_dir: Path) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        _, refs = start_admin(socket_dir / "admin.sock", drop_interval=0.2)
        refs["router"].tell("drop")
        assert wait_for(lambda: any("dropped 5 packets/datagrams" in line and "router no_route 5" in line
                                    for line in lines), timeout=10)
    finally:
        logger.remove(sink)


def test_callers_allowed() -> None:
    assert caller_allowed(0, {0}, own_uid=1000, group=None)
    assert caller_allowed(1000, {1000}, own_uid=1000, group=None)
    assert not caller_allowed(1001, {1001}, own_uid=1000, group=None)
    assert caller_allowed(1001, {1001, 50}, own_uid=1000, group=50)
    assert not caller_allowed(1001, {1001}, own_uid=1000, group=50)


def test_socket_directory_must_not_be_writable_by_others(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    directory.chmod(0o700)
    assert check_socket_directory(directory, os.geteuid()) is None
    directory.chmod(0o777)
    assert "chmod 700" in (check_socket_directory(directory, os.geteuid()) or "")
    directory.chmod(0o1777)  # sticky, like /tmp: others cannot replace our socket
    assert check_socket_directory(directory, os.geteuid()) is None
    directory.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(directory, 12345, -1)
        assert "belongs to uid 12345" in (check_socket_directory(directory, 0) or "")


def test_admin_refuses_to_start_in_a_world_writable_directory(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="ERROR")
    try:
        refs = {role: FakeActor.start(role) for role in ROLES}
        admin = AdminActor.start(None, refs, directory / "admin.sock", Identity.generate(), None, time.monotonic())
        with pytest.raises(pykka.ActorDeadError):
            admin.ask(m.GetCounters(), timeout=5)
    finally:
        logger.remove(sink)
    assert any("writable by group or others" in line and "chmod 700" in line for line in lines)
    assert not (directory / "admin.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_a_caller_with_another_uid_is_refused_and_logged(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING")
    try:
        admin, _ = start_admin(path)
        # Loosen the file system's protection (as a careless operator might): SO_PEERCRED still refuses.
        socket_dir.chmod(0o711)
        path.chmod(0o666)
        reply = _ask_as(65534, path)
        assert reply["error"].startswith("permission denied: uid 65534 may not use this admin socket")
        assert admin.ask(m.GetCounters(), timeout=5)["refused_callers"] == 1
        assert any("refused a caller with uid 65534" in line for line in lines)
        assert "self" in ask(path, {"cmd": "state"})  # root is still served
    finally:
        logger.remove(sink)


def _as_user(uid: int, work: Callable[[], str]) -> str:
    """What ``work()`` returns when run in a child process as ``uid`` (fork, drop privileges, report back)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup of the parent's state, only the work
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write_end, work().encode())
        except BaseException as exc:
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def _ask_as(uid: int, path: Path) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(_as_user(uid, lambda: json.dumps(raw(path, {"cmd": "state"}))))
    return reply


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_inspect_as_another_user_says_why_it_cannot_reach_a_root_daemon(socket_dir: Path) -> None:
    path = socket_dir / "admin.sock"
    start_admin(path)  # the directory is 0700 and root's: another user cannot even look in

    def attempt() -> str:
        try:
            admin_client.request(path, {"cmd": "state"}, 5.0)
        except admin_client.AdminError as exc:
            return str(exc)
        return "reached"

    message = _as_user(65534, attempt)
    assert message.startswith(f"permission denied: the admin directory {socket_dir} belongs to uid 0")
    assert "sudo" in message


def test_refs_seen_by_other_threads_stay_consistent(socket_dir: Path) -> None:
    """Inspect requests from several threads at once each get a whole document."""
    path = socket_dir / "admin.sock"
    start_admin(path)
    results: list[dict[str, Any]] = []

    def one() -> None:
        results.append(ask(path, {"cmd": "state"}))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 4 and all(r["unanswered"] == [] for r in results)
