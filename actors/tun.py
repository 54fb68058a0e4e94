"""TunActor: owns the TUN device (created with TUNSETIFF, configured with pyroute2) and its reader thread.

With offloads (the default; ``--no-offload`` switches them off) the device is opened with IFF_VNET_HDR and
TUNSETOFFLOAD (TUN_F_CSUM, TUN_F_TSO6): the kernel hands the reader TCP super-packets of up to 64 KiB and
accepts them back, each behind a virtio-net header. The reader cuts them into segments that fit one underlay
datagram each (axiomnet/offload.py), and the writer merges consecutive segments of a flow back into super-packets,
so a bulk transfer costs one system call per ~40 packets each way. A kernel that refuses the offloads gets a
plain device (logged); nothing on the wire depends on either side's choice.

The reader drains up to READER_BATCH_MAX frames (at most READER_BATCH_BYTES bytes) per wake-up and hands their
packets to the end-to-end actor in one bounded tell, except packets for the address of a neighbour that takes IP
packets over its link (docs/PROTOCOL.md §6.6): those go straight to that neighbour's session actor. The table of
such neighbours is this actor's, built from what the session actors tell it (NeighbourRoute), and replaced, never
mutated, so that the reader always reads a consistent snapshot. Closing the file descriptor of a non-persistent TUN device
removes the device, so stopping the actor (or the process dying) leaves no interface behind.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import select
import struct
from collections.abc import Mapping
from typing import Any, TypeVar

from loguru import logger
from pyroute2 import IPRoute

from axiomnet.constants import (
    OVERLAY_OVERHEAD,
    READER_BATCH_BYTES,
    READER_BATCH_MAX,
    UNDERLAY_DATAGRAM_TARGET,
)
from axiomnet.offload import VNET_HDR_SIZE, UnsupportedFrame, coalesce, split_frame
from axiomnet.ownership import IPV6_DESTINATION, IPV6_SOURCE
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell, run_or_tell

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01  # the kernel may hand us packets with a partial checksum, and takes them from us
TUN_F_TSO6 = 0x04  # ... and TCP/IPv6 super-packets (with TUN_F_CSUM)
TUN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO6
MAX_FRAME = VNET_HDR_SIZE + 0xFFFF + 40  # a virtio-net header and the largest IPv6 packet
# Largest IP packet software segmentation cuts: each must fit one underlay datagram once sealed and routed.
SEGMENT_MAX_PACKET = UNDERLAY_DATAGRAM_TARGET - OVERLAY_OVERHEAD
_Ref = TypeVar("_Ref")
IFA_F_NODAD = 0x02
OVERLAY_PREFIXLEN = 8  # fc00::/8: every overlay address is reached through the TUN device


class TunUnavailable(OSError):
    """The TUN device cannot be created here (no /dev/net/tun or no CAP_NET_ADMIN)."""


def open_tun(name: str, offload: bool = False) -> tuple[int, str, bool]:
    """Open /dev/net/tun and attach a TUN interface called ``name``; return (fd, actual name, offloads on).

    With ``offload`` the device gets a virtio-net header and TUN_OFFLOADS; if the kernel refuses either, the
    device is opened again without them (logged) and the third value is False.
    """
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunUnavailable(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from exc
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0))
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
        if offload:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_OFFLOADS)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise TunUnavailable(exc.errno, f"TUNSETIFF {name}: {exc.strerror} (needs CAP_NET_ADMIN)") from exc
        if offload and exc.errno in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
            logger.warning("TUN {}: the kernel refuses offloads ({}); packets are read and written one by one",
                           name, exc.strerror)
            return open_tun(name, offload=False)
        raise
    return fd, res[:16].rstrip(b"\0").decode(), offload


def configure_tun(name: str, address: ipaddress.IPv6Address, mtu: int) -> None:
    """Set MTU, the overlay address (fc00::/8 route) without duplicate-address detection, and bring it up."""
    try:  # DAD would keep the address tentative for a second or more; it is derived from our own key.
        with open(f"/proc/sys/net/ipv6/conf/{name}/accept_dad", "w") as f:
            f.write("0")
    except OSError as exc:
        # Not fatal: the address is only tentative for a second or so. Said, not swallowed (seed failure #10).
        logger.warning("TUN {}: cannot disable duplicate address detection ({}); the overlay address may take a "
                       "second to become usable", name, exc)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=idx, mtu=mtu)
        ipr.addr("add", index=idx, address=str(address), prefixlen=OVERLAY_PREFIXLEN, flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")


def split_by_neighbour(batch: list[bytes], neighbours: Mapping[bytes, _Ref],
                       me: bytes) -> tuple[dict[_Ref, list[bytes]], list[bytes]]:
    """IPv6 packets from ``me`` to a neighbour's address, grouped by its session; and all the others, in order."""
    rest: list[bytes] = []
    groups: dict[_Ref, list[bytes]] = {}
    for pkt in batch:
        ref = neighbours.get(pkt[IPV6_DESTINATION]) if pkt[IPV6_SOURCE] == me and pkt[0] >> 4 == 6 else None
        if ref is None:
            rest.append(pkt)
        else:
            group = groups.get(ref)
            if group is None:
                groups[ref] = [pkt]
            else:
                group.append(pkt)
    return groups, rest


