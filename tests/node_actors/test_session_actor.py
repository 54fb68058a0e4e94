"""SessionActor: access to a peer's session is serialised by the actor (the seed's race cannot happen)."""

from __future__ import annotations

import threading
import time

import pytest

from axiomnet.control import HandshakePayload
from axiomnet.errors import Ignored
from axiomnet.identity import Identity
from axiomnet.responder import HandshakeResponder
from axiomnet.session import HandshakeResult, Session
from axiomnet.cookie import add_macs, cookie_key, mac1_key, seal_cookie
from axiomnet.wire import PacketType, decode_datagram, decode_header, encode_cookie_reply
from axiomnet.actors import messages as m
from axiomnet.actors.session import SessionActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for

ENDPOINT = ("192.0.2.7", 7443)  # documentation address: nothing is ever sent, the socket is a recorder


class Peer:
    """The far side: a core responder and session driven by the test thread only."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.responder = HandshakeResponder(self.identity.private_key, self.identity.public_key,
                                            local_payload=HandshakePayload())
        self.session = Session(self.identity.private_key, self.identity.public_key,
                               local_payload=HandshakePayload(), peer_name="actor-under-test")
        self.src = self.identity.address.packed  # the source address this peer's key owns

    def answer(self, datagram: bytes) -> tuple[list[bytes], HandshakeResult | None]:
        return self.responder.receive(decode_header(datagram), datagram, ENDPOINT, time.monotonic())


def answer_dial(actor, sock, peer: Peer, seen: int = 0, source=ENDPOINT) -> int:
    """Answer what ``actor`` sends (KEY_PROBE, HANDSHAKE_INIT, HANDSHAKE_FINAL) with ``peer``'s front door from
    ``source`` until a handshake completes; install it at the peer. Returns how many datagrams were sent."""
    result = None
    while result is None:
        assert wait_for(lambda: len(sock.ask(GetSent())) > seen)
        datagram = sock.ask(GetSent())[seen][0]
        seen += 1
        try:
            replies, result = peer.answer(datagram)
        except Ignored:  # a copy of an INIT answered just now (a punched dial sends one to each candidate)
            continue
        if replies:
            actor.tell(m.Datagrams([(reply, source) for reply in replies]))
    peer.session.install(result, time.monotonic())
    return seen


def ipv6_packet(dst: bytes, n: int, src: bytes = bytes(16)) -> bytes:
    payload = n.to_bytes(8, "big")
    return bytes([0x60, 0, 0, 0, 0, len(payload), 17, 64]) + src + dst + payload


def dialler(recorder, expected_key: bytes | None):
    """A SessionActor dialling ENDPOINT with recording socket and router stand-ins: (actor, socket, router, me)."""
    me = Identity.generate()
    sock, router = recorder(), recorder()
    actor = SessionActor.start(None, {"socket": sock, "router": router}, static_private=me.private_key,
                               static_public=me.public_key, self_address=me.address.packed, endpoint=ENDPOINT,
                               expected_key=expected_key, dial=True, local_payload=HandshakePayload())
    return actor, sock, router, me


@pytest.fixture
def established(recorder):
    """A SessionActor that dialled a Peer and completed the handshake; returns (actor, peer, socket, router)."""
    peer = Peer()
    actor, sock, router, me = dialler(recorder, None)
    assert answer_dial(actor, sock, peer) == 3  # KEY_PROBE (no key configured: trust on first use), INIT, FINAL
    assert actor.ask(m.Snapshot(), timeout=5)["state"] == "established"
    return actor, peer, sock, router, me


def routed(router) -> list[bytes]:
    """Every routed packet the session handed the router, in order."""
    return [p for x in router.ask(GetOther()) if isinstance(x, m.RoutedFromLink) for p in x.packets]


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
    incoming = [[peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, t * 1000 + i, peer.src), now)[0]
                 for i in range(per_thread)] for t in range(100)]
    sent_before = len(sock.ask(GetSent()))
    barrier = threading.Barrier(100)
    errors: list[BaseException] = []

    def push(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                actor.tell(m.RoutedToLink([outgoing[t][i]]))
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
        ipv6_packet(me.address.packed, t * 1000 + i, peer.src) for t in range(100) for i in range(per_thread))
    snap = actor.ask(m.Snapshot(), timeout=5)
    assert not any(k.startswith("rx_") and v for k, v in snap["counters"].items())


def test_forged_and_garbage_datagrams_are_counted_not_fatal(established):
    actor, peer, sock, router, me = established
    good = peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, 1, peer.src), time.monotonic())[0]
    forged = good[:16] + bytes(len(good) - 16)
    actor.tell(m.Datagrams([(b"\x00" * 5, ENDPOINT), (forged, ENDPOINT), (good, ENDPOINT), (good, ENDPOINT)]))
    assert wait_for(lambda: len(routed(router)) == 1)
    counters = actor.ask(m.Snapshot(), timeout=5)["counters"]
    assert counters["rx_MalformedPacket"] == 1
    assert counters["rx_DecryptionFailed"] == 1
    assert counters["rx_ReplayedPacket"] == 1
    assert actor.is_alive()


def test_each_dropped_datagram_counts_once_in_dropped(established):
    """Issue 17: one replayed datagram raised the session's `dropped` by 2 (the core's count and the actor's
    rx_ReplayedPacket added again); a datagram too short to decode was not in the core's count at all."""
    actor, peer, sock, router, me = established
    good = peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, 1, peer.src), time.monotonic())[0]
    actor.tell(m.Datagrams([(good, ENDPOINT)]))
    assert wait_for(lambda: len(routed(router)) == 1)
    before = actor.ask(m.Snapshot(), timeout=5)["dropped"]
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    for n, datagram in enumerate([good, flipped, b"\x00" * 5], start=1):  # a replay, a flipped bit, garbage
        actor.tell(m.Datagrams([(datagram, ENDPOINT)]))
        assert wait_for(lambda: sum(v for k, v in actor.ask(m.Snapshot(), timeout=5)["counters"].items()
                                    if k.startswith("rx_") and k[3:4].isupper()) == n)
        assert actor.ask(m.Snapshot(), timeout=5)["dropped"] == before + n
    snapshot = actor.ask(m.Snapshot(), timeout=5)
    assert snapshot["rx_packets"] == 1


