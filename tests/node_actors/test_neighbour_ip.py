"""IP packets between neighbours over their link session (docs/PROTOCOL.md §6.6): the session routes its peer's
address at the TUN actor, seals our packets behind NEIGHBOUR_IP, delivers the peer's after the ownership checks,
and falls back to the end-to-end layer for a peer that does not take them."""

from __future__ import annotations

import time

from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.ownership import address_of
from axiomnet.responder import HandshakeResponder
from axiomnet.routed import NEIGHBOUR_CAPABILITY, NEIGHBOUR_PREFIX
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.session import SessionActor
from axiomnet.actors.tun import TunActor, split_by_neighbour
from tests.node_actors.fakes import GetOther, GetSent, GetWritten, wait_for
from tests.node_actors.test_session_actor import ENDPOINT, answer_dial, ipv6_packet


class Peer:
    """The far side, announcing (or not) that it takes IP packets over the link."""

    def __init__(self, takes_ip: bool) -> None:
        caps = ("tun", NEIGHBOUR_CAPABILITY) if takes_ip else ("tun",)
        self.identity = Identity.generate()
        self.responder = HandshakeResponder(self.identity.private_key, self.identity.public_key,
                                            local_payload=HandshakePayload(capabilities=caps))
        self.session = Session(self.identity.private_key, self.identity.public_key,
                               local_payload=HandshakePayload(capabilities=caps), peer_name="actor-under-test")
        self.address = self.identity.address.packed

    def answer(self, datagram: bytes):  # what answer_dial calls
        return self.responder.receive(decode_header(datagram), datagram, ENDPOINT, time.monotonic())

    def plaintexts(self, datagrams: list[bytes]) -> list[bytes]:
        out = []
        for d in datagrams:
            header = decode_header(d)
            if header.ptype is PacketType.DATA:
                out.append(self.session.receive(header, d, time.monotonic()).payload)
        return out


def start(recorder, takes_ip: bool):
    me = Identity.generate()
    peer = Peer(takes_ip)
    sock, router, tun, e2e = recorder(), recorder(), recorder(), recorder()
    actor = SessionActor.start(None, {"socket": sock, "router": router, "tun": tun, "e2e": e2e},
                               static_private=me.private_key, static_public=me.public_key,
                               self_address=me.address.packed, endpoint=ENDPOINT, expected_key=None, dial=True,
                               local_payload=HandshakePayload(capabilities=("tun", NEIGHBOUR_CAPABILITY)))
    answer_dial(actor, sock, peer)
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["state"] == "established")
    return actor, peer, me, sock, router, tun, e2e


def routes(tun) -> list[m.NeighbourRoute]:
    return [x for x in tun.ask(GetOther()) if isinstance(x, m.NeighbourRoute)]


def test_our_packets_for_the_peer_go_over_the_link_behind_the_neighbour_byte(recorder):
    actor, peer, me, sock, _router, tun, _e2e = start(recorder, takes_ip=True)
    assert wait_for(lambda: len(routes(tun)) == 1)
    route = routes(tun)[0]
    assert route.address == address_of(peer.identity.public_key) and route.ref.actor_urn == actor.actor_urn
    before = len(sock.ask(GetSent()))
    packets = [ipv6_packet(peer.address, n, me.address.packed) for n in range(3)]
    actor.tell(m.NeighbourPackets(packets))
    assert wait_for(lambda: len(sock.ask(GetSent())) >= before + 3)
    sent = [d for d, _ in sock.ask(GetSent())[before:]]
    assert peer.plaintexts(sent) == [NEIGHBOUR_PREFIX + p for p in packets]
    actor.stop()
    gone = routes(tun)[-1]
    assert gone.ref is None and gone.via.actor_urn == actor.actor_urn  # the route goes with the session


def test_the_peers_packets_reach_our_tun_only_from_its_own_address_to_ours(recorder):
    actor, peer, me, _sock, router, tun, _e2e = start(recorder, takes_ip=True)
    now = time.monotonic()
    good = ipv6_packet(me.address.packed, 1, peer.address)
    spoofed = ipv6_packet(me.address.packed, 2, Identity.generate().address.packed)
    not_ours = ipv6_packet(Identity.generate().address.packed, 3, peer.address)
    routed_packet = b"\x01" + bytes(60)  # anything else is a routed packet, for the router
    payloads = [NEIGHBOUR_PREFIX + good, NEIGHBOUR_PREFIX + spoofed, NEIGHBOUR_PREFIX + not_ours, routed_packet]
    datagrams = peer.session.send_batch(PacketType.DATA, payloads, now)
    actor.tell(m.Datagrams([(d, ENDPOINT) for d in datagrams]))
    assert wait_for(lambda: tun.ask(GetWritten()) == [good])
    assert wait_for(lambda: [p for x in router.ask(GetOther()) if isinstance(x, m.RoutedFromLink)
                             for p in x.packets] == [routed_packet])
    counters = actor.ask(m.Snapshot(), timeout=5)["counters"]
    assert counters["rx_dropped_spoofed_source"] == 1 and counters["rx_dropped_not_for_us"] == 1


def test_a_peer_that_does_not_take_ip_packets_gets_them_end_to_end(recorder):
    actor, peer, me, sock, _router, tun, e2e = start(recorder, takes_ip=False)
    actor.ask(m.Snapshot(), timeout=5)
    assert routes(tun) == []
    packets = [ipv6_packet(peer.address, 1, me.address.packed)]
    before = len(sock.ask(GetSent()))
    actor.tell(m.NeighbourPackets(packets))  # e.g. told just before the peer came back as an older build
    assert wait_for(lambda: [p for x in e2e.ask(GetOther()) if isinstance(x, m.TunPackets)
                             for p in x.packets] == packets)
    assert len(sock.ask(GetSent())) == before


class DevicelessTun(TunActor):
    """A TunActor without a device: its neighbour table and the reader's split, nothing else."""

    def setup(self) -> None:
        pass


def test_the_tun_actor_routes_a_neighbours_address_only_while_its_session_says_so(recorder):
    me = Identity.generate()
    first, second, e2e = recorder(), recorder(), recorder()
    tun = DevicelessTun.start(None, {"e2e": e2e}, "axn-test", me.address, 1420)
    neighbour = Identity.generate().address.packed
    tun.tell(m.NeighbourRoute(neighbour, first))
    assert wait_for(lambda: tun.ask(m.Snapshot(), timeout=5)["neighbour_routes"] == 1)
    tun.tell(m.NeighbourRoute(neighbour, None, second))  # another session cannot take the route away
    assert tun.ask(m.Snapshot(), timeout=5)["neighbour_routes"] == 1
    tun.tell(m.NeighbourRoute(neighbour, None, first))
    assert wait_for(lambda: tun.ask(m.Snapshot(), timeout=5)["neighbour_routes"] == 0)


def test_the_reader_sends_only_our_own_packets_for_a_neighbour_to_its_session() -> None:
    me, neighbour = Identity.generate().address.packed, Identity.generate().address.packed
    to_neighbour = [ipv6_packet(neighbour, n, me) for n in range(2)]
    foreign_source = ipv6_packet(neighbour, 2, Identity.generate().address.packed)
    elsewhere = ipv6_packet(Identity.generate().address.packed, 3, me)
    groups, rest = split_by_neighbour([to_neighbour[0], foreign_source, elsewhere, to_neighbour[1]],
                                      {neighbour: "session"}, me)
    assert groups == {"session": to_neighbour}
    assert rest == [foreign_source, elsewhere]  # the e2e actor counts and drops the foreign source
