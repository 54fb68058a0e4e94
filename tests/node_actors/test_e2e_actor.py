"""EndToEndActor: what enters the overlay from the TUN device, and what leaves it for the TUN device."""

from __future__ import annotations

from axiomnet.actors import messages as m
from axiomnet.actors.e2e import EndToEndActor
from axiomnet.identity import Identity
from tests.node_actors.fakes import GetOther, wait_for


def ipv6(src: bytes, dst: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + src + dst + bytes(8)


def test_only_our_own_ipv6_packets_to_overlay_addresses_enter_the_overlay(recorder):
    me, other = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    router = recorder()
    actor = EndToEndActor.start(None, {"router": router}, me)
    mine, theirs = me.address.packed, other.address.packed
    actor.tell(m.TunPackets([ipv6(theirs, theirs), ipv6(mine, bytes(16)), b"\x45" * 40, ipv6(mine, theirs)]))

    def counters() -> dict[str, int]:
        return actor.ask(m.Snapshot(), timeout=5)["counters"]

    assert wait_for(lambda: counters()["queued"] == 1)
    c = counters()
    assert c["tx_dropped_foreign_source"] == 1 and c["tx_dropped_not_overlay"] == 1 and c["tx_dropped_not_ipv6"] == 1
    assert wait_for(lambda: any(isinstance(x, m.Resolve) and x.dst == theirs for x in router.ask(GetOther())))
    actor.tell(m.Resolved(theirs, other.public_key))  # the router found its key: the handshake goes out
    assert wait_for(lambda: any(isinstance(x, m.RouteOut) and x.dst == theirs for x in router.ask(GetOther())))


def test_unresolvable_destination_drops_what_waited(recorder):
    me, other = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    actor = EndToEndActor.start(None, {"router": recorder()}, me)
    actor.tell(m.TunPackets([ipv6(me.address.packed, other.address.packed)] * 3))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"]["queued"] == 3)
    actor.tell(m.Unresolvable(other.address.packed))
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"]["unresolvable_dropped"] == 3)


def test_datagrams_under_an_origin_decision_skip_the_router_which_hears_of_them_in_path_activity(recorder):
    """The origin fast path: with the router's published decision for a destination, what the e2e actor seals for
    it goes, routed header in front, straight to the next hop's session; the router is told afterwards, in one
    PathActivity, the send that starts the destination's dead-path clock and the count; and what a session
    delivered past the router is told as heard."""
    from types import MappingProxyType

    from axiomnet import fastpath

    me, other = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    router, link = recorder(), recorder()
    actor = EndToEndActor.start(None, {"router": router}, me)
    theirs, head = other.address.packed, b"H" * 60
    actor.tell(m.OriginRoutes(fastpath.OriginTable(MappingProxyType({theirs: (link, head, True)}))))
    actor.tell(m.TunPackets([ipv6(me.address.packed, theirs)]))
    assert wait_for(lambda: any(isinstance(x, m.Resolve) for x in router.ask(GetOther())))
    actor.tell(m.Resolved(theirs, other.public_key))  # the handshake's INIT goes out under the decision

    def activity() -> list[m.PathActivity]:
        return [x for x in router.ask(GetOther()) if isinstance(x, m.PathActivity)]

    assert wait_for(lambda: any(isinstance(x, m.RoutedToLink) for x in link.ask(GetOther())))
    (sent,) = [p for x in link.ask(GetOther()) if isinstance(x, m.RoutedToLink) for p in x.packets]
    assert sent.startswith(head) and len(sent) > len(head)
    assert wait_for(lambda: activity())
    first = activity()[0]
    assert [dst for dst, _ in first.sent] == [theirs] and first.originated == 1 and first.heard == ()
    assert not any(isinstance(x, m.RouteOut) for x in router.ask(GetOther()))
    actor.tell(m.Delivered([(theirs, b"\x01" * 40)], via_router=False))  # refused by the core, but heard
    assert wait_for(lambda: len(activity()) == 2)
    second = activity()[1]
    assert [src for src, _ in second.heard] == [theirs] and second.delivered == 1 and second.sent == ()
    actor.tell(m.Delivered([(theirs, b"\x01" * 40)]))  # through the router: it heard it already, nothing to tell
    actor.tell(m.Snapshot())
    assert actor.ask(m.Snapshot(), timeout=5) and len(activity()) == 2
