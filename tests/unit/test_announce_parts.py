"""Announcements in parts (protocol 4, docs/PROTOCOL.md §5.7): split, reassembled in any order, bounded."""

from __future__ import annotations

import random
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axiomnet.announce import (
    ANNOUNCE,
    ANNOUNCE_PART,
    PART_HEADER_SIZE,
    Hop,
    PartAssembler,
    decode_announcement,
    decode_part,
    encode_announcement,
    encode_beat,
    Beat,
    split_announcement,
)
from axiomnet.bloom import Bloom
from axiomnet.constants import (
    AEAD_TAG_SIZE,
    ANNOUNCE_PART_BYTES,
    HEADER_SIZE,
    MAX_ANNOUNCE_PARTS,
    MAX_ANNOUNCEMENT_SIZE,
    MAX_TREE_DEPTH,
    PART_TIMEOUT,
    UNDERLAY_DATAGRAM_TARGET,
)
from axiomnet.errors import MalformedPacket
from axiomnet.identity import Identity
from tests.unit.test_tree import ident, signed, tree_of

A, B = b"a" * 32, b"b" * 32
_HEAD = struct.Struct(">BBQHH")


def announcement_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that start like an announcement (the assembler does not look further)."""
    return bytes([ANNOUNCE]) + random.Random(seed).randbytes(size - 1)


def assemble(parts: list[bytes], assembler: PartAssembler | None = None, sender: bytes = A,
             now: float = 0.0) -> list[bytes]:
    assembler = assembler if assembler is not None else PartAssembler()
    got = [assembler.receive(sender, part, now) for part in parts]
    return [g for g in got if g is not None]


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 12 * ANNOUNCE_PART_BYTES + 5), number=st.integers(0, (1 << 64) - 1),
       order=st.randoms(use_true_random=False))
def test_any_announcement_comes_back_whole_from_its_parts_in_any_order(size: int, number: int,
                                                                       order: random.Random) -> None:
    data = announcement_bytes(size, size)
    parts = split_announcement(data, number)
    assert len(parts) == -(-size // ANNOUNCE_PART_BYTES)
    assert all(len(p) <= PART_HEADER_SIZE + ANNOUNCE_PART_BYTES for p in parts)
    assert [decode_part(p).index for p in parts] == list(range(len(parts)))
    order.shuffle(parts)
    assembler = PartAssembler()
    got = [assembler.receive(A, p, 1.0) for p in parts]
    assert got[:-1] == [None] * (len(parts) - 1) and got[-1] == data  # whole once, at its last part
    assert assembler.held == 0 and len(assembler) == 0
    assert assembler.stats["announcements_assembled"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3 * ANNOUNCE_PART_BYTES))
def test_a_part_decoder_refuses_garbage_with_malformed_packet_only(data: bytes) -> None:
    try:
        decode_part(bytes([ANNOUNCE_PART]) + data)
    except MalformedPacket:
        pass
    assembler = PartAssembler()
    try:
        assembler.receive(A, bytes([ANNOUNCE_PART]) + data, 0.0)
    except MalformedPacket:
        pass
    assert assembler.held <= len(data)  # it never holds more than it was given


def test_a_real_signed_chain_goes_through_parts_into_the_tree() -> None:
    """A truly signed 60-hop chain with a lookup filter arrives in parts, in reverse order, and the tree takes its
    place from it as before; what it announces in turn splits into as many parts as its size asks."""
    ids = sorted((Identity.from_seed(i.to_bytes(32, "big")) for i in range(1, 63)), key=lambda i: i.signing_key)
    root, sender, me = ids[0], ids[-2], ids[-1]
    ann = replace(signed(root, [(x, 1 + k % 3) for k, x in enumerate(ids[1:-1])], me),
                  bloom=Bloom.of([bytes([0xFC]) + bytes([i]) * 15 for i in range(200)]))
    data = encode_announcement(ann)
    parts = split_announcement(data, 7)
    assert len(parts) == -(-len(data) // ANNOUNCE_PART_BYTES) >= 6
    tree = tree_of(me)
    tree.add(sender.public_key, 0.0)
    whole = assemble(list(reversed(parts)), PartAssembler(), sender.public_key, 1.0)
    assert whole == [data]
    tree.receive(sender.public_key, whole[0], 1.0)
    assert tree.root == root.signing_key and tree.depth == 61
    sent = dict(tree.tick(1.5))
    mine = PartAssembler(100).split(sent[sender.public_key])
    assert len(mine) == -(-len(sent[sender.public_key]) // ANNOUNCE_PART_BYTES) >= 6
    assert decode_announcement(assemble(mine)[0]).path == tree.path


def test_the_deepest_announcement_fits_its_parts_and_no_part_is_fragmented() -> None:
    """MAX_TREE_DEPTH hops and a full filter: at most MAX_ANNOUNCE_PARTS parts, each a datagram under the underlay
    MTU target (no IP fragmentation, which every announcement past ~12 hops had in protocol 3)."""
    hop = Hop(bytes(range(32)), 0xFFFF, 1 << 40, bytes(64))
    full = Bloom.of([bytes([0xFC]) + i.to_bytes(15, "big") for i in range(4000)])
    ann = replace(signed(ident(1), [], ident(2)), chain=(hop,) * MAX_TREE_DEPTH, bloom=full)
    data = encode_announcement(ann)
    assert len(data) == MAX_ANNOUNCEMENT_SIZE
    parts = split_announcement(data, 1)
    assert len(parts) == MAX_ANNOUNCE_PARTS
    assert max(HEADER_SIZE + len(p) + AEAD_TAG_SIZE for p in parts) <= UNDERLAY_DATAGRAM_TARGET
    assert decode_announcement(assemble(parts)[0]).chain == ann.chain
    with pytest.raises(ValueError):
        split_announcement(data + b"x", 2)


def test_two_neighbours_parts_interleaved_are_kept_apart() -> None:
    one, two = announcement_bytes(3000, 1), announcement_bytes(2500, 2)
    p1, p2 = split_announcement(one, 5), split_announcement(two, 5)
    assembler = PartAssembler()
    got = []
    for x, y in zip(p1, p2, strict=True):
        got += [assembler.receive(A, x, 0.0), assembler.receive(B, y, 0.0)]
    assert [g for g in got if g is not None] == [one, two]


def test_a_lost_part_leaves_nothing_behind_after_the_timeout() -> None:
    data = announcement_bytes(5000)
    parts = split_announcement(data, 3)
    assembler = PartAssembler()
    assert assemble(parts[:2] + parts[3:], assembler) == []
    assert len(parts) == 5 and assembler.held == 5000 - ANNOUNCE_PART_BYTES
    # Anything arriving PART_TIMEOUT after its first part drops it; the next announcement then comes through.
    nxt = split_announcement(announcement_bytes(1500, 9), 4)
    assert assemble(nxt, assembler, now=PART_TIMEOUT) == [announcement_bytes(1500, 9)]
    assert assembler.stats["partials_expired"] == 1 and assembler.stats["partials_replaced"] == 0
    assert assembler.held == 0


def test_a_newer_number_replaces_a_partial_and_older_parts_are_stale() -> None:
    old, new = announcement_bytes(3000, 1), announcement_bytes(3000, 2)
    p_old, p_new = split_announcement(old, 10), split_announcement(new, 11)
    assembler = PartAssembler()
    assert assemble(p_old[:1] + p_new[:1], assembler) == []
    assert assembler.stats["partials_replaced"] == 1
    assert assemble(p_old[1:], assembler) == []  # the old one's remaining parts: stale, dropped
    assert assembler.stats["parts_stale"] == 2
    assert assemble(p_new[1:], assembler) == [new]
    # A late part of the one completed (or an older one) starts nothing while that completion is recent ...
    assert assemble(p_new[:1] + p_old[:1], assembler, now=PART_TIMEOUT / 2) == []
    assert assembler.stats["parts_stale"] == 4 and len(assembler) == 0 and assembler.held == 0
    # ... but a neighbour that restarted its numbers is heard again once that is PART_TIMEOUT old.
    assert assemble(split_announcement(old, 1), assembler, now=PART_TIMEOUT) == [old]


def test_a_repeated_part_is_counted_and_the_first_copy_kept() -> None:
    data = announcement_bytes(2500)
    parts = split_announcement(data, 1)
    forged = parts[0][:PART_HEADER_SIZE] + bytes(ANNOUNCE_PART_BYTES)
    assert assemble([parts[0], forged, parts[1], parts[2]]) == [data]


@pytest.mark.parametrize("index,count,body", [
    (0, 0, 10),  # no parts
    (0, MAX_ANNOUNCE_PARTS + 1, ANNOUNCE_PART_BYTES),  # more parts than the deepest announcement needs
    (0xFFFF, 0xFFFF, 10),  # the largest u16 count
    (3, 3, 10),  # an index past the count
    (0, 2, 10),  # a part before the last that is short
    (1, 2, ANNOUNCE_PART_BYTES + 1),  # a last part that is too long
    (0, 1, 0),  # no bytes at all
])
def test_a_malicious_part_count_or_index_is_refused(index: int, count: int, body: int) -> None:
    data = _HEAD.pack(ANNOUNCE_PART, 0, 1, index, count) + bytes(body)
    with pytest.raises(MalformedPacket):
        PartAssembler().receive(A, data, 0.0)


def test_a_part_whose_count_disagrees_with_its_announcement_drops_the_partial() -> None:
    parts = split_announcement(announcement_bytes(3000), 8)
    liar = _HEAD.pack(ANNOUNCE_PART, 0, 8, 1, 4) + bytes(ANNOUNCE_PART_BYTES)
    assembler = PartAssembler()
    assert assemble(parts[:1], assembler) == []
    with pytest.raises(MalformedPacket, match="parts"):
        assembler.receive(A, liar, 0.0)
    assert len(assembler) == 0 and assembler.held == 0 and assembler.stats["partials_malformed"] == 1
    with pytest.raises(MalformedPacket):
        assembler.receive(A, parts[1][:1] + b"\x01" + parts[1][2:], 0.0)  # unknown flags


def test_partials_are_bounded_in_bytes_oldest_dropped_first() -> None:
    assembler = PartAssembler(max_bytes=5 * ANNOUNCE_PART_BYTES)
    for i in range(4):  # four neighbours, each two parts of a three-part announcement: 8 parts held would be too many
        parts = split_announcement(announcement_bytes(3 * ANNOUNCE_PART_BYTES, i), 1)
        assert assemble(parts[:2], assembler, sender=bytes([i]) * 32, now=i * 0.1) == []
    assert assembler.held <= 5 * ANNOUNCE_PART_BYTES and len(assembler) == 2
    assert assembler.stats["partials_evicted"] == 2
    last = split_announcement(announcement_bytes(3 * ANNOUNCE_PART_BYTES, 3), 1)
    assert assemble(last[2:], assembler, sender=bytes([3]) * 32, now=0.5) == [announcement_bytes(3 * ANNOUNCE_PART_BYTES, 3)]


def test_only_parts_carry_announcements_and_other_control_types_pass() -> None:
    assembler = PartAssembler()
    with pytest.raises(MalformedPacket, match="outside ANNOUNCE_PART"):
        assembler.receive(A, announcement_bytes(300), 0.0)  # a protocol-3 announcement, whole
    beat = encode_beat(Beat(bytes(32), 1, bytes(64)))
    assert assembler.receive(A, beat, 0.0) == beat
    assert assembler.split(beat) == [beat]


def test_our_numbers_rise_from_the_start_we_are_given() -> None:
    assembler = PartAssembler(1_700_000_000_000)
    first = [decode_part(p).number for p in assembler.split(announcement_bytes(2000))]
    second = [decode_part(p).number for p in assembler.split(announcement_bytes(100))]
    assert first == [1_700_000_000_001] * 2 and second == [1_700_000_000_002]
    assert assembler.stats["parts_sent"] == 3


def test_forget_drops_a_neighbours_partial_and_its_last_number() -> None:
    assembler = PartAssembler()
    assert assemble(split_announcement(announcement_bytes(100), 9), assembler) == [announcement_bytes(100)]
    assert assemble(split_announcement(announcement_bytes(3000), 10)[:1], assembler) == []
    assembler.forget(A)
    assert assembler.held == 0 and len(assembler) == 0
    assert assemble(split_announcement(announcement_bytes(100), 1), assembler) == [announcement_bytes(100)]


def test_the_parts_match_the_documented_example() -> None:
    """docs/PROTOCOL.md §5.7: 2,500 bytes under number 7 are three parts, 1,200 + 1,200 + 100 bytes."""
    data = announcement_bytes(2500)
    parts = split_announcement(data, 7)
    assert [p[:PART_HEADER_SIZE].hex() for p in parts] == [
        "05" "00" "0000000000000007" f"{i:04x}" "0003" for i in range(3)]
    assert [p[PART_HEADER_SIZE:] for p in parts] == [data[:1200], data[1200:2400], data[2400:]]
