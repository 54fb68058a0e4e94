"""End-to-end encryption between real daemons: relays never see the plaintext, tampering is detected.

Run as root (CI is); three namespaces in a line, one daemon each, everything removed afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from axiomnet.lab import daemons, namespaces, processes, traffic

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REACH_TIMEOUT = 40.0


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def canary() -> bytes:
    return b"AXIOMNET-CANARY-" + os.urandom(16).hex().encode()


def test_a_canary_crosses_the_relay_encrypted_end_to_end(workdir):
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        a, relay, b = daemons.start_overlay(lab, 3, [(0, 1), (1, 2)], workdir)
        assert daemons.wait_overlay_reachable(a, b, timeout=REACH_TIMEOUT) is not None, a.log_tail(30)
        payload = canary()
        # Both of the relay's links, in and out (start_overlay: link 0 joins nodes 0-1, link 1 joins nodes 1-2).
        captures = [traffic.Capture(relay.ns, lab.links[0].ifname_b, 7443, seconds=30.0),
                    traffic.Capture(relay.ns, lab.links[1].ifname_a, 7443, seconds=30.0)]
        got = traffic.udp_canary(b.ns, a.ns, b.address, payload)
        seen = [d for capture in captures for d in capture.stop()]
        assert got.payload == payload and got.source == a.address
        assert len(seen) > 5, "the capture on the relay saw nothing: it proves nothing"
        assert not any(payload in d.data for d in seen), "the relay's wire carried the plaintext"
        e2e_b = b.inspect()["counters"]["e2e"]
        assert e2e_b["rx_packets"] > 0
        # Greedy or, where a one-way flow looked dead to A, source-routed (ROUTING.md §4.1); by the relay's router
        # or on its published decisions by the link sessions (the relay fast path).
        assert daemons.relayed_packets(relay.inspect()) > 0


def test_a_relay_that_flips_a_bit_makes_the_destination_drop_and_count(workdir, monkeypatch):
    monkeypatch.setenv("AXIOMNET_FAULT_INJECTION", "1")  # with --fault-injection: both halves of the gate
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        a, relay, b = daemons.start_overlay(lab, 3, [(0, 1), (1, 2)], workdir, extra_args=["--fault-injection"])
        assert daemons.wait_overlay_reachable(a, b, timeout=REACH_TIMEOUT) is not None, a.log_tail(30)
        before = b.inspect()["counters"]["e2e"].get("rx_DecryptionFailed", 0)
        assert relay.admin({"cmd": "corrupt-relayed", "count": 3}).get("ok")
        payload = canary()
        got = traffic.udp_canary(b.ns, a.ns, b.address, payload, sends=3, timeout=5.0)
        assert got.payload is None, "a tampered packet was delivered"
        assert relay.inspect()["counters"]["router"].get("fault_corrupted") == 3
        assert processes.wait_until(lambda: b.inspect()["counters"]["e2e"].get("rx_DecryptionFailed", 0) >= before + 3, 10.0)
        # Untampered traffic flows again at once.
        assert traffic.udp_canary(b.ns, a.ns, b.address, payload).payload == payload


def test_a_bulk_transfer_over_the_relay_leaves_every_router_actor_out_of_its_path(workdir):
    """Issue 19's relayed path: after a flow's first packets, the sender's e2e actor hands its datagrams to the
    next hop's session on the router's published origin decision, the relay's sessions relay them on its published
    relay decision (greedy or source-routed), and the receiver's session hands them to its e2e actor; the routers
    still count them (PathActivity) and the transfer arrives intact."""
    size = 8 * 1024 * 1024
    with namespaces.NetnsLab(stop_grace=2.0) as lab:
        a, relay, b = daemons.start_overlay(lab, 3, [(0, 1), (1, 2)], workdir)
        assert daemons.wait_overlay_reachable(a, b, timeout=REACH_TIMEOUT) is not None, a.log_tail(30)
        transfer = traffic.tcp_transfer(b.ns, a.ns, b.address, size, timeout=120.0)
        assert transfer.ok and transfer.received_sha256 == transfer.sent_sha256, transfer.error
        segments = size // 1500  # at least this many datagrams went a -> b
        sa, sr, sb = a.inspect(), relay.inspect(), b.inspect()
        assert sa["counters"]["e2e"].get("tx_routed_fast", 0) >= segments * 0.9
        assert sa["lookups"]["dead_paths"] == 0  # the replies heard past the router kept the path's clock fed
        relayed_fast = sum(row.get("counters", {}).get("relayed_fast", 0) for row in sr["sessions"])
        assert relayed_fast >= segments * 0.9 and sr["counters"]["router"].get("link_packets", 0) < segments * 0.1
        delivered_fast = sum(row.get("counters", {}).get("delivered_fast", 0) for row in sb["sessions"])
        assert delivered_fast >= segments * 0.9
        assert processes.wait_until(lambda: b.inspect()["counters"]["router"].get("fwd_delivered", 0)
                                    >= delivered_fast, 5.0)  # told by PathActivity, at most a RING_TICK late
