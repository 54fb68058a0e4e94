"""Two nodes behind their own NATs and a public node P between them: the lab setting of NAT traversal
(docs/PROTOCOL.md §8.2), shared by tests/integration/test_punch.py and ``axiomnet demo --topology nat``.

    A -- NAT a --+
                 +-- wan (P runs here; it also routes between the two NATs' public sides)
    B -- NAT b --+
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from axiomnet.lab import daemons, nat, processes
from axiomnet.lab.namespaces import NetnsLab

PORT = 7443


@dataclass
class NatPair:
    p: daemons.DaemonProcess
    a: daemons.DaemonProcess
    b: daemons.DaemonProcess
    nat_a: nat.Nat
    nat_b: nat.Nat


def build(lab: NetnsLab, workdir: Path, *, fully_random: bool = False) -> NatPair:
    """wan (P), A behind NAT a, B behind NAT b, each of A and B peering only with P; daemons started, not waited on."""
    wan, in_a, in_b = lab.add_namespace("wan"), lab.add_namespace("a"), lab.add_namespace("b")
    nat_a = nat.add_nat(lab, in_a, wan, router_suffix="ra", private_subnet="198.18.210.0/24",
                        public_subnet="198.18.220.0/24", fully_random=fully_random)
    nat_b = nat.add_nat(lab, in_b, wan, router_suffix="rb", private_subnet="198.18.211.0/24",
                        public_subnet="198.18.221.0/24", fully_random=fully_random)
    nat.enable_forwarding(wan)  # the "internet" between the two NATs' public sides
    p = daemons.start_daemon(wan, name="p", listen=f"0.0.0.0:{PORT}", peers=[], data_dir=workdir / "p",
                             admin_socket=workdir / "p.sock", tun=wan.tun_name)
    a = daemons.start_daemon(in_a, name="a", listen=f"0.0.0.0:{PORT}", peers=[f"{nat_a.outside_ip}:{PORT}"],
                             data_dir=workdir / "a", admin_socket=workdir / "a.sock", tun=in_a.tun_name)
    b = daemons.start_daemon(in_b, name="b", listen=f"0.0.0.0:{PORT}", peers=[f"{nat_b.outside_ip}:{PORT}"],
                             data_dir=workdir / "b", admin_socket=workdir / "b.sock", tun=in_b.tun_name)
    return NatPair(p, a, b, nat_a, nat_b)


def punch_state(node: daemons.DaemonProcess, other: daemons.DaemonProcess) -> dict[str, Any]:
    """``node``'s NAT traversal state towards ``other`` (inspect's snapshots.peers.punch row), {} if none yet."""
    try:
        peers = node.inspect(timeout=5.0)["snapshots"]["peers"]
    except (processes.HarnessError, KeyError):
        return {}
    return peers.get("punch", {}).get(_public_key(str(other.data_dir)), {})


@lru_cache(maxsize=64)
def _public_key(data_dir: str) -> str:
    """A node's public key (hex), asked of the CLI once per data directory (a poll must stay cheap)."""
    return daemons.identity_info(data_dir)["public_key"]


def relayed_by(p: daemons.DaemonProcess) -> int:
    """How many routed packets P relayed (router and relay fast path: daemons.relayed_packets)."""
    return daemons.relayed_packets(p.inspect(timeout=5.0))
