"""Forwarding: what a node does with every routed packet it originates, relays or receives (pure, no I/O).

The :class:`Forwarder` joins the tree (our coordinates, the neighbours' coordinates, the lookup filters), the
pathfinder (destinations' coordinates) and the greedy next hop into ironwood's traffic handling:

* **originate**: a payload for an address goes out with its destination's cached coordinates, or waits in the
  pathfinder's bounded queue while a LOOKUP goes down the tree;
* **relay**: the next hop is the neighbour strictly closest to the destination among those strictly closer than
  us (axiomnet/greedy.py, one vectorised pass per destination, cached until a coordinate changes); the watermark must
  strictly fall (so no packet can loop, even while coordinates change) and the hop limit bounds the rest;
* **dead end**: a relay that cannot make progress drops the packet, counts it, and (rate-limited per source)
  sends a PATH_BROKEN back to the source, which looks the destination up again: never a silent black hole;
* **deliver**: TRAFFIC for our address goes up to the end-to-end layer; LOOKUP_REPLY and PATH_BROKEN feed the
  pathfinder; a LOOKUP for our address is answered with our signed coordinates;
* **fallback** (no single node can cut honest pairs, docs/ROUTING.md §4.1): when the tree lookup goes unanswered
  or a route goes dead (sent to, nothing back), an expanding-ring RING_SEARCH floods every link with a growing
  TTL (each relay once per (origin, nonce, TTL), rate-limited per origin, per target and per incoming link); the
  owner answers along the reverse path and the path found becomes a source route (SOURCE_ROUTED), which no tree
  change can break.

Results come back as an :class:`Output`: routed packets per link (by the neighbour's noise key) and payloads
delivered to us. Every drop has a counter in ``stats``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from axiomnet.constants import (
    HOP_LIMIT,
    MAX_CACHED_PORTS,
    MAX_RING_BUCKETS,
    MAX_RING_SEEN,
    RING_SEEN_LIFETIME,
    PATH_BROKEN_INTERVAL,
    RING_MAX_TTL,
    RING_LINK_BURST,
    RING_LINK_RATE,
    RING_RELAY_BURST,
    RING_RELAY_RATE,
    RING_TARGET_BURST,
    RING_TARGET_RATE,
)
from axiomnet.errors import RemoteProtocolError
from axiomnet.greedy import NO_HOP, NeighbourPaths
from axiomnet.identity import derive_address, noise_key_of
from axiomnet.lookup import (
    Coords,
    Pathfinder,
    decode_lookup,
    decode_path_broken,
    decode_ring,
    encode_lookup,
    encode_path_broken,
    verify_ring,
)
from axiomnet.routed import (
    FIXED_SIZE,
    NO_WATERMARK,
    SOURCE,
    Kind,
    RoutedHeader,
    decode_routed,
    encode_routed,
    forwarded,
    header_end,
    hop_limit_and_watermark,
    root_tag,
)
from axiomnet.tree import Tree
from axiomnet.wire import PacketType

MAX_BROKEN_SOURCES = 1024  # sources remembered for the PATH_BROKEN rate limit; the oldest is forgotten past it
MAX_HOP_CACHE = 4096  # destination paths whose next hop is remembered until a coordinate changes
_TRAFFIC = int(Kind.TRAFFIC)
_DELIVER, _DIRECT, _RELAY = 0, 1, 2  # what a batch's TRAFFIC with one header gets (Forwarder.receive)
_E2E_TYPE = 4  # the byte of an end-to-end datagram's switch header whose low nibble is its packet type


@dataclass
class Output:
    """What handling some packets produced: routed packets per link and payloads delivered to us."""

    links: dict[bytes, list[bytes]] = field(default_factory=dict)
    delivered: list[tuple[bytes, bytes]] = field(default_factory=list)  # (source address, TRAFFIC payload)
    resolved: list[tuple[bytes, bytes]] = field(default_factory=list)  # (address, its verified Noise key)
    unresolvable: list[bytes] = field(default_factory=list)  # addresses whose lookup was given up

    def send(self, key: bytes, packet: bytes) -> None:
        group = self.links.get(key)
        if group is None:
            self.links[key] = [packet]
        else:
            group.append(packet)


_STATS = ("originated", "relayed", "delivered", "lookups_forwarded", "lookups_answered", "lookup_dead_end",
          "dropped_malformed", "dropped_other_root", "dropped_hop_limit", "dropped_watermark", "dropped_no_route",
          "dropped_no_tree", "path_broken_sent", "path_broken_limited", "replies_rejected",
          "ring_messages_sent", "ring_forwarded", "ring_answered", "ring_duplicate", "ring_relay_limited",
          "ring_ttl_end", "ring_refused", "source_routed_sent", "source_relayed", "dropped_no_port",
          "dropped_route_end")
_SOURCE_ROUTED_KINDS = (Kind.RING_REPLY, Kind.SOURCE_ROUTED)


class _Buckets:
    """Token buckets by key (origin, target or link), the least recently used forgotten past a bound."""

    def __init__(self, rate: float, burst: float, bound: int) -> None:
        self.rate, self.burst, self.bound = rate, burst, bound
        self._b: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, key: bytes, now: float) -> bool:
        tokens, at = self._b.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        ok = tokens >= 1.0
        self._b[key] = (tokens - 1.0 if ok else tokens, now)
        self._b.move_to_end(key)
        while len(self._b) > self.bound:
            self._b.popitem(last=False)
        return ok


def _asks(payloads: list[bytes]) -> bool:
    """Whether end-to-end ``payloads`` expect something back: anything but a KEEPALIVE (the receiver's passive
    keepalive answers a one-way flow, axiomnet/e2e.py; it asks for nothing, so it starts no dead-path clock and
    a finished conversation costs no ring search). The type is the end-to-end switch header's low nibble, in the
    clear (docs/PROTOCOL.md §2.1)."""
    return any(len(p) <= _E2E_TYPE or p[_E2E_TYPE] & 0x0F != PacketType.KEEPALIVE for p in payloads)


class Forwarder:
    """A node's forwarding engine over its :class:`Tree` and :class:`Pathfinder`."""

    def __init__(self, tree: Tree, pathfinder: Pathfinder) -> None:
        self.tree = tree
        self.pathfinder = pathfinder
        self.address = pathfinder.address
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self._table = NeighbourPaths([], [], [])
        self._table_version = -1
        self._table_now = -1.0
        self._hops: dict[tuple[int, ...], tuple[int, int]] = {}
        self._hop_ports = 0  # ports of the paths _hops is keyed by
        self._broken_at: OrderedDict[bytes, float] = OrderedDict()
        self._ports: dict[int, bytes] = {}  # port -> the neighbour's noise key (source routes)
        self._ring_seen: OrderedDict[tuple[bytes, int, int], float] = OrderedDict()  # -> when it came, oldest first
        self._ring_limits = [_Buckets(rate, burst, MAX_RING_BUCKETS) for rate, burst in (
            (RING_RELAY_RATE, RING_RELAY_BURST), (RING_TARGET_RATE, RING_TARGET_BURST), (RING_LINK_RATE, RING_LINK_BURST))]

    # --- the neighbour table and the next hop --------------------------------------------------------
    def _refresh(self, now: float) -> None:
        # Rebuilt when a coordinate changed, and at least once a tick (announcements age out with time).
        if self.tree.version != self._table_version or now - self._table_now >= 1.0:
            rows = self.tree.routing_neighbours(now)
            self._table = NeighbourPaths([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
            self._table_version = self.tree.version
            self._table_now = now
            self._hops.clear()
            self._hop_ports = 0
            self._ports = {nb.port: key for key, nb in self.tree.neighbours.items()}

    def decide(self, dst_path: tuple[int, ...], now: float) -> tuple[bytes | None, int]:
        """(noise key of the next hop or None, our own tree distance to ``dst_path``)."""
        self._refresh(now)
        hit = self._hops.get(dst_path)
        if hit is None:
            hit = self._table.next_hop(self.tree.path, dst_path)
            if len(self._hops) >= MAX_HOP_CACHE or self._hop_ports + len(dst_path) > MAX_CACHED_PORTS:
                self._hops.clear()  # bounded in entries and in the ports of their paths (any depth: constants.py)
                self._hop_ports = 0
            self._hops[dst_path] = hit
            self._hop_ports += len(dst_path)
        index, distance = hit
        return (None if index == NO_HOP else self._table.keys[index]), distance

    # --- originating ---------------------------------------------------------------------------------
    def send(self, dst: bytes, payloads: list[bytes], now: float) -> Output:
        """Route end-to-end payloads to the node that owns ``dst`` (or queue them behind a lookup)."""
        out = Output()
        direct = self.tree.neighbour_by_address(dst)
        if direct is not None:
            # A neighbour is reached over its link whatever the tree says (it may not have converged yet).
            self._to_neighbour(direct, dst, payloads, out)
            return out
        ports = self.pathfinder.source_route(dst, now)
        if ports is not None and self._port_key(ports[0], now) is not None:
            self._source_routed(Kind.SOURCE_ROUTED, dst, ports, (), payloads, out, now)
            if _asks(payloads):
                self.pathfinder.sent(dst, now)
            return out
        coords = self.pathfinder.route(dst, now)
        lost = coords is not None and (coords.root != self.tree.root or self.pathfinder.asked_from(dst) != self.tree.path
                                       or self.decide(coords.path, now)[0] is None)
        if lost:
            # Looked up in another tree (the root changed since), or from where we no longer are (the tree re-formed
            # under the same root: the destination has likely moved too, and greedy towards where it was drops
            # silently at a watermark or a dead end), or no neighbour leads there now: ask again, and search at once
            # (a flapping root would otherwise cost every flow RING_AFTER, or DEAD_PATH_AFTER, of its packets).
            self.pathfinder.forget(dst)
            coords = None
        if coords is None:
            nonce = self.pathfinder.wait(dst, payloads, now)
            if nonce is not None:
                self._lookup(dst, nonce, out)
            if lost:
                self.pathfinder.search_now(dst)
                self._ring_step(now, out)
            return out
        self._originate(Kind.TRAFFIC, dst, coords.path, payloads, out, now)
        if _asks(payloads):
            self.pathfinder.sent(dst, now)
        return out

    def origin(self, dst: bytes, now: float) -> tuple[bytes, bytes, bool] | None:
        """What :meth:`send` would do with end-to-end payloads for ``dst`` right now, when it sends them at once as
        TRAFFIC or SOURCE_ROUTED: (the link, the routed header it puts in front of each, whether it starts ``dst``'s
        dead-path clock: any destination but a neighbour); None when it would do anything else (a lookup to wait
        for, a lost route: those keep going through :meth:`send`). It changes nothing :meth:`send` would not
        (an idle source route or an expired cache entry is dropped). The router publishes these decisions to the e2e
        actor (axiomnet/fastpath.py OriginTable)."""
        direct = self.tree.neighbour_by_address(dst)
        if direct is not None:
            return direct, self._neighbour_head(dst), False
        ports = self.pathfinder.source_route(dst, now)
        if ports is not None:
            key = self._port_key(ports[0], now)
            if key is not None:
                return key, self._source_head(Kind.SOURCE_ROUTED, dst, ports, ()), True
        coords = self.pathfinder.route(dst, now)
        if coords is None or coords.root != self.tree.root or self.pathfinder.asked_from(dst) != self.tree.path:
            return None
        key, distance = self.decide(coords.path, now)
        if key is None:
            return None
        return key, self._head(Kind.TRAFFIC, dst, coords.path, distance), True

    def _head(self, kind: Kind, dst: bytes, dst_path: tuple[int, ...], distance: int) -> bytes:
        """The routed header of a packet we originate towards ``dst_path`` (our distance to it is the watermark)."""
        return encode_routed(kind, root_tag=root_tag(self.tree.root), dst=dst, src=self.address, dst_path=dst_path,
                             src_path=self.tree.path, payload=b"", hop_limit=HOP_LIMIT, watermark=distance)

    def _source_head(self, kind: Kind, dst: bytes, route: tuple[int, ...], back: tuple[int, ...]) -> bytes:
        """The routed header of a packet we send along ``route`` (the next hop takes the port at index 1)."""
        return encode_routed(kind, root_tag=root_tag(self.tree.root), dst=dst, src=self.address, dst_path=route,
                             src_path=back, payload=b"", hop_limit=HOP_LIMIT, watermark=1)

    def _neighbour_head(self, dst: bytes) -> bytes:
        """The routed header of a packet to the neighbour that owns ``dst`` (no path: it is the next hop)."""
        return encode_routed(Kind.TRAFFIC, root_tag=root_tag(self.tree.root), dst=dst, src=self.address, dst_path=(),
                             src_path=self.tree.path, payload=b"", watermark=0)

    def _port_key(self, port: int, now: float) -> bytes | None:
        self._refresh(now)
        return self._ports.get(port)

    def _source_routed(self, kind: Kind, dst: bytes, route: tuple[int, ...], back: tuple[int, ...],
                       payloads: Iterable[bytes], out: Output, now: float) -> None:
        """Send along ``route`` (a port per hop, ours first); the receiver takes the port at index 1 next."""
        key = self._port_key(route[0], now)
        payloads = list(payloads)
        if key is None:
            self.stats["dropped_no_port"] += len(payloads)
            return
        self._send_all(key, self._source_head(kind, dst, route, back), payloads, out)
        self.stats["source_routed_sent"] += len(payloads)

    def resolve(self, dst: bytes, now: float) -> Output:
        """Find the Noise key of the node that owns ``dst`` (for its end-to-end session): at once for a neighbour
        or from the cache, else after a lookup (``Output.resolved`` then, or ``Output.unresolvable``)."""
        out = Output()
        direct = self.tree.neighbour_by_address(dst)
        if direct is not None:
            out.resolved.append((dst, direct))
            return out
        key = self.pathfinder.key_for(dst, now)
        if key is not None:
            out.resolved.append((dst, noise_key_of(key)))
            return out
        nonce = self.pathfinder.wait(dst, (), now)
        if nonce is not None:
            self._lookup(dst, nonce, out)
        return out

    def _originate(self, kind: Kind, dst: bytes, dst_path: tuple[int, ...], payloads: Iterable[bytes],
                   out: Output, now: float) -> None:
        key, distance = self.decide(dst_path, now)
        payloads = list(payloads)
        if key is None:
            self.stats["dropped_no_route"] += len(payloads)
            return
        # Every packet of the batch has the same header: built once, prepended to each payload.
        self._send_all(key, self._head(kind, dst, dst_path, distance), payloads, out)

    def _send_all(self, key: bytes, head: bytes, payloads: list[bytes], out: Output) -> None:
        packets = [head + payload for payload in payloads]
        group = out.links.get(key)
        if group is None:
            out.links[key] = packets
        else:
            group += packets
        self.stats["originated"] += len(packets)

    def neighbour_up(self, key: bytes, now: float) -> Output:
        """A link to ``key`` came up: anything waiting for a lookup of its address goes to it directly now."""
        out = Output()
        dst = derive_address(key).packed
        queued = self.pathfinder.take(dst, now)
        if queued is not None:
            out.resolved.append((dst, key))
            self._to_neighbour(key, dst, queued, out)
        return out

    def neighbour_down(self, key: bytes) -> None:
        """The link to ``key`` went away: whatever we cached of its address's coordinates goes with it (the next
        packet for it is looked up again, never sent on to whoever now holds its old position), and so do the
        source routes that leave over it."""
        self.pathfinder.forget(derive_address(key).packed)
        for port, holder in list(self._ports.items()):
            if holder == key:
                self.pathfinder.drop_routes_via(port)
                del self._ports[port]

    def _to_neighbour(self, key: bytes, dst: bytes, payloads: Iterable[bytes], out: Output) -> None:
        self._send_all(key, self._neighbour_head(dst), list(payloads), out)

    def _lookup(self, dst: bytes, nonce: int, out: Output) -> None:
        targets = self.tree.lookup_targets(dst)
        if not targets:
            self.stats["dropped_no_tree"] += 1
            return
        packet = encode_routed(Kind.LOOKUP, root_tag=root_tag(self.tree.root), dst=dst, src=self.address,
                               dst_path=(), src_path=self.tree.path, payload=encode_lookup(nonce))
        for key in targets:
            out.send(key, packet)

    def tick(self, now: float) -> Output:
        """Lookups due again; call once per heartbeat."""
        self._table_now = -1.0  # rebuild the table on next use: announcements may have aged out
        return self.timers(now)

    def timers(self, now: float) -> Output:
        """Lookups due again, lookups given up, dead paths and ring rounds due: at every heartbeat and at the
        pathfinder's own deadlines between them (``Pathfinder.next_deadline``), so that a lookup lost while the tree
        forms is retried after a quarter second, not at the next heartbeat."""
        out = Output()
        for dst, nonce in self.pathfinder.due(now):
            self._lookup(dst, nonce, out)
        self._ring_step(now, out)
        out.unresolvable.extend(self.pathfinder.given_up)
        self.pathfinder.given_up.clear()
        return out

    def ring_tick(self, now: float) -> Output:
        """Dead paths and ring rounds due; the router calls this between heartbeats too (RING_TICK), so that a
        search widens at its own pace, not a heartbeat's."""
        out = Output()
        self._ring_step(now, out)
        return out

    def _ring_step(self, now: float, out: Output) -> None:
        self._forget_rings(now)
        self.pathfinder.dead_paths(now)
        for dst, nonce, ttl in self.pathfinder.ring_due(now):
            self._ring(dst, nonce, ttl, out, now)

    def _ring(self, dst: bytes, nonce: int, ttl: int, out: Output, now: float) -> None:
        """One round of our ring search for ``dst``: to every link, each copy naming the port it leaves by."""
        self._refresh(now)
        payload = self.pathfinder.ring_payload(dst, nonce, ttl)
        tag = root_tag(self.tree.root)
        for port, key in self._ports.items():
            out.send(key, encode_routed(Kind.RING_SEARCH, root_tag=tag, dst=dst, src=self.address, dst_path=(port,),
                                        src_path=(), payload=payload, hop_limit=ttl))
            self.stats["ring_messages_sent"] += 1

    def _forget_rings(self, now: float) -> None:
        """Forget the floods seen RING_SEEN_LIFETIME ago or more (the table is in arrival order)."""
        seen, oldest = self._ring_seen, now - RING_SEEN_LIFETIME
        while seen and next(iter(seen.values())) <= oldest:
            seen.popitem(last=False)

    # --- receiving -----------------------------------------------------------------------------------
    def receive(self, from_key: bytes, packets: Iterable[bytes], now: float) -> Output:
        """Handle routed packets that arrived over the link to ``from_key``.

        TRAFFIC takes a fast path: the packets of a batch mostly share one header (kind, root tag, addresses,
        paths), so the decision for a header is made once per batch (on its first packet, by the general path)
        and applied to the others, with their own hop limit and watermark checked per packet as always.
        """
        out = Output()
        decided: dict[bytes, tuple[int, bytes, int]] = {}
        stats = self.stats
        for data in packets:
            n = len(data)
            if n >= FIXED_SIZE and data[0] == _TRAFFIC:
                end = header_end(data)
                if end <= n:
                    key = data[8:end]
                    decision = decided.get(key)
                    if decision is not None:
                        action, link, distance = decision
                        if action == _DELIVER:
                            stats["delivered"] += 1
                            out.delivered.append((data[SOURCE], data[end:]))
                            continue
                        hop_limit, watermark = hop_limit_and_watermark(data)
                        if hop_limit > 1 and (action == _DIRECT or distance < watermark):
                            out.send(link, forwarded(data, hop_limit - 1, distance))
                            stats["relayed"] += 1
                            continue
                    else:
                        decision = self._traffic_decision(data, now)
                        if decision is not None:
                            decided[key] = decision
            try:
                header = decode_routed(data)
            except RemoteProtocolError:
                stats["dropped_malformed"] += 1
                continue
            if header.kind is Kind.LOOKUP:
                self._on_lookup(from_key, data, header, out, now)
            elif header.kind is Kind.RING_SEARCH:
                self._on_ring(from_key, data, header, out, now)
            elif header.dst == self.address:
                self._deliver(data, header, out, now)
            elif header.kind in _SOURCE_ROUTED_KINDS:
                self._relay_source(data, header, out, now)
            else:
                self._relay(data, header, out, now)
        for src in {src for src, _ in out.delivered}:
            self.pathfinder.heard(src, now)
        return out

    def _relay_source(self, data: bytes, header: RoutedHeader, out: Output, now: float) -> None:
        """A source-routed packet goes out by the port its watermark points at; no loop: the index only grows."""
        index = header.watermark
        if index >= len(header.dst_path):
            self.stats["dropped_route_end"] += 1
            return
        if header.hop_limit <= 1:
            self.stats["dropped_hop_limit"] += 1
            return
        key = self._port_key(header.dst_path[index], now)
        if key is None:
            self.stats["dropped_no_port"] += 1
            return
        out.send(key, forwarded(data, header.hop_limit - 1, index + 1))
        self.stats["source_relayed"] += 1

    def _on_ring(self, from_key: bytes, data: bytes, header: RoutedHeader, out: Output, now: float) -> None:
        """A RING_SEARCH: answer it if it is for us, else flood it on once per (origin, nonce, TTL), within the
        per-origin, per-target and per-link budgets, while its hop limit lasts."""
        if header.src == self.address:
            self.stats["ring_duplicate"] += 1  # our own search, come back around
            return
        try:
            search = decode_ring(data[header.offset:])
        except RemoteProtocolError:
            self.stats["dropped_malformed"] += 1
            return
        seen = (header.src, search.nonce, search.ttl)
        self._forget_rings(now)
        if seen in self._ring_seen:
            self.stats["ring_duplicate"] += 1
            return
        nb = self.tree.neighbours.get(from_key)
        if nb is None:
            self.stats["ring_refused"] += 1
            return
        back = header.src_path + (nb.port,)  # the reverse path, from us towards the origin after this hop
        if header.dst == self.address:
            try:
                verify_ring(search, self.address, header.src)
            except RemoteProtocolError:
                self.stats["ring_refused"] += 1
                return  # not remembered: a forged copy cannot shadow the real one
        self._ring_seen[seen] = now
        while len(self._ring_seen) > MAX_RING_SEEN:
            self._ring_seen.popitem(last=False)
        if header.dst == self.address:
            route = tuple(reversed(back))
            self.pathfinder.learn(header.src, route, search.key, now)
            self.stats["ring_answered"] += 1
            reply = self.pathfinder.ring_answer(header.src, search.nonce)
            self._source_routed(Kind.RING_REPLY, header.src, route, header.dst_path, [reply], out, now)
            queued = self.pathfinder.take(header.src, now)
            if queued:
                self._source_routed(Kind.SOURCE_ROUTED, header.src, route, (), queued, out, now)
            return
        if header.hop_limit <= 1 or len(header.dst_path) >= RING_MAX_TTL:
            self.stats["ring_ttl_end"] += 1
            return
        limits = self._ring_limits
        if not (limits[0].take(header.src, now) and limits[1].take(header.dst, now) and limits[2].take(from_key, now)):
            self.stats["ring_relay_limited"] += 1
            return
        self._refresh(now)
        direct = self.tree.neighbour_by_address(header.dst)
        targets = [(self.tree.neighbours[direct].port, direct)] if direct in self.tree.neighbours else \
            [(port, key) for port, key in self._ports.items() if key != from_key]
        payload = data[header.offset:]
        for port, key in targets:
            out.send(key, encode_routed(Kind.RING_SEARCH, root_tag=header.root_tag, dst=header.dst, src=header.src,
                                        dst_path=header.dst_path + (port,), src_path=back, payload=payload,
                                        hop_limit=header.hop_limit - 1))
        self.stats["ring_forwarded"] += 1
        self.stats["ring_messages_sent"] += len(targets)

    def _traffic_decision(self, data: bytes, now: float) -> tuple[int, bytes, int] | None:
        """What ``_deliver`` / ``_relay`` do with TRAFFIC of this packet's header whatever its hop limit and
        watermark: (_DELIVER, -, -), (_DIRECT, neighbour, 0) or (_RELAY, next hop, our distance); None when it is
        anything else (malformed, another root, no route: those go the general way every time)."""
        try:
            header = decode_routed(data)
        except RemoteProtocolError:
            return None
        if header.dst == self.address:
            return (_DELIVER, b"", 0)
        direct = self.tree.neighbour_by_address(header.dst)
        if direct is not None:
            return (_DIRECT, direct, 0)
        if header.root_tag != root_tag(self.tree.root):
            return None
        key, distance = self.decide(header.dst_path, now)
        return None if key is None else (_RELAY, key, distance)

    def source_decision(self, data: bytes, now: float) -> tuple[bytes, int] | None:
        """What ``_relay_source`` does with SOURCE_ROUTED packets of this packet's header and watermark whatever
        their hop limit: (the link, the route index it reads); None for anything else (ours, malformed, the end of
        the route, no such port: those go the general way every time)."""
        try:
            header = decode_routed(data)
        except RemoteProtocolError:
            return None
        index = header.watermark
        if header.kind is not Kind.SOURCE_ROUTED or header.dst == self.address or index >= len(header.dst_path):
            return None
        key = self._port_key(header.dst_path[index], now)
        return None if key is None else (key, index)

    def _relay(self, data: bytes, header: RoutedHeader, out: Output, now: float) -> None:
        direct = self.tree.neighbour_by_address(header.dst)
        if direct is not None and header.hop_limit > 1:
            out.send(direct, forwarded(data, header.hop_limit - 1, 0))  # the last hop: delivered, never relayed
            self.stats["relayed"] += 1
            return
        if header.root_tag != root_tag(self.tree.root):
            self.stats["dropped_other_root"] += 1
            return
        if header.hop_limit <= 1:
            self.stats["dropped_hop_limit"] += 1
            return
        key, distance = self.decide(header.dst_path, now)
        if distance >= header.watermark:
            self.stats["dropped_watermark"] += 1
            return
        if key is None:
            self.stats["dropped_no_route"] += 1
            if header.kind is Kind.TRAFFIC:
                self._path_broken(header, out, now)
            return
        out.send(key, forwarded(data, header.hop_limit - 1, distance))
        self.stats["relayed"] += 1

    def _path_broken(self, header: RoutedHeader, out: Output, now: float) -> None:
        last = self._broken_at.get(header.src)
        if last is not None and now - last < PATH_BROKEN_INTERVAL:
            self.stats["path_broken_limited"] += 1
            return
        self._broken_at[header.src] = now
        self._broken_at.move_to_end(header.src)
        while len(self._broken_at) > MAX_BROKEN_SOURCES:
            self._broken_at.popitem(last=False)
        self.stats["path_broken_sent"] += 1
        self._originate(Kind.PATH_BROKEN, header.src, header.src_path, [encode_path_broken(header.dst)], out, now)

    def _deliver(self, data: bytes, header: RoutedHeader, out: Output, now: float) -> None:
        payload = data[header.offset:]
        if header.kind is Kind.TRAFFIC or header.kind is Kind.SOURCE_ROUTED:
            self.stats["delivered"] += 1
            out.delivered.append((header.src, payload))
            return
        try:
            if header.kind is Kind.RING_REPLY:
                dst, owner_key, queued = self.pathfinder.accept_ring(header, payload, now)
                out.resolved.append((dst, noise_key_of(owner_key)))
                route = self.pathfinder.source_route(dst, now)
                if queued and route is not None:
                    self._source_routed(Kind.SOURCE_ROUTED, dst, route, (), queued, out, now)
                    self.pathfinder.sent(dst, now)
            elif header.kind is Kind.LOOKUP_REPLY:
                dst, queued = self.pathfinder.accept(header, payload, now)
                key = self.pathfinder.key_for(dst, now)
                if key is not None:
                    out.resolved.append((dst, noise_key_of(key)))
                if queued:
                    coords = self.pathfinder.route(dst, now)
                    if coords is not None:
                        self._originate(Kind.TRAFFIC, dst, coords.path, queued, out, now)
            else:  # PATH_BROKEN: the route was in use and a tree change broke it; search at once, as in send()
                dst = decode_path_broken(payload)
                nonce = self.pathfinder.broken(dst, now)
                if nonce is not None:
                    self._lookup(dst, nonce, out)
                if self.pathfinder.source_route(dst, now) is None:  # (it concerns greedy routes only)
                    self.pathfinder.search_now(dst)
                    self._ring_step(now, out)
        except RemoteProtocolError:
            self.stats["replies_rejected"] += 1

    def _on_lookup(self, from_key: bytes, data: bytes, header: RoutedHeader, out: Output, now: float) -> None:
        if header.root_tag != root_tag(self.tree.root):
            self.stats["dropped_other_root"] += 1
            return
        if header.dst == self.address:
            try:
                nonce = decode_lookup(data[header.offset:])
            except RemoteProtocolError:
                self.stats["dropped_malformed"] += 1
                return
            reply = self.pathfinder.answer(nonce, Coords(self.tree.root, self.tree.path))
            self.stats["lookups_answered"] += 1
            self._originate(Kind.LOOKUP_REPLY, header.src, header.src_path, [reply], out, now)
            return
        if header.hop_limit <= 1:
            self.stats["dropped_hop_limit"] += 1
            return
        targets = self.tree.lookup_targets(header.dst, exclude=from_key)
        if not targets:
            self.stats["lookup_dead_end"] += 1
            return
        packet = forwarded(data, header.hop_limit - 1, NO_WATERMARK)
        for key in targets:
            out.send(key, packet)
        self.stats["lookups_forwarded"] += 1
