"""TunActor: owns the TUN device (created with TUNSETIFF, configured with pyroute2) and its reader thread.

The reader drains up to READER_BATCH_MAX IP packets per wake-up and hands them to the end-to-end actor in
one bounded tell. Closing the file descriptor of a non-persistent TUN device removes the device, so stopping
the actor (or the process dying) leaves no interface behind.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import select
import struct
from typing import Any

from loguru import logger
from pyroute2 import IPRoute

from axiomnet.constants import READER_BATCH_MAX, READER_POLL_TIMEOUT
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, bounded_tell

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFA_F_NODAD = 0x02
OVERLAY_PREFIXLEN = 8  # fc00::/8: every overlay address is reached through the TUN device


class TunUnavailable(OSError):
    """The TUN device cannot be created here (no /dev/net/tun or no CAP_NET_ADMIN)."""


def open_tun(name: str) -> tuple[int, str]:
    """Open /dev/net/tun and attach a TUN interface called ``name``; return (fd, actual name)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunUnavailable(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from exc
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise TunUnavailable(exc.errno, f"TUNSETIFF {name}: {exc.strerror} (needs CAP_NET_ADMIN)") from exc
        raise
    return fd, res[:16].rstrip(b"\0").decode()


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


class TunActor(SupervisedActor):
    """The node's TUN interface: packets read go to the e2e actor, TunWrite packets go into the kernel."""

    role = "tun"

    def __init__(self, supervisor: Any, refs: dict[str, Any], name: str, address: ipaddress.IPv6Address, mtu: int):
        super().__init__(supervisor, refs)
        self.name = name
        self.address = address
        self.mtu = mtu
        self.fd: int | None = None

    def setup(self) -> None:
        fd, actual = open_tun(self.name)
        self.fd = fd
        self.name = actual
        try:
            configure_tun(actual, self.address, self.mtu)
        except Exception:
            os.close(fd)
            self.fd = None
            raise
        logger.info("TUN {} up with {}/{} mtu {}", actual, self.address, OVERLAY_PREFIXLEN, self.mtu)
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
        timeout_ms = int(READER_POLL_TIMEOUT * 1000)
        bufsize = self.mtu + 64
        while not self._stopping.is_set():
            if not poller.poll(timeout_ms):
                continue
            batch: list[bytes] = []
            for _ in range(READER_BATCH_MAX):
                try:
                    batch.append(os.read(fd, bufsize))
                except BlockingIOError:
                    break
                except OSError:
                    if self._stopping.is_set():
                        return
                    raise
            if batch:
                if not bounded_tell(self.refs.get("e2e"), m.TunPackets(batch)):
                    self.counters["rx_dropped_backpressure"] += len(batch)
                self.counters["rx_packets"] += len(batch)

    def handle(self, message: Any) -> Any:
        if isinstance(message, m.TunWrite):
            fd = self.fd
            assert fd is not None
            for pkt in message.packets:
                try:
                    os.write(fd, pkt)
                    self.counters["tx_packets"] += 1
                except OSError as exc:
                    # A malformed inner packet is the sender's fault: count it, keep the device.
                    self.counters["tx_errors"] += 1
                    if exc.errno not in (errno.EINVAL, errno.EAGAIN, errno.EIO):
                        raise
            return None
        if isinstance(message, m.Snapshot):
            return {"name": self.name, "address": str(self.address), "mtu": self.mtu, **self.counters}
        return super().handle(message)
