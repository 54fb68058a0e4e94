"""Address ownership: a packet's IPv6 source must be the address its session's key owns (link-independent)."""

from __future__ import annotations

import ast
import ipaddress
import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.lossy_link import static_keypair

from axiomnet.identity import derive_address
from axiomnet.ownership import (
    IPV6_ADDRESSES,
    IPV6_DESTINATION,
    IPV6_HEADER_SIZE,
    IPV6_SOURCE,
    address_of,
    destined_to,
    is_ipv6,
    source_is,
    source_owned_by,
)


def packet(src: bytes, dst: bytes, version: int = 6) -> bytes:
    """A minimal IPv6 header (UDP, 8 bytes of payload) from ``src`` to ``dst``."""
    return bytes([version << 4, 0, 0, 0, 0, 8, 17, 64]) + src + dst + bytes(8)


KEY = static_keypair(1)[1]
OTHER = static_keypair(2)[1]
MINE, THEIRS = address_of(KEY), address_of(OTHER)


def test_the_owner_of_an_address_is_the_key_it_is_derived_from() -> None:
    assert MINE == derive_address(KEY).packed and MINE[0] == 0xFC
    assert source_owned_by(packet(MINE, THEIRS), KEY)
    assert not source_owned_by(packet(THEIRS, MINE), KEY)  # a neighbour speaking for somebody else
    assert not source_owned_by(packet(bytes(16), MINE), KEY)


def test_only_ipv6_packets_with_a_whole_header_can_pass() -> None:
    assert not source_is(packet(MINE, THEIRS, version=4), MINE)
    assert not source_is(packet(MINE, THEIRS)[:39], MINE)
    assert is_ipv6(packet(MINE, THEIRS)) and not is_ipv6(b"")
    assert destined_to(packet(THEIRS, MINE), MINE) and not destined_to(packet(MINE, THEIRS), MINE)


@given(src=st.binary(min_size=16, max_size=16), dst=st.binary(min_size=16, max_size=16))
def test_source_is_exactly_bytes_8_to_24(src: bytes, dst: bytes) -> None:
    assert source_is(packet(src, dst), src)
    assert source_is(packet(src, dst), dst) == (src == dst)


def test_the_named_offsets_are_where_a_real_ipv6_header_keeps_its_addresses() -> None:
    src, dst = ipaddress.IPv6Address("fc00::1"), ipaddress.IPv6Address("fd12:3456::abcd")
    header = struct.pack(">IHBB16s16s", 6 << 28, 8, 17, 64, src.packed, dst.packed)  # RFC 8200 §3
    assert len(header) == IPV6_HEADER_SIZE
    assert ipaddress.IPv6Address(header[IPV6_SOURCE]) == src
    assert ipaddress.IPv6Address(header[IPV6_DESTINATION]) == dst
    assert header[IPV6_ADDRESSES] == src.packed + dst.packed


def test_no_module_writes_the_address_offsets_inline() -> None:
    """ownership.py names the IPv6 offsets and routed.py the routed header's (the same numbers): nowhere else."""
    root = Path(__file__).resolve().parents[2]
    named_in = {root / "axiomnet" / "ownership.py", root / "axiomnet" / "routed.py"}
    inline = []
    for folder in ("axiomnet", "actors", "ops", "lab"):
        for path in sorted((root / folder).rglob("*.py")):
            if path in named_in:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
                    bounds = tuple(b.value if isinstance(b, ast.Constant) else None
                                   for b in (node.slice.lower, node.slice.upper))
                    if bounds in {(8, 24), (24, 40), (8, 40)}:
                        inline.append(f"{path.relative_to(root)}:{node.lineno}")
    assert inline == []