def test_data_goes_to_the_router_with_the_authenticated_key(established):
    actor, peer, sock, router, me = established
    other = Identity.generate().address.packed
    dgram = peer.session.send(PacketType.DATA, ipv6_packet(other, 5), time.monotonic())[0]
    actor.tell(m.Datagrams([(dgram, ENDPOINT)]))
    assert wait_for(lambda: len(routed(router)) == 1)
    (batch,) = [x for x in router.ask(GetOther()) if isinstance(x, m.RoutedFromLink)]
    assert batch.peer_key == peer.identity.public_key and batch.packets == [ipv6_packet(other, 5)]


def test_announcement_reaches_the_router_on_the_control_lane_with_the_authenticated_key(established):
    actor, peer, sock, router, me = established
    dgram = peer.session.send(PacketType.CONTROL, b"\x01announcement", time.monotonic())[0]
    actor.tell(m.ControlDatagrams([(dgram, ENDPOINT)]))
    assert wait_for(lambda: any(isinstance(x, m.Announce) for x in router.ask(GetOther())))
    ann = next(x for x in router.ask(GetOther()) if isinstance(x, m.Announce))
    assert isinstance(ann, m.Urgent)
    assert ann.peer_key == peer.identity.public_key and ann.data == b"\x01announcement"


def told(router, kind) -> int:
    return sum(1 for x in router.ask(GetOther()) if isinstance(x, kind))


def go_silent(actor, router, monkeypatch, dead_after: float = 0.2) -> None:
    """Shorten PEER_DEAD_AFTER and tick the actor until it tells the router PeerSilent."""
    monkeypatch.setattr("axiomnet.actors.session.PEER_DEAD_AFTER", dead_after)
    assert wait_for(lambda: actor.tell(m.TimerDue()) or told(router, m.PeerSilent) > 0)


