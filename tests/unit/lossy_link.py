"""Test harness for the session core: index tables, nodes wired like the actors wire them, a lossy link.

A :class:`Node` owns one HandshakeResponder and one Session per peer, and dispatches datagrams the way the
socket/peers/session actors do: receiver 0 and pending indices go to the responder, other indices to the
session that owns them, a completed responder handshake is installed into the peer's session. Like the socket
actor, it routes each index to the owner that issued it (axiomnet/indices.py), refuses an index another owner
holds, and holds back a datagram naming a refused index.
A :class:`LossyLink` drops, duplicates and reorders with a seeded rng. Nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable

from nacl.public import PrivateKey

from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError, UnknownReceiver
from axiomnet.indices import IndexIssued, IndexTable
from axiomnet.responder import HandshakeResponder
from axiomnet.session import HandshakeResult, Session, SessionEvent
from axiomnet.wire import PacketType, decode_header, sender_index

PAYLOAD = HandshakePayload(capabilities=("test",))


def static_keypair(seed: int) -> tuple[bytes, bytes]:
    """Deterministic X25519 (private, public) for a test seed."""
    private = PrivateKey(hashlib.sha256(b"axiomnet-test-key-%d" % seed).digest())
    return bytes(private), bytes(private.public_key)


def ordered_seeds() -> tuple[int, int]:
    """Two seeds whose public keys sort (smaller, larger): simultaneous-open tests need to know the winner."""
    a, b = static_keypair(1)[1], static_keypair(2)[1]
    return (1, 2) if a < b else (2, 1)


Owner = Session | HandshakeResponder


class IndexPool:
    """A node's dispatcher: the IndexTable the socket actor keeps, fed with every owner's index commands.

    A release of an index its owner does not hold (double release, or release of another's) fails the test.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.table: IndexTable[Owner] = IndexTable()

    @property
    def live(self) -> set[int]:
        """Indices routed to some owner right now (after applying every pending command)."""
        self.node.sync()
        return set(self.table.snapshot())

    def apply(self, owner: Owner) -> list[int]:
        """Apply ``owner``'s pending index commands; the indices the table refused (held by another owner)."""
        refused = []
        for command in owner.index_commands():
            if isinstance(command, IndexIssued):
                if not self.table.bind(command.index, owner):
                    refused.append(command.index)
            else:
                assert self.table.release(command.index, owner), f"index {command.index} released but not held"
        return refused


class Node:
    """One simulated node: a responder front door plus one Session per peer key."""

    def __init__(
        self,
        name: str,
        seed: int,
        *,
        secret_source: Callable[[int], bytes] | None = None,
        allowed_keys: frozenset[bytes] | None = None,
        discoverable: bool = True,
    ) -> None:
        self.name = name
        self.seed = seed
        self.rng = random.Random(seed)
        self.private, self.public = static_keypair(seed)
        self.addr = (f"10.0.0.{seed % 250 + 1}", 7443)
        self.indices = IndexPool(self)
        self.allowed_keys = allowed_keys
        cookie_rng = random.Random(seed * 7919)
        self.responder = HandshakeResponder(
            self.private,
            self.public,
            local_payload=PAYLOAD,
            rng=self.rng,
            secret_source=secret_source or (lambda n: cookie_rng.randbytes(n)),
            allowed_keys=allowed_keys,
            discoverable=discoverable,
        )
        self.sessions: dict[bytes, Session] = {}
        self.delivered: list[tuple[PacketType, bytes]] = []
        self.errors: Counter[str] = Counter()
        self.events: list[SessionEvent] = []

    def session_for(
        self, peer_public: bytes | None, *, expected: bytes | None = None, pin: bool = True
    ) -> Session:
        """The session toward ``peer_public`` (created on first use, expecting that key when ``pin``).

        ``peer_public=None`` with ``pin=False`` is a peer configured without a key (trust on first use): its
        session is filed under the key its first handshake authenticates.
        """
        session = self.sessions.get(peer_public) if peer_public is not None else None
        if session is None:
            session = Session(
                self.private,
                self.public,
                local_payload=PAYLOAD,
                expected_remote_key=expected if expected is not None else (peer_public if pin else None),
                peer_name=f"{self.name}->{peer_public.hex()[:8] if peer_public else 'tofu'}",
                rng=random.Random(self.seed * 31 + len(self.sessions)),
                allowed_keys=self.allowed_keys,
            )
            self.sessions[peer_public if peer_public is not None else b"tofu%d" % len(self.sessions)] = session
        return session

    def sync(self, now: float = 0.0) -> list[bytes]:
        """Apply every owner's pending index commands; datagrams the refused owners send instead."""
        out: list[bytes] = []
        for owner in (self.responder, *self.sessions.values()):
            for index in self.indices.apply(owner):
                if isinstance(owner, Session):
                    out += owner.index_refused(index, now)
                else:
                    owner.index_refused(index)
        return out

    def _guarded(self, owner: Owner, datagrams: list[bytes], now: float) -> list[bytes]:
        """What the actors let out after a core call: a datagram naming a refused index stays home."""
        refused = set(self.indices.apply(owner))
        out = [d for d in datagrams if sender_index(d) not in refused]
        for index in refused:
            if isinstance(owner, Session):
                out += self._guarded(owner, owner.index_refused(index, now), now)
            else:
                owner.index_refused(index)
        return out

    def _owner(self, index: int) -> Session | None:
        self.sync()
        owner = self.indices.table.owner(index)
        return owner if isinstance(owner, Session) else None

    def handle(self, datagram: bytes, addr: tuple[str, int], now: float) -> list[bytes]:
        """Dispatch one datagram as the actors would; returns the replies. Refusals are counted by class."""
        self.sync(now)
        try:
            header = decode_header(datagram)
            if header.receiver == 0 or (
                header.ptype is PacketType.HANDSHAKE_FINAL and header.receiver in self.responder.pending_indices()
            ):
                replies, result = self.responder.receive(header, datagram, addr, now)
                replies = self._guarded(self.responder, replies, now)
                if result is not None:
                    session = self.session_for(result.remote_static)
                    assert self.indices.table.move(result.local_index, self.responder, session)
                    replies = replies + self._guarded(session, session.install(result, now).replies, now)
                return replies
            session = self._owner(header.receiver)
            if session is None:
                raise UnknownReceiver(f"{self.name}: no owner for index {header.receiver}")
            got = session.receive(header, datagram, now)
        except RemoteProtocolError as exc:
            self.errors[type(exc).__name__] += 1
            return []
        if got.ptype is PacketType.DATA or got.ptype is PacketType.CONTROL:
            self.delivered.append((got.ptype, got.payload))
        return self._guarded(session, got.replies, now)

    def tick(self, now: float) -> list[bytes]:
        """Run every session's timers and the responder's expiry; datagrams to send."""
        self.responder.expire(now)
        out: list[bytes] = self.sync(now)
        for session in list(self.sessions.values()):
            out += self._guarded(session, session.tick(now), now)
            self.events += session.events()
        return out

    def drain_events(self) -> list[SessionEvent]:
        """Events of all sessions since the last drain (also kept in self.events)."""
        for session in self.sessions.values():
            self.events += session.events()
        return self.events

    def owned_indices(self) -> set[int]:
        """Indices held by the sessions and the responder (must equal the table's live set: no leak)."""
        owned = set(self.responder.pending_indices())
        for session in self.sessions.values():
            owned |= session.local_indices()
        return owned


class LossyLink:
    """One direction of an unreliable path: seeded loss, duplication and bounded reordering."""

    def __init__(
        self, rng: random.Random, *, loss: float = 0.0, duplicate: float = 0.0, reorder_window: int = 1
    ) -> None:
        self.rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self.reorder_window = reorder_window
        self.queue: list[bytes] = []
        self.sent = self.lost = self.duplicated = 0
        self.log: list[bytes] = []  # every datagram delivered, for replay tests

    def push(self, datagrams: Iterable[bytes]) -> None:
        """Offer datagrams to the link."""
        rng = self.rng
        for datagram in datagrams:
            self.sent += 1
            if rng.random() < self.loss:
                self.lost += 1
                continue
            self.queue.append(datagram)
            if rng.random() < self.duplicate:
                self.duplicated += 1
                self.queue.append(datagram)

    def pull(self) -> list[bytes]:
        """Datagrams arriving now: picked at random among the oldest ``reorder_window`` queued, and a random
        tail is held back for the next pull, so no datagram moves more than the window."""
        queue = self.queue
        window = self.reorder_window
        hold = self.rng.randrange(min(len(queue), window)) if window > 1 and queue else 0
        count = len(queue) - hold
        out: list[bytes] = []
        for _ in range(count):
            i = self.rng.randrange(min(len(queue), window)) if window > 1 else 0
            out.append(queue.pop(i))
        self.log += out
        return out


class Network:
    """Two nodes joined by a link in each direction."""

    def __init__(
        self,
        a: Node,
        b: Node,
        rng: random.Random | None = None,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder_window: int = 1,
    ) -> None:
        rng = rng or random.Random(0)
        self.nodes = (a, b)
        self.link_to = {
            node.name: LossyLink(rng, loss=loss, duplicate=duplicate, reorder_window=reorder_window)
            for node in (a, b)
        }

    def other(self, node: Node) -> Node:
        """The peer of ``node``."""
        return self.nodes[1] if node is self.nodes[0] else self.nodes[0]

    def send(self, src: Node, datagrams: Iterable[bytes]) -> None:
        """Put datagrams from ``src`` on the link toward the other node."""
        self.link_to[self.other(src).name].push(datagrams)

    def deliver(self, now: float) -> int:
        """Deliver what the links release now, both ways, feeding replies back in; returns datagrams delivered."""
        delivered = 0
        for dst in self.nodes:
            src = self.other(dst)
            for datagram in self.link_to[dst.name].pull():
                delivered += 1
                self.send(dst, dst.handle(datagram, src.addr, now))
        return delivered

    def step(self, now: float) -> int:
        """Tick both nodes, then deliver; returns datagrams delivered."""
        for node in self.nodes:
            self.send(node, node.tick(now))
        return self.deliver(now)

    def settle(self, now: float, rounds: int = 20) -> None:
        """Deliver until the links are quiet (no time passes)."""
        for _ in range(rounds):
            if not self.deliver(now) and not any(link.queue for link in self.link_to.values()):
                return


def established_pair(
    now: float = 0.0, *, seed_a: int = 1, seed_b: int = 2
) -> tuple[Network, Node, Node, Session, Session]:
    """Nodes a (initiator) and b with an established session over a perfect link."""
    a, b = Node("a", seed_a), Node("b", seed_b)
    net = Network(a, b)
    sa = a.session_for(b.public)
    net.send(a, sa.initiate(now))
    net.settle(now)
    sb = b.sessions[a.public]
    assert sa.is_established and sb.is_established
    return net, a, b, sa, sb


def event_kinds(node: Node) -> list[str]:
    """Class names of every event the node's sessions reported so far."""
    return [type(event).__name__ for event in node.drain_events()]


def types_of(datagrams: list[bytes]) -> list[PacketType]:
    """Packet types of datagrams, in order."""
    return [decode_header(d).ptype for d in datagrams]


def respond(
    responder: HandshakeResponder, datagram: bytes, addr: tuple[str, int], now: float = 0.0
) -> tuple[list[bytes], HandshakeResult | None]:
    """Feed one datagram to a responder."""
    return responder.receive(decode_header(datagram), datagram, addr, now)
