"""Receiver indices: owners pick their own, the dispatcher refuses collisions, and the loser re-picks cleanly."""

from __future__ import annotations

import random

import pytest
from tests.unit.lossy_link import Network, Node, types_of

from axiomnet.constants import MAX_RECEIVER_INDEX
from axiomnet.indices import IndexIssued, IndexRetired, IndexTable, LocalIndices
from axiomnet.wire import PacketType, decode_datagram

INIT, RESP = PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_RESP


class Rigged(random.Random):
    """A random source whose first picks are given (to force a collision), then a seeded sequence."""

    def __init__(self, first: list[int], seed: int) -> None:
        super().__init__(seed)
        self.first = list(first)

    def randint(self, a: int, b: int) -> int:
        if self.first:
            return self.first.pop(0)
        return super().randint(a, b)


def test_local_indices_never_repeat_a_held_index_and_report_in_order() -> None:
    indices = LocalIndices(Rigged([5, 5, 5, 9], seed=1))
    assert indices.pick() == 5 and indices.pick() == 9  # the repeats of 5 were skipped
    indices.release(5)
    assert indices.take_commands() == [IndexIssued(5), IndexIssued(9), IndexRetired(5)]
    assert indices.take_commands() == []
    with pytest.raises(ValueError):
        indices.release(5)  # a double release is a local bug, said at once
    assert 1 <= LocalIndices(random.Random(2)).pick() <= MAX_RECEIVER_INDEX


def test_a_forgotten_index_leaves_no_command_behind() -> None:
    indices = LocalIndices(Rigged([7], seed=1))
    indices.pick()
    assert indices.forget(7) and 7 not in indices
    assert indices.take_commands() == []  # refused before anyone acted on it: nothing to report
    assert not indices.forget(7)


def test_index_table_refuses_another_owners_index_and_stale_releases() -> None:
    table: IndexTable[str] = IndexTable()
    assert table.bind(1, "a") and table.bind(1, "a")  # binding again is idempotent for the holder
    assert not table.bind(1, "b") and table.owner(1) == "a"
    assert not table.release(1, "b") and table.owner(1) == "a"
    assert not table.move(1, "b", "c")  # only the holder's index can be moved
    assert table.move(1, "a", "c") and table.owner(1) == "c"
    assert table.move(2, "a", "c")  # an index nobody holds (the socket restarted) can be moved in
    snapshot = table.snapshot()
    assert table.release_owner("c") == [1, 2] and len(table) == 0
    assert dict(snapshot) == {1: "c", 2: "c"}  # a reader's snapshot never changes under it


def test_a_colliding_initiator_index_is_refused_and_the_handshake_completes_under_a_new_one() -> None:
    a, b = Node("a", 1), Node("b", 2)
    taken = 0x123456
    other = a.session_for(Node("c", 3).public)
    other._indices = LocalIndices(Rigged([taken], seed=5))
    other.initiate(0.0)
    a.sync()  # "other" holds the index now
    sa = a.session_for(b.public)
    sa._indices = LocalIndices(Rigged([taken], seed=6))  # picks the same index
    net = Network(a, b)
    out = a._guarded(sa, sa.initiate(0.0), 0.0)  # the actors' guard: what may leave
    assert types_of(out) == [INIT]
    assert decode_datagram(out[0])[1].sender != taken  # the INIT naming the taken index never left
    assert sa.stats["index_collisions"] == 1 and a.indices.table.owner(taken) is other
    net.send(a, out)
    net.settle(0.0)
    assert sa.is_established and a.indices.live == a.owned_indices()


def test_a_colliding_responder_index_drops_that_half_open_handshake_until_the_init_is_resent() -> None:
    a, b = Node("a", 1), Node("b", 2)
    taken = 0x0ABCDE
    holder = b.session_for(Node("c", 3).public)
    holder._indices = LocalIndices(Rigged([taken], seed=5))
    holder.initiate(0.0)
    b.sync()
    b.responder._indices = LocalIndices(Rigged([taken], seed=7))
    sa = a.session_for(b.public)
    init = sa.initiate(0.0)
    assert b.handle(init[0], a.addr, 0.0) == []  # its RESP would name the taken index: held back
    assert b.responder.pending_count == 0 and b.responder.stats["index_collisions"] == 1
    resp = b.handle(init[0], a.addr, 0.3)  # the initiator's retransmission gets a fresh half-open handshake
    assert types_of(resp) == [RESP] and decode_datagram(resp[0])[1].sender != taken
    net = Network(a, b)
    net.send(b, resp)
    net.settle(0.3)
    assert sa.is_established and b.sessions[a.public].is_established
    assert b.indices.live == b.owned_indices() and b.indices.table.owner(taken) is holder


def test_the_readers_view_is_the_live_table_read_only() -> None:
    """The socket's reader routes through view(): a bind, move or release shows there at once (no copy of the
    table per change), and the reader cannot change it."""
    table: IndexTable[str] = IndexTable()
    view = table.view()
    assert table.bind(5, "a") and view.get(5) == "a"
    assert table.move(5, "a", "b") and view.get(5) == "b"
    assert table.release(5, "b") and view.get(5) is None
    assert table.view() is view  # one view for the table's life: nothing is republished
    with pytest.raises(TypeError):
        view[6] = "c"  # type: ignore[index]


def test_pooled_random_reads_the_kernel_once_per_pool_and_never_hands_a_word_out_twice(monkeypatch) -> None:
    """Index picks draw 24 bits: one os.urandom read per POOL_WORDS picks, not one each; threads sharing the pool
    (every session of a daemon does) never get the same word (here the kernel's words are all distinct)."""
    import itertools
    import threading

    from axiomnet import indices

    counter = itertools.count(1)
    reads = []

    def fake_urandom(n: int) -> bytes:
        reads.append(n)
        return b"".join(next(counter).to_bytes(4, "little") for _ in range(n // 4))

    monkeypatch.setattr(indices.os, "urandom", fake_urandom)
    rng = indices.PooledRandom()
    got: list[int] = []

    def draw() -> None:
        mine = [rng.getrandbits(32) for _ in range(2000)]
        got.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 16000  # no word twice, across threads
    assert len(reads) <= 16000 // indices.POOL_WORDS + 8  # a refill per pool (races add at most one per thread)
    picks = indices.LocalIndices(rng)
    assert all(1 <= picks.pick() <= MAX_RECEIVER_INDEX for _ in range(1000))
