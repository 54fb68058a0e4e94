"""The routing table: direct neighbours, their coordinates and liveness, and the forwarding decision.

Pure logic fed with heartbeats and time. Forwarding is greedy on hyperbolic distance: a packet goes to
the neighbour whose coordinates are strictly closer to the destination's than ours (vectorised with
numpy over all neighbours). A destination that is a neighbour is delivered to directly. Destination
coordinates come from a bounded cache that heartbeats fill today and that address lookup will fill
when multi-hop routing lands.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from axiomnet.constants import HEARTBEAT_SEQ_EPOCH_JUMP, MAX_COORD_CACHE, PEER_DEAD_AFTER
from axiomnet.geometry import Coords, distance, greedy_next_hop
from axiomnet.identity import derive_address



@dataclass
class Neighbour:
    """One direct peer as the router sees it."""

    key: bytes
    address: bytes
    coords: Coords | None = None
    load: float = 0.0
    last_seen: float | None = None
    up_since: float = 0.0
    alive: bool = True
    seq: int = -1


class RoutingTable:
    """Neighbours keyed by public key; the next hop for an IPv6 destination (16 bytes)."""

    def __init__(self, self_key: bytes, self_coords: Coords, dead_after: float = PEER_DEAD_AFTER) -> None:
        self.self_key = self_key
        self.self_address = derive_address(self_key).packed
        self.self_coords = self_coords
        self.dead_after = dead_after
        self._neighbours: dict[bytes, Neighbour] = {}
        self._by_address: dict[bytes, bytes] = {}
        self._coord_cache: OrderedDict[bytes, Coords] = OrderedDict()
        self._keys: list[bytes] = []
        self._points = np.empty((0, 2), dtype=np.float64)

    # --- membership -----------------------------------------------------------------------------
    def add(self, key: bytes, now: float) -> Neighbour:
        """A session to ``key`` is up: it is a neighbour (alive until it stays silent too long)."""
        nb = self._neighbours.get(key)
        if nb is None:
            nb = Neighbour(key=key, address=derive_address(key).packed, up_since=now)
            self._neighbours[key] = nb
            self._by_address[nb.address] = key
        nb.alive = True
        nb.last_seen = now
        self._rebuild()
        return nb

    def remove(self, key: bytes) -> None:
        """The session to ``key`` is gone."""
        nb = self._neighbours.pop(key, None)
        if nb is not None:
            self._by_address.pop(nb.address, None)
            self._rebuild()

    def heartbeat(self, key: bytes, seq: int, coords: Coords, load: float, now: float) -> bool:
        """Record a (validated, authenticated) heartbeat; True if it moved the neighbour's coordinates/load.

        Any heartbeat from a neighbour proves it alive. Only a newer sequence number moves its coordinates
        (reordered heartbeats cannot move it back); a number lower by more than HEARTBEAT_SEQ_EPOCH_JUMP is a
        new epoch (the sender restarted with its wall clock stepped back) and is taken as newest.
        """
        nb = self._neighbours.get(key)
        if nb is None:
            return False
        nb.last_seen = now
        revived = not nb.alive
        nb.alive = True
        if seq <= nb.seq and nb.seq - seq <= HEARTBEAT_SEQ_EPOCH_JUMP:
            if revived:
                self._rebuild()
            return False
        moved = nb.coords != coords or revived
        nb.seq, nb.coords, nb.load = seq, coords, load
        self.learn(nb.address, coords)
        if moved:
            self._rebuild()
        return True

    def seen(self, key: bytes, now: float) -> None:
        """Any authenticated packet from ``key`` proves it alive."""
        nb = self._neighbours.get(key)
        if nb is not None:
            nb.last_seen = now
            if not nb.alive:
                nb.alive = True
                self._rebuild()

    def withdraw_dead(self, now: float) -> list[bytes]:
        """Mark neighbours silent for longer than ``dead_after`` as dead; return the newly dead keys."""
        dead = []
        for nb in self._neighbours.values():
            if nb.alive and nb.last_seen is not None and now - nb.last_seen > self.dead_after:
                nb.alive = False
                dead.append(nb.key)
        if dead:
            self._rebuild()
        return dead

    def learn(self, address: bytes, coords: Coords) -> None:
        """Remember where ``address`` sits in the disk (bounded LRU)."""
        self._coord_cache[address] = coords
        self._coord_cache.move_to_end(address)
        while len(self._coord_cache) > MAX_COORD_CACHE:
            self._coord_cache.popitem(last=False)

    def _rebuild(self) -> None:
        live = [nb for nb in self._neighbours.values() if nb.alive and nb.coords is not None]
        self._keys = [nb.key for nb in live]
        pts = np.empty((len(live), 2), dtype=np.float64)
        for i, nb in enumerate(live):
            assert nb.coords is not None  # filtered above; narrows the type for mypy
            pts[i, 0], pts[i, 1] = nb.coords.r, nb.coords.theta
        self._points = pts

    # --- forwarding -----------------------------------------------------------------------------
    def next_hop(self, dst: bytes) -> bytes | None:
        """Key of the neighbour to forward a packet for ``dst`` to, or None (no route: drop, count)."""
        key = self._by_address.get(dst)
        if key is not None:
            return key if self._neighbours[key].alive else None
        target = self._coord_cache.get(dst)
        if target is None or not self._keys:
            return None
        i = greedy_next_hop(self.self_coords, self._points, target)
        return None if i is None else self._keys[i]

    # --- inspection -----------------------------------------------------------------------------
    def neighbours(self) -> list[Neighbour]:
        """All neighbours, alive or not."""
        return list(self._neighbours.values())

    def get(self, key: bytes) -> Neighbour | None:
        """The neighbour with ``key``, if any."""
        return self._neighbours.get(key)

    def snapshot(self, now: float) -> list[dict[str, object]]:
        """JSON-ready rows for axiomnet-inspect."""
        rows: list[dict[str, object]] = []
        for nb in self._neighbours.values():
            rows.append(
                {
                    "public_key": nb.key.hex(),
                    "address": str(derive_address(nb.key)),
                    "coords": None if nb.coords is None else [nb.coords.r, nb.coords.theta],
                    "distance": None if nb.coords is None else distance(self.self_coords, nb.coords),
                    "load": nb.load,
                    "last_seen": None if nb.last_seen is None else round(now - nb.last_seen, 3),
                    "alive": nb.alive,
                }
            )
        return rows
