"""Offloads between real daemons: TCP super-packets through the TUN device and UDP GSO/GRO carry a bulk
transfer intact, and a pair where one side runs with --no-offload works the same in both directions.

Run as root (CI is); each test builds its own namespaces and removes them and its daemons afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from axiomnet.lab import daemons, namespaces, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REACH_TIMEOUT = 15.0
IFF_VNET_HDR = 0x4000
SIZE = 8 * 1024 * 1024


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def start(pair: namespaces.NetnsPair, workdir: Path, side: str, extra: list[str]) -> daemons.DaemonProcess:
    ns, me, other = (pair.a, pair.ip_a, pair.ip_b) if side == "a" else (pair.b, pair.ip_b, pair.ip_a)
    return daemons.start_daemon(ns, name=f"node-{side}", listen=f"{me}:7443", peers=[f"{other}:7443"],
                                data_dir=workdir / f"node-{side}", admin_socket=workdir / f"node-{side}.sock",
                                tun=ns.tun_name, extra_args=extra)


def vnet_header_on(node: daemons.DaemonProcess) -> bool:
    """True if the daemon's TUN device was opened with a virtio-net header (offloads on)."""
    proc = node.ns.exec(["cat", f"/sys/class/net/{node.tun}/tun_flags"])
    assert proc.returncode == 0, proc.stderr
    return bool(int(proc.stdout.strip(), 16) & IFF_VNET_HDR)


def socket_counters(node: daemons.DaemonProcess) -> dict[str, int]:
    return node.actor_view("socket", timeout=5.0)


def transfer_both_ways(a: daemons.DaemonProcess, b: daemons.DaemonProcess) -> None:
    for src, dst in ((a, b), (b, a)):
        took = daemons.wait_overlay_reachable(src, dst, timeout=REACH_TIMEOUT)
        assert took is not None, f"{dst.address} unreachable from {src.name}\n{src.log_tail(30)}\n{dst.log_tail(30)}"
        result = traffic.tcp_transfer(dst.ns, src.ns, dst.address, SIZE, timeout=120.0)
        assert result.ok, result.error
        assert result.received_bytes == SIZE and result.received_sha256 == result.sent_sha256


def test_offloaded_pair_carries_bulk_transfers_intact_in_large_units(pair, workdir):
    a, b = start(pair, workdir, "a", []), start(pair, workdir, "b", [])
    transfer_both_ways(a, b)
    assert vnet_header_on(a) and vnet_header_on(b)
    for node in (a, b):
        counters = socket_counters(node)
        assert counters["gso"] and counters["gro"]
        # Bulk data left in UDP_SEGMENT sends of many datagrams each, not one system call per datagram: from the
        # sessions' own threads (the socket's published SendPath), or from the socket actor.
        sessions = node.inspect(timeout=5.0)["sessions"]
        gso_sends = counters.get("tx_gso_sends", 0) + sum(s["counters"].get("tx_gso_sends", 0) for s in sessions)
        direct = sum(s["counters"].get("tx_direct", 0) for s in sessions)
        assert direct > 0, sessions  # the data left from the sessions' threads
        assert gso_sends > 0 and counters.get("tx_datagrams", 0) + direct > 4 * gso_sends


def test_a_pair_with_offloads_on_one_side_only_works_both_ways(pair, workdir):
    a, b = start(pair, workdir, "a", ["--no-offload"]), start(pair, workdir, "b", [])
    transfer_both_ways(a, b)
    assert not vnet_header_on(a) and vnet_header_on(b)
    off = socket_counters(a)
    assert not off["gso"] and not off["gro"] and "tx_gso_sends" not in off
