"""Chaos scenarios of the safety analysis against real daemons in namespaces (sized for CI).

A longer soak of the same scenarios: tools/chaos.py --rounds N.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actors import netns
from tests.integration.test_daemon import assert_reachable

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def test_partition_is_detected_logged_and_healed(pair, workdir):
    """Seed chaos 'inject network partition': the node notices, logs it, keeps running, and recovers."""
    a, b = netns.start_daemon_pair(pair, workdir)
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


FLOOD_SCRIPT = r"""
import os, random, socket, struct, sys, time
host, port, count, seconds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.monotonic() + seconds
sent = 0
while sent < count and time.monotonic() < deadline:
    kind = rng.random()
    if kind < 0.3:       # random bytes of random length
        data = os.urandom(rng.randrange(0, 1500))
    elif kind < 0.6:     # a well-formed handshake initiation from a 'new' initiator (costs state if unguarded)
        data = struct.pack(">IIQ", 0, (1 << 28) | (1 << 24), 0) + struct.pack(">I", rng.randrange(1, 1 << 24)) \
            + bytes(16) + os.urandom(32)
    else:                # transport header with a random receiver index, a huge counter and garbage
        data = struct.pack(">IIQ", 0, (1 << 28) | (5 << 24) | rng.randrange(1, 1 << 24), rng.randrange(1 << 63)) \
            + os.urandom(rng.randrange(16, 1400))
    try:
        s.sendto(data, (host, port))
    except OSError:
        pass
    sent += 1
print(sent)
"""


def test_flood_of_malformed_datagrams_leaves_the_node_up_and_bounded(pair, workdir):
    """Seed chaos 'send malformed packets' and 'memory pressure', against the running daemon."""
    a, b = netns.start_daemon_pair(pair, workdir)
    assert_reachable(a, b)
    rss_before = a.memory_kib()["VmRSS"]
    proc = pair.b.exec([sys.executable, "-c", FLOOD_SCRIPT, pair.ip_a, "7443", "60000", "20", "7"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 10000
    assert a.running()
    assert_reachable(b, a)
    state = a.inspect()
    assert state["counters"]["peers"]["pending_handshakes"] <= 1024
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
    netns.overlay_address(data_dir)  # create the identity first, so the daemon's own start is what runs short
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
