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
