"""SessionActor: access to a peer's session is serialised by the actor (the seed's race cannot happen)."""

from __future__ import annotations

import threading
import time

import pytest

from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.responder import HandshakeResponder
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.session import SessionActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for

ENDPOINT = ("192.0.2.7", 7443)  # documentation address: nothing is ever sent, the socket is a recorder


class Peer:
    """The far side: a core responder and session driven by the test thread only."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        counter = iter(range(1000, 10**6))
        self.responder = HandshakeResponder(self.identity.private_key, self.identity.public_key,
                                            allocate_index=lambda: next(counter), release_index=lambda i: None,
                                            local_payload=HandshakePayload())
        self.session = Session(self.identity.private_key, self.identity.public_key,
                               allocate_index=lambda: next(counter), release_index=lambda i: None,
                               local_payload=HandshakePayload(), peer_name="actor-under-test")

    def answer(self, datagram: bytes) -> tuple[list[bytes], object]:
        return self.responder.receive(decode_header(datagram), datagram, ENDPOINT, time.monotonic())


def ipv6_packet(dst: bytes, n: int) -> bytes:
    payload = n.to_bytes(8, "big")
    return bytes([0x60, 0, 0, 0, 0, len(payload), 17, 64]) + bytes(16) + dst + payload


@pytest.fixture
def established(recorder):
    """A SessionActor that dialled a Peer and completed the handshake; returns (actor, peer, socket, router)."""
    me = Identity.generate()
    sock, router = recorder(), recorder()
    peer = Peer()
    actor = SessionActor.start(None, {"socket": sock, "router": router}, static_private=me.private_key,
                               static_public=me.public_key, self_address=me.address.packed, endpoint=ENDPOINT,
                               expected_key=None, dial=True, local_payload=HandshakePayload())
    assert wait_for(lambda: len(sock.ask(GetSent())) == 1)
    (init, _), = sock.ask(GetSent())
    (resp,), _ = peer.answer(init)
    actor.tell(m.Datagrams([(resp, ENDPOINT)]))
    assert wait_for(lambda: len(sock.ask(GetSent())) == 2)
    final = sock.ask(GetSent())[1][0]
    replies, result = peer.answer(final)
    assert result is not None
    peer.session.install(result, time.monotonic())
    assert actor.ask(m.Snapshot(), timeout=5)["state"] == "established"
    return actor, peer, sock, router, me


def routed(router) -> list[bytes]:
    """Every routed packet the session handed the router, in order."""
    return [p for x in router.ask(GetOther()) if isinstance(x, m.RoutedPackets) for p in x.packets]


def test_session_concurrent_process(established, monkeypatch):
    """100 threads push into one SessionActor at once: no exception, no counter reused, nothing lost."""
    # The recording stand-ins are slower than a real socket; lift the mailbox bound so that nothing is shed
    # (shedding under load is tested on its own below).
    monkeypatch.setattr("axiomnet.actors.base.MAX_QUEUED_BATCHES", 10**6)
    actor, peer, sock, router, me = established
    per_thread = 20
    outgoing = [[ipv6_packet(peer.identity.address.packed, t * 1000 + i) for i in range(per_thread)]
                for t in range(100)]
    now = time.monotonic()
    incoming = [[peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, t * 1000 + i), now)[0]
                 for i in range(per_thread)] for t in range(100)]
    sent_before = len(sock.ask(GetSent()))
    barrier = threading.Barrier(100)
    errors: list[BaseException] = []

    def push(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                actor.tell(m.LinkPackets([outgoing[t][i]]))
                actor.tell(m.Datagrams([(incoming[t][i], ENDPOINT)]))
        except BaseException as exc:  # noqa: BLE001 - any failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(t,)) for t in range(100)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert not errors
    total = 100 * per_thread
    assert wait_for(lambda: len(sock.ask(GetSent())) >= sent_before + total)
    assert wait_for(lambda: len(routed(router)) == total)
    assert actor.is_alive()

    data = [d for d, _ in sock.ask(GetSent())[sent_before:] if decode_header(d).ptype is PacketType.DATA]
    counters = [decode_header(d).counter for d in data]
    assert len(data) == total
    assert len(set(counters)) == total, "a transport counter was reused"
    received = set()
    for d in data:
        got = peer.session.receive(decode_header(d), d, time.monotonic())
        assert got.ptype is PacketType.DATA
        received.add(got.payload)
    assert received == {p for batch in outgoing for p in batch}
    assert sorted(routed(router)) == sorted(
        ipv6_packet(me.address.packed, t * 1000 + i) for t in range(100) for i in range(per_thread))
    snap = actor.ask(m.Snapshot(), timeout=5)
    assert not any(k.startswith("rx_") and v for k, v in snap["counters"].items())


def test_forged_and_garbage_datagrams_are_counted_not_fatal(established):
    actor, peer, sock, router, me = established
    good = peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, 1), time.monotonic())[0]
    forged = good[:16] + bytes(len(good) - 16)
    actor.tell(m.Datagrams([(b"\x00" * 5, ENDPOINT), (forged, ENDPOINT), (good, ENDPOINT), (good, ENDPOINT)]))
    assert wait_for(lambda: len(routed(router)) == 1)
    counters = actor.ask(m.Snapshot(), timeout=5)["counters"]
    assert counters["rx_MalformedPacket"] == 1
    assert counters["rx_DecryptionFailed"] == 1
    assert counters["rx_ReplayedPacket"] == 1
    assert actor.is_alive()


def test_data_goes_to_the_router_with_the_authenticated_key(established):
    actor, peer, sock, router, me = established
    other = Identity.generate().address.packed
    dgram = peer.session.send(PacketType.DATA, ipv6_packet(other, 5), time.monotonic())[0]
    actor.tell(m.Datagrams([(dgram, ENDPOINT)]))
    assert wait_for(lambda: len(routed(router)) == 1)
    (batch,) = [x for x in router.ask(GetOther()) if isinstance(x, m.RoutedPackets)]
    assert batch.peer_key == peer.identity.public_key and batch.packets == [ipv6_packet(other, 5)]


def test_announcement_reaches_the_router_on_the_control_lane_with_the_authenticated_key(established):
    actor, peer, sock, router, me = established
    dgram = peer.session.send(PacketType.CONTROL, b"\x01announcement", time.monotonic())[0]
    actor.tell(m.ControlDatagrams([(dgram, ENDPOINT)]))
    assert wait_for(lambda: any(isinstance(x, m.Announce) for x in router.ask(GetOther())))
    ann = next(x for x in router.ask(GetOther()) if isinstance(x, m.Announce))
    assert isinstance(ann, m.Urgent)
    assert ann.peer_key == peer.identity.public_key and ann.data == b"\x01announcement"


def test_a_keepalive_tells_the_router_the_peer_is_alive(established):
    actor, peer, sock, router, me = established
    actor.tell(m.Datagrams([(peer.session.send(PacketType.KEEPALIVE, b"", time.monotonic())[0], ENDPOINT)]))
    assert wait_for(lambda: any(isinstance(x, m.PeerSeen) for x in router.ask(GetOther())))


def test_probe_sends_an_authenticated_keepalive(established):
    actor, peer, sock, router, me = established
    before = len(sock.ask(GetSent()))
    actor.tell(m.Probe())
    assert wait_for(lambda: len(sock.ask(GetSent())) == before + 1)
    probe = sock.ask(GetSent())[-1][0]
    assert peer.session.receive(decode_header(probe), probe, time.monotonic()).ptype is PacketType.KEEPALIVE


def test_full_socket_mailbox_sheds_and_counts_instead_of_growing(established, monkeypatch):
    actor, peer, sock, router, me = established
    monkeypatch.setattr("axiomnet.actors.base.MAX_QUEUED_BATCHES", 0)  # every hand-off finds the next mailbox full
    actor.tell(m.LinkPackets([ipv6_packet(peer.identity.address.packed, i) for i in range(10)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("tx_dropped_backpressure") == 10)
    assert actor.is_alive()
