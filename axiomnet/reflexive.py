"""Reflexive addresses: the endpoint a neighbour sees us at, told to us inside our link session (PROTOCOL §8.1).

Each side of a link session tells the other, in one CONTROL message, the UDP endpoint (address and port) the
other's authenticated datagrams come from. Behind a NAT that is the NAT's public mapping: what a node needs to
know before it can tell a third node where to reach it. A neighbour can lie about it, so a report is a hint: the
table keeps one report per neighbour, bounded by the sessions, and calls an endpoint confirmed only when two or
more neighbours report it (a candidate must still be probed before any traffic goes there).

Pure: no sockets, no clock (``now`` is passed in).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass

from axiomnet.errors import MalformedPacket

OBSERVED_ENDPOINT = 0x40  # control type: "your endpoint as I see it"
_FAMILY = {4: 4, 6: 16}  # family byte -> address length
MAX_REFLEXIVE_REPORTS = 4096  # reports kept at once (one per neighbour: MAX_SESSIONS bounds it before this)


def encode_observed(host: str, port: int) -> bytes | None:
    """The control message telling a neighbour it is at ``host:port``; None for a link-local host (it would name
    an interface of ours, meaningless to the neighbour) or a host that is not an IP literal."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local or not 1 <= port <= 65535:
        return None
    return struct.pack("!BB", OBSERVED_ENDPOINT, address.version) + address.packed + struct.pack("!H", port)


def decode_observed(payload: bytes) -> tuple[str, int]:
    """(host, port) from an OBSERVED_ENDPOINT control message; MalformedPacket for anything else."""
    if len(payload) < 2 or payload[0] != OBSERVED_ENDPOINT:
        raise MalformedPacket("not an OBSERVED_ENDPOINT control message")
    size = _FAMILY.get(payload[1])
    if size is None or len(payload) != 2 + size + 2:
        raise MalformedPacket(f"OBSERVED_ENDPOINT of {len(payload)} bytes, family {payload[1]}")
    address = ipaddress.ip_address(payload[2:2 + size])
    port = struct.unpack("!H", payload[2 + size:])[0]
    if port == 0 or address.is_unspecified or address.is_multicast or address.is_link_local:
        raise MalformedPacket(f"OBSERVED_ENDPOINT {address} port {port} names no endpoint")
    if address.version == 6 and address.ipv4_mapped is not None:  # one encoding per endpoint: that is family 4
        raise MalformedPacket(f"OBSERVED_ENDPOINT {address}: an IPv4-mapped address is sent as family 4")
    return str(address), port


@dataclass(frozen=True)
class Report:
    endpoint: tuple[str, int]
    at: float


class ReflexiveTable:
    """What our neighbours say our endpoint is: one report per neighbour key."""

    def __init__(self, max_reports: int = MAX_REFLEXIVE_REPORTS) -> None:
        self.max_reports = max_reports
        self.reports: dict[bytes, Report] = {}

    def record(self, peer_key: bytes, endpoint: tuple[str, int], now: float) -> bool:
        """Keep ``peer_key``'s report; False (not kept) when the table is full of other neighbours' reports."""
        if peer_key not in self.reports and len(self.reports) >= self.max_reports:
            return False
        self.reports[peer_key] = Report(endpoint, now)
        return True

    def forget(self, peer_key: bytes) -> None:
        self.reports.pop(peer_key, None)

    def endpoints(self) -> list[tuple[tuple[str, int], int]]:
        """Each reported endpoint with how many neighbours report it, most reported first."""
        counts = Counter(report.endpoint for report in self.reports.values())
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    def confirmed(self) -> tuple[str, int] | None:
        """The endpoint at least two neighbours report and more than any other, or None."""
        ranked = self.endpoints()
        if not ranked or ranked[0][1] < 2 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
            return None
        return ranked[0][0]

    def snapshot(self) -> dict[str, object]:
        return {"confirmed": _text(self.confirmed()),
                "reported": [{"endpoint": _text(endpoint), "neighbours": count} for endpoint, count in self.endpoints()]}


def _text(endpoint: tuple[str, int] | None) -> str | None:
    if endpoint is None:
        return None
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
