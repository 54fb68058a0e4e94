"""Two real daemons in two network namespaces joined by a veth: traffic, shutdown, restart, crashes.

Run as root (CI is); each test builds its own namespaces with names unique to the run and removes them,
and every daemon it starts, whatever happens.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from axiomnet.lab import daemons, netns, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REACH_TIMEOUT = 15.0


def wait_established(daemon: daemons.DaemonProcess, timeout: float = REACH_TIMEOUT) -> bool:
    return netns.wait_until(lambda: daemon.established_sessions() >= 1, timeout, interval=0.2)


def assert_reachable(a: daemons.DaemonProcess, b: daemons.DaemonProcess) -> None:
    took = daemons.wait_overlay_reachable(a, b, timeout=REACH_TIMEOUT)
    assert took is not None, f"{b.address} unreachable from {a.name}\n{a.log_tail(30)}\n{b.log_tail(30)}"


def tun_exists(daemon: daemons.DaemonProcess) -> bool:
    return daemon.ns.link_exists(daemon.tun)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


FAULTS = ["--fault-injection"]  # the flag half of fault injection; the `faults` fixture sets the environment half


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons started in this test with FAULTS accept inject-fault on their admin socket."""
    monkeypatch.setenv("AXIOMNET_FAULT_INJECTION", "1")


