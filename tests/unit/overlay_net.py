"""Test harness for the routing core: an in-memory overlay of nodes running the real Tree, Pathfinder and
Forwarder, joined by perfect links, ticked in synchronous heartbeats with a fake clock.

Each node is what the router actor holds; links deliver announcements and routed packets instantly. Packets
are followed hop by hop so tests can check where each went, that none loops and that watermarks fall.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import networkx as nx

from axiomnet.errors import RemoteProtocolError
from axiomnet.forward import Forwarder, Output
from axiomnet.identity import Identity
from axiomnet.lookup import Pathfinder
from axiomnet.routed import decode_routed
from axiomnet.tree import Tree

LINK_DELAY = 0.001  # what a tick's announcements take to arrive (the RTT the tree's probes measure is twice it)


@dataclass
class Node:
    """One overlay node: identity, tree, pathfinder, forwarder and what was delivered to it."""

    name: int
    identity: Identity
    tree: Tree
    forwarder: Forwarder
    delivered: list[tuple[bytes, bytes]] = field(default_factory=list)


class Overlay:
    """Nodes on a networkx graph; ``tick`` runs one heartbeat everywhere, ``send`` one packet to completion."""

    def __init__(self, graph: nx.Graph, seed: int = 0, *, between_ticks: bool = True) -> None:
        rng = random.Random(seed)
        self.graph = graph
        self.now = 0.0
        self.nodes: dict[int, Node] = {}
        for v in graph:
            ident = Identity.from_seed(rng.randbytes(32))
            tree = Tree(ident.signing_secret, ident.signing_key, ident.address.packed, now=0.0, seq_start=1,
                        between_ticks=between_ticks)
            pathfinder = Pathfinder(ident.address.packed, ident.signing_secret, ident.signing_key,
                                    random.Random(rng.random()))
            self.nodes[v] = Node(v, ident, tree, Forwarder(tree, pathfinder))
        self.by_noise = {node.identity.public_key: v for v, node in self.nodes.items()}
        self.alive = set(graph)
        self.rejected = 0
        self._next_round: list[tuple[int, bytes, bytes]] = []  # (sender, receiver's noise key, bytes)
        for u, v in graph.edges:
            self.link(u, v)

    def link(self, u: int, v: int) -> None:
        self.nodes[u].tree.add(self.nodes[v].identity.public_key, self.now)
        self.nodes[v].tree.add(self.nodes[u].identity.public_key, self.now)

    def kill(self, v: int) -> None:
        """Node ``v`` vanishes; its neighbours notice (their link sessions go down) at once."""
        self.alive.discard(v)
        gone = self.nodes[v].identity.public_key
        for u in self.graph[v]:
            if u in self.alive:
                self.nodes[u].tree.remove(gone, self.now)

    def cut(self, u: int, v: int) -> None:
        """The link u-v goes down."""
        self.nodes[u].tree.remove(self.nodes[v].identity.public_key, self.now)
        self.nodes[v].tree.remove(self.nodes[u].identity.public_key, self.now)

    def tick(self, count: int = 1) -> None:
        """One heartbeat everywhere: each node's tick, then every control message it sets off (replies, beats
        forwarded down the tree, announcements owed at once), delivered in order one LINK_DELAY per hop."""
        for _ in range(count):
            self.now += 1.0
            # Without decisions between ticks (the simulator's twin), what a message sets off waits for the next
            # round, as in the simulator's synchronous rounds (a beat goes one hop down per round).
            queue: deque[tuple[int, bytes, bytes, float]] = deque(
                (v, key, data, self.now) for v, key, data in self._next_round if v in self.alive)
            self._next_round = []
            for v in sorted(self.alive):
                queue.extend((v, key, data, self.now) for key, data in self.nodes[v].tree.tick(self.now))
            steps = 0
            while queue:
                v, key, data, sent_at = queue.popleft()
                steps += 1
                if steps > 100 * len(self.nodes) + 10_000:
                    raise AssertionError("control messages keep circulating")
                u = self.by_noise[key]
                if u not in self.alive:
                    continue
                at = sent_at + LINK_DELAY
                tree = self.nodes[u].tree
                try:
                    out = tree.receive(self.nodes[v].identity.public_key, data, at)
                except RemoteProtocolError:
                    self.rejected += 1
                    out = []
                if tree.between_ticks:
                    queue.extend((u, k, d, at) for k, d in out + tree.urgent(at))
                elif data[0] in (2, 3):  # a probe's reply comes back at once; what it owes waits for the tick
                    queue.extend((u, k, d, at) for k, d in out)
                else:
                    self._next_round.extend((u, k, d) for k, d in out)
            for v in sorted(self.alive):
                self._run(v, self.nodes[v].forwarder.tick(self.now))

    def converged(self) -> bool:
        """One root (the lowest key among live nodes) everywhere."""
        roots = {self.nodes[v].tree.root for v in self.alive}
        return len(roots) == 1 and min(self.nodes[v].identity.signing_key for v in self.alive) in roots

    def address(self, v: int) -> bytes:
        return self.nodes[v].identity.address.packed

    def send(self, src: int, dst: int, payload: bytes, max_steps: int = 10_000) -> list[int]:
        """Send ``payload`` from ``src`` to ``dst`` (lookups included) and run every packet to completion;
        returns the nodes the TRAFFIC (or SOURCE_ROUTED) packet visited (src first)."""
        trace: list[int] = []
        self._trace = trace
        self._run(src, self.nodes[src].forwarder.send(self.address(dst), [payload], self.now), max_steps)
        return trace

    def _run(self, origin: int, out: Output, max_steps: int = 10_000) -> None:
        queue: deque[tuple[int, Output]] = deque([(origin, out)])
        steps = 0
        while queue:
            v, out = queue.popleft()
            node = self.nodes[v]
            node.delivered.extend(out.delivered)
            for key, packets in out.links.items():
                u = self.by_noise[key]
                if u not in self.alive:
                    continue
                for packet in packets:
                    steps += 1
                    if steps > max_steps:
                        raise AssertionError("packets keep circulating")
                    if decode_routed(packet).kind in (1, 8) and hasattr(self, "_trace"):  # TRAFFIC, SOURCE_ROUTED
                        if not self._trace:
                            self._trace.append(v)
                        self._trace.append(u)
                    queue.append((u, self.nodes[u].forwarder.receive(node.identity.public_key, [packet],
                                                                     self.now)))
