"""RouterActor: owns the routing table and makes the forwarding decision for every IP packet.

Packets from the TUN device (and packets a session received for somebody else) are grouped by next hop
and handed to that peer's session actor in one bounded tell per batch. Relayed packets have their IPv6
hop limit decremented so that a routing loop cannot circulate a packet forever.
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from axiomnet.constants import MAX_QUEUED_BATCHES
from axiomnet.geometry import Coords
from axiomnet.routing import RoutingTable
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell, mailbox_depth

IPV6_HEADER = 40


class RouterActor(SupervisedActor):
    """Neighbour table + greedy forwarding; learns peers from SessionUp/Down and heartbeats."""

    role = "router"

    def __init__(self, supervisor: Any, refs: dict[str, Any], self_key: bytes, self_coords: Coords) -> None:
        super().__init__(supervisor, refs)
        self.table = RoutingTable(self_key, self_coords)
        self.sessions: dict[bytes, Any] = {}

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.TunPackets):
            self._forward(message.packets, relayed=False)
        elif isinstance(message, m.RelayPackets):
            self._forward(message.packets, relayed=True)
        elif isinstance(message, m.SessionUp):
            self.sessions[message.peer_key] = message.ref
            self.table.add(message.peer_key, time.monotonic())
            logger.info("peer {} up via {}:{}", message.peer_key.hex()[:16], *message.endpoint)
        elif isinstance(message, (m.SessionDown, m.SessionGone)):
            key = message.peer_key
            if key is not None and self.sessions.get(key) is message.ref:
                del self.sessions[key]
                self.table.remove(key)
        elif isinstance(message, m.PeerHeartbeat):
            self.table.heartbeat(message.peer_key, message.seq, message.coords, message.load, time.monotonic())
        elif isinstance(message, m.CheckLiveness):
            for key in self.table.withdraw_dead(time.monotonic()):
                logger.warning("peer {} silent for over {:.0f} s: routes withdrawn", key.hex()[:16],
                               self.table.dead_after)
                self.counters["peers_withdrawn"] += 1
        elif isinstance(message, m.HeartbeatInfo):
            load = min(1.0, mailbox_depth(self.actor_ref) / MAX_QUEUED_BATCHES)
            return self.table.self_coords, load, list(self.sessions.items())
        elif isinstance(message, m.Snapshot):
            return {"peers": self.table.snapshot(time.monotonic()), "counters": dict(self.counters),
                    "coords": [self.table.self_coords.r, self.table.self_coords.theta]}
        else:
            return super().handle(message)
        return None

    def _forward(self, packets: list[bytes], relayed: bool) -> None:
        groups: dict[bytes, list[bytes]] = {}
        next_hop = self.table.next_hop
        for pkt in packets:
            if len(pkt) < IPV6_HEADER or pkt[0] >> 4 != 6:
                self.counters["dropped_not_ipv6"] += 1
                continue
            if relayed:
                hop_limit = pkt[7]
                if hop_limit <= 1:
                    self.counters["dropped_hop_limit"] += 1
                    continue
                pkt = pkt[:7] + bytes((hop_limit - 1,)) + pkt[8:]
            key = next_hop(pkt[24:40])
            if key is None:
                self.counters["dropped_no_route"] += 1
                continue
            group = groups.get(key)
            if group is None:
                groups[key] = [pkt]
            else:
                group.append(pkt)
        for key, group in groups.items():
            if bounded_tell(self.sessions.get(key), m.TunPackets(group)):
                self.counters["forwarded"] += len(group)
            else:
                self.counters["dropped_backpressure"] += len(group)