class TunActor(SupervisedActor):
    """The node's TUN interface: packets read go to the e2e actor, TunWrite packets go into the kernel."""

    role = "tun"

    def __init__(self, supervisor: Any, refs: dict[str, Any], name: str, address: ipaddress.IPv6Address, mtu: int,
                 offload: bool = True):
        super().__init__(supervisor, refs)
        self.name = name
        self.address = address
        self.mtu = mtu
        self.offload = offload  # asked for; setup() leaves what the kernel granted
        self.fd: int | None = None
        self._neighbours: dict[bytes, Any] = {}  # address -> session actor; replaced on change (the reader's snapshot)

    def setup(self) -> None:
        fd, actual, self.offload = open_tun(self.name, self.offload)
        self.fd = fd
        self.name = actual
        try:
            configure_tun(actual, self.address, self.mtu)
        except Exception:
            os.close(fd)
            self.fd = None
            raise
        logger.info("TUN {} up with {}/{} mtu {}, offloads {}", actual, self.address, OVERLAY_PREFIXLEN, self.mtu,
                    "on" if self.offload else "off")
        self.wakeup_fd()  # before the reader starts: stopping must find it
        self.spawn_thread(self._read_loop, "reader")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor of a non-persistent TUN device removes it
            self.fd = None
            logger.info("TUN {} removed", self.name)

    def _read_loop(self) -> None:
        fd = self.fd
        assert fd is not None
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self.wakeup_fd(), select.POLLIN)  # readable once we stop: no timeout needed
        offload = self.offload
        bufsize = MAX_FRAME if offload else self.mtu + 64
        counters = self.counters
        while not self._stopping.is_set():
            poller.poll()
            if self._stopping.is_set():
                return
            batch: list[bytes] = []
            size = frames = 0
            for _ in range(READER_BATCH_MAX):
                try:
                    frame = os.read(fd, bufsize)
                except BlockingIOError:
                    break
                except OSError:
                    if self._stopping.is_set():
                        return
                    raise
                size += len(frame)
                frames += 1
                if offload:
                    try:
                        batch += split_frame(frame, SEGMENT_MAX_PACKET)
                    except UnsupportedFrame as exc:
                        counters["rx_unsupported_frames"] += 1
                        logger.debug("TUN {}: frame dropped: {}", self.name, exc)
                else:
                    batch.append(frame)
                if size >= READER_BATCH_BYTES:
                    break
            counters["rx_frames"] += frames
            counters["rx_packets"] += len(batch)
            neighbours = self._neighbours
            if neighbours and batch:
                batch = self._to_neighbours(batch, neighbours)
            if batch:
                if not bounded_tell(self.refs.get("e2e"), m.TunPackets(batch)):
                    self.counters["rx_dropped_backpressure"] += len(batch)

    def _to_neighbours(self, batch: list[bytes], neighbours: dict[bytes, Any]) -> list[bytes]:
        """Tell each neighbour's session the packets from us to its address; the rest, for the e2e actor."""
        groups, rest = split_by_neighbour(batch, neighbours, self.address.packed)
        for ref, packets in groups.items():
            if not run_or_tell(ref, m.NeighbourPackets(packets), len(packets)):  # small: sealed and sent here
                self.counters["rx_dropped_backpressure"] += len(packets)
        return rest

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.TunWrite):
            self._write(message.packets)
            return None
        if isinstance(message, m.NeighbourRoute):
            neighbours = dict(self._neighbours)
            if message.ref is not None:
                neighbours[message.address] = message.ref
            elif getattr(neighbours.get(message.address), "actor_urn", None) == getattr(message.via, "actor_urn", 0):
                del neighbours[message.address]  # only the session that set the route takes it away
            self._neighbours = neighbours  # one assignment: the reader sees the old table or the new one
            return None
        if isinstance(message, m.Snapshot):
            return {"name": self.name, "address": str(self.address), "mtu": self.mtu, "offload": self.offload,
                    "neighbour_routes": len(self._neighbours), **self.counters}
        return super().handle(message)

    def _write(self, packets: list[bytes]) -> None:
        fd = self.fd
        assert fd is not None
        counters = self.counters
        if self.offload:
            frames: list[Any] = coalesce(packets)
            write: Any = os.writev
        else:
            frames, write = packets, os.write
        for frame in frames:
            try:
                write(fd, frame)
            except OSError as exc:
                # A malformed inner packet is the sender's fault: count it, keep the device.
                counters["tx_errors"] += 1
                if exc.errno not in (errno.EINVAL, errno.EAGAIN, errno.EIO):
                    raise
        counters["tx_packets"] += len(packets)
        counters["tx_frames"] += len(frames)
