"""Address ownership: a packet's IPv6 source must be the address its session's key owns (link-independent)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.lossy_link import static_keypair

from axiomnet.identity import derive_address
from axiomnet.ownership import address_of, destined_to, is_ipv6, source_is, source_owned_by


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
