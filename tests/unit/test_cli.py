"""The axiomnet and axiomnet-inspect command lines (axiomnet.actors.node / axiomnet.lab.demo replaced by fakes)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from axiomnet import __version__, cli
from axiomnet import config as config_mod
from axiomnet.config import Config
from axiomnet.identity import IDENTITY_FILENAME, derive_address

KEY_A = "ab" * 32
PEER_KEY = "11" * 32
STATE: dict[str, Any] = {
    "self": {"address": "fc12:3456::1", "public_key": "cd" * 32, "coords": {"root": "ee" * 32, "depth": 1,
                                                                            "path": [2]},
             "listen": "[::]:7443", "tun": "axn0", "uptime": 12.5},
    "peers": [{"public_key": PEER_KEY, "address": "fcaa::2", "endpoint": "192.0.2.7:7443", "port": 3,
               "coords": [2, 1], "tree_link": True, "rtt_ms": 0.125, "last_seen": 0.75, "alive": True}],
    "tree": {"root": "ee" * 32, "root_seq": 77, "is_root": False, "parent": PEER_KEY, "depth": 1, "coords": [2]},
    "lookups": {"cache": [{"address": "fcbb::3", "root": "ee" * 8, "coords": [2, 1, 4], "expires_in": 42.0}],
                "pending": [{"address": "fccc::4", "age": 0.5, "queued": 2}]},
    "sessions": [{"peer": PEER_KEY, "endpoint": "192.0.2.7:7443", "state": "established", "initiator": True,
                  "age": 3.25, "rx_packets": 4242, "tx_packets": 4343, "rx_bytes": 987654,
                  "tx_bytes": 123456, "dropped": 7}],
    "actors": [{"name": "SessionActor-1", "alive": True, "restarts": 2, "mailbox": 5}],
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AXIOMNET_* from the outside; an unprivileged-looking user with XDG dirs in tmp_path."""
    for name in list(os.environ):
        if name.startswith("AXIOMNET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    # Defaults as for an unprivileged user, so nothing here can reach /var/lib/axiomnet or /run/axiomnet.
    monkeypatch.setattr(config_mod, "_is_root", lambda euid=None: False)
    yield
    if cli._log_handler_id is not None:  # leave loguru as other test modules expect it
        try:
            logger.remove(cli._log_handler_id)
        except ValueError:
            pass
        cli._log_handler_id = None


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    seen: list[Config] = []
    module = types.ModuleType("axiomnet.actors.node")

    def run_daemon(config: Config) -> int:
        seen.append(config)
        return 0

    module.run_daemon = run_daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "axiomnet.actors.node", module)
    return seen


# --- axiomnet daemon ----------------------------------------------------------------------------------
def test_daemon_builds_config_from_flags(fake_node: list[Config], tmp_path: Path) -> None:
    code = cli.main([
        "daemon", "--listen", "127.0.0.1:9001", "--peer", f"192.0.2.1:7443#{KEY_A}", "--peer", "[2001:db8::5]:7000",
        "--no-tun", "--mtu", "1420", "--data-dir", str(tmp_path / "d"), "--admin-socket", str(tmp_path / "a.sock"),
        "--log-level", "debug", "--log-json",
    ])
    assert code == 0 and len(fake_node) == 1
    config = fake_node[0]
    assert config.listen == "127.0.0.1:9001"
    assert [str(p) for p in config.peers] == [f"192.0.2.1:7443#{KEY_A}", "[2001:db8::5]:7000"]
    assert (config.tun_enabled, config.mtu, config.log_level, config.log_json) == (False, 1420, "DEBUG", True)
    assert (config.data_dir, config.admin_socket) == (tmp_path / "d", tmp_path / "a.sock")


