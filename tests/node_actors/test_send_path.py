"""The data path without a hand-off to the socket actor: the socket's published SendPath (a session sends
from its own thread). Counters stay the session's own: every datagram it sends
directly has a counter of its own, and a replayed one is refused at the far end (the seed's nonce reuse stays
closed)."""

from __future__ import annotations

import socket
import time

import pytest

from axiomnet.errors import ReplayedPacket
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.socket import SendPath, SocketActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for
from tests.node_actors.test_session_actor import established, ipv6_packet  # noqa: F401  (a fixture)
from tests.node_actors.test_socket_offload import RefusingSocketActor, items_to, received, receiver


class RefusingPathSocketActor(RefusingSocketActor):
    """Its published path holds the refusing socket too."""

    def setup(self) -> None:
        super().setup()
        self._path = self._new_path()


def updates(ref) -> list[SendPath]:
    return [msg.path for msg in ref.ask(GetOther()) if isinstance(msg, m.SendPathUpdate)]


def test_the_socket_publishes_its_path_to_a_session_that_asks_and_the_path_sends_in_gso_groups(recorder):
    actor = SocketActor.start(None, {}, ("127.0.0.1", 0))
    session = recorder()
    try:
        actor.tell(m.WantSendPath(session))
        assert wait_for(lambda: len(updates(session)) == 1)
        (path,) = updates(session)
        assert path.gso is True
        with receiver() as s:
            items = items_to(s.getsockname()[1])
            sent, gso_sends, full, rest = path.send(items)  # from this (the test's) thread
            assert received(s, len(items)) == [d for d, _ in items]
        assert (sent, gso_sends, full, rest) == (len(items), 1, 0, [])  # ten and a tail in one, then a single
        assert actor.ask(m.Snapshot(), timeout=5).get("tx_datagrams", 0) == 0  # the actor sent nothing itself
    finally:
        actor.stop()


def test_a_path_whose_socket_is_closed_hands_everything_back_for_the_actor(recorder):
    actor = SocketActor.start(None, {}, ("127.0.0.1", 0))
    session = recorder()
    actor.tell(m.WantSendPath(session))
    assert wait_for(lambda: len(updates(session)) == 1)
    actor.stop()  # closes the socket the path holds
    items = items_to(9)
    assert updates(session)[0].send(items) == (0, 0, 0, items)


def test_when_the_kernel_refuses_gso_the_sessions_get_a_path_without_it(recorder):
    actor = RefusingPathSocketActor.start(None, {}, ("127.0.0.1", 0))
    session = recorder()
    try:
        actor.tell(m.WantSendPath(session))
        assert wait_for(lambda: len(updates(session)) == 1)
        first = updates(session)[0]
        with receiver() as s:
            items = items_to(s.getsockname()[1])
            sent, _, _, rest = first.send(items)  # the refused UDP_SEGMENT send comes back for the actor
            assert sent == 0 and rest == items
            actor.tell(m.SendDatagrams(rest))  # what a session does with it
            assert received(s, len(items)) == [d for d, _ in items]
        assert wait_for(lambda: len(updates(session)) == 2)
        assert updates(session)[1].gso is False
        actor.tell(m.ReleaseOwner(session))  # a session gone: no more updates for it
        assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["send_path_takers"] == 0)
    finally:
        actor.stop()


def test_a_session_with_the_path_sends_data_itself_each_datagram_under_its_own_counter(established):  # noqa: F811
    actor, peer, sock, router, me = established
    with receiver() as s:
        here = s.getsockname()[:2]
        # The peer speaks from the receiver's address (authenticated: the endpoint moves there, loopback only).
        hello = peer.session.send(PacketType.KEEPALIVE, b"", time.monotonic())[0]
        actor.tell(m.Datagrams([(hello, here)]))
        assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["endpoint"] == f"{here[0]}:{here[1]}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.bind(("127.0.0.1", 0))
            actor.tell(m.SendPathUpdate(SendPath(out, False, True, 1452)))
            sent_before = len(sock.ask(GetSent()))
            batches, per = 6, 20
            for b in range(batches):
                actor.tell(m.RoutedToLink([ipv6_packet(peer.src, b * per + i, me.address.packed)
                                           for i in range(per)]))
            datagrams = received(s, batches * per)
        assert len(sock.ask(GetSent())) == sent_before  # none went through the socket actor
        counters = [decode_header(d).counter for d in datagrams]
        assert len(set(counters)) == len(counters)  # one counter per datagram: no nonce used twice
        now = time.monotonic()
        opened = [peer.session.receive(decode_header(d), d, now).payload for d in datagrams]
        assert opened == [ipv6_packet(peer.src, n, me.address.packed) for n in range(batches * per)]
        with pytest.raises(ReplayedPacket):
            peer.session.receive(decode_header(datagrams[3]), datagrams[3], now)
    snap = actor.ask(m.Snapshot(), timeout=5)["counters"]
    assert snap["tx_direct"] == batches * per and snap.get("tx_direct_failed", 0) == 0


def test_a_failed_direct_send_goes_through_the_socket_actor(established):  # noqa: F811
    actor, peer, sock, router, me = established
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    actor.tell(m.SendPathUpdate(SendPath(closed, False, True, 1452)))
    before = len(sock.ask(GetSent()))
    actor.tell(m.RoutedToLink([ipv6_packet(peer.src, i, me.address.packed) for i in range(5)]))
    assert wait_for(lambda: len(sock.ask(GetSent())) == before + 5)
    assert actor.ask(m.Snapshot(), timeout=5)["counters"]["tx_direct_failed"] == 1


def test_an_endpoint_whose_sends_fail_is_left_to_the_socket_actors_breaker(recorder):
    """A send to an endpoint that fails makes the actor publish a path that avoids it, so the sessions hand
    their datagrams for it to the actor: its breaker decides when the endpoint is tried again and sees the
    success that closes it (found by the chaos test: sessions sending directly to a healed endpoint never told
    the actor, whose breaker stayed open and silent)."""
    actor = SocketActor.start(None, {}, ("::", 0))
    session = recorder()
    try:
        actor.tell(m.WantSendPath(session))
        assert wait_for(lambda: len(updates(session)) == 1)
        assert updates(session)[0].avoid == frozenset()
        bad = ("::1", 0)  # EINVAL on every send, synchronously
        actor.tell(m.SendDatagrams([(b"x", bad)]))
        assert wait_for(lambda: any(bad in path.avoid for path in updates(session)))
    finally:
        actor.stop()


def test_a_session_leaves_datagrams_for_an_avoided_endpoint_to_the_socket_actor(established):  # noqa: F811
    actor, peer, sock, router, me = established
    host, _, port = actor.ask(m.Snapshot(), timeout=5)["endpoint"].rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        out.bind(("127.0.0.1", 0))
        actor.tell(m.SendPathUpdate(SendPath(out, False, True, 1452, frozenset({(host, int(port))}))))
        before = len(sock.ask(GetSent()))
        actor.tell(m.RoutedToLink([ipv6_packet(peer.src, i, me.address.packed) for i in range(5)]))
        assert wait_for(lambda: len(sock.ask(GetSent())) == before + 5)  # all five through the socket actor
    counters = actor.ask(m.Snapshot(), timeout=5)["counters"]
    assert counters.get("tx_direct", 0) == 0 and counters.get("tx_direct_failed", 0) == 0
