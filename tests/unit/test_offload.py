"""Software segmentation, checksum completion and coalescing (axiomnet/offload.py), against a plain reference."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axiomnet.offload import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN_VNET_HDR,
    VNET_HDR,
    UnsupportedFrame,
    coalesce,
    fold,
    gso_groups,
    ones_sum,
    pseudo_sum6,
    split_frame,
    split_gro,
)

SRC = bytes.fromhex("fc00000000000000000000000000000a")
DST = bytes.fromhex("fc00000000000000000000000000000b")
FIN, SYN, PSH, ACK, CWR = 0x01, 0x02, 0x08, 0x10, 0x80


def reference_sum(data: bytes) -> int:
    """RFC 1071 the slow way: 16-bit big-endian words, end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack(">H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def l4_checksum_ok(packet: bytes) -> bool:
    """True if the TCP/UDP checksum of an IPv6 packet (no extension headers) verifies."""
    l4 = packet[40:]
    pseudo = packet[8:40] + struct.pack(">IxxxB", len(l4), packet[6])
    return reference_sum(pseudo + l4) == 0xFFFF


def tcp6(payload: bytes, *, seq: int = 1000, flags: int = ACK, options: bytes = b"", window: int = 512,
         ack: int = 77, sport: int = 5201, dport: int = 40000, checksum: str = "full") -> bytes:
    """A TCP/IPv6 packet; ``checksum`` "full" (valid), "partial" (the pseudo-header sum, as the kernel leaves it
    for offload) or "zero"."""
    thl = 20 + len(options)
    assert thl % 4 == 0
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, (thl // 4) << 4, flags, window, 0, 0) + options
    ip = struct.pack(">IHBB", 0x60000000, thl + len(payload), 6, 64) + SRC + DST
    if checksum == "partial":
        check = fold(pseudo_sum6(SRC, DST, thl + len(payload), 6))
    elif checksum == "full":
        pseudo = SRC + DST + struct.pack(">IxxxB", thl + len(payload), 6)
        check = (~reference_sum(pseudo + tcp + payload)) & 0xFFFF
    else:
        check = 0
    tcp = tcp[:16] + struct.pack(">H", check) + tcp[18:]
    return ip + tcp + payload


def tso_frame(payload: bytes, gso_size: int, **kw: object) -> bytes:
    """What the kernel hands a TUN reader for a TCP super-packet: virtio-net header, partial checksum."""
    packet = tcp6(payload, checksum="partial", **kw)  # type: ignore[arg-type]
    thl = (packet[52] >> 4) * 4
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, 40 + thl, gso_size, 40, 16) + packet


def tcp_fields(packet: bytes) -> tuple[int, int, bytes]:
    """(sequence number, flags, payload) of a TCP/IPv6 packet."""
    thl = (packet[52] >> 4) * 4
    return struct.unpack_from(">I", packet, 44)[0], packet[53], packet[40 + thl:]


# --- checksums -------------------------------------------------------------------------------------------------
@given(st.binary(max_size=3000))
def test_ones_sum_matches_the_reference(data: bytes) -> None:
    # 0 and 0xFFFF are the two zeros of ones'-complement arithmetic.
    assert ones_sum(data) % 0xFFFF == reference_sum(data) % 0xFFFF


@given(st.binary(min_size=1, max_size=2000))
def test_a_partial_checksum_is_completed_like_the_kernel_does(payload: bytes) -> None:
    frame = VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 40, 16) + tcp6(payload, checksum="partial")
    (packet,) = split_frame(frame, 1400)
    assert l4_checksum_ok(packet)
    assert packet[:56] == tcp6(payload)[:56] and packet[58:] == tcp6(payload)[58:]  # only the checksum changed


def test_a_frame_without_offload_flags_is_passed_through() -> None:
    packet = tcp6(b"hello")
    assert split_frame(PLAIN_VNET_HDR + packet, 1400) == [packet]


# --- software segmentation -------------------------------------------------------------------------------------
@settings(max_examples=200)
@given(payload=st.binary(min_size=1, max_size=20_000), gso_size=st.integers(2, 1500),
       max_packet=st.integers(200, 1500), flags=st.sampled_from([ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR]),
       options=st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(range(8)), b"\x01" * 12]),
       seq=st.integers(0, 2**32 - 1))
def test_segments_carry_the_super_packet_exactly_with_valid_checksums(
        payload: bytes, gso_size: int, max_packet: int, flags: int, options: bytes, seq: int) -> None:
    frame = tso_frame(payload, gso_size, flags=flags, options=options, seq=seq)
    thl = 20 + len(options)
    segments = split_frame(frame, max_packet)
    size = min(gso_size, max_packet - 40 - thl) & ~1
    assert b"".join(tcp_fields(s)[2] for s in segments) == payload
    expected_seq = seq
    for i, seg in enumerate(segments):
        s_seq, s_flags, s_payload = tcp_fields(seg)
        assert l4_checksum_ok(seg)
        assert struct.unpack_from(">H", seg, 4)[0] == len(seg) - 40
        assert s_seq == expected_seq
        expected_seq = (expected_seq + len(s_payload)) & 0xFFFFFFFF
        assert seg[40 + 20:40 + thl] == options
        if len(segments) > 1:
            assert len(seg) <= max_packet and len(s_payload) <= size
        last, first = i == len(segments) - 1, i == 0
        assert bool(s_flags & (FIN | PSH)) == (last and bool(flags & (FIN | PSH)))
        assert bool(s_flags & CWR) == (first and bool(flags & CWR))
        assert s_flags & ACK


