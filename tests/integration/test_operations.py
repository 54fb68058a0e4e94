"""Operating real daemons in namespaces: inspect (tables and JSON), metrics (admin socket and HTTP), health
exit codes, `axiomnet peers add/remove`, SIGHUP with a changed and a broken config and a changed allowed_keys,
systemd notification."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from axiomnet.lab import daemons, processes, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REACH_TIMEOUT = 15.0
SECTIONS = ("self", "peers", "sessions", "tree", "routes", "lookups", "actors", "health")
_INSPECT = "import sys; from axiomnet.ops.cli import inspect_main; sys.exit(inspect_main())"
_AXIOMNET = "import sys; from axiomnet.ops.cli import main; sys.exit(main())"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def cli(node: daemons.DaemonProcess, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run axiomnet-inspect or axiomnet (``program``) against ``node``'s admin socket, in its namespace."""
    return node.ns.exec([sys.executable, "-c", program, *args, "--admin-socket", str(node.admin_socket)],
                        timeout=30.0)


def reachable(a: daemons.DaemonProcess, b: daemons.DaemonProcess) -> None:
    took = daemons.wait_overlay_reachable(a, b, timeout=REACH_TIMEOUT)
    assert took is not None, f"{b.address} unreachable from {a.name}\n{a.log_tail(30)}\n{b.log_tail(30)}"


def established_with(node: daemons.DaemonProcess, key: str) -> bool:
    return any(s.get("peer") == key and s.get("state") == "established" for s in node.inspect()["sessions"])


def test_inspect_tables_and_json_of_a_live_daemon(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir)
    reachable(a, b)
    state = a.inspect()
    for section in SECTIONS:
        assert section in state
    assert state["health"]["status"] == "healthy" and state["unanswered"] == []
    key_b = b.inspect()["self"]["public_key"]
    assert processes.wait_until(lambda: established_with(a, key_b), REACH_TIMEOUT)
    proc = cli(a, _INSPECT)
    assert proc.returncode == 0, proc.stderr
    actors = f"ACTORS ({len(state['actors'])})"
    for title in ("SELF", "PEERS (1)", "SESSIONS (1)", "TREE", "ROUTES", "LOOKUPS", actors, "HEALTH HEALTHY"):
        assert title in proc.stdout, title
    assert b.address in proc.stdout and key_b[:16] in proc.stdout
    for section in SECTIONS:
        proc = cli(a, _INSPECT, "--json", section)
        assert proc.returncode == 0, proc.stderr
        json.loads(proc.stdout)  # every section is valid JSON (null for one the daemon does not report)
    peers = json.loads(cli(a, _INSPECT, "--json", "peers").stdout)
    assert [p["public_key"] for p in peers] == [key_b] and peers[0]["endpoint"] == f"{pair.ip_b}:7443"


def test_metrics_on_the_admin_socket_and_over_http_count_drops(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir, extra_args=["--metrics-listen", "127.0.0.1:9473"])
    reachable(a, b)
    # Hostile datagrams are dropped by the front door: the drops must show as metrics, not only in DEBUG logs.
    sent = traffic.flood_hostile_datagrams(pair.b, pair.ip_a, 7443, count=300, seconds=10.0, seed=3)
    assert sent == 300
    proc = cli(a, _INSPECT, "metrics")
    assert proc.returncode == 0, proc.stderr
    families = {f.name: f for f in text_string_to_metric_families(proc.stdout)}
    assert len(families) >= 12, sorted(families)
    drops = {tuple(sorted(s.labels.items())): s.value for s in families["axiomnet_dropped"].samples}
    assert sum(value for labels, value in drops.items() if ("actor", "peers") in labels) > 0, drops
    assert families["axiomnet_sessions"].samples
    # The same exposition over HTTP, on loopback inside A's namespace.
    fetch = a.ns.exec([sys.executable, "-c", "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                       "'http://127.0.0.1:9473/metrics', timeout=10).read().decode())"], timeout=30.0)
    assert fetch.returncode == 0, fetch.stderr
    assert len(list(text_string_to_metric_families(fetch.stdout))) >= 12
    assert "metrics on http://127.0.0.1:9473/metrics" in a.log()


def test_health_exit_codes_of_a_live_and_a_stopped_daemon(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir)
    reachable(a, b)
    proc = cli(a, _INSPECT, "health")
    assert (proc.returncode, proc.stdout.strip()) == (0, "healthy"), proc.stdout + proc.stderr
    assert a.stop() == 0
    proc = cli(a, _INSPECT, "health")
    assert proc.returncode == 2 and "no daemon running" in proc.stderr
    assert cli(a, _INSPECT, "health", "--liveness").returncode == 1


