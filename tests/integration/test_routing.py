"""Multi-hop routing between real daemons in network namespaces: relays, repair, churn, inspection.

Run as root (CI is); each test builds its own namespaces (unique to the run), one veth per overlay link, and
removes them and every daemon it started, whatever happens.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from axiomnet.lab import daemons, namespaces, processes, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REACH_TIMEOUT = 40.0  # a cold line of six: start-up, handshakes, tree, lookups (measured ~8 s quiet)
# Repair after a relay dies (docs/ROUTING.md "Repair times"): PEER_DEAD_AFTER (3.5 H) to notice it, one
# heartbeat to choose another parent, a few more for the change to reach the source and a path-broken lookup;
# measured 5-8 s here. The deadline leaves room for a loaded machine; the measured time is printed.
REPAIR_DEADLINE = 30.0
LINE_AND_CHORD = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (2, 5)]  # 1-2-3-4-5-6 plus 3-6 (0-based)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def reachable(a: daemons.DaemonProcess, b: daemons.DaemonProcess, timeout: float) -> float | None:
    return daemons.wait_overlay_reachable(a, b, timeout=timeout)


def logs(ds: list[daemons.DaemonProcess]) -> str:
    return "\n".join(f"--- {d.name}\n{d.log_tail(25)}" for d in ds)


def test_six_nodes_relay_ping_and_transfer_then_route_around_a_dead_relay(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, 6, LINE_AND_CHORD, workdir)
        src, dst = ds[0], ds[4]
        assert reachable(src, dst, REACH_TIMEOUT) is not None, logs(ds)
        result = traffic.ping(src.ns, dst.address, count=5, interval=0.2)
        assert result.received == 5, result.output
        transfer = traffic.tcp_transfer(dst.ns, src.ns, dst.address, 2 * 1024 * 1024, timeout=90.0)
        assert transfer.ok and transfer.received_sha256 == transfer.sent_sha256, transfer.error
        # Greedily or along a source route a ring search found (docs/ROUTING.md §4.1): either way, relayed.
        relayed = {d.name: daemons.relayed_packets(d.inspect())
                   for d in ds[1:4]}
        assert relayed["node-1"] > 0 and (relayed["node-2"] > 0 or relayed["node-3"] > 0), relayed

        killed = ds[3]
        signal_at = time.monotonic()
        processes.signal_process(killed.pid, signal.SIGKILL)
        killed.popen.wait(5)
        took = reachable(src, dst, REPAIR_DEADLINE)
        assert took is not None, f"no route around node-3 after {REPAIR_DEADLINE} s\n{logs(ds)}"
        print(f"route around the dead relay found {time.monotonic() - signal_at:.1f} s after SIGKILL")
        result = traffic.ping(src.ns, dst.address, count=5, interval=0.2)
        assert result.received == 5, result.output
        assert daemons.relayed_packets(ds[5].inspect()) > 0
        for d in ds:
            if d is not killed:
                assert d.running(), f"{d.name} exited\n{d.log_tail(40)}"


def test_nodes_join_and_leave_while_traffic_flows(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, 5, [(0, 1), (1, 2), (2, 3), (1, 4), (4, 3)], workdir)
        src, dst = ds[0], ds[3]
        assert reachable(src, dst, REACH_TIMEOUT) is not None, logs(ds)
        pings: list[traffic.PingResult] = []
        pinger = threading.Thread(
            target=lambda: pings.append(traffic.ping(src.ns, dst.address, count=60, interval=0.2, timeout=30.0)))
        pinger.start()
        # Churn: node 4 (a second path) leaves, comes back, and node 2 (the other path) restarts.
        for victim in (ds[4], ds[2]):
            victim.stop()
            time.sleep(0.5)  # let traffic flow on the other path for a moment (not a wait for a condition)
            restarted = daemons.start_daemon(
                victim.ns, name=victim.name + "b", listen="[::]:7443", peers=[], data_dir=victim.data_dir,
                admin_socket=victim.admin_socket, tun=victim.tun)
            ds[ds.index(victim)] = restarted
            assert processes.wait_until(lambda: restarted.established_sessions() >= 1, REACH_TIMEOUT, interval=0.2), \
                logs(ds)
        pinger.join(40)
        assert pings and pings[0].received > 0, "no reply at all while nodes came and went"
        assert reachable(src, dst, REACH_TIMEOUT) is not None, logs(ds)
        for d in ds:
            assert d.running(), f"{d.name} exited\n{d.log_tail(40)}"
            assert "Traceback" not in d.log(), f"{d.name} logged a traceback\n{d.log_tail(60)}"
        # Nothing stuck: no lookup left pending, and no packet circulated (the watermark never had to act on a
        # loop that the hop limit then ended).
        for d in ds:
            state = d.inspect()
            assert processes.wait_until(lambda d=d: not d.inspect()["lookups"]["pending"], 15.0), state["lookups"]
            assert state["counters"]["router"].get("fwd_dropped_hop_limit", 0) == 0


def test_inspect_shows_the_tree_and_the_lookup_cache(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        ds = daemons.start_overlay(lab, 3, [(0, 1), (1, 2)], workdir)
        assert reachable(ds[0], ds[2], REACH_TIMEOUT) is not None, logs(ds)
        # The first reply can come before the tree has settled (a lookup or a ring search needs no agreed root):
        # wait for one root, then read.
        assert processes.wait_until(lambda: len({d.inspect()["tree"]["root"] for d in ds}) == 1, REACH_TIMEOUT,
                                    interval=0.5), logs(ds)
        states = [d.inspect() for d in ds]
        roots = {s["tree"]["root"] for s in states}
        assert len(roots) == 1
        depths = sorted(s["tree"]["depth"] for s in states)
        assert depths in ([0, 1, 1], [0, 1, 2])
        assert sum(1 for s in states if s["tree"]["is_root"]) == 1
        for s in states:
            assert s["tree"]["parent"] is None if s["tree"]["is_root"] else s["tree"]["parent"]
        # Found by the tree lookup (the cache, with coordinates) or, when that went unanswered while the filters
        # were still spreading, by a ring search (a source route): either way a route the table shows.
        routes = states[0]["routes"]
        assert any(row["address"] == ds[2].address for row in routes), states[0]["lookups"]
        assert all("coords" in r for r in routes)
        assert all(r["coords"] is not None or r["source_route"] for r in routes)
        text = ds[0].inspect_text()
        assert "TREE" in text and "LOOKUPS" in text, text
        # The map: node 0's view has itself, its peer (node 1) and node 2, looked up, with its proven key.
        keys = [daemons.identity_info(d.data_dir)["public_key"] for d in ds]
        route = next(r for r in ds[0].inspect()["routes"] if r["address"] == ds[2].address)
        assert route["public_key"] == keys[2] and (route["rtt_ms"] is None or route["rtt_ms"] > 0), route
        chain = states[2]["self"]["coords"]["chain"]
        assert chain[-1]["address"] == ds[2].address and chain[0]["key"] == states[2]["tree"]["root"], chain
        proc = ds[0].inspect_map("-o", str(workdir / "node-0.svg"))
        assert proc.returncode == 0 and proc.stdout.strip() == str(workdir / "node-0.svg"), proc.stderr
        import xml.etree.ElementTree as ET

        svg = ET.parse(workdir / "node-0.svg").getroot()
        drawn = {e.get("data-address"): e.get("class") for e in svg.iter() if e.get("data-address")}
        assert {d.address for d in ds} <= set(drawn), drawn
        assert "self" in drawn[ds[0].address]
        assert any(role in drawn[ds[2].address] for role in ("lookup", "root")), drawn  # node 2: the root, or not
        assert svg.get("data-label-overlaps") == "0"