def test_segments_fit_the_packet_size_even_when_gso_size_is_larger() -> None:
    segments = split_frame(tso_frame(bytes(10_000), 1348, options=bytes(12)), 1314)
    assert max(len(s) for s in segments) <= 1314
    assert len(segments) == -(-10_000 // (1314 - 72 & ~1))


def test_frames_it_cannot_handle_are_refused_not_guessed() -> None:
    with pytest.raises(UnsupportedFrame):
        split_frame(b"\0" * 10, 1400)
    with pytest.raises(UnsupportedFrame):
        split_frame(VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16) + bytes(2000), 1400)
    with pytest.raises(UnsupportedFrame):  # a partial checksum past the end of the packet
        split_frame(VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, 60, 16) + bytes(70), 1400)
    with pytest.raises(UnsupportedFrame):  # "TSO" of something that is not TCP/IPv6
        split_frame(VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, 60, 1000, 40, 16) + b"\x45" + bytes(3000), 1400)


# --- coalescing ------------------------------------------------------------------------------------------------
def kernel_view(frame: list[bytes | memoryview]) -> tuple[bytes, bytes]:
    """(virtio-net header, packet) of one TUN write, with a partial checksum completed as the kernel would."""
    data = b"".join(bytes(p) for p in frame)
    vnet, packet = data[:10], data[10:]
    flags, _gso, _hl, _size, start, offset = VNET_HDR.unpack(vnet)
    if flags & F_NEEDS_CSUM:
        at = start + offset
        check = (~reference_sum(packet[start:])) & 0xFFFF
        packet = packet[:at] + struct.pack(">H", check) + packet[at + 2:]
    return vnet, packet


@settings(max_examples=200)
@given(payload=st.binary(min_size=1, max_size=30_000), max_packet=st.integers(300, 1500),
       flags=st.sampled_from([ACK, ACK | PSH]))
def test_coalescing_the_segments_rebuilds_the_super_packet(payload: bytes, max_packet: int, flags: int) -> None:
    segments = split_frame(tso_frame(payload, 1400, flags=flags, options=bytes(12)), max_packet)
    frames = coalesce(segments)
    got = b""
    for frame in frames:
        vnet, packet = kernel_view(frame)
        assert l4_checksum_ok(packet)
        assert struct.unpack_from(">H", packet, 4)[0] == len(packet) - 40
        got += tcp_fields(packet)[2]
        if vnet != PLAIN_VNET_HDR:
            assert VNET_HDR.unpack(vnet)[1] == GSO_TCPV6
            assert VNET_HDR.unpack(vnet)[3] == len(tcp_fields(segments[0])[2])
    assert got == payload
    if len(payload) <= 0xFFFF - 32:
        assert len(frames) == 1
    assert bool(tcp_fields(kernel_view(frames[-1])[1])[1] & PSH) == bool(flags & PSH)


def test_other_flows_and_packets_keep_their_order_per_flow() -> None:
    a1, a2 = tcp6(bytes(100), seq=0), tcp6(bytes(100), seq=100)
    b1 = tcp6(bytes(100), seq=0, sport=1)
    ping = struct.pack(">IHBB", 0x60000000, 8, 58, 64) + SRC + DST + bytes(8)
    fin = tcp6(b"", seq=200, flags=ACK | FIN)
    a3 = tcp6(bytes(100), seq=200)
    frames = [kernel_view(f)[1] for f in coalesce([a1, b1, ping, a2, fin, a3])]
    a = [f for f in frames if f[6] == 6 and struct.unpack_from(">H", f, 40)[0] == 5201]
    assert [tcp_fields(f)[0] for f in a] == [0, 200, 200]  # a1+a2 merged, then the FIN, then a3 after it
    assert len(tcp_fields(a[0])[2]) == 200
    assert ping in frames and any(struct.unpack_from(">H", f, 40)[0] == 1 for f in frames if f[6] == 6)


def test_segments_that_differ_are_not_merged() -> None:
    base = tcp6(bytes(100), seq=0)
    cases = [
        tcp6(bytes(100), seq=101),  # a gap
        tcp6(bytes(100), seq=100, ack=78),  # another ack
        tcp6(bytes(100), seq=100, window=1),  # another window
        tcp6(bytes(100), seq=100, options=b"\x01" * 4),  # other options
        tcp6(bytes(101), seq=100),  # larger than the first
        tcp6(bytes(100), seq=100, flags=ACK | SYN),
    ]
    for other in cases:
        assert len(coalesce([base, other])) == 2
    assert len(coalesce([tcp6(bytes(100), seq=0, flags=ACK | PSH), tcp6(bytes(100), seq=100)])) == 2


# --- UDP GSO / GRO ---------------------------------------------------------------------------------------------
@given(st.lists(st.tuples(st.integers(1, 1500), st.sampled_from(["x", "y"])), max_size=200),
       st.integers(1, 64), st.integers(1500, 65000), st.integers(100, 1500))
def test_gso_groups_keep_order_and_respect_every_bound(sizes: list[tuple[int, str]], max_segments: int,
                                                        max_bytes: int, max_size: int) -> None:
    items = [(bytes([i % 256]) * n, addr) for i, (n, addr) in enumerate(sizes)]
    groups = gso_groups(items, max_segments, max_bytes, max_size)
    assert [(d, a) for a, g in groups for d in g] == items
    for _addr, group in groups:
        assert len(group) <= max_segments and sum(map(len, group)) <= max_bytes
        if len(group) > 1:
            assert len(group[0]) <= max_size
            assert all(len(d) == len(group[0]) for d in group[:-1]) and len(group[-1]) <= len(group[0])


@given(st.binary(max_size=5000), st.integers(1, 1500))
def test_split_gro_undoes_a_coalesced_read(data: bytes, segment: int) -> None:
    parts = split_gro(data, segment)
    assert b"".join(parts) == data
    assert all(len(p) == segment for p in parts[:-1])
