"""The axiomnet and axiomnet-inspect command lines (axiomnet.actors.node / axiomnet.lab.demo replaced by fakes,
the daemon's admin socket by a fake server)."""

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
from prometheus_client.parser import text_string_to_metric_families

from axiomnet import __version__
from axiomnet.ops import admin_client, cli
from axiomnet.ops import config as config_mod
from axiomnet.ops.config import Config, load_config
from axiomnet.identity import derive_address
from axiomnet.ops.identity_store import IDENTITY_FILENAME
from axiomnet.ops.metrics import render

KEY_A = "ab" * 32
PEER_KEY = "11" * 32
STATE: dict[str, Any] = {
    "self": {"address": "fc12:3456::1", "public_key": "cd" * 32, "coords": {"root": "ee" * 32, "depth": 1,
                                                                            "path": [2]},
             "listen": "[::]:7443", "tun": "axn0", "uptime": 12.5, "version": "0.1.0", "pid": 4242},
    "peers": [{"public_key": PEER_KEY, "address": "fcaa::2", "endpoint": "192.0.2.7:7443", "port": 3,
               "coords": [2, 1], "tree_link": True, "rtt_ms": 0.125, "last_seen": 0.75, "alive": True}],
    "tree": {"root": "ee" * 32, "root_seq": 77, "is_root": False, "parent": PEER_KEY, "depth": 1, "coords": [2]},
    "lookups": {"cache": [{"address": "fcbb::3", "root": "ee" * 8, "coords": [2, 1, 4], "expires_in": 42.0}],
                "pending": [{"address": "fccc::4", "age": 0.5, "queued": 2}]},
    "sessions": [{"peer": PEER_KEY, "endpoint": "192.0.2.7:7443", "state": "established", "initiator": True,
                  "age": 3.25, "rx_packets": 4242, "tx_packets": 4343, "rx_bytes": 987654,
                  "tx_bytes": 123456, "dropped": 7, "static": True,
                  "counters": {"rx_ReplayedPacket": 5, "rx_DecryptionFailed": 2, "tx_datagrams": 9}}],
    "actors": [{"name": "SessionActor-1", "alive": True, "restarts": 2, "mailbox": 5}],
    "counters": {"router": {"forwarded": 10, "dropped_no_route": 3}},
    "unanswered": [],
    "health": {"status": "healthy", "code": 0, "reasons": []},
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
    monkeypatch.setattr(admin_client, "ROOT_ADMIN_SOCKET", tmp_path / "no-root-daemon" / "admin.sock")
    monkeypatch.setattr(admin_client, "_euid", lambda: 1000)
    yield
    if cli._log_handler_id is not None:  # leave loguru as other test modules expect it
        try:
            logger.remove(cli._log_handler_id)
        except ValueError:
            pass
        cli._log_handler_id = None


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Config, Any]]:
    seen: list[tuple[Config, Any]] = []
    module = types.ModuleType("axiomnet.actors.node")

    def run_daemon(config: Config, reload: Any = None) -> int:
        seen.append((config, reload))
        return 0

    module.run_daemon = run_daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "axiomnet.actors.node", module)
    return seen


# --- axiomnet daemon ----------------------------------------------------------------------------------
def test_daemon_builds_config_from_flags(fake_node: list[tuple[Config, Any]], tmp_path: Path) -> None:
    code = cli.main([
        "daemon", "--listen", "127.0.0.1:9001", "--peer", f"192.0.2.1:7443#{KEY_A}", "--peer", "[2001:db8::5]:7000",
        "--no-tun", "--mtu", "1420", "--data-dir", str(tmp_path / "d"), "--admin-socket", str(tmp_path / "a.sock"),
        "--log-level", "debug", "--log-json", "--metrics-listen", "9555", "--admin-group", "wheel",
        "--fault-injection",
    ])
    assert code == 0 and len(fake_node) == 1
    config, reload = fake_node[0]
    assert config.listen == "127.0.0.1:9001"
    assert [str(p) for p in config.peers] == [f"192.0.2.1:7443#{KEY_A}", "[2001:db8::5]:7000"]
    assert (config.tun_enabled, config.mtu, config.log_level, config.log_json) == (False, 1420, "DEBUG", True)
    assert (config.data_dir, config.admin_socket) == (tmp_path / "d", tmp_path / "a.sock")
    assert (config.metrics_listen, config.admin_group, config.fault_injection) == (("127.0.0.1", 9555), "wheel", True)
    assert reload is None  # no --config: nothing to re-read on SIGHUP


