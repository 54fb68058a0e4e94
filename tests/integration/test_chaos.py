"""Chaos scenarios of the safety analysis against real daemons in namespaces (sized for CI).

A longer soak of the same scenarios: tools/chaos.py --rounds N.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from axiomnet.lab import daemons, netns, traffic
from tests.integration.test_daemon import assert_reachable

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def test_partition_is_detected_logged_and_healed(pair, workdir):
    """Seed chaos 'inject network partition': the node notices, logs it, keeps running, and recovers."""
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    pair.a.ip("link", "set", "dev", pair.link.ifname_a, "down")
    try:
        assert netns.wait_until(lambda: "routes withdrawn" in a.log(), 15.0), a.log_tail(20)
        assert a.running() and b.running()
        peers = a.inspect()["peers"]
        assert peers and not peers[0]["alive"]
    finally:
        pair.a.ip("link", "set", "dev", pair.link.ifname_a, "up")
    assert_reachable(a, b)
    assert_reachable(b, a)




def test_flood_of_malformed_datagrams_leaves_the_node_up_and_bounded(pair, workdir):
    """Seed chaos 'send malformed packets' and 'memory pressure', against the running daemon."""
    a, b = daemons.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    rss_before = a.memory_kib()["VmRSS"]
    sent = traffic.flood_hostile_datagrams(pair.b, pair.ip_a, 7443, count=60000, seconds=20.0, seed=7)
    assert sent > 10000
    assert a.running()
    assert_reachable(b, a)
    state = a.inspect()
    assert state["snapshots"]["peers"]["pending_handshakes"] <= 1024
    assert all(row["alive"] for row in state["actors"])
    rss_after = a.memory_kib()["VmRSS"]
    # Mailboxes and half-open handshakes are bounded: the flood must not leave a large residue behind.
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
    assert "Traceback" not in a.log()


def test_too_few_file_descriptors_fail_with_a_clear_error(pair, workdir):
    """Seed chaos 'exhaust file descriptors': with every descriptor limit from starved to barely enough, the
    daemon either runs and stops cleanly, or exits 1 within seconds naming the cause; never a hang, never a
    leftover TUN device."""
    data_dir = workdir / "fd"
    daemons.overlay_address(data_dir)  # create the identity first, so the daemon's own start is what runs short
    outcomes = {}
    for limit in range(6, 12):
        args = ["prlimit", f"--nofile={limit}", sys.executable, "-m", "axiomnet", "daemon", "--listen",
                f"{pair.ip_a}:7443", "--tun", pair.a.tun_name, "--data-dir", str(data_dir),
                "--admin-socket", str(workdir / "fd.sock")]
        proc = pair.a.popen(args, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=4.0)
        except subprocess.TimeoutExpired:
            proc.terminate()  # it started: it must stop cleanly like any daemon
            proc.wait(timeout=10.0)
            outcomes[limit] = ("ran", proc.returncode)
            assert proc.returncode == 0
        else:
            err = proc.stderr.read()
            outcomes[limit] = ("failed", proc.returncode)
            assert proc.returncode == 1, err[-2000:]
            assert "Too many open files" in err, err[-2000:]
            assert "start-up failed" in err
        finally:
            if proc.stderr:
                proc.stderr.close()
        assert not pair.a.link_exists(pair.a.tun_name), limit
    assert ("failed", 1) in outcomes.values(), outcomes
    assert ("ran", 0) in outcomes.values(), outcomes


def test_chaos_soak_tool_passes_one_round():
    """tools/chaos.py (the long soak) works: one round of every scenario, bounded."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "tools" / "chaos.py"), "--rounds", "1", "--seconds", "120"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "chaos: RESULT PASS" in proc.stdout
    assert proc.stdout.count("  PASS  ") == 6
