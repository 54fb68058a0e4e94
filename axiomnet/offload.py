"""Large units between the TUN device, the overlay and the UDP socket (pure, no I/O).

With ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (TUN_F_CSUM, TUN_F_TSO6) the kernel hands the TUN reader TCP
super-packets of up to 64 KiB, each behind a 10-byte virtio-net header, and accepts them back the same way; with
UDP_SEGMENT (GSO) one ``sendmsg`` carries many datagrams and with UDP_GRO one ``recvmsg`` returns many. Every
per-packet cost of the daemon (a thread hand-off, a system call) is then paid once per unit instead of once per
packet. This module is the byte work around those units, as wireguard-go's tun/offload_linux.go does it:

* :func:`split_frame` turns one frame read from the TUN device into IP packets with complete checksums: a TCP
  super-packet is cut into segments small enough that each, sealed end to end and on the link, still fits one
  underlay datagram (software TSO), each with its own sequence number, flags and checksum;
* :func:`coalesce` groups the TCP segments about to be written into the TUN device into super-packets the
  kernel accepts with a virtio-net header (GSO_TCPV6, checksum left partial), like the kernel's GRO would;
* :func:`gso_groups` and :func:`split_gro` group datagrams for one UDP_SEGMENT send and split one UDP_GRO read.

What crosses the overlay is unchanged: each end-to-end datagram holds one ordinary IPv6 packet with a valid
checksum, so a peer without offloads (or of an older build) sees nothing different. The checksum sums use
numpy for the equal-sized segments of a super-packet (one pass for all of them).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import TypeVar

import numpy as np

from axiomnet.ownership import IPV6_DESTINATION, IPV6_HEADER_SIZE as IPV6_HEADER, IPV6_SOURCE

# --- the virtio-net header (include/uapi/linux/virtio_net.h), little-endian ------------------------------------
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_SIZE = VNET_HDR.size  # 10
F_NEEDS_CSUM = 1  # the checksum at csum_start + csum_offset holds the pseudo-header sum; the data is not summed
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
PLAIN_VNET_HDR = bytes(VNET_HDR_SIZE)  # a packet with a complete checksum, not to be segmented

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_CSUM_OFFSET = 16
UDP_CSUM_OFFSET = 6
MIN_TCP_HEADER = 20
_FIN, _SYN, _RST, _PSH, _ACK, _URG, _ECE, _CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_NOT_COALESCED = _FIN | _SYN | _RST | _URG | _CWR  # segments carrying these are written alone (as the kernel's GRO)
MAX_IP_PAYLOAD = 0xFFFF  # the IPv6 payload length field: a coalesced packet never grows past it
NUMPY_MIN_SEGMENTS = 4  # below this many equal segments, summing each with int.from_bytes is cheaper than numpy

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_IP6_LEN = struct.Struct(">H")  # at offset 4 of the IPv6 header
_T = TypeVar("_T")
Bytes = bytes | bytearray | memoryview


class UnsupportedFrame(ValueError):
    """A TUN frame this module cannot turn into packets (truncated header, unknown GSO type): count and drop."""


# --- ones'-complement sums (RFC 1071) ---------------------------------------------------------------------------
def fold(total: int) -> int:
    """``total`` folded to 16 bits by end-around carry (the ones'-complement sum of the words it came from)."""
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_sum(data: Bytes) -> int:
    """Ones'-complement sum of ``data`` as big-endian 16-bit words (an odd last byte padded with zero), folded.

    2**16 is 1 modulo 0xFFFF, so the sum of the words is the whole number modulo 0xFFFF (0 stands for 0xFFFF).
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    if not value:
        return 0
    rest = value % 0xFFFF
    return rest if rest else 0xFFFF


def _segment_sums(data: memoryview, size: int, count: int) -> list[int]:
    """Ones'-complement sums (unfolded, big-endian words) of ``count`` consecutive ``size``-byte slices of
    ``data`` (``size`` even): one numpy pass for all of them."""
    if count < NUMPY_MIN_SEGMENTS:
        return [ones_sum(data[i * size:(i + 1) * size]) for i in range(count)]
    # Summed as little-endian words, then byte-swapped: the ones'-complement sum commutes with swapping (RFC 1071).
    words = np.frombuffer(data, dtype="<u2", count=count * size // 2).reshape(count, size // 2)
    out = []
    for little in words.sum(axis=1, dtype=np.uint64).tolist():
        little = (little & 0xFFFF) + (little >> 16)
        little = (little & 0xFFFF) + (little >> 16)
        out.append(((little & 0xFF) << 8) | (little >> 8))
    return out


def pseudo_sum6(src: Bytes, dst: Bytes, length: int, proto: int) -> int:
    """Unfolded sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet of ``length`` bytes."""
    return ones_sum(src) + ones_sum(dst) + (length >> 16) + (length & 0xFFFF) + proto


def _checksum(total: int) -> int:
    """The checksum field for an unfolded sum (0 is sent as 0xFFFF, as the kernel's CSUM_MANGLED_0)."""
    return (~fold(total) & 0xFFFF) or 0xFFFF


# --- from the TUN device ----------------------------------------------------------------------------------------
def split_frame(frame: bytes, max_packet: int) -> list[bytes]:
    """IP packets with complete checksums from one frame read from a TUN device with a virtio-net header.

    A TCP/IPv6 super-packet (GSO_TCPV6) becomes segments of at most ``max_packet`` bytes (each with at most
    ``gso_size`` payload bytes, an even number); a packet whose checksum the kernel left partial (F_NEEDS_CSUM) gets it completed.
    UnsupportedFrame for a frame shorter than its header or of another GSO type (not enabled on the device).
    """
    if len(frame) <= VNET_HDR_SIZE:
        raise UnsupportedFrame(f"TUN frame of {len(frame)} bytes holds no packet after its virtio-net header")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            return [complete_checksum(memoryview(frame)[VNET_HDR_SIZE:], csum_start, csum_offset)]
        return [frame[VNET_HDR_SIZE:]]
    if gso == GSO_TCPV6:
        return segment_tcp6(memoryview(frame)[VNET_HDR_SIZE:], csum_start, gso_size, max_packet)
    raise UnsupportedFrame(f"TUN frame with GSO type {gso_type} (only TCPv6 segmentation is enabled)")


def complete_checksum(packet: memoryview, csum_start: int, csum_offset: int) -> bytes:
    """``packet`` with the checksum at ``csum_start + csum_offset`` completed over ``packet[csum_start:]`` (the
    field holds the pseudo-header sum, as the kernel leaves it for CHECKSUM_PARTIAL)."""
    at = csum_start + csum_offset
    if at + 2 > len(packet):
        raise UnsupportedFrame(f"partial checksum at {at} outside a packet of {len(packet)} bytes")
    check = _checksum(ones_sum(packet[csum_start:]))
    return b"".join((packet[:at], _U16.pack(check), packet[at + 2:]))


@lru_cache(maxsize=64)
def _segment_header(ip_rest: int, tail: int) -> struct.Struct:
    """The layout of a segment's IPv6 + TCP header as pieces (``ip_rest``: bytes 6.. of the IPv6 header and any
    extension headers; ``tail``: urgent pointer and options): payload length, sequence number, flags and
    checksum are the fields that change from one segment to the next."""
    return struct.Struct(f">4sH{ip_rest}s4sI5sB2sH{tail}s")


def segment_tcp6(packet: memoryview, tcp_start: int, gso_size: int, max_packet: int) -> list[bytes]:
    """Software TSO: the TCP segments (complete checksums) of one TCP/IPv6 super-packet, each at most
    ``max_packet`` bytes with at most ``gso_size`` payload bytes. The first keeps CWR, the last FIN and PSH (as the
    kernel does)."""
    n = len(packet)
    if n < IPV6_HEADER + MIN_TCP_HEADER or packet[0] >> 4 != 6 or tcp_start < IPV6_HEADER \
            or tcp_start + MIN_TCP_HEADER > n:
        raise UnsupportedFrame("TSO frame is not a TCP/IPv6 packet")
    thl = (packet[tcp_start + 12] >> 4) * 4
    head = tcp_start + thl
    if thl < MIN_TCP_HEADER or head > n:
        raise UnsupportedFrame(f"TSO frame with a TCP header of {thl} bytes in {n}")
    room = max_packet - head
    size = min(gso_size or room, room) & ~1
    if size < 2:
        raise UnsupportedFrame(f"segment size {size} is too small")
    data = n - head
    if data <= size:  # one segment: only the checksum is missing
        return [complete_checksum(packet, tcp_start, TCP_CSUM_OFFSET)]
    full, last = divmod(data, size)
    count = full + (1 if last else 0)
    tcp = tcp_start
    seq = _U32.unpack_from(packet, tcp + 4)[0]
    flags = packet[tcp + 13]
    # Each segment's header is the super-packet's but for the IPv6 payload length, the sequence number, the flags
    # and the checksum; the checksum sums what is fixed, what varies, and the segment's payload.
    ip0, ip_rest, ports = bytes(packet[0:4]), bytes(packet[6:tcp]), bytes(packet[tcp:tcp + 4])
    ack_doff, window, tail = bytes(packet[tcp + 8:tcp + 13]), bytes(packet[tcp + 14:tcp + 16]), bytes(packet[tcp + 18:head])
    fixed = (ones_sum(ports) + ones_sum(ack_doff) + ones_sum(window) + ones_sum(tail)
             + ones_sum(packet[IPV6_SOURCE]) + ones_sum(packet[IPV6_DESTINATION]) + IPPROTO_TCP + thl)
    pack = _segment_header(tcp - 6, thl - 18).pack
    ext = tcp - IPV6_HEADER  # extension headers, carried in every segment
    payload = packet[head:]
    sums = _segment_sums(payload, size, full)
    if last:
        sums.append(ones_sum(payload[full * size:]))
    out: list[bytes] = []
    append = out.append
    final = count - 1
    for i in range(count):
        length = size if i < full else last
        seg_flags = flags
        if i:
            seg_flags &= ~_CWR
        if i < final:
            seg_flags &= ~(_FIN | _PSH)
        s = (seq + i * size) & 0xFFFFFFFF
        total = fixed + (s >> 16) + (s & 0xFFFF) + seg_flags + length + sums[i]
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        check = (~total & 0xFFFF) or 0xFFFF
        start = i * size
        append(b"".join((pack(ip0, ext + thl + length, ip_rest, ports, s, ack_doff, seg_flags, window, check, tail),
                         payload[start:start + length])))
    return out


# --- into the TUN device ----------------------------------------------------------------------------------------
class _Run:
    """Consecutive TCP segments of one flow being merged into one super-packet (see :func:`coalesce`)."""

    __slots__ = ("first", "thl", "size", "next_seq", "parts", "data", "last_flags", "open", "same")

    def __init__(self, first: bytes, thl: int, size: int, next_seq: int, flags: int) -> None:
        self.first = first
        self.thl = thl
        self.size = size  # payload bytes of every segment but the last
        self.next_seq = next_seq
        self.parts: list[memoryview] = [memoryview(first)[IPV6_HEADER + thl:]]
        self.data = size
        self.last_flags = flags
        self.open = not flags & _PSH
        self.same = _same(first, IPV6_HEADER + thl)

    def frame(self) -> list[Bytes]:
        """The pieces of one TUN write: a virtio-net header and the packet."""
        if len(self.parts) == 1:
            return [PLAIN_VNET_HDR, self.first]
        thl = self.thl
        head = bytearray(self.first[:IPV6_HEADER + thl])
        tcp_len = thl + self.data
        _IP6_LEN.pack_into(head, 4, tcp_len)
        head[IPV6_HEADER + 13] |= self.last_flags & _PSH
        # CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel adds the data (or trusts it locally).
        pseudo = pseudo_sum6(head[IPV6_SOURCE], head[IPV6_DESTINATION], tcp_len, IPPROTO_TCP)
        _U16.pack_into(head, IPV6_HEADER + TCP_CSUM_OFFSET, fold(pseudo))
        vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV6, IPV6_HEADER + thl, self.size, IPV6_HEADER, TCP_CSUM_OFFSET)
        return [vnet, head, *self.parts]


_FLOW = slice(IPV6_SOURCE.start, IPV6_HEADER + 4)  # addresses and TCP ports (no extension headers here)


def _same(pkt: bytes, head: int) -> bytes:
    """What must be equal in two segments to merge them, besides addresses and ports: version, traffic class and
    flow label; next header and hop limit; ack and data offset; window; urgent pointer and options."""
    return pkt[0:4] + pkt[6:8] + pkt[48:53] + pkt[54:56] + pkt[58:head]


def coalesce(packets: Sequence[bytes]) -> list[list[Bytes]]:
    """TUN writes (each a virtio-net header and packet pieces, for ``os.writev``) for ``packets``, in order per flow.

    Consecutive TCP/IPv6 segments of one flow (same addresses, ports, ack, window, options; contiguous sequence
    numbers; every one but the last of the same payload size; no SYN/FIN/RST/URG/CWR) become one GSO_TCPV6
    super-packet, as the kernel's GRO would merge them; every other packet is written as it is.
    """
    runs: list[_Run | bytes] = []
    by_flow: dict[bytes, _Run] = {}
    unpack_seq = _U32.unpack_from
    for pkt in packets:
        n = len(pkt)
        if n < IPV6_HEADER + MIN_TCP_HEADER or pkt[6] != IPPROTO_TCP or pkt[0] >> 4 != 6:
            runs.append(pkt)
            continue
        thl = (pkt[52] >> 4) * 4
        head = IPV6_HEADER + thl
        length = n - head
        flags = pkt[53]
        key = pkt[_FLOW]
        if thl < MIN_TCP_HEADER or length <= 0 or flags & _NOT_COALESCED:
            run = by_flow.pop(key, None)
            if run is not None:
                run.open = False  # nothing of this flow that came after it may be written before it
            runs.append(pkt)
            continue
        seq = unpack_seq(pkt, 44)[0]
        run = by_flow.get(key)
        if (run is not None and run.open and seq == run.next_seq and thl == run.thl and length <= run.size
                and thl + run.data + length <= MAX_IP_PAYLOAD and _same(pkt, head) == run.same):
            run.parts.append(memoryview(pkt)[head:])
            run.data += length
            run.next_seq = (seq + length) & 0xFFFFFFFF
            run.last_flags = flags
            if flags & _PSH or length < run.size:
                run.open = False
            continue
        run = by_flow[key] = _Run(pkt, thl, length, (seq + length) & 0xFFFFFFFF, flags)
        runs.append(run)
    return [[PLAIN_VNET_HDR, r] if isinstance(r, bytes) else r.frame() for r in runs]


# --- the UDP socket ---------------------------------------------------------------------------------------------
def gso_groups(items: Sequence[tuple[bytes, _T]], max_segments: int, max_bytes: int,
               max_size: int) -> list[tuple[_T, list[bytes]]]:
    """``items`` (datagram, destination) in order, as groups for one UDP_SEGMENT send each: consecutive datagrams
    to one destination, all of the first one's size but the last (which may be shorter), at most
    ``max_segments`` and ``max_bytes`` in all. A datagram longer than ``max_size`` (it would not fit the path
    as one segment) is a group of its own, to be sent without GSO."""
    groups: list[tuple[_T, list[bytes]]] = []
    current: list[bytes] | None = None
    dest: object = None
    size = total = 0
    for data, addr in items:
        n = len(data)
        if (current is not None and addr == dest and n <= size and len(current) < max_segments
                and total + n <= max_bytes):
            current.append(data)
            total += n
            if n < size:
                current = None  # a shorter datagram ends the group
            continue
        current = [data]
        groups.append((addr, current))
        dest, size, total = addr, n, n
        if n > max_size:
            current = None
    return groups


def split_gro(data: bytes, segment: int) -> list[bytes]:
    """The datagrams of one UDP_GRO read: consecutive ``segment``-byte slices (the last may be shorter)."""
    if segment <= 0 or len(data) <= segment:
        return [data]
    return [data[i:i + segment] for i in range(0, len(data), segment)]
