"""A LAN in the lab: namespaces on one Ethernet bridge (LAN discovery tests, a shared segment for the NAT lab).

The bridge lives in a namespace of its own (suffix ``lan`` by default), so nothing is created in the root
namespace; each member gets one veth into it, named by the lab (``axn<run id>l<k>`` on the member's side),
with an IPv4 address of ``ipv4_subnet`` (inside the lab's benchmarking range) and, unless ``ipv6`` is False,
its kernel-made IPv6 link-local address only (no global IPv6: discovery must work with link-local alone).
With ``ipv6=False`` the member's interface has IPv6 switched off, as on an IPv4-only LAN.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Sequence

from axiomnet.lab.namespaces import IPV4_ALLOWED, IP_TIMEOUT, Namespace, NetnsLab
from axiomnet.lab.processes import HarnessError, run_bounded


@dataclasses.dataclass(frozen=True)
class LanMember:
    ns: Namespace
    ifname: str
    ipv4: str


@dataclasses.dataclass(frozen=True)
class Lan:
    """One bridged segment: the namespace holding the bridge, the bridge's name, the members."""

    hub: Namespace
    bridge: str
    members: tuple[LanMember, ...]
    prefixlen: int

    def member(self, ns: Namespace) -> LanMember:
        return next(m for m in self.members if m.ns is ns)


def add_lan(lab: NetnsLab, members: Sequence[Namespace], *, hub_suffix: str = "lan", tag: str = "",
            ipv4_subnet: str = "198.18.200.0/24", ipv6: bool = True) -> Lan:
    """A bridge in a new namespace ``hub_suffix`` and one veth from each of ``members`` into it (``.1``, ``.2``,
    ... of ``ipv4_subnet``). ``tag`` (0-2 of [a-z0-9]) keeps interface names apart when a lab has two LANs."""
    net4 = ipaddress.IPv4Network(ipv4_subnet)
    if not net4.subnet_of(IPV4_ALLOWED) or net4.num_addresses < len(members) + 2:
        raise HarnessError(f"IPv4 subnet {net4} must lie inside {IPV4_ALLOWED} and hold every member")
    if len(tag) > 2 or not tag.isalnum() and tag:
        raise HarnessError(f"LAN tag {tag!r} must be at most 2 characters of [a-z0-9]")
    hub = lab.add_namespace(hub_suffix)
    bridge = lab.ifname(f"b{tag}")
    hub.ip("link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
    hub.ip("link", "set", bridge, "up")
    joined = []
    for k, ns in enumerate(members):
        inner, outer = lab.ifname(f"l{tag}{k}"), lab.ifname(f"p{tag}{k}")
        proc = run_bounded(["ip", "link", "add", inner, "netns", ns.name, "type", "veth",
                            "peer", "name", outer, "netns", hub.name], timeout=IP_TIMEOUT)
        if proc.returncode != 0:
            raise HarnessError(f"creating veth {inner}/{outer}: {proc.stderr.strip()}")
        hub.ip("link", "set", outer, "master", bridge)
        hub.ip("link", "set", outer, "up")
        if not ipv6:
            proc = ns.exec(["sysctl", "-q", "-w", f"net.ipv6.conf.{inner}.disable_ipv6=1"], timeout=IP_TIMEOUT)
            if proc.returncode != 0:
                raise HarnessError(f"disabling IPv6 on {inner}: {proc.stderr.strip()}")
        address = str(net4.network_address + 1 + k)
        ns.ip("addr", "add", f"{address}/{net4.prefixlen}", "dev", inner)
        ns.ip("link", "set", inner, "up")
        joined.append(LanMember(ns, inner, address))
    return Lan(hub, bridge, tuple(joined), net4.prefixlen)