def test_daemon_flags_beat_environment_and_file(fake_node: list[Config], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.toml"
    path.write_text('mtu = 1300\ntun = "axn4"\nlog_level = "ERROR"\n')
    monkeypatch.setenv("AXIOMNET_MTU", "1350")
    monkeypatch.setenv("AXIOMNET_LOG_LEVEL", "WARNING")
    assert cli.main(["daemon", "--config", str(path), "--mtu", "1400"]) == 0
    config = fake_node[-1]
    assert (config.mtu, config.tun_name, config.log_level) == (1400, "axn4", "WARNING")


def test_daemon_exit_code_comes_from_run_daemon(fake_node: list[Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["axiomnet.actors.node"], "run_daemon", lambda config: 3)
    assert cli.main(["daemon", "--no-tun"]) == 3


@pytest.mark.parametrize("argv", [["daemon", "--mtu", "99"], ["daemon", "--listen", "nowhere"],
                                  ["daemon", "--config", "/nonexistent/axiomnet.toml"]])
def test_daemon_config_error_is_one_line_exit_2(fake_node: list[Config], capsys: pytest.CaptureFixture[str],
                                                argv: list[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("axiomnet: config error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fake_node == []


def test_daemon_bad_environment_is_a_config_error(fake_node: list[Config], capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXIOMNET_PEERS", "10.0.0.1")
    assert cli.main(["daemon"]) == 2
    assert "AXIOMNET_PEERS" in capsys.readouterr().err


def test_tun_and_no_tun_are_exclusive(fake_node: list[Config], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["daemon", "--tun", "x0", "--no-tun"]) == 2
    assert "not allowed with" in capsys.readouterr().err and fake_node == []


# --- axiomnet identity show ----------------------------------------------------------------------------------
def test_identity_show_twice_prints_same_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["identity", "show", "--data-dir", str(tmp_path / "node")]
    assert cli.main(argv) == 0
    first = capsys.readouterr()
    assert cli.main(argv) == 0
    second = capsys.readouterr()
    assert first.out == second.out
    lines = dict(line.split(":", 1) for line in first.out.splitlines())
    public_key, address = lines["public key"].strip(), lines["address"].strip()
    assert address == str(derive_address(bytes.fromhex(public_key)))
    assert lines["path"].strip() == str(tmp_path / "node" / IDENTITY_FILENAME)
    assert "created a new identity" in first.err
    assert "created" not in second.err


def test_identity_show_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["identity", "show", "--data-dir", str(tmp_path / "node"), "--json"]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert set(first) == {"public_key", "address", "path", "created"}
    assert (first["created"], second["created"]) == (True, False)
    assert first["address"] == second["address"] == str(derive_address(bytes.fromhex(first["public_key"])))
    assert first["path"] == str(tmp_path / "node" / IDENTITY_FILENAME)


def test_identity_show_uses_data_dir_from_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "n.toml"
    path.write_text('data_dir = "from-file"\n')
    assert cli.main(["identity", "show", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "from-file" / IDENTITY_FILENAME)


def test_identity_show_default_data_dir_follows_xdg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["identity", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "xdg-data" / "axiomnet" / IDENTITY_FILENAME)


def test_identity_show_insecure_key_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["identity", "show", "--data-dir", str(tmp_path / "node")]) == 0
    capsys.readouterr()
    os.chmod(tmp_path / "node" / IDENTITY_FILENAME, 0o644)
    assert cli.main(["identity", "show", "--data-dir", str(tmp_path / "node")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("axiomnet: identity error: ") and "chmod 600" in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


# --- axiomnet demo / --version / help -----------------------------------------------------------------------
def test_demo_passes_namespace_to_run_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    module = types.ModuleType("axiomnet.lab.demo")
    module.run_demo = lambda args: seen.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "axiomnet.lab.demo", module)
    assert cli.main(["demo"]) == 0
    assert (seen[0].duration, seen[0].size_mb, seen[0].keep) == (3.0, 5, False)
    assert cli.main(["demo", "--duration", "0.5", "--size-mb", "2", "--keep"]) == 0
    assert (seen[1].duration, seen[1].size_mb, seen[1].keep) == (0.5, 2, True)


@pytest.mark.parametrize("argv", [["demo", "--duration", "0"], ["demo", "--size-mb", "-1"]])
def test_demo_rejects_non_positive_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "must be" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"axiomnet {__version__}"


def test_help_has_examples_and_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "axiomnet daemon" in out and "identity show" in out
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().err


# --- axiomnet-inspect ---------------------------------------------------------------------------------------
class FakeAdmin:
    """A one-shot-per-connection admin server on a Unix socket, answering with ``reply(request)``."""

    def __init__(self, path: Path, reply: Callable[[bytes], bytes | None]) -> None:
        self.path = path
        self.reply = reply
        self.requests: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.server.settimeout(0.05)  # accept() wakes often enough to notice close()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = b""
                while not request.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:  # simulate a hung daemon
                    self.stop.wait(5)
                    continue
                try:
                    conn.sendall(answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        self.thread.join(5)


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Callable[[Callable[[bytes], bytes | None]], FakeAdmin]]:
    servers: list[FakeAdmin] = []

    def start(reply: Callable[[bytes], bytes | None]) -> FakeAdmin:
        server = FakeAdmin(tmp_path / "admin.sock", reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_inspect_prints_tables(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = admin(lambda request: json.dumps(STATE).encode() + b"\n")
    assert cli.inspect_main(["--admin-socket", str(tmp_path / "admin.sock")]) == 0
    out = capsys.readouterr().out
    assert server.requests == [b'{"cmd": "state"}\n']
    for text in ("SELF", "fc12:3456::1", "cd" * 32, "/2 under root " + "ee" * 8, "[::]:7443", "axn0", "12.5s",
                 "PEERS (1)", PEER_KEY[:16], "fcaa::2", "192.0.2.7:7443", "/2/1", "0.125", "0.8s",
                 "TREE", "77", "LOOKUPS (1 cached, 1 pending)", "fcbb::3", "/2/1/4", "42.0s", "fccc::4",
                 "SESSIONS (1)", "established", "initiator", "4242", "4343", "987654", "123456",
                 "ACTORS (1)", "SessionActor-1", "MAILBOX"):
        assert text in out, text
    actor_line = next(line for line in out.splitlines() if "SessionActor-1" in line)
    assert actor_line.split() == ["SessionActor-1", "yes", "2", "5"]


def test_inspect_json_prints_the_raw_state(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    admin(lambda request: json.dumps(STATE).encode() + b"\n")
    monkeypatch.setenv("AXIOMNET_ADMIN_SOCKET", str(tmp_path / "admin.sock"))  # found via the environment
    assert cli.inspect_main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == STATE


def test_inspect_empty_tables(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin(lambda request: json.dumps({"self": {}, "peers": [], "sessions": [], "actors": []}).encode() + b"\n")
    assert cli.inspect_main(["--admin-socket", str(tmp_path / "admin.sock")]) == 0
    out = capsys.readouterr().out
    assert out.count("(none)") == 4 and "no tree yet" in out  # peers, lookups, sessions, actors


def test_inspect_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "admin.sock"
    assert cli.inspect_main(["--admin-socket", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"axiomnet-inspect: no daemon running at {path} (start one with `axiomnet daemon`)\n"
    assert captured.out == ""


def test_inspect_stale_socket_file_is_no_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "admin.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: like a daemon that died and left its socket
    try:
        assert cli.inspect_main(["--admin-socket", str(path)]) == 1
    finally:
        dead.close()
    assert "no daemon running at" in capsys.readouterr().err


def test_inspect_timeout(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin(lambda request: None)
    assert cli.inspect_main(["--admin-socket", str(tmp_path / "admin.sock"), "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "did not answer within 0.3 s" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"this is not json\n", "not JSON"),
        (b"[1, 2]\n", "expected a JSON object"),
        (b"", "without a reply"),
        (b'{"error": "unknown cmd"}\n', "answered with an error: unknown cmd"),
        (b'{"self": {}, "peers": 5}\n', "'peers' is not a list"),
        (b"x" * 5000 + b"\n", "longer than 1024 bytes"),
    ],
    ids=["not-json", "not-object", "empty", "error", "bad-schema", "too-long"],
)
def test_inspect_bad_reply(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch, reply: bytes, words: str) -> None:
    monkeypatch.setattr(cli, "ADMIN_REPLY_MAX", 1024)
    admin(lambda request: reply)
    assert cli.inspect_main(["--admin-socket", str(tmp_path / "admin.sock")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("axiomnet-inspect: ") and words in err and "Traceback" not in err


def test_inspect_config_error_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.inspect_main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("axiomnet-inspect: config error: ")


# --- logging -----------------------------------------------------------------------------------------------
def test_configure_logging_json_and_level(capsys: pytest.CaptureFixture[str]) -> None:
    cli.configure_logging("WARNING", json=True)
    logger.info("hidden")
    logger.warning("shown {}", 42)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [record["record"]["message"] for record in lines] == ["shown 42"]
    cli.configure_logging("DEBUG", json=False)
    logger.debug("plain text")
    assert "plain text" in capsys.readouterr().err


def test_daemon_front_door_flags(fake_node: list[Config]) -> None:
    assert cli.main(["daemon", "--no-tun", "--allowed-key", KEY_A, "--allowed-key", KEY_A, "--no-discoverable"]) == 0
    config = fake_node[-1]
    assert config.allowed_keys == frozenset({bytes.fromhex(KEY_A)}) and config.discoverable is False
    assert cli.main(["daemon", "--no-tun"]) == 0
    assert fake_node[-1].allowed_keys is None and fake_node[-1].discoverable is True
