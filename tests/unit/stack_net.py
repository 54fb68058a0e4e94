"""Test harness for the whole protocol stack without actors: link sessions, the tree, forwarding and
end-to-end sessions of several nodes, wired the way the actors wire them, on a fake clock.

Each :class:`StackNode` is what a daemon holds in its core objects: link Sessions and a HandshakeResponder
(tests/unit/lossy_link.py's Node), a Tree, a Forwarder (with its Pathfinder) and an EndToEnd. Datagrams travel
on a perfect in-memory wire; routed packets ride link DATA, announcements link CONTROL, exactly as in the
daemon. Used where time must pass (rekeys) faster than real daemons allow.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from tests.unit.lossy_link import PAYLOAD, Node

from axiomnet.e2e import E2EOutput, EndToEnd
from axiomnet.errors import RemoteProtocolError
from axiomnet.forward import Forwarder, Output
from axiomnet.identity import Identity
from axiomnet.lookup import Pathfinder
from axiomnet.responder import HandshakeResponder
from axiomnet.tree import Tree
from axiomnet.wire import PacketType, decode_header


class StackNode:
    """One node's core objects."""

    def __init__(self, name: str, seed: int) -> None:
        self.identity = ident = Identity.from_seed(random.Random(seed).randbytes(32))
        link = Node(name, seed)
        link.private, link.public = ident.private_key, ident.public_key
        link.addr = (f"10.0.1.{seed % 250 + 1}", 7443)
        link.responder = HandshakeResponder(ident.private_key, ident.public_key, local_payload=PAYLOAD, rng=link.rng)
        self.link = link
        self.address = ident.address.packed
        self.tree = Tree(ident.signing_secret, ident.signing_key, self.address, now=0.0, seq_start=1)
        self.forwarder = Forwarder(self.tree, Pathfinder(self.address, ident.signing_secret, ident.signing_key,
                                                         random.Random(seed)))
        self.e2e = EndToEnd(ident.private_key, ident.public_key, rng=random.Random(seed + 1))
        self.tun: list[bytes] = []
        self.up: set[bytes] = set()


class Stack:
    """Nodes joined by links; ``run`` advances the fake clock one heartbeat at a time."""

    def __init__(self, count: int, edges: list[tuple[int, int]]) -> None:
        self.nodes = [StackNode(f"n{i}", 100 + i) for i in range(count)]
        self.by_key = {n.identity.public_key: n for n in self.nodes}
        self.now = 0.0
        self.wire: deque[tuple[StackNode, StackNode, bytes]] = deque()
        # node index -> what that node does to every routed packet it sends over a link (a hostile relay)
        self.rewrite: dict[int, Callable[[bytes], bytes]] = {}
        # (node index, routed packet) for every routed packet a node sends over a link, after any rewrite
        self.routed_log: list[tuple[int, bytes]] = []
        for a, b in edges:
            u, v = self.nodes[a], self.nodes[b]
            session = u.link.session_for(v.identity.public_key)
            self._send(u, v, u.link._guarded(session, session.initiate(self.now), self.now))
        self.pump()

    def _send(self, src: StackNode, dst: StackNode, datagrams: list[bytes]) -> None:
        self.wire.extend((src, dst, d) for d in datagrams)

    def pump(self) -> None:
        """Deliver everything on the wire (and what it causes) at the current time."""
        while self.wire:
            src, dst, datagram = self.wire.popleft()
            self._receive(dst, src, datagram)

    def _receive(self, node: StackNode, src: StackNode, datagram: bytes) -> None:
        link, now = node.link, self.now
        link.sync(now)
        try:
            header = decode_header(datagram)
            if header.receiver == 0 or (header.ptype is PacketType.HANDSHAKE_FINAL
                                        and header.receiver in link.responder.pending_indices()):
                replies, result = link.responder.receive(header, datagram, src.link.addr, now)
                replies = link._guarded(link.responder, replies, now)
                if result is not None:
                    session = link.session_for(result.remote_static)
                    assert link.indices.table.move(result.local_index, link.responder, session)
                    replies = replies + link._guarded(session, session.install(result, now).replies, now)
                self._send(node, src, replies)
                self._links_up(node)
                return
            session = link._owner(header.receiver)
            if session is None:
                return
            got = session.receive(header, datagram, now)
        except RemoteProtocolError:
            return
        self._send(node, src, link._guarded(session, got.replies, now))
        self._links_up(node)
        key = session.remote_static
        assert key is not None
        if got.ptype is PacketType.DATA:
            self._dispatch(node, node.forwarder.receive(key, [got.payload], now))
        elif got.ptype is PacketType.CONTROL:
            sent: list[tuple[bytes, bytes]] = []
            try:
                sent = node.tree.receive(key, got.payload, now)  # probe replies, beats for our children
            except RemoteProtocolError:
                pass
            self._announce(node, sent + node.tree.urgent(now))

    def _links_up(self, node: StackNode) -> None:
        for key, session in node.link.sessions.items():
            if session.is_established and key not in node.up:
                node.up.add(key)
                node.tree.add(key, self.now)
                self._dispatch(node, node.forwarder.neighbour_up(key, self.now))
                self._announce(node, node.tree.urgent(self.now))

    def _announce(self, node: StackNode, announcements: list[tuple[bytes, bytes]]) -> None:
        for key, data in announcements:
            session = node.link.sessions[key]
            if session.is_established:
                sealed = session.send(PacketType.CONTROL, data, self.now)
                self._send(node, self.by_key[key], node.link._guarded(session, sealed, self.now))

    def _dispatch(self, node: StackNode, out: Output) -> None:
        at = self.nodes.index(node)
        for key, packets in out.links.items():
            rewrite = self.rewrite.get(at)
            if rewrite is not None:
                packets = [rewrite(p) for p in packets]
            self.routed_log.extend((at, p) for p in packets)
            session = node.link.sessions[key]
            sealed = session.send_batch(PacketType.DATA, packets, self.now)
            self._send(node, self.by_key[key], node.link._guarded(session, sealed, self.now))
        if out.delivered:
            self._dispatch_e2e(node, node.e2e.inbound(out.delivered, self.now))
        for dst, key in out.resolved:
            self._dispatch_e2e(node, node.e2e.resolved(dst, key, self.now))
        for dst in out.unresolvable:
            node.e2e.unresolvable(dst)

    def _dispatch_e2e(self, node: StackNode, out: E2EOutput) -> None:
        node.tun.extend(out.tun)
        for dst, datagrams in out.sends.items():
            self._dispatch(node, node.forwarder.send(dst, datagrams, self.now))
        for dst in out.resolve:
            self._dispatch(node, node.forwarder.resolve(dst, self.now))

    def tun_send(self, src: int, packets: list[bytes]) -> None:
        """IPv6 packets read from node ``src``'s TUN device."""
        node = self.nodes[src]
        self._dispatch_e2e(node, node.e2e.outbound(packets, self.now))
        self.pump()

    def run(self, seconds: float, step: float = 0.25) -> None:
        """Advance the clock by ``seconds``: session timers every ``step``, a heartbeat every second."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += step
            beat = abs(self.now - round(self.now)) < 1e-9
            for node in self.nodes:
                for key, session in node.link.sessions.items():
                    self._send(node, self.by_key[key], node.link._guarded(session, session.tick(self.now), self.now))
                node.link.responder.expire(self.now)
                self._dispatch_e2e(node, node.e2e.tick(self.now))
                if beat:
                    self._announce(node, node.tree.tick(self.now))
                    self._dispatch(node, node.forwarder.tick(self.now))
            self.pump()