def test_two_daemons_ping_and_transfer_20mb_intact(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    result = traffic.ping(a.ns, b.address, count=5, interval=0.2)
    assert result.received == 5, result.output
    transfer = traffic.tcp_transfer(b.ns, a.ns, b.address, 20 * 1024 * 1024, timeout=120.0)
    assert transfer.ok, transfer.error
    assert transfer.received_bytes == 20 * 1024 * 1024
    assert transfer.received_sha256 == transfer.sent_sha256


def test_inspect_shows_both_sessions_established(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    for me, other in ((a, b), (b, a)):
        assert wait_established(me)
        state = me.inspect()
        assert state["self"]["address"] == me.address
        (session,) = state["sessions"]
        assert session["state"] == "established"
        assert session["peer"] == other.inspect()["self"]["public_key"]
        assert {row["name"] for row in state["actors"]} >= {"socket", "router", "tun", "peers", "heartbeat", "admin"}
        assert all(row["alive"] for row in state["actors"])
        text = me.inspect_text()
        assert "established" in text and other.address in text
        assert me.admin_socket.stat().st_mode & 0o777 == 0o600


def test_sigterm_without_any_traffic_exits_0_within_5s_and_removes_tun(pair, workdir):
    # A lone daemon with no peers: no packet ever arrives (seed failures #1 and #9).
    d = daemons.start_daemon(pair.a, name="lone", listen=f"{pair.ip_a}:7443", peers=[], data_dir=workdir / "lone",
                           admin_socket=workdir / "lone.sock", tun=pair.a.tun_name)
    assert netns.wait_until(lambda: tun_exists(d) and d.admin_socket.exists(), 10.0), d.log_tail(30)
    time.sleep(1.0)  # let the readers settle into their blocking waits
    started = time.monotonic()
    code = d.stop(timeout=10.0)
    took = time.monotonic() - started
    assert code == 0, d.log_tail(30)
    assert not d.killed
    assert took < 5.0
    assert not tun_exists(d)
    assert not d.admin_socket.exists()
    log = d.log()
    assert "stopped cleanly" in log
    # the heartbeat actor (and every other) stopped before the process exited
    assert "did not stop" not in log


def test_ipv6_underlay_carries_the_overlay(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir, ipv6_underlay=True)
    assert_reachable(a, b)
    assert a.inspect()["sessions"][0]["endpoint"].startswith("[2001:2::")


def test_second_signal_exits_at_once(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    a.popen.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # the first signal's orderly shutdown takes longer than this (readers wake every 0.5 s)
    a.popen.send_signal(signal.SIGTERM)
    assert a.popen.wait(timeout=5) == 143
    assert "second signal" in a.log()
    assert netns.wait_until(lambda: not tun_exists(a), 5.0)  # the kernel removes the TUN with the process


def test_restarted_daemon_keeps_its_address_and_traffic_resumes(pair, workdir):
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    address_before = b.address
    assert b.stop() == 0
    b2 = daemons.start_daemon(pair.b, name="node-b-again", listen=b.listen, peers=[f"{pair.ip_a}:7443"],
                            data_dir=b.data_dir, admin_socket=b.admin_socket, tun=b.tun)
    assert b2.address == address_before
    assert_reachable(a, b2)
    assert_reachable(b2, a)


@pytest.mark.parametrize("first", ["a", "b"])
def test_first_ping_comes_soon_after_the_later_daemon_starts(pair, workdir, first):
    """Whichever node starts first keeps re-dialling fast enough that the overlay is up right away."""
    dirs = {n: workdir / f"node-{n}" for n in "ab"}
    ips = {"a": pair.ip_a, "b": pair.ip_b}
    nss = {"a": pair.a, "b": pair.b}
    second = "b" if first == "a" else "a"

    def start(n: str, other: str) -> daemons.DaemonProcess:
        return daemons.start_daemon(nss[n], name=f"node-{n}", listen=f"{ips[n]}:7443", peers=[f"{ips[other]}:7443"],
                                  data_dir=dirs[n], admin_socket=workdir / f"{n}.sock", tun=nss[n].tun_name)

    early = start(first, second)
    assert netns.wait_until(lambda: tun_exists(early), 10.0)
    time.sleep(4.0)  # the early node has been dialling into the void for a while
    t0 = time.monotonic()
    late = start(second, first)
    took = daemons.wait_overlay_reachable(early, late, timeout=REACH_TIMEOUT)
    assert took is not None, late.log_tail(30)
    since_start = time.monotonic() - t0
    # The late daemon needs ~0.5 s just to start Python; 60 s (Yggdrasil's refused-peer retry) would fail.
    assert since_start < 3.0, f"first ping {since_start:.2f} s after the later start"


def test_session_actor_crash_is_restarted_and_ping_works_again(pair, workdir, faults):
    a, b = daemons.start_daemon_pair(pair, workdir, extra_args=FAULTS)
    assert_reachable(a, b)
    assert a.admin({"cmd": "inject-fault", "actor": "session"}) == {"ok": True, "actor": "session"}
    assert netns.wait_until(lambda: "session actor for" in a.log(), 5.0)
    assert_reachable(a, b)
    assert wait_established(a)
    assert a.running() and b.running()
    assert "session to" in a.log() and "restarted" in a.log()


def test_router_actor_crash_is_restarted_and_ping_works_again(pair, workdir, faults):
    a, b = daemons.start_daemon_pair(pair, workdir, extra_args=FAULTS)
    assert_reachable(a, b)
    assert a.admin({"cmd": "inject-fault", "actor": "router"}) == {"ok": True, "actor": "router"}
    assert netns.wait_until(lambda: "actor router restarted" in a.log(), 10.0), a.log_tail(30)
    assert_reachable(a, b)
    state = a.inspect()
    router_row = next(r for r in state["actors"] if r["name"] == "router")
    assert router_row["alive"] and router_row["restarts"] == 1
    assert a.running()


def test_too_many_crashes_make_the_daemon_exit_non_zero(pair, workdir, faults):
    a, b = daemons.start_daemon_pair(pair, workdir, extra_args=FAULTS)
    assert_reachable(a, b)
    deadline = time.monotonic() + 30.0
    while a.running() and time.monotonic() < deadline:
        try:
            a.admin({"cmd": "inject-fault", "actor": "router"})
        except OSError:
            pass  # the admin socket goes away as the daemon gives up
        time.sleep(0.3)
    assert not a.running(), "daemon kept running through a crash loop"
    a.popen.wait(timeout=10)
    assert a.popen.returncode == 1, a.log_tail(30)
    assert "giving up" in a.log()
    assert not tun_exists(a)


def test_fault_injection_is_refused_unless_enabled(pair, workdir, monkeypatch):
    monkeypatch.delenv("AXIOMNET_FAULT_INJECTION", raising=False)
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    reply = a.admin({"cmd": "inject-fault", "actor": "router"})
    assert "disabled" in reply["error"]
    assert a.running()


def test_fault_injection_needs_the_flag_as_well_as_the_environment(pair, workdir, faults):
    a, b = daemons.start_daemon_pair(pair, workdir)  # the environment half only
    assert_reachable(a, b)
    reply = a.admin({"cmd": "inject-fault", "actor": "router"})
    assert "--fault-injection" in reply["error"]
    assert "fault injection stays off" in a.log()
    assert a.running()


def test_relay_only_node_without_tun_still_peers(pair, workdir):
    a = daemons.start_daemon(pair.a, name="relay", listen=f"{pair.ip_a}:7443", peers=[f"{pair.ip_b}:7443"],
                           data_dir=workdir / "relay", admin_socket=workdir / "relay.sock", tun=None)
    b = daemons.start_daemon(pair.b, name="full", listen=f"{pair.ip_b}:7443", peers=[f"{pair.ip_a}:7443"],
                           data_dir=workdir / "full", admin_socket=workdir / "full.sock", tun=pair.b.tun_name)
    assert wait_established(a) and wait_established(b)
    assert not pair.a.link_exists(pair.a.tun_name)
    assert a.log().count("relay-only") == 1
    assert a.inspect()["self"]["tun"] is None