def test_a_live_link_tells_the_router_nothing_and_silence_is_told_once(established, monkeypatch):
    """Link liveness is the session's: keepalives heard reach the router as nothing at all; PEER_DEAD_AFTER without
    an authenticated packet is one PeerSilent; the next packet heard, one PeerSeen."""
    actor, peer, sock, router, me = established
    for _ in range(3):
        actor.tell(m.Datagrams([(peer.session.send(PacketType.KEEPALIVE, b"", time.monotonic())[0], ENDPOINT)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["rx_packets"] >= 3)
    assert told(router, m.PeerSeen) == 0 and told(router, m.PeerSilent) == 0
    go_silent(actor, router, monkeypatch)
    silent = next(x for x in router.ask(GetOther()) if isinstance(x, m.PeerSilent))
    assert silent.peer_key == peer.identity.public_key and silent.ref == actor
    for _ in range(3):
        actor.tell(m.TimerDue())
    actor.ask(m.Snapshot(), timeout=5)
    assert told(router, m.PeerSilent) == 1  # once per silence, however often it is ticked
    for _ in range(2):
        actor.tell(m.Datagrams([(peer.session.send(PacketType.KEEPALIVE, b"", time.monotonic())[0], ENDPOINT)]))
    assert wait_for(lambda: told(router, m.PeerSeen) == 1)
    actor.ask(m.Snapshot(), timeout=5)
    assert told(router, m.PeerSeen) == 1


def test_a_restarted_router_is_told_a_silence_again(established, recorder, monkeypatch):
    """A silence told to a router that then restarted is told to the new one (it starts knowing nothing)."""
    actor, peer, sock, router, me = established
    go_silent(actor, router, monkeypatch)
    new_router = recorder()
    actor.tell(m.Rewire("router", new_router))
    assert wait_for(lambda: actor.tell(m.TimerDue()) or told(new_router, m.PeerSilent) == 1)
    assert told(router, m.PeerSilent) == 1


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
    actor.tell(m.RoutedToLink([ipv6_packet(peer.identity.address.packed, i) for i in range(10)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("tx_dropped_backpressure") == 10)
    assert actor.is_alive()


# --- endpoints move only on authenticated packets (WireGuard's roaming rule) -----------------------------
NEW_PLACE = ("198.51.100.20", 40000)
ELSEWHERE = ("203.0.113.66", 6666)


def endpoint(actor) -> str:
    return actor.ask(m.Snapshot(), timeout=5)["endpoint"]


def test_an_authenticated_packet_from_a_new_address_moves_the_endpoint(established):
    actor, peer, sock, router, me = established
    forged = peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, 1, peer.src), time.monotonic())[0]
    actor.tell(m.Datagrams([(forged[:16] + bytes(len(forged) - 16), ELSEWHERE)]))  # does not authenticate
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("rx_DecryptionFailed") == 1)
    assert endpoint(actor) == "192.0.2.7:7443"
    actor.tell(m.Datagrams([(forged, NEW_PLACE)]))
    assert wait_for(lambda: endpoint(actor) == "198.51.100.20:40000")
    before = len(sock.ask(GetSent()))
    actor.tell(m.RoutedToLink([ipv6_packet(peer.src, 2, me.address.packed)]))
    assert wait_for(lambda: len(sock.ask(GetSent())) > before)
    assert sock.ask(GetSent())[-1][1] == NEW_PLACE  # replies follow the peer


@pytest.fixture
def dialling(recorder):
    """A SessionActor dialling a peer whose key it was given (so its first datagram is a HANDSHAKE_INIT)."""
    peer = Peer()
    actor, sock, router, me = dialler(recorder, peer.identity.public_key)
    assert wait_for(lambda: len(sock.ask(GetSent())) == 1)
    (init, to), = sock.ask(GetSent())
    assert decode_header(init).ptype is PacketType.HANDSHAKE_INIT and to == ENDPOINT
    return actor, peer, sock, init, me


def test_a_response_under_the_wrong_key_or_a_forged_cookie_reply_changes_nothing(dialling):
    actor, peer, sock, init, me = dialling
    impostor = Peer()
    impostor.responder._mac1_key = mac1_key(peer.identity.public_key)  # it knows whom we dial, not their secret
    (wrong_key_resp,), _ = impostor.answer(init)
    stranger = Peer()  # does not even know the key: its mac1 is wrong
    (bad_mac_resp,), _ = stranger.answer(add_macs(init[:-32] + bytes(32), mac1_key(stranger.identity.public_key),
                                                  None)[0])
    body = decode_datagram(init)[1]
    forged_cookie = encode_cookie_reply(body.sender, bytes(24), bytes(32))
    sealed_elsewhere = encode_cookie_reply(body.sender, bytes(24), seal_cookie(
        cookie_key(impostor.identity.public_key), bytes(24), bytes(16), body.mac1))
    before = actor.ask(m.Snapshot(), timeout=5)
    # The wrong-key response last: it aborts this Noise handshake (a fresh index and message 1 follow).
    actor.tell(m.Datagrams([(bad_mac_resp, ELSEWHERE), (forged_cookie, ELSEWHERE), (sealed_elsewhere, ELSEWHERE),
                            (wrong_key_resp, ELSEWHERE)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("key_mismatches") == 1)
    after = actor.ask(m.Snapshot(), timeout=5)
    assert after["counters"]["rx_InvalidMac"] == 1 and after["counters"]["rx_DecryptionFailed"] == 2
    assert after["endpoint"] == before["endpoint"] == "192.0.2.7:7443"
    assert after["state"] == "handshaking" and after["peer"] is None
    assert all(to == ENDPOINT for _, to in sock.ask(GetSent()))  # nothing went to the impostors
    # The genuine peer still completes the handshake (its RESP answers our retransmitted INIT).
    assert wait_for(lambda: actor.tell(m.TimerDue()) or len(sock.ask(GetSent())) >= 2)  # ticks drive retransmission
    retransmitted = sock.ask(GetSent())[-1][0]
    (resp,), _ = peer.answer(retransmitted)
    actor.tell(m.Datagrams([(resp, ENDPOINT)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["state"] == "established")
    assert actor.ask(m.Snapshot(), timeout=5)["peer"] == peer.identity.public_key.hex()


def test_a_refused_install_does_not_move_the_endpoint(established):
    actor, peer, sock, router, me = established
    other = Identity.generate()  # completes a handshake with us, but is not the peer this session knows
    front = HandshakeResponder(me.private_key, me.public_key, local_payload=HandshakePayload())
    dialler = Session(other.private_key, other.public_key, local_payload=HandshakePayload(),
                      expected_remote_key=me.public_key)
    (resp,), _ = front.receive(decode_header(i := dialler.initiate(time.monotonic())[0]), i, ELSEWHERE,
                               time.monotonic())
    (final,) = dialler.receive(decode_header(resp), resp, time.monotonic()).replies
    _, result = front.receive(decode_header(final), final, ELSEWHERE, time.monotonic())
    actor.tell(m.InstallKeys(result, ELSEWHERE))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("key_mismatches") == 1)
    assert endpoint(actor) == "192.0.2.7:7443"
    assert actor.ask(m.Snapshot(), timeout=5)["peer"] == peer.identity.public_key.hex()


def test_a_refused_index_is_picked_again_and_the_init_sent_under_the_new_one(dialling):
    actor, peer, sock, init, me = dialling
    binds = [x for x in sock.ask(GetOther()) if isinstance(x, m.BindIndex)]
    assert [b.send[0][0] for b in binds] == [init]  # the INIT rode with the bind of its index
    first = binds[0].index
    actor.tell(m.IndexRefused(first))  # another owner holds it: the INIT above never left
    assert wait_for(lambda: len([x for x in sock.ask(GetOther()) if isinstance(x, m.BindIndex)]) == 2)
    again = [x for x in sock.ask(GetOther()) if isinstance(x, m.BindIndex)][1]
    assert again.index != first and decode_datagram(again.send[0][0])[1].sender == again.index
    (resp,), _ = peer.answer(again.send[0][0])
    actor.tell(m.Datagrams([(resp, ENDPOINT)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["state"] == "established")


def test_a_key_that_allowed_keys_does_not_list_is_refused_and_counted_as_such(recorder):
    peer, me = Peer(), Identity.generate()
    sock = recorder()
    actor = SessionActor.start(None, {"socket": sock, "router": recorder()}, static_private=me.private_key,
                               static_public=me.public_key, self_address=me.address.packed, endpoint=ENDPOINT,
                               expected_key=peer.identity.public_key, dial=True, local_payload=HandshakePayload(),
                               allowed_keys=frozenset({Identity.generate().public_key}))
    assert wait_for(lambda: len(sock.ask(GetSent())) == 1)
    (resp,), _ = peer.answer(sock.ask(GetSent())[0][0])
    actor.tell(m.Datagrams([(resp, ENDPOINT)]))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("keys_refused") == 1)
    snap = actor.ask(m.Snapshot(), timeout=5)
    assert "key_mismatches" not in snap["counters"] and snap["state"] != "established"


def test_routed_packets_under_a_published_decision_go_straight_to_the_next_hops_session(established, recorder):
    """The relay fast path: a decision the router published relays the flow from here, hop limit and watermark
    checked per packet; what it does not cover still goes to the router, which also hears the peer is alive."""
    from axiomnet import fastpath
    from axiomnet.routed import Kind, decode_routed, encode_routed

    actor, peer, sock, router, me = established
    next_hop = recorder()

    def packet(n: int, hop_limit: int = 9, dst: bytes = b"\xfc" * 16) -> bytes:
        return encode_routed(Kind.TRAFFIC, root_tag=7, dst=dst, src=peer.src, dst_path=(1, 2), src_path=(3,),
                             payload=n.to_bytes(4, "big"), hop_limit=hop_limit, watermark=5)

    table = fastpath.RelayTable(0, {fastpath.header_key(packet(0)): (next_hop, 3, False)})
    actor.tell(m.RelayDecisions(table))
    other = packet(9, dst=b"\xfd" * 16)  # another destination: not in the table
    now = time.monotonic()
    payloads = [packet(1), packet(2, hop_limit=1), other, packet(3)]
    actor.tell(m.Datagrams([(d, ENDPOINT) for p in payloads for d in peer.session.send(PacketType.DATA, p, now)]))
    assert wait_for(lambda: len(routed(router)) == 2)
    relayed = [p for x in next_hop.ask(GetOther()) if isinstance(x, m.RoutedToLink) for p in x.packets]
    assert [p[decode_routed(p).offset:] for p in relayed] == [(1).to_bytes(4, "big"), (3).to_bytes(4, "big")]
    assert all(decode_routed(p).hop_limit == 8 and decode_routed(p).watermark == 3 for p in relayed)
    assert routed(router) == [packet(2, hop_limit=1), other]  # the hop limit is the router's to enforce
    assert actor.ask(m.Snapshot(), timeout=5)["counters"]["relayed_fast"] == 2


def test_a_fully_relayed_batch_still_tells_the_router_the_peer_is_alive(established, recorder, monkeypatch):
    from axiomnet import fastpath
    from axiomnet.routed import Kind, encode_routed

    actor, peer, sock, router, me = established
    p = encode_routed(Kind.TRAFFIC, root_tag=7, dst=b"\xfc" * 16, src=peer.src, dst_path=(1,), src_path=(3,),
                      payload=b"x", hop_limit=9, watermark=5)
    actor.tell(m.RelayDecisions(fastpath.RelayTable(0, {fastpath.header_key(p): (recorder(), 3, False)})))
    go_silent(actor, router, monkeypatch)
    actor.tell(m.Datagrams([(d, ENDPOINT) for d in peer.session.send(PacketType.DATA, p, time.monotonic())]))
    assert wait_for(lambda: any(isinstance(x, m.PeerSeen) for x in router.ask(GetOther())))
    assert routed(router) == []


def test_traffic_for_our_own_address_goes_to_the_e2e_actor_not_through_the_router(established, recorder):
    """The delivery fast path: TRAFFIC and SOURCE_ROUTED for us (the router's decision for them is always to
    deliver) go from the session that decrypted them to the e2e actor, marked as not seen by the router (which the
    e2e actor then tells, PathActivity); what is not ours, or not well formed, still goes to the router."""
    from axiomnet.routed import Kind, encode_routed

    actor, peer, sock, router, me = established
    e2e = recorder()
    actor.tell(m.Rewire("e2e", e2e))

    def packet(kind: Kind, dst: bytes, n: int) -> bytes:
        return encode_routed(kind, root_tag=7, dst=dst, src=peer.src, dst_path=(1,), src_path=(3,),
                             payload=n.to_bytes(4, "big"), hop_limit=9, watermark=5)

    mine = me.address.packed
    ours = [packet(Kind.TRAFFIC, mine, 1), packet(Kind.SOURCE_ROUTED, mine, 2)]
    theirs = packet(Kind.TRAFFIC, b"\xfd" * 16, 3)
    reply = packet(Kind.LOOKUP_REPLY, mine, 4)
    now = time.monotonic()
    items = [(d, ENDPOINT) for p in [ours[0], theirs, ours[1], reply] for d in peer.session.send(PacketType.DATA, p, now)]
    actor.tell(m.Datagrams(items))
    assert wait_for(lambda: len(routed(router)) == 2)
    assert routed(router) == [theirs, reply]
    (delivered,) = [x for x in e2e.ask(GetOther()) if isinstance(x, m.Delivered)]
    assert not delivered.via_router
    assert delivered.items == [(peer.src, (1).to_bytes(4, "big")), (peer.src, (2).to_bytes(4, "big"))]
    assert actor.ask(m.Snapshot(), timeout=5)["counters"]["delivered_fast"] == 2