def test_daemon_reload_rereads_the_file_with_the_same_flags(fake_node: list[tuple[Config, Any]],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('peers = ["192.0.2.1:7443"]\nmtu = 1300\n')
    assert cli.main(["daemon", "--config", str(path), "--mtu", "1400"]) == 0
    config, reload = fake_node[-1]
    assert [str(p) for p in config.peers] == ["192.0.2.1:7443"]
    path.write_text('peers = ["192.0.2.2:7443"]\nmtu = 1300\n')
    again = reload()
    assert [str(p) for p in again.peers] == ["192.0.2.2:7443"] and again.mtu == 1400  # the flag still wins


def test_daemon_flags_beat_environment_and_file(fake_node: list[tuple[Config, Any]], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.toml"
    path.write_text('mtu = 1300\ntun = "axn4"\nlog_level = "ERROR"\n')
    monkeypatch.setenv("AXIOMNET_MTU", "1350")
    monkeypatch.setenv("AXIOMNET_LOG_LEVEL", "WARNING")
    assert cli.main(["daemon", "--config", str(path), "--mtu", "1400"]) == 0
    config = fake_node[-1][0]
    assert (config.mtu, config.tun_name, config.log_level) == (1400, "axn4", "WARNING")


def test_daemon_exit_code_comes_from_run_daemon(fake_node: list[tuple[Config, Any]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["axiomnet.actors.node"], "run_daemon", lambda config, reload=None: 3)
    assert cli.main(["daemon", "--no-tun"]) == 3


@pytest.mark.parametrize("argv", [["daemon", "--mtu", "99"], ["daemon", "--listen", "nowhere"],
                                  ["daemon", "--config", "/nonexistent/axiomnet.toml"],
                                  ["daemon", "--metrics-listen", "localhost:x"], ["daemon", "--admin-group", "a b"]])
def test_daemon_config_error_is_one_line_exit_2(fake_node: list[tuple[Config, Any]],
                                                capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("axiomnet: config error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fake_node == []


def test_daemon_bad_environment_is_a_config_error(fake_node: list[tuple[Config, Any]],
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXIOMNET_PEERS", "10.0.0.1")
    assert cli.main(["daemon"]) == 2
    assert "AXIOMNET_PEERS" in capsys.readouterr().err


def test_tun_and_no_tun_are_exclusive(fake_node: list[tuple[Config, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["daemon", "--tun", "x0", "--no-tun"]) == 2
    assert "not allowed with" in capsys.readouterr().err and fake_node == []


# --- axiomnet identity show / create -------------------------------------------------------------------
def test_identity_show_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node"
    assert cli.main(["identity", "show", "--data-dir", str(node)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"axiomnet: identity error: no identity at {node / IDENTITY_FILENAME}")
    assert "axiomnet identity create" in captured.err and captured.err.count("\n") == 1
    assert not (node / IDENTITY_FILENAME).exists()


def test_identity_create_then_show_print_the_same_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = str(tmp_path / "node")
    assert cli.main(["identity", "create", "--data-dir", node]) == 0
    first = capsys.readouterr()
    assert "created a new identity" in first.err
    assert cli.main(["identity", "show", "--data-dir", node]) == 0
    second = capsys.readouterr()
    assert cli.main(["identity", "create", "--data-dir", node]) == 0  # never replaces an existing one
    third = capsys.readouterr()
    assert first.out == second.out == third.out and "created" not in second.err + third.err
    lines = dict(line.split(":", 1) for line in first.out.splitlines())
    public_key, address = lines["public key"].strip(), lines["address"].strip()
    assert address == str(derive_address(bytes.fromhex(public_key)))
    assert lines["path"].strip() == str(tmp_path / "node" / IDENTITY_FILENAME)


def test_identity_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = str(tmp_path / "node")
    assert cli.main(["identity", "create", "--data-dir", node, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main(["identity", "show", "--data-dir", node, "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert set(first) == {"public_key", "address", "path", "created"}
    assert (first["created"], second["created"]) == (True, False)
    assert first["address"] == second["address"] == str(derive_address(bytes.fromhex(first["public_key"])))
    assert first["path"] == str(tmp_path / "node" / IDENTITY_FILENAME)


def test_identity_uses_data_dir_from_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "n.toml"
    path.write_text('data_dir = "from-file"\n')
    assert cli.main(["identity", "create", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "from-file" / IDENTITY_FILENAME)


def test_identity_default_data_dir_follows_xdg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["identity", "create", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "xdg-data" / "axiomnet" / IDENTITY_FILENAME)


def test_identity_show_insecure_key_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["identity", "create", "--data-dir", str(tmp_path / "node")]) == 0
    capsys.readouterr()
    os.chmod(tmp_path / "node" / IDENTITY_FILENAME, 0o644)
    assert cli.main(["identity", "show", "--data-dir", str(tmp_path / "node")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("axiomnet: identity error: ") and "chmod 600" in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


# --- axiomnet config check / genconf ------------------------------------------------------------------
def test_genconf_passes_config_check_and_gives_the_defaults(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["genconf"]) == 0
    text = capsys.readouterr().out
    assert text.count("\n# ") > 10  # commented
    path = tmp_path / "generated.toml"
    path.write_text(text)
    assert cli.main(["config", "check", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "configuration OK" in captured.err
    assert load_config(config_file=path, env={}) == load_config(env={})


def test_config_check_prints_effective_settings_that_read_back_the_same(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'listen = "0.0.0.0:9000"\npeers = ["192.0.2.7:7443#{KEY_A}", "192.0.2.8:7443"]\n'
                    'tun = false\nmetrics_listen = 9100\n')
    monkeypatch.setenv("AXIOMNET_MTU", "1300")  # the environment is part of the effective settings
    assert cli.main(["config", "check", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert 'listen = "0.0.0.0:9000"' in captured.out and "mtu = 1300" in captured.out
    assert 'metrics_listen = "127.0.0.1:9100"' in captured.out and "tun = false" in captured.out
    assert "peer 192.0.2.8:7443 is not pinned" in captured.err
    effective = tmp_path / "effective.toml"
    effective.write_text(captured.out)
    assert load_config(config_file=effective, env={}) == load_config(config_file=path, env=os.environ)
    assert cli.main(["config", "check", "--config", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["listen_port"] == 9000 and document["peers"][0] == f"192.0.2.7:7443#{KEY_A}"


@pytest.mark.parametrize(("text", "words"), [
    ("mtu = 5\n", "mtu (in"),
    ("peers = [\n", "not valid TOML"),
    ("colour = 'blue'\n", "unknown key 'colour'"),
    ('metrics_listen = "somewhere"\n', "metrics_listen"),
])
def test_config_check_refuses_a_faulty_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   text: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert cli.main(["config", "check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("axiomnet: config error: ") and words in captured.err


# --- axiomnet demo / --version / help -----------------------------------------------------------------------
def test_demo_passes_namespace_to_run_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    module = types.ModuleType("axiomnet.lab.demo")
    module.run_demo = lambda args: seen.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "axiomnet.lab.demo", module)
    assert cli.main(["demo"]) == 0
    assert (seen[0].nodes, seen[0].topology, seen[0].seconds, seen[0].size_mb, seen[0].keep) == (2, "line", 3.0, 5, False)
    assert cli.main(["demo", "--nodes", "4", "--topology", "ring", "--seconds", "0.5", "--size-mb", "2", "--keep"]) == 0
    assert (seen[1].nodes, seen[1].topology, seen[1].seconds, seen[1].size_mb, seen[1].keep) == (4, "ring", 0.5, 2, True)
    assert cli.main(["demo", "--duration", "2"]) == 0  # the older name of --seconds
    assert seen[2].seconds == 2.0


@pytest.mark.parametrize("argv", [["demo", "--seconds", "0"], ["demo", "--size-mb", "-1"], ["demo", "--nodes", "1"],
                                  ["demo", "--nodes", "11"], ["demo", "--topology", "torus"]])
def test_demo_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "must be" in err or "invalid choice" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"axiomnet {__version__}"


def test_help_has_examples_and_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("examples:", "axiomnet daemon", "identity show", "config check", "genconf", "peers add"):
        assert text in out
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().err
    assert cli.main(["peers"]) == 2 and "choose an action" in capsys.readouterr().err


# --- the fake admin socket -------------------------------------------------------------------------------
class FakeAdmin:
    """A one-shot-per-connection admin server on a Unix socket, answering with ``reply(request)``."""

    def __init__(self, path: Path, reply: Callable[[bytes], bytes | None]) -> None:
        self.path = path
        self.reply = reply
        self.requests: list[bytes] = []
        path.parent.mkdir(parents=True, exist_ok=True)
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
def admin(tmp_path: Path) -> Iterator[Callable[..., FakeAdmin]]:
    servers: list[FakeAdmin] = []

    def start(reply: Callable[[bytes], bytes | None], path: Path | None = None) -> FakeAdmin:
        server = FakeAdmin(path or tmp_path / "admin.sock", reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def answer(document: dict[str, Any]) -> Callable[[bytes], bytes]:
    return lambda request: json.dumps(document).encode() + b"\n"


# --- axiomnet peers ------------------------------------------------------------------------------------------
def test_peers_list_add_remove_through_the_admin_socket(admin: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    replies = iter([
        {"ok": True, "peers": ["192.0.2.7:7443"]},
        {"ok": True, "added": True, "peers": ["192.0.2.7:7443", f"192.0.2.9:7443#{KEY_A}"]},
        {"ok": True, "removed": 1, "sessions_closed": 1, "peers": [f"192.0.2.9:7443#{KEY_A}"]},
    ])
    server = admin(lambda request: json.dumps(next(replies)).encode() + b"\n")
    sock = ["--admin-socket", str(tmp_path / "admin.sock")]
    assert cli.main(["peers", "list", *sock]) == 0
    assert capsys.readouterr().out == "static peers (1):\n  192.0.2.7:7443\n"
    assert cli.main(["peers", "add", f"192.0.2.9:7443#{KEY_A}", *sock]) == 0
    assert capsys.readouterr().out.startswith(f"added 192.0.2.9:7443#{KEY_A}\nstatic peers (2):")
    assert cli.main(["peers", "remove", "192.0.2.7:7443", *sock]) == 0
    assert "removed 192.0.2.7:7443 (1 session(s) closed)" in capsys.readouterr().out
    assert [json.loads(r) for r in server.requests] == [
        {"cmd": "peers"}, {"cmd": "peer-add", "peer": f"192.0.2.9:7443#{KEY_A}"},
        {"cmd": "peer-remove", "peer": "192.0.2.7:7443"}]


def test_peers_add_bad_peer_is_a_usage_error_and_no_daemon_is_exit_1(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["peers", "add", "192.0.2.9", "--admin-socket", str(tmp_path / "x.sock")]) == 2
    assert "config error: peer" in capsys.readouterr().err
    assert cli.main(["peers", "list", "--admin-socket", str(tmp_path / "x.sock")]) == 1
    assert "no daemon running at" in capsys.readouterr().err


def test_peers_daemon_error_is_shown(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin(answer({"error": "permission denied: uid 1000 may not use this admin socket"}))
    assert cli.main(["peers", "list", "--admin-socket", str(tmp_path / "admin.sock")]) == 1
    assert "permission denied: uid 1000" in capsys.readouterr().err


# --- axiomnet-inspect ---------------------------------------------------------------------------------------
def inspect(tmp_path: Path, *argv: str) -> int:
    return cli.inspect_main([*argv, "--admin-socket", str(tmp_path / "admin.sock")])


def test_inspect_prints_tables(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = admin(answer(STATE))
    assert inspect(tmp_path) == 0
    out = capsys.readouterr().out
    assert server.requests == [b'{"cmd": "state"}\n']
    for text in ("SELF", "fc12:3456::1", "cd" * 32, "/2 under root " + "ee" * 8, "[::]:7443", "axn0", "12.5s",
                 "PEERS (1)", PEER_KEY[:16], "fcaa::2", "192.0.2.7:7443", "/2/1", "0.125", "0.8s", "RTT MS",
                 "TREE\n", "77", "LOOKUPS (1 cached, 1 pending)", "fcbb::3", "/2/1/4", "42.0s", "fccc::4",
                 "SESSIONS (1)", "established", "initiator", "4242", "4343", "987654", "123456",
                 "decryption_failed=2 replayed_packet=5", "ACTORS (1)", "SessionActor-1", "MAILBOX",
                 "HEALTH HEALTHY", "ROUTES\n  no routes yet", "END-TO-END SESSIONS\n  no end-to-end sessions"):
        assert text in out, text
    actor_line = next(line for line in out.splitlines() if "SessionActor-1" in line)
    assert actor_line.split() == ["SessionActor-1", "yes", "2", "5", "yes"]


def test_inspect_renders_tree_routes_and_lookups_the_daemon_reports(admin: Any, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    state = {**STATE, "routes": [{"address": "fcaa::2", "coords": [3, 1], "expires_in": 12.5}],
             "e2e": [{"address": "fcaa::2", "peer": PEER_KEY, "state": "established", "rx_packets": 5}]}
    admin(answer(state))
    assert inspect(tmp_path, "tree") == 0
    tree = capsys.readouterr().out.splitlines()
    assert tree[0] == "TREE" and tree[1].split() == ["root", "ee" * 8] and tree[3].split() == ["is_root", "no"]
    assert tree[4].split() == ["parent", PEER_KEY[:16]] and tree[6].split() == ["coords", "/2"]
    assert inspect(tmp_path, "routes") == 0
    routes = capsys.readouterr().out
    assert "ROUTES (1)" in routes and "EXPIRES IN" in routes and "fcaa::2  /3/1    12.5s" in routes
    assert inspect(tmp_path, "lookups") == 0
    lookups = capsys.readouterr().out
    assert "LOOKUPS (1 cached, 1 pending)" in lookups and "fccc::4" in lookups and "(looking up)" in lookups
    assert inspect(tmp_path, "e2e") == 0
    e2e = capsys.readouterr().out
    assert "END-TO-END SESSIONS (1)" in e2e and PEER_KEY[:16] in e2e and "established" in e2e


def test_inspect_json_all_has_every_section(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    admin(answer(STATE))
    monkeypatch.setenv("AXIOMNET_ADMIN_SOCKET", str(tmp_path / "admin.sock"))  # found via the environment
    assert cli.inspect_main(["--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    for section in ("self", "peers", "sessions", "e2e", "tree", "routes", "lookups", "actors", "health"):
        assert section in document
    assert document["routes"] is None and document["peers"] == STATE["peers"]
    assert cli.inspect_main(["--json", "sessions"]) == 0
    assert json.loads(capsys.readouterr().out) == STATE["sessions"]


def test_inspect_empty_tables(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin(answer({"self": {}, "peers": [], "sessions": [], "actors": []}))
    assert inspect(tmp_path) == 0
    out = capsys.readouterr().out
    assert out.count("(none)") == 3 and "the daemon reports no health" in out and "no tree yet" in out


def test_inspect_metrics_prints_the_exposition_and_json(admin: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    text = render(STATE)
    server = admin(answer({"metrics": text}))
    assert inspect(tmp_path, "metrics") == 0
    out = capsys.readouterr().out
    assert json.loads(server.requests[0]) == {"cmd": "metrics"}
    assert len(list(text_string_to_metric_families(out))) >= 12
    assert inspect(tmp_path, "--json", "metrics") == 0
    families = json.loads(capsys.readouterr().out)
    dropped = next(f for f in families if f["name"] == "axiomnet_dropped")
    assert {"name": "axiomnet_dropped_total", "labels": {"actor": "router", "reason": "no_route"}, "value": 3.0} \
        in dropped["samples"]


@pytest.mark.parametrize(("status", "code", "liveness_code"), [("healthy", 0, 0), ("degraded", 1, 0),
                                                               ("unhealthy", 2, 1)])
def test_inspect_health_exit_codes(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   status: str, code: int, liveness_code: int) -> None:
    reasons = [] if status == "healthy" else ["actor heartbeat is not running (restarts: 1)"]
    admin(answer({**STATE, "health": {"status": status, "code": code, "reasons": reasons}}))
    assert inspect(tmp_path, "health") == code
    out = capsys.readouterr().out
    assert out.splitlines()[0] == status and all(reason in out for reason in reasons)
    assert inspect(tmp_path, "health", "--liveness") == liveness_code
    capsys.readouterr()
    assert inspect(tmp_path, "--json", "health") == code
    assert json.loads(capsys.readouterr().out)["status"] == status


def test_inspect_health_of_a_daemon_without_health_is_judged_here(admin: Any, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    state = {key: value for key, value in STATE.items() if key != "health"}
    state["actors"] = [{"name": "router", "alive": False, "restarts": 1, "mailbox": 0}]
    admin(answer(state))
    assert inspect(tmp_path, "health") == 2
    assert "actor router is not running" in capsys.readouterr().out


def test_inspect_health_unreachable_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect(tmp_path, "health") == 2
    assert "no daemon running" in capsys.readouterr().err
    assert inspect(tmp_path, "health", "--liveness") == 1
    capsys.readouterr()
    assert inspect(tmp_path, "--json", "health") == 2
    assert json.loads(capsys.readouterr().out)["status"] == "unreachable"


def test_inspect_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "admin.sock"
    assert cli.inspect_main(["--admin-socket", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"axiomnet-inspect: no daemon running at {path} (start one with `axiomnet daemon`)\n"
    assert captured.out == ""


def test_inspect_without_socket_option_also_looks_where_a_root_daemon_listens(
        admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "xdg-run" / "axiomnet" / "admin.sock"
    assert cli.inspect_main([]) == 2
    err = capsys.readouterr().err
    assert f"looked at {own} and {admin_client.ROOT_ADMIN_SOCKET}" in err
    server = admin(answer(STATE), path=admin_client.ROOT_ADMIN_SOCKET)
    assert cli.inspect_main(["self"]) == 0
    assert "fc12:3456::1" in capsys.readouterr().out and server.requests


def test_inspect_stale_socket_file_is_no_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "admin.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: like a daemon that died and left its socket
    try:
        assert cli.inspect_main(["--admin-socket", str(path)]) == 2
    finally:
        dead.close()
    assert "no daemon running at" in capsys.readouterr().err


def test_inspect_timeout(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin(lambda request: None)
    assert inspect(tmp_path, "--timeout", "0.3") == 2
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
    monkeypatch.setattr(admin_client, "ADMIN_REPLY_MAX", 1024)
    admin(lambda request: reply)
    assert inspect(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("axiomnet-inspect: ") and words in err and "Traceback" not in err


def test_inspect_config_error_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.inspect_main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("axiomnet-inspect: config error: ")


def test_inspect_unknown_section_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.inspect_main(["neighbours"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_inspect_map_writes_an_svg_in_the_current_directory_and_prints_its_path(
        admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import xml.etree.ElementTree as ET

    server = admin(answer(STATE))
    monkeypatch.chdir(tmp_path)
    assert inspect(tmp_path, "map") == 0
    written = tmp_path / f"axiomnet-map-{'cd' * 4}.svg"
    assert capsys.readouterr().out == f"{written}\n" and server.requests == [b'{"cmd": "state"}\n']
    addresses = {e.get("data-address") for e in ET.parse(written).getroot().iter() if e.get("data-address")}
    assert addresses == {"fc12:3456::1", "fcaa::2", "fccc::4"}  # itself, its peer, its lookup in flight (listed)
    assert inspect(tmp_path, "map", "-o", "-") == 0
    assert ET.fromstring(capsys.readouterr().out).get("data-nodes") == "3"  # + the root, known only by its key
    assert inspect(tmp_path, "map", "--output", str(tmp_path / "n.svg")) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "n.svg") and (tmp_path / "n.svg").stat().st_size > 0


def test_inspect_map_errors(admin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect(tmp_path, "peers", "-o", "x.svg") == 2
    assert "-o/--output is for the map only" in capsys.readouterr().err
    assert inspect(tmp_path, "map") == 2  # no daemon
    assert "no daemon running at" in capsys.readouterr().err
    admin(answer({**STATE, "self": {"address": "fc12:3456::1"}}))
    assert inspect(tmp_path, "map", "-o", "-") == 2
    assert "cannot draw the map: the daemon reports no tree coordinates" in capsys.readouterr().err
    (tmp_path / "admin.sock").unlink()
    admin(answer(STATE))
    assert inspect(tmp_path, "map", "-o", str(tmp_path / "no-such-dir" / "m.svg")) == 1
    assert "cannot write the map to" in capsys.readouterr().err


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


def test_daemon_front_door_flags(fake_node: list[tuple[Config, Any]]) -> None:
    assert cli.main(["daemon", "--no-tun", "--allowed-key", KEY_A, "--allowed-key", KEY_A, "--no-discoverable"]) == 0
    config = fake_node[-1][0]
    assert config.allowed_keys == frozenset({bytes.fromhex(KEY_A)}) and config.discoverable is False
    assert cli.main(["daemon", "--no-tun"]) == 0
    assert fake_node[-1][0].allowed_keys is None and fake_node[-1][0].discoverable is True
