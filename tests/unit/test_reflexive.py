"""Reflexive addresses (axiomnet/reflexive.py): the OBSERVED_ENDPOINT control message of docs/PROTOCOL.md §8.1,
byte for byte, its refusals, and the table that keeps one report per neighbour."""

from __future__ import annotations

import os
import random

import pytest

from axiomnet.errors import MalformedPacket, RemoteProtocolError
from axiomnet.ops.inspect import render_self
from axiomnet.reflexive import ReflexiveTable, decode_observed, encode_observed


def test_layout_is_the_documented_one():
    assert encode_observed("198.51.100.7", 7443).hex() == "4004c63364071d13"
    assert encode_observed("2001:db8::1", 443).hex() == "400620010db8000000000000000000000001" "01bb"
    assert encode_observed("::ffff:198.51.100.7", 7443) == encode_observed("198.51.100.7", 7443)


def test_round_trip():
    for host, port in (("198.51.100.7", 7443), ("2001:db8::1", 1), ("203.0.113.9", 65535)):
        assert decode_observed(encode_observed(host, port)) == (host, port)


def test_link_local_and_non_literals_are_not_reported():
    assert encode_observed("fe80::1%eth0", 7443) is None
    assert encode_observed("169.254.1.1", 7443) is None
    assert encode_observed("example.org", 7443) is None


@pytest.mark.parametrize("payload", [
    "", "40", "4004c6336407", "4004c63364071d1300", "4005c63364071d13", "4104c63364071d13",
    "400400000000" "1d13",  # 0.0.0.0
    "4004c63364070000",  # port 0
    "4004e00000011d13",  # multicast
    "4006fe800000000000000000000000000001" "1d13",  # link-local
    "400600000000000000000000ffffffffffffff7a",  # IPv4-mapped as family 6 (found by tools/fuzz.py: no re-encoding)
])
def test_malformed_messages_are_refused(payload):
    with pytest.raises(MalformedPacket):
        decode_observed(bytes.fromhex(payload))


def test_arbitrary_input_only_raises_remote_protocol_errors():
    rng = random.Random(81)
    for _ in range(5000):
        data = bytes([0x40]) + os.urandom(rng.choice((0, 1, 5, 6, 7, 17, 18, 19)))
        try:
            decode_observed(data)
        except RemoteProtocolError:
            pass


def test_one_report_per_neighbour_and_two_agreeing_neighbours_confirm():
    table = ReflexiveTable()
    a, b, c = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    table.record(a, ("198.51.100.7", 7443), 1.0)
    assert table.confirmed() is None  # one neighbour's word is a hint
    table.record(a, ("198.51.100.7", 40000), 2.0)  # a's newer report replaces its older one
    table.record(b, ("198.51.100.7", 40000), 2.0)
    assert table.confirmed() == ("198.51.100.7", 40000)
    table.record(c, ("203.0.113.66", 1), 3.0)  # a liar is outvoted
    assert table.confirmed() == ("198.51.100.7", 40000)
    table.forget(a)
    assert table.confirmed() is None  # one against one: nothing confirmed
    snap = table.snapshot()
    assert snap["reported"] == [{"endpoint": "198.51.100.7:40000", "neighbours": 1},
                                {"endpoint": "203.0.113.66:1", "neighbours": 1}]


def test_the_table_is_bounded():
    table = ReflexiveTable(max_reports=3)
    kept = [table.record(bytes([i]) * 32, ("198.51.100.7", 7443), 1.0) for i in range(5)]
    assert kept == [True, True, True, False, False] and len(table.reports) == 3


def test_inspect_self_shows_where_neighbours_see_us():
    state = {"self": {"address": "fc00::1"},
             "snapshots": {"peers": {"reflexive": {"confirmed": None,
                                                   "reported": [{"endpoint": "198.51.100.7:7443", "neighbours": 1}]}}}}
    assert any(line.split() == ["seen", "at", "198.51.100.7:7443", "(1", "peer)"] for line in render_self(state))
