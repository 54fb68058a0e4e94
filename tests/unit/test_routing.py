"""RoutingTable: direct delivery, greedy forwarding on hyperbolic distance, liveness, hostile coordinates."""

import math

from axiomnet.geometry import Coords
from axiomnet.identity import derive_address
from axiomnet.routing import RoutingTable


def key(n: int) -> bytes:
    return bytes([n]) * 32


def addr(n: int) -> bytes:
    return derive_address(key(n)).packed


def table_with(*neighbours: tuple[int, Coords], now: float = 0.0) -> RoutingTable:
    table = RoutingTable(key(0), Coords(0.0, 0.0), dead_after=6.0)
    for n, coords in neighbours:
        table.add(key(n), now)
        assert table.heartbeat(key(n), 1, coords, 0.0, now)
    return table


def test_direct_neighbour_is_its_own_next_hop():
    table = table_with((1, Coords(0.5, 0.0)), (2, Coords(0.5, math.pi)))
    assert table.next_hop(addr(1)) == key(1)
    assert table.next_hop(addr(2)) == key(2)


def test_unknown_destination_has_no_route():
    table = table_with((1, Coords(0.5, 0.0)))
    assert table.next_hop(addr(9)) is None


def test_greedy_forwarding_picks_the_neighbour_closest_to_the_destination():
    table = table_with((1, Coords(0.5, 0.0)), (2, Coords(0.5, math.pi)))
    table.learn(addr(9), Coords(0.9, 0.1))  # far out on neighbour 1's side
    assert table.next_hop(addr(9)) == key(1)
    table.learn(addr(8), Coords(0.9, math.pi - 0.1))
    assert table.next_hop(addr(8)) == key(2)


def test_no_neighbour_closer_than_us_means_no_route():
    table = table_with((1, Coords(0.5, 0.0)))
    table.learn(addr(9), Coords(0.5, math.pi))  # opposite side: neighbour 1 is farther than we are
    assert table.next_hop(addr(9)) is None


def test_silent_neighbour_is_withdrawn_and_revived_by_a_heartbeat():
    table = table_with((1, Coords(0.5, 0.0)), now=0.0)
    assert table.withdraw_dead(now=5.0) == []
    assert table.withdraw_dead(now=7.0) == [key(1)]
    assert table.next_hop(addr(1)) is None
    assert table.heartbeat(key(1), 2, Coords(0.5, 0.0), 0.1, now=8.0)
    assert table.next_hop(addr(1)) == key(1)


def test_stale_or_replayed_heartbeat_is_ignored():
    table = table_with((1, Coords(0.5, 0.0)))
    assert not table.heartbeat(key(1), 1, Coords(0.2, 1.0), 0.0, now=1.0)
    assert table.get(key(1)).coords == Coords(0.5, 0.0)


def test_heartbeat_from_non_neighbour_is_ignored():
    table = table_with()
    assert not table.heartbeat(key(5), 1, Coords(0.1, 0.1), 0.0, now=0.0)
    assert table.get(key(5)) is None


def test_removed_neighbour_has_no_route():
    table = table_with((1, Coords(0.5, 0.0)))
    table.remove(key(1))
    assert table.next_hop(addr(1)) is None
    assert table.snapshot(now=0.0) == []


def test_snapshot_reports_each_neighbour():
    table = table_with((1, Coords(0.5, 0.0)), now=1.0)
    (row,) = table.snapshot(now=3.5)
    assert row["public_key"] == key(1).hex()
    assert row["coords"] == [0.5, 0.0]
    assert row["last_seen"] == 2.5
    assert row["alive"] is True
    assert row["distance"] > 0


def test_heartbeats_from_a_sender_whose_clock_stepped_back_keep_it_alive_and_are_accepted():
    """Heartbeat sequence numbers start from the sender's wall clock: after a restart with the clock stepped
    back they are lower than before. The peer is still alive, and its new coordinates are taken."""
    table = table_with((1, Coords(0.5, 0.0)), now=0.0)
    assert table.heartbeat(key(1), 1_700_000_000_000, Coords(0.5, 0.0), 0.0, now=1.0)
    stepped_back = 1_700_000_000_000 - 3_600_000  # one hour earlier
    assert table.heartbeat(key(1), stepped_back, Coords(0.3, 1.0), 0.0, now=2.0)
    assert table.get(key(1)).coords == Coords(0.3, 1.0)
    assert table.withdraw_dead(now=7.5) == []  # heard at 2.0: alive
    assert table.heartbeat(key(1), stepped_back + 1, Coords(0.3, 1.0), 0.0, now=3.0)


def test_a_slightly_old_heartbeat_still_proves_liveness_but_moves_nothing():
    table = table_with((1, Coords(0.5, 0.0)), now=0.0)
    assert table.heartbeat(key(1), 100, Coords(0.5, 0.0), 0.0, now=1.0)
    assert not table.heartbeat(key(1), 99, Coords(0.1, 0.1), 0.0, now=5.0)  # reordered: coordinates kept
    assert table.get(key(1)).coords == Coords(0.5, 0.0)
    assert table.withdraw_dead(now=10.0) == []  # but it was heard at 5.0