def test_peers_add_makes_a_peer_reachable_and_remove_drops_it(pair, workdir):
    a = daemons.start_daemon(pair.a, name="a", listen=f"{pair.ip_a}:7443", peers=[], data_dir=workdir / "a",
                             admin_socket=workdir / "a.sock", tun=pair.a.tun_name)
    b = daemons.start_daemon(pair.b, name="b", listen=f"{pair.ip_b}:7443", peers=[], data_dir=workdir / "b",
                             admin_socket=workdir / "b.sock", tun=pair.b.tun_name)
    assert processes.wait_until(lambda: a.admin_socket.exists() and b.admin_socket.exists(), 15.0)
    assert not traffic.ping(pair.a, b.address, count=1, timeout=2.0).ok  # no peering yet
    key_b = b.inspect()["self"]["public_key"]
    proc = cli(a, _AXIOMNET, "peers", "add", f"{pair.ip_b}:7443#{key_b}")
    assert proc.returncode == 0 and proc.stdout.startswith(f"added {pair.ip_b}:7443#{key_b}"), proc.stderr
    reachable(a, b)
    listed = cli(a, _AXIOMNET, "peers", "list")
    assert f"{pair.ip_b}:7443#{key_b}" in listed.stdout
    proc = cli(a, _AXIOMNET, "peers", "remove", f"{pair.ip_b}:7443")
    assert proc.returncode == 0 and "removed" in proc.stdout and "1 session(s) closed" in proc.stdout
    assert not any(s.get("peer") == key_b for s in a.inspect()["sessions"])
    assert "static peers (0)" in cli(a, _AXIOMNET, "peers", "list").stdout
    assert not traffic.ping(pair.a, b.address, count=2, interval=0.2, timeout=2.0).ok


def test_sighup_applies_a_changed_config_and_refuses_a_broken_one(pair, workdir):
    config = workdir / "a.toml"
    config.write_text("peers = []\n")
    a = daemons.start_daemon(pair.a, name="a", listen=f"{pair.ip_a}:7443", peers=[], data_dir=workdir / "a",
                             admin_socket=workdir / "a.sock", tun=pair.a.tun_name, extra_args=["--config", str(config)])
    b = daemons.start_daemon(pair.b, name="b", listen=f"{pair.ip_b}:7443", peers=[], data_dir=workdir / "b",
                             admin_socket=workdir / "b.sock", tun=pair.b.tun_name)
    assert processes.wait_until(lambda: a.admin_socket.exists() and b.admin_socket.exists(), 15.0)
    config.write_text(f'peers = ["{pair.ip_b}:7443"]\n')
    a.popen.send_signal(signal.SIGHUP)
    reachable(a, b)
    assert "SIGHUP: configuration re-read: 1 static peer(s), 1 change(s)" in a.log()

    config.write_text(f'peers = ["{pair.ip_b}:7443"\nmtu = 12\n')  # broken: the running settings must stay
    a.popen.send_signal(signal.SIGHUP)
    assert processes.wait_until(lambda: "SIGHUP: configuration refused" in a.log(), 10.0), a.log_tail(20)
    assert a.running()
    reachable(a, b)
    assert json.loads(cli(a, _AXIOMNET, "peers", "list", "--json").stdout)["peers"] == [f"{pair.ip_b}:7443"]


def test_sighup_revokes_and_readmits_a_key_through_allowed_keys(pair, workdir):
    config = workdir / "a.toml"
    config.write_text(f'peers = ["{pair.ip_b}:7443"]\n')  # b's key is learned, not pinned
    a = daemons.start_daemon(pair.a, name="a", listen=f"{pair.ip_a}:7443", peers=[], data_dir=workdir / "a",
                             admin_socket=workdir / "a.sock", tun=pair.a.tun_name, extra_args=["--config", str(config)])
    b = daemons.start_daemon(pair.b, name="b", listen=f"{pair.ip_b}:7443", peers=[], data_dir=workdir / "b",
                             admin_socket=workdir / "b.sock", tun=pair.b.tun_name)
    reachable(a, b)
    key_b = b.inspect()["self"]["public_key"]

    config.write_text(f'peers = ["{pair.ip_b}:7443"]\nallowed_keys = []\n')  # nobody but pinned peers
    a.popen.send_signal(signal.SIGHUP)
    assert processes.wait_until(lambda: "allowed_keys now 0 key(s) and the pinned peers; 1 session(s) closed" in a.log(),
                            10.0), a.log_tail(20)
    assert processes.wait_until(lambda: not established_with(a, key_b), 10.0)
    assert processes.wait_until(lambda: "allowed_keys does not list" in a.log(), 15.0), a.log_tail(20)  # redial refused
    assert not established_with(a, key_b)
    assert not traffic.ping(pair.a, b.address, count=2, interval=0.2, timeout=2.0).ok

    config.write_text(f'peers = ["{pair.ip_b}:7443"]\nallowed_keys = ["{key_b}"]\n')
    a.popen.send_signal(signal.SIGHUP)
    assert processes.wait_until(lambda: "allowed_keys now 1 key(s)" in a.log(), 10.0), a.log_tail(20)
    reachable(a, b)  # dialled again at once, not after the refusals' backoff
    assert a.running() and b.running()


def test_the_daemon_tells_systemd_it_is_ready_alive_and_stopping(pair, workdir, monkeypatch):
    path = workdir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(20.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # systemd's WatchdogSec=2s: WATCHDOG=1 every second
        a = daemons.start_daemon(pair.a, name="a", listen=f"{pair.ip_a}:7443", peers=[], data_dir=workdir / "a",
                                 admin_socket=workdir / "a.sock", tun=pair.a.tun_name)
        ready = listener.recv(4096).decode()
        assert ready.split("\n")[0] == "READY=1" and f"STATUS=up: {a.address}" in ready
        assert a.admin_socket.exists()  # READY comes once the actors (the admin socket among them) run
        assert [listener.recv(4096) for _ in range(2)] == [b"WATCHDOG=1"] * 2
        assert a.stop() == 0
        messages = []
        while (message := listener.recv(4096)) != b"STOPPING=1":
            messages.append(message)
        assert set(messages) <= {b"WATCHDOG=1"}
