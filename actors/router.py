"""RouterActor: the node's place in the spanning tree and the forwarding decision for every routed packet.

It is the thin shell around the routing core (axiomnet/tree.py, lookup.py, forward.py): it feeds the core the
announcements and routed packets the link sessions hand it and the end-to-end datagrams the e2e actor hands
it, with the time, and hands each result on: routed packets to the session of the next hop, TRAFFIC for us and
resolved keys to the e2e actor. Every HEARTBEAT_INTERVAL (a HeartbeatTick from the heartbeat actor) it sends
what the tree owes (the root's beat to its children, announcements that changed or are due for their slow
refresh, RTT probes) and resends lookups that are due. A neighbour's session tells it PeerSilent when nothing came
from the peer for PEER_DEAD_AFTER (the session's timer, so a live link costs the router no message): its routes are
withdrawn and it gets only a keepalive probe every DEAD_PROBE_INTERVAL until it is heard again (PeerSeen). A beat
from our parent is forwarded to our children as it arrives. Links stay alive without the tree: every link
session sends an authenticated KEEPALIVE when it has sent nothing for LINK_KEEPALIVE. While traffic flows it also
steps the root-independent fallback between heartbeats (at most every RING_TICK): dead paths, ring searches
widening (axiomnet/forward.py); and a deadline timer of its own wakes it at the pathfinder's next deadline (a
lookup to retry, a search to start or widen, a route to find dead), so a lookup lost while the tree forms is
sent again after LOOKUP_FIRST_RETRY, not at the next heartbeat.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

from loguru import logger

from axiomnet.constants import DEAD_PROBE_INTERVAL, LOOKUP_RETRY, MAX_LOOKUP_CACHE, PEER_DEAD_AFTER, RING_TICK, SOURCE_ROUTE_IDLE
from axiomnet import fastpath
from axiomnet.announce import PartAssembler
from axiomnet.errors import RemoteProtocolError
from axiomnet.forward import _DIRECT, _RELAY, Forwarder, Output
from axiomnet.identity import Identity, derive_address, noise_key_of
from axiomnet.lookup import Pathfinder
from axiomnet.routed import DESTINATION, FIXED_SIZE, Kind, decode_routed
from axiomnet.tree import Tree
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell, run_control_or_tell, run_or_tell, tell



_CARRIES_E2E = (Kind.TRAFFIC, Kind.SOURCE_ROUTED)  # routed kinds whose payload is an end-to-end datagram
_SOURCE_ROUTED = int(Kind.SOURCE_ROUTED)
TIMER_FLOOR = 0.01  # the router's own timer fires at most this often (a deadline in the past waits this long)


def _same_origin(a: fastpath.Origin | None, b: fastpath.Origin) -> bool:
    return a is not None and a[0] is b[0] and a[1] == b[1] and a[2] == b[2]


class RouterActor(SupervisedActor):
    """Spanning tree + lookups + greedy forwarding; learns its links from SessionUp/Down."""

    role = "router"

    def __init__(self, supervisor: Any, refs: dict[str, Any], identity: Identity,
                 seq_start: int | None = None, trusted_roots: frozenset[bytes] | None = None) -> None:
        super().__init__(supervisor, refs)
        now = time.monotonic()
        self.address = identity.address.packed
        # The root sequence number starts from the wall clock in ms, so a restarted root is newer than it was.
        start = int(time.time() * 1000) if seq_start is None else seq_start
        self.tree = Tree(identity.signing_secret, identity.signing_key, self.address, now=now, seq_start=start,
                         trusted_roots=trusted_roots)
        # Announcements go and come in parts (PROTOCOL §5.7), numbered from the same clock as the root seq, so a
        # restarted node's numbers are newer than the ones its neighbours last completed.
        self.parts = PartAssembler(start)
        self.pathfinder = Pathfinder(self.address, identity.signing_secret, identity.signing_key)
        self.forwarder = Forwarder(self.tree, self.pathfinder)
        self.sessions: dict[bytes, Any] = {}  # noise key -> session actor, while the link is up
        self.last_seen: dict[bytes, float] = {}
        self.dead: dict[bytes, float] = {}  # noise key -> when it was last probed
        self._corrupt_left = 0  # fault injection (CorruptRelayed): relayed TRAFFIC packets still to damage
        # For the map (axiomnet-inspect map): when each lookup we started was sent, and its round trip.
        self.lookup_sent: OrderedDict[bytes, float] = OrderedDict()
        self.lookup_rtt: OrderedDict[bytes, float] = OrderedDict()
        self.lookup_keys: OrderedDict[bytes, bytes] = OrderedDict()  # destination -> the Noise key its reply proved
        self._noise_keys: dict[bytes, bytes | None] = {}  # Ed25519 -> Noise key of chain nodes (a conversion: ~0.3 ms)
        self._ring_at = now  # when ring searches and dead paths were last stepped (RING_TICK)
        self._relay_table = fastpath.EMPTY  # published to every link session (the relay fast path)
        self._origin_table = fastpath.NO_ORIGINS  # published to the e2e actor (the origin fast path)
        self._wake_told: float | None = None  # the pathfinder deadline our timer was last armed for

    def setup(self) -> None:
        self._timer = self.start_deadline_timer(m.TimerDue())

    def handle(self, message: Any) -> Any:
        now = time.monotonic()
        if now - self._ring_at >= RING_TICK and isinstance(message, (m.RouteOut, m.RoutedFromLink, m.Resolve,
                                                                     m.PathActivity)):
            # Between heartbeats too, while traffic flows: a ring search widens every RING_STEP x TTL, and a path
            # found dead is searched for at once, not at the next heartbeat.
            self._ring_at = now
            self._dispatch(self.forwarder.ring_tick(now))
        if isinstance(message, m.RouteOut):
            started = self.pathfinder.stats["lookups_sent"]
            self._dispatch(self.forwarder.send(message.dst, message.datagrams, now))
            self._lookup_started(message.dst, started, now)
            self._learn_origin(message.dst, now)
        elif isinstance(message, m.PathActivity):
            self._path_activity(message, now)
        elif isinstance(message, m.Resolve):
            started = self.pathfinder.stats["lookups_sent"]
            self._dispatch(self.forwarder.resolve(message.dst, now))
            self._lookup_started(message.dst, started, now)
        elif isinstance(message, m.RoutedFromLink):
            self._seen(message.peer_key, now)
            packets = self._corrupt(message.packets) if self._corrupt_left else message.packets
            out = self.forwarder.receive(message.peer_key, packets, now)
            self._lookup_answered(out, now)
            self._dispatch(out)
            self._learn_relays(packets, now)
        elif isinstance(message, m.CorruptRelayed):
            self._corrupt_left = message.count
            logger.warning("fault injection: the next {} relayed end-to-end datagrams get one bit flipped", message.count)
        elif isinstance(message, m.Announce):
            self._announce(message.peer_key, message.data, now)
            self._send_urgent(now)
        elif isinstance(message, m.PeerSeen):
            self._seen(message.peer_key, now)
            self._send_urgent(now)
        elif isinstance(message, m.PeerSilent):
            self._silent(message.peer_key, message.ref, now)
        elif isinstance(message, m.HeartbeatTick):
            self._tick(now)
        elif isinstance(message, m.TimerDue):
            self._ring_at = now
            out = self.forwarder.timers(now)
            self._lookups_resent(out, now)
            self._dispatch(out)
        elif isinstance(message, m.SessionUp):
            self.sessions[message.peer_key] = message.ref
            self.last_seen[message.peer_key] = now
            self.dead.pop(message.peer_key, None)
            self.tree.add(message.peer_key, now)
            self._send_urgent(now)
            self._dispatch(self.forwarder.neighbour_up(message.peer_key, now))
            if self._relay_table.hops:
                tell(message.ref, m.RelayDecisions(self._relay_table))
            logger.info("peer {} up via {}:{}", message.peer_key.hex()[:16], *message.endpoint)
        elif isinstance(message, (m.SessionDown, m.SessionGone)):
            key = message.peer_key
            if key is not None and self.sessions.get(key) is message.ref:
                del self.sessions[key]
                self.last_seen.pop(key, None)
                self.dead.pop(key, None)
                self.tree.remove(key, now)
                self.parts.forget(key)
                self.forwarder.neighbour_down(key)
                self._send_urgent(now)
        elif isinstance(message, m.Snapshot):
            return self.snapshot(now)
        else:
            return super().handle(message)
        self._arm(now)
        table = self._relay_table
        if table.hops and (table.version != self.tree.version or self._corrupt_left
                           or isinstance(message, m.HeartbeatTick)):
            self._publish_relays(fastpath.EMPTY)  # decisions live at most one heartbeat and one tree version
        if self._origin_table.routes and not isinstance(message, m.RouteOut):
            self._check_origins(now)
        return None

    def rewired(self, role: str) -> None:
        if role == "e2e" and self._origin_table.routes:  # the new e2e actor starts with no origin decisions
            tell(self.refs.get("e2e"), m.OriginRoutes(self._origin_table))

    def _arm(self, now: float) -> None:
        """Wake at the pathfinder's next deadline (not earlier than TIMER_FLOOR from now: never a spin)."""
        deadline = self.pathfinder.next_deadline(now)
        if deadline is None:
            return
        deadline = max(deadline, now + TIMER_FLOOR)
        told = self._wake_told
        if told is None or told <= now or deadline < told:
            self._wake_told = deadline
            self._timer.at(deadline)

    # --- the relay fast path (axiomnet/fastpath.py) --------------------------------------------------
    def _learn_relays(self, packets: list[bytes], now: float) -> None:
        """Publish our decisions for relayed TRAFFIC and SOURCE_ROUTED headers not yet in the table, so that the link
        sessions relay the rest of those flows themselves (never while a fault is injected: those must come here)."""
        if self._corrupt_left:
            return

        def decide(data: bytes) -> fastpath.Decision | None:
            if data[0] == _SOURCE_ROUTED:
                source = self.forwarder.source_decision(data, now)
                if source is None:
                    return None
                ref = self.sessions.get(source[0])
                return None if ref is None or source[0] in self.dead else (ref, source[1], None)
            decision = self.forwarder._traffic_decision(data, now)
            if decision is None or decision[0] not in (_DIRECT, _RELAY):
                return None
            action, key, distance = decision
            ref = self.sessions.get(key)
            return None if ref is None or key in self.dead else (ref, distance, action == _DIRECT)

        table = fastpath.learn(self._relay_table, packets, decide, self.tree.version)
        if table is not None:
            self._publish_relays(table)

    # --- the origin fast path (axiomnet/fastpath.py OriginTable) -------------------------------------
    def _origin(self, dst: bytes, now: float) -> fastpath.Origin | None:
        """What Forwarder.send does with datagrams for ``dst`` now, as a published decision (None: keep them coming)."""
        decision = self.forwarder.origin(dst, now)
        if decision is None:
            return None
        key, head, clocked = decision
        ref = self.sessions.get(key)
        return None if ref is None or key in self.dead else (ref, head, clocked)

    def _learn_origin(self, dst: bytes, now: float) -> None:
        """After datagrams for ``dst`` came through here: publish the decision for the rest of them to the e2e actor."""
        origin = self._origin(dst, now)
        routes = self._origin_table.routes
        if origin is None or _same_origin(routes.get(dst), origin):
            return
        fresh = dict(routes) if len(routes) < fastpath.MAX_ORIGIN_ENTRIES else {}
        fresh[dst] = origin
        self._publish_origins(fresh)

    def _check_origins(self, now: float) -> None:
        """After anything that may change a decision (a tree or pathfinder change, a link down, a heartbeat, a dead
        path found), each published decision is made again; the table is published anew if one changed."""
        routes = self._origin_table.routes
        fresh = {}
        for dst in routes:
            origin = self._origin(dst, now)
            if origin is not None:
                fresh[dst] = origin
        if len(fresh) != len(routes) or not all(_same_origin(routes[dst], o) for dst, o in fresh.items()):
            self._publish_origins(fresh)

    def _publish_origins(self, routes: dict[bytes, fastpath.Origin]) -> None:
        self._origin_table = fastpath.OriginTable(MappingProxyType(routes)) if routes else fastpath.NO_ORIGINS
        self.counters["origin_tables_published"] += 1
        tell(self.refs.get("e2e"), m.OriginRoutes(self._origin_table))

    def _path_activity(self, message: m.PathActivity, now: float) -> None:
        """What the e2e actor sent and heard past us: the pathfinder's dead-path clocks and the counters, as if it
        had all come through here (heard first: a send it reports is later than anything it heard from there)."""
        for src, at in message.heard:
            self.pathfinder.heard(src, at)
        for dst, since in message.sent:
            self.pathfinder.sent(dst, since)
        stats = self.forwarder.stats
        stats["originated"] += message.originated
        stats["delivered"] += message.delivered

    def _publish_relays(self, table: fastpath.RelayTable) -> None:
        self._relay_table = table
        self.counters["relay_tables_published"] += 1
        update = m.RelayDecisions(table)
        for ref in self.sessions.values():
            tell(ref, update)

    # --- packets -------------------------------------------------------------------------------------
    def _corrupt(self, packets: list[bytes]) -> list[bytes]:
        """Fault injection: flip the last bit of relayed end-to-end datagrams (not ours), greedy TRAFFIC or
        SOURCE_ROUTED (a route a ring search found), as a malicious relay could."""
        out = []
        for pkt in packets:
            if (self._corrupt_left and len(pkt) > FIXED_SIZE and pkt[0] in _CARRIES_E2E
                    and pkt[DESTINATION] != self.address):
                pkt = pkt[:-1] + bytes([pkt[-1] ^ 1])
                self._corrupt_left -= 1
                self.counters["fault_corrupted"] += 1
            out.append(pkt)
        return out

    def _dispatch(self, out: Output) -> None:
        for key, packets in out.links.items():
            if run_or_tell(self.sessions.get(key), m.RoutedToLink(packets), len(packets)):  # small: sealed here
                self.counters["link_packets"] += len(packets)
            else:
                self.counters["dropped_backpressure"] += len(packets)
        e2e = self.refs.get("e2e")
        if out.delivered and not bounded_tell(e2e, m.Delivered(out.delivered)):
            self.counters["rx_dropped_no_e2e"] += len(out.delivered)
        for dst, key in out.resolved:
            tell(e2e, m.Resolved(dst, key))
        for dst in out.unresolvable:
            tell(e2e, m.Unresolvable(dst))

    def _lookup_started(self, dst: bytes, lookups_before: int, now: float) -> None:
        if self.pathfinder.stats["lookups_sent"] != lookups_before:  # this call sent dst's first LOOKUP
            self._lookup_sent_at(dst, now)

    def _lookups_resent(self, out: Output, now: float) -> None:
        """The LOOKUPs a tick sends again (no reply within LOOKUP_RETRY): their round trip starts again."""
        for packets in out.links.values():
            for packet in packets:
                header = decode_routed(packet)
                if header.kind is Kind.LOOKUP and header.src == self.address:
                    self._lookup_sent_at(header.dst, now)

    def _lookup_sent_at(self, dst: bytes, now: float) -> None:
        self.lookup_sent[dst] = now
        self.lookup_sent.move_to_end(dst)
        while len(self.lookup_sent) > MAX_LOOKUP_CACHE:
            self.lookup_sent.popitem(last=False)

    def _lookup_answered(self, out: Output, now: float) -> None:
        """A lookup's round trip, for the map: from its last send to the reply, if that came before the next resend."""
        for dst, key in out.resolved:
            self.lookup_keys[dst] = key
            self.lookup_keys.move_to_end(dst)
            if len(self.lookup_keys) > MAX_LOOKUP_CACHE:
                self.lookup_keys.popitem(last=False)
            sent = self.lookup_sent.pop(dst, None)
            if sent is not None and now - sent < LOOKUP_RETRY:
                self.lookup_rtt[dst] = now - sent
                self.lookup_rtt.move_to_end(dst)
                while len(self.lookup_rtt) > MAX_LOOKUP_CACHE:
                    self.lookup_rtt.popitem(last=False)

    # --- the tree ------------------------------------------------------------------------------------
    def _announce(self, key: bytes, data: bytes, now: float) -> None:
        self._seen(key, now)
        try:
            whole = self.parts.receive(key, data, now)  # an announcement once its last part is in; beats, probes as sent
            if whole is None:
                return
            out = self.tree.receive(key, whole, now)
        except RemoteProtocolError as exc:
            self.counters["announce_" + exc.metric] += 1
            logger.debug("announcement from {} refused: {}", key.hex()[:16], exc)
            return
        for to, payload in out:  # a probe answered at once (the RTT is the peer's own), a beat for our children
            if not run_control_or_tell(self.sessions.get(to), m.SendControl(payload)):
                self.counters["control_not_queued"] += 1

    def _send_tree(self, out: list[tuple[bytes, bytes]]) -> None:
        """What the tree owes its neighbours: announcements in parts (PROTOCOL §5.7), beats and probes as they are."""
        for key, data in out:
            for payload in self.parts.split(data):
                if not run_control_or_tell(self.sessions.get(key), m.SendControl(payload)):
                    self.counters["announce_not_queued"] += 1

    def _seen(self, key: bytes, now: float) -> None:
        if key not in self.sessions:
            return
        self.last_seen[key] = now
        if key in self.dead:
            del self.dead[key]
            self.tree.add(key, now)
            logger.info("peer {} answers again: routes restored", key.hex()[:16])

    def _send_urgent(self, now: float) -> None:
        """Announcements the tree owes between ticks (new neighbour, new child, our position changed)."""
        self._send_tree(self.tree.urgent(now))

    def _silent(self, key: bytes, ref: Any, now: float) -> None:
        """The session of ``key`` heard nothing from it for PEER_DEAD_AFTER: withdraw its routes (a stale report
        from a session since replaced changes nothing)."""
        if self.sessions.get(key) is not ref or key in self.dead:
            return
        self.dead[key] = now
        self.tree.remove(key, now)
        self.parts.forget(key)
        self.counters["peers_withdrawn"] += 1
        logger.warning("peer {} silent for over {:.1f} s: routes withdrawn", key.hex()[:16], PEER_DEAD_AFTER)
        self._send_urgent(now)

    def _tick(self, now: float) -> None:
        for key, probed in self.dead.items():
            if now - probed >= DEAD_PROBE_INTERVAL:
                self.dead[key] = now
                tell(self.sessions.get(key), m.Probe())
        self._send_tree(self.tree.tick(now))
        self._ring_at = now
        out = self.forwarder.tick(now)
        self._lookups_resent(out, now)
        self._dispatch(out)

    # --- inspection ----------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        """Sections for axiomnet-inspect: peers, tree, routes, lookups, counters."""
        tree = self.tree.snapshot(now)
        peers = []
        for nb in tree["neighbours"]:  # type: ignore[attr-defined]
            key = bytes.fromhex(nb["peer"])
            seen = self.last_seen.get(key)
            peers.append({
                "public_key": nb["peer"],
                "address": str(derive_address(key)),
                "port": nb["port"],
                "root": nb["root"],
                "coords": nb["coords"],
                "tree_link": nb["tree_link"],
                "rtt_ms": nb["rtt_ms"],
                "last_seen": None if seen is None else round(now - seen, 3),
                "alive": key not in self.dead,
            })
        for key in self.dead:  # withdrawn neighbours are no longer in the tree; show them as dead
            seen = self.last_seen.get(key)
            peers.append({"public_key": key.hex(), "address": str(derive_address(key)), "port": None,
                          "coords": None, "tree_link": False, "rtt_ms": None,
                          "last_seen": None if seen is None else round(now - seen, 3), "alive": False})
        lookups = self.pathfinder.snapshot(now)
        routes = [self._route_row(row) for row in lookups["cache"]]  # type: ignore[attr-defined]
        # Routes a ring search found (docs/ROUTING.md §4.1): ports hop by hop, no coordinates.
        # public_key: the Noise key, as for looked-up rows (the ring reply proved the owner's Ed25519 key).
        routes += [{"address": row["address"], "public_key": noise_key_of(bytes.fromhex(row["key"])).hex(),
                    "root": None, "coords": None,
                    "source_route": row["ports"], "rtt_ms": None,
                    "expires_in": round(SOURCE_ROUTE_IDLE - row["heard_ago"], 1)}
                   for row in lookups["source_routes"]]  # type: ignore[attr-defined]
        return {
            "peers": peers,
            "coords": {"root": tree["root"], "depth": tree["depth"], "path": tree["coords"], "chain": self._chain()},
            "tree": {**{k: v for k, v in tree.items() if k != "neighbours"}, **self.parts.stats,
                     "partial_bytes": self.parts.held},
            "routes": routes,
            "lookups": lookups,
            "counters": {**self.counters, **{f"fwd_{k}": v for k, v in self.forwarder.stats.items()}},
        }

    def _chain(self) -> list[dict[str, Any]]:
        """Our chain from the root down to us: each node's keys, address and path (for the map)."""
        keys = [self.tree.root, *(hop.key for hop in self.tree.chain)]
        path = self.tree.path
        rows = []
        if len(self._noise_keys) > 4 * len(keys) + 64:
            self._noise_keys.clear()
        for depth, key in enumerate(keys):
            if key not in self._noise_keys:
                try:
                    self._noise_keys[key] = noise_key_of(key)
                except ValueError:  # not a point of the curve: it names no address
                    self._noise_keys[key] = None
            noise = self._noise_keys[key]
            rows.append({"key": key.hex(), "public_key": noise.hex() if noise else None,
                         "address": str(derive_address(noise)) if noise else None, "coords": list(path[:depth])})
        return rows

    def _route_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A looked-up destination: its address, key, root, path, lookup round trip and time left in the cache."""
        dst = ipaddress.IPv6Address(row["address"]).packed
        key = self.lookup_keys.get(dst)
        rtt = self.lookup_rtt.get(dst)
        return {"address": row["address"], "public_key": key.hex() if key else None,
                "root": row["root"], "coords": row["coords"],
                "rtt_ms": round(rtt * 1000, 3) if rtt is not None else None, "expires_in": row["expires_in"]}
