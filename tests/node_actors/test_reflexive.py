"""The reflexive address between session actors (docs/PROTOCOL.md §8.1): an established session tells its peer
the endpoint it sees the peer at, tells it again once the peer speaks and whenever the peer moves, and hands what
the peer says about us to the peer manager; a malformed report is counted, never told to the router."""

from __future__ import annotations

import time

import pytest

from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.reflexive import decode_observed, encode_observed
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.session import SessionActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for
from tests.node_actors.test_session_actor import ENDPOINT, Peer, answer_dial

NEW_PLACE = ("198.51.100.20", 40000)


@pytest.fixture
def linked(recorder):
    peer = Peer()
    me = Identity.generate()
    sock, router, peers = recorder(), recorder(), recorder()
    actor = SessionActor.start(None, {"socket": sock, "router": router, "peers": peers},
                               static_private=me.private_key, static_public=me.public_key,
                               self_address=me.address.packed, endpoint=ENDPOINT, expected_key=None, dial=True,
                               local_payload=HandshakePayload())
    answer_dial(actor, sock, peer)
    return actor, peer, sock, router, peers


def reports_sent(sock, peer: Peer) -> list[tuple[str, int]]:
    """Every OBSERVED_ENDPOINT the actor sent, as the peer decrypts it (each datagram is opened once)."""
    found = []
    for data, _ in sock.ask(GetSent()):
        header = decode_header(data)
        if header.ptype is not PacketType.CONTROL:
            continue
        got = peer.session.receive(header, data, time.monotonic())
        if got.ptype is PacketType.CONTROL and got.payload[:1] == b"\x40":
            found.append(decode_observed(got.payload))
    return found


def control(peer: Peer, payload: bytes) -> m.ControlDatagrams:
    return m.ControlDatagrams([(peer.session.send(PacketType.CONTROL, payload, time.monotonic())[0], ENDPOINT)])


def test_an_established_session_tells_the_peer_where_it_sees_it(linked):
    actor, peer, sock, _, _ = linked
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("tx_observed_endpoint") == 1)
    assert reports_sent(sock, peer) == [ENDPOINT]


def test_the_peers_report_reaches_the_peer_manager_and_is_answered_once(linked):
    actor, peer, sock, router, peers = linked
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("tx_observed_endpoint") == 1)
    actor.tell(control(peer, encode_observed("203.0.113.5", 50123)))
    assert wait_for(lambda: any(isinstance(o, m.ObservedEndpoint) for o in peers.ask(GetOther())))
    [told] = [o for o in peers.ask(GetOther()) if isinstance(o, m.ObservedEndpoint)]
    assert told == m.ObservedEndpoint(peer.identity.public_key, ("203.0.113.5", 50123))
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("tx_observed_endpoint") == 2)  # answered
    actor.tell(control(peer, encode_observed("203.0.113.5", 50123)))
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("rx_observed_endpoint") == 2)
    assert actor.ask(m.Snapshot())["counters"]["tx_observed_endpoint"] == 2  # once, not a ping-pong
    assert not [o for o in router.ask(GetOther()) if isinstance(o, m.Announce)]


def test_a_malformed_report_is_counted_and_goes_nowhere(linked):
    actor, peer, _, router, peers = linked
    actor.tell(control(peer, bytes.fromhex("4004c63364070000")))  # port 0
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("rx_MalformedPacket") == 1)
    assert not [o for o in peers.ask(GetOther()) if isinstance(o, m.ObservedEndpoint)]
    assert not [o for o in router.ask(GetOther()) if isinstance(o, m.Announce)]


def test_a_peer_that_moves_is_told_its_new_endpoint(linked):
    actor, peer, sock, _, _ = linked
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("tx_observed_endpoint") == 1)
    keepalive = peer.session.send(PacketType.KEEPALIVE, b"", time.monotonic())[0]
    actor.tell(m.Datagrams([(keepalive, NEW_PLACE)]))
    assert wait_for(lambda: actor.ask(m.Snapshot())["counters"].get("tx_observed_endpoint") == 2)
    assert reports_sent(sock, peer) == [ENDPOINT, NEW_PLACE]


def test_the_peer_manager_keeps_one_report_per_neighbour_with_a_session(recorder):
    from axiomnet.actors.peers import PeerManagerActor

    me, key = Identity.generate(), bytes(range(32))
    mgr = PeerManagerActor.start(None, {"socket": recorder(), "router": recorder()}, static_private=me.private_key,
                                 static_public=me.public_key, self_address=me.address.packed, static_peers=())
    mgr.tell(m.ObservedEndpoint(key, ("203.0.113.5", 50123)))  # no session with that key: not kept
    assert mgr.ask(m.Snapshot())["observed_without_session"] == 1
    mgr.ask(m.AddPeer("192.0.2.9", 7443, key))
    mgr.tell(m.ObservedEndpoint(key, ("203.0.113.5", 50123)))
    assert mgr.ask(m.Snapshot())["reflexive"] == {
        "confirmed": None, "reported": [{"endpoint": "203.0.113.5:50123", "neighbours": 1}]}
    mgr.ask(m.RemovePeer("192.0.2.9", 7443))  # its session closes: its report goes with it
    assert mgr.ask(m.Snapshot())["reflexive"]["reported"] == []
