"""LAN discovery beacons (axiomnet/beacon.py): the byte layout of docs/PROTOCOL.md §8, the group MAC, and the
listener's bounds (size, rate per source, table size, first endpoint wins, expiry)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from axiomnet.beacon import (BEACON_SIZE, BeaconListener, Heard, WrongGroup, decode_beacon, encode_beacon,
                             group_key)
from axiomnet.constants import PROTOCOL_VERSION
from axiomnet.errors import MalformedPacket, RemoteProtocolError

OWN = bytes(32)
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
OPEN = group_key(None)
SECRET = group_key(b"correct horse")


def test_layout_is_the_documented_one():
    data = encode_beacon(KEY_A, 7443, OPEN)
    assert len(data) == BEACON_SIZE == 56
    assert data[:4] == b"AXNB" and data[4] == 1 and data[5] == PROTOCOL_VERSION
    assert data[6:8] == (7443).to_bytes(2, "big") and data[8:40] == KEY_A
    group = hashlib.blake2s(b"", digest_size=32, person=b"axn-bgrp").digest()
    assert group == OPEN
    assert data[40:] == hashlib.blake2s(data[:40], digest_size=16, key=group, person=b"axn-bmac").digest()


def test_known_answer():
    """The first bytes are fixed by the layout; the MAC by the group key (docs/PROTOCOL.md §8 repeats this)."""
    data = encode_beacon(KEY_A, 7443, OPEN)
    assert data[:8].hex() == "41584e4201041d13"  # format 1, protocol version 4
    assert data[40:].hex() == "572cc8cc878ac62d2cc5acdbcf2041f3" and KEY_A == bytes(range(32))
    assert encode_beacon(KEY_A, 7443, SECRET)[40:].hex() == "4b45ee786c82616aeec24c55908d5e26"
    assert data.hex() == encode_beacon(KEY_A, 7443, group_key(b"")).hex()  # no secret is the empty secret


def test_round_trip_in_the_same_group():
    beacon = decode_beacon(encode_beacon(KEY_A, 9, SECRET), SECRET)
    assert (beacon.public_key, beacon.port, beacon.protocol) == (KEY_A, 9, PROTOCOL_VERSION)


def test_another_group_does_not_verify():
    with pytest.raises(WrongGroup):
        decode_beacon(encode_beacon(KEY_A, 7443, SECRET), OPEN)
    with pytest.raises(WrongGroup):
        decode_beacon(encode_beacon(KEY_A, 7443, OPEN), SECRET)
    with pytest.raises(WrongGroup):
        decode_beacon(encode_beacon(KEY_A, 7443, group_key(b"other")), SECRET)


def test_every_flipped_bit_is_refused():
    data = bytearray(encode_beacon(KEY_A, 7443, SECRET))
    for i in range(len(data) * 8):
        data[i // 8] ^= 1 << (i % 8)
        with pytest.raises(RemoteProtocolError):
            decode_beacon(bytes(data), SECRET)
        data[i // 8] ^= 1 << (i % 8)


def test_sizes_and_fields_refused():
    for size in (0, 1, 40, 55, 57, 1500):
        with pytest.raises(MalformedPacket):
            decode_beacon(bytes(size), OPEN)
    with pytest.raises(ValueError):
        encode_beacon(KEY_A[:31], 7443, OPEN)
    with pytest.raises(ValueError):
        encode_beacon(KEY_A, 0, OPEN)


def test_arbitrary_input_only_ever_raises_remote_protocol_errors():
    rng = random.Random(18)
    valid = encode_beacon(KEY_A, 7443, OPEN)
    for _ in range(5000):
        if rng.random() < 0.5:
            data = os.urandom(rng.choice((0, 16, 55, 56, 57, 200)))
        else:
            data = bytearray(valid)
            data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        try:
            decode_beacon(data, OPEN)
        except RemoteProtocolError:
            pass


def listener(**kw) -> BeaconListener:
    return BeaconListener(OWN, SECRET, interval=1.0, **kw)


def test_a_new_key_is_heard_once_then_refreshed():
    lis = listener()
    beacon = encode_beacon(KEY_A, 7443, SECRET)
    heard = lis.receive(beacon, "fe80::1%eth0", "eth0", now=10.0)
    assert heard == Heard(KEY_A, ("fe80::1%eth0", 7443), "eth0")
    assert lis.receive(beacon, "fe80::1%eth0", "eth0", now=11.0) is None  # known: no second dial
    assert lis.live(11.0) == (heard,)
    assert lis.stats["beacons_new"] == 1 and lis.stats["beacons_accepted"] == 2


def test_other_groups_own_beacons_and_versions_are_counted_and_ignored():
    lis = listener()
    assert lis.receive(encode_beacon(KEY_A, 7443, OPEN), "fe80::1", "eth0", 1.0) is None
    assert lis.receive(encode_beacon(OWN, 7443, SECRET), "fe80::2", "eth0", 1.0) is None
    assert lis.receive(encode_beacon(KEY_B, 7443, SECRET, protocol=PROTOCOL_VERSION + 1), "fe80::3", "eth0", 1.0) is None
    assert lis.receive(b"AXNB" + bytes(52), "fe80::4", "eth0", 1.0) is None
    assert lis.receive(b"short", "fe80::5", "eth0", 1.0) is None
    assert lis.stats["beacons_other_group"] == 2  # the all-zero "AXNB" datagram fails the MAC too
    assert lis.stats["beacons_own"] == 1 and lis.stats["beacons_wrong_version"] == 1
    assert lis.stats["beacons_malformed"] == 1
    assert lis.live(1.0) == ()


def test_a_fast_source_is_rate_limited_whatever_it_sends():
    lis = listener(min_gap=0.1)
    junk = os.urandom(56)
    for i in range(100):  # 100 datagrams in 0.5 s from one source: 5 get looked at
        lis.receive(junk, "fe80::9", "eth0", now=i * 0.005)
    assert lis.stats["beacons_rate_limited"] == 95
    assert lis.stats["beacons_other_group"] == 5


def test_tables_are_bounded():
    lis = listener(max_peers=4, max_sources=8)
    for i in range(50):
        key = hashlib.blake2s(bytes([i])).digest()
        lis.receive(encode_beacon(key, 7443, SECRET), f"fe80::{i + 1:x}", "eth0", now=1.0)
    assert len(lis.peers) == 4 and len(lis._sources) == 8
    assert lis.stats["beacons_new"] == 50 and lis.stats["beacons_table_full_evicted"] == 46


def test_first_endpoint_wins_while_it_is_heard():
    """A replayed beacon from elsewhere does not move a key's endpoint while the real one keeps beaconing."""
    lis = listener()
    beacon = encode_beacon(KEY_A, 7443, SECRET)
    first = lis.receive(beacon, "fe80::1%eth0", "eth0", 1.0)
    assert lis.receive(beacon, "fe80::66%eth0", "eth0", 1.5) is None
    assert lis.stats["beacons_endpoint_conflict"] == 1
    assert lis.live(1.5) == (first,)


def test_silent_keys_expire_and_are_heard_anew():
    lis = listener()
    beacon = encode_beacon(KEY_A, 7443, SECRET)
    lis.receive(beacon, "fe80::1", "eth0", 1.0)
    assert lis.expire(5.9) == [] and len(lis.live(5.9)) == 1
    assert lis.live(6.1) == ()
    assert [h.public_key for h in lis.expire(6.1)] == [KEY_A]
    again = lis.receive(beacon, "fe80::2", "eth0", 7.0)  # back, from another address: a new dial
    assert again is not None and again.endpoint == ("fe80::2", 7443)
