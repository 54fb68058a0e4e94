"""TunActor: only packets whose source is this node's own address leave the TUN for the overlay."""

from __future__ import annotations

from axiomnet.identity import Identity
from axiomnet.actors.tun import TunActor


def ipv6(src: bytes, dst: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, 0, 17, 64]) + src + dst


def test_packets_with_a_foreign_source_never_enter_the_overlay() -> None:
    me, other = Identity.generate().address, Identity.generate().address
    actor = TunActor(None, {}, "axn-test", me, 1400)  # not started: no device needed for the filter
    link_local = bytes.fromhex("fe80000000000000") + bytes(7) + b"\x01"
    batch = [ipv6(me.packed, other.packed), ipv6(other.packed, other.packed), ipv6(link_local, other.packed),
             b"\x45" + bytes(39), ipv6(me.packed, other.packed)[:39]]
    assert actor._own(batch, me.packed) == [batch[0]]
    assert actor.counters["tx_dropped_foreign_source"] == 4
