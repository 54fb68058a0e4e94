"""A NAT in the lab: a router namespace masquerading a private segment behind its public address (nftables).

``add_nat(lab, inside, outside)`` builds ``inside`` -- router -- ``outside``: a veth on a private subnet between
``inside`` (``.2``, default route via the router) and the router (``.1``), and a veth on a public subnet between
the router (``.1``, default route via ``outside``) and ``outside`` (``.2``). The router forwards and masquerades
every packet that leaves by its public interface (conntrack maps the replies back), in one nftables table of its
own. ``outside`` is a host on the "internet" side (a public node, or a namespace that routes between several NATs:
give it ``ip_forward`` with :func:`enable_forwarding`).

Mappings: the default masquerade keeps a flow's source port when it is free, and reuses the mapping of a source
address and port for every destination (endpoint-independent, the kind hole punching gets through);
``fully_random=True`` picks a random port for every new flow, so each destination sees another port (what a
symmetric NAT does, which punching cannot cross). Filtering, as a home router's firewall: a packet from outside
reaches inside only as a reply to a flow from inside (conntrack), and an unsolicited one is dropped before conntrack
commits an entry for it (what lets a simultaneous open through, docs/PROTOCOL.md §8.2). Addresses: 198.18.0.0/15 only (the lab's benchmarking range),
no IPv6 on these links. Everything lives in the lab's namespaces and goes with them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil

from axiomnet.lab.namespaces import IPV4_ALLOWED, IP_TIMEOUT, Namespace, NetnsLab
from axiomnet.lab.processes import HarnessError

NAT_TABLE = "axn_nat"


def nat_unavailable_reason() -> str | None:
    """Why a NAT cannot be built here (no `nft`), or None."""
    if shutil.which("nft") is None:
        return "the `nft` command is missing (install the nftables package)"
    return None


@dataclasses.dataclass(frozen=True)
class Nat:
    """One masquerading router and the addresses around it."""

    router: Namespace
    inside: Namespace
    outside: Namespace
    inside_ip: str  # the private host's address
    router_private_ip: str
    router_public_ip: str  # what the outside sees as the source of everything from inside
    outside_ip: str
    private_ifname: str  # the router's interfaces
    public_ifname: str
    fully_random: bool

    def mappings(self) -> str:
        """The router's conntrack table as `conntrack -L` would list it, or its nft ruleset when conntrack-tools
        are missing (for a failing test's message)."""
        if shutil.which("conntrack"):
            return self.router.exec(["conntrack", "-L"], timeout=IP_TIMEOUT).stdout
        return self.router.exec(["nft", "list", "table", "ip", NAT_TABLE], timeout=IP_TIMEOUT).stdout


def enable_forwarding(ns: Namespace) -> None:
    """Let ``ns`` route IPv4 between its interfaces."""
    proc = ns.exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        raise HarnessError(f"ip_forward in {ns.name}: {proc.stderr.strip()}")


def add_nat(lab: NetnsLab, inside: Namespace, outside: Namespace, *, router_suffix: str = "r0",
            private_subnet: str = "198.18.210.0/24", public_subnet: str = "198.18.220.0/24",
            fully_random: bool = False) -> Nat:
    """Put ``inside`` behind a new masquerading router namespace whose public side is a veth to ``outside``."""
    reason = nat_unavailable_reason()
    if reason is not None:
        raise HarnessError(reason)
    for subnet in (private_subnet, public_subnet):
        if not ipaddress.IPv4Network(subnet).subnet_of(IPV4_ALLOWED):
            raise HarnessError(f"{subnet} must lie inside {IPV4_ALLOWED}")
    router = lab.add_namespace(router_suffix)
    private = lab.connect(router, inside, ipv4_subnet=private_subnet, ipv6_subnet=None)
    public = lab.connect(router, outside, ipv4_subnet=public_subnet, ipv6_subnet=None)
    inside.ip("route", "add", "default", "via", private.ipv4_a)
    router.ip("route", "add", "default", "via", public.ipv4_b)
    enable_forwarding(router)
    masquerade = "masquerade fully-random" if fully_random else "masquerade"
    ruleset = (f"table ip {NAT_TABLE} {{\n"
               f"  chain postrouting {{\n"
               f"    type nat hook postrouting priority srcnat; policy accept;\n"
               f"    oifname \"{public.ifname_a}\" {masquerade}\n"
               f"  }}\n"
               # A home router's firewall: a packet from outside that no flow from inside opened is dropped
               # before conntrack commits an entry for it. Without this, Linux commits one for the unsolicited
               # packet (answered with an ICMP error), and the inside host's own flow to that same endpoint,
               # leaving a moment later, must take another port: a simultaneous open (PROTOCOL §8.2) never meets.
               f"  chain input {{\n"
               f"    type filter hook input priority filter; policy accept;\n"
               f"    iifname \"{public.ifname_a}\" ct state new drop\n"
               f"  }}\n"
               f"  chain forward {{\n"
               f"    type filter hook forward priority filter; policy accept;\n"
               f"    iifname \"{public.ifname_a}\" ct state new drop\n"
               f"  }}\n"
               f"}}\n")
    proc = router.exec(["nft", "-f", "-"], input=ruleset, timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        raise HarnessError(f"nft in {router.name}: {proc.stderr.strip()}")
    return Nat(router, inside, outside, private.ipv4_b, private.ipv4_a, public.ipv4_a, public.ipv4_b,
               private.ifname_a, public.ifname_a, fully_random)
