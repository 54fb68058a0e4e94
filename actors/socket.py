"""SocketActor: owns the UDP socket, its reader thread, and the receiver-index dispatch table.

The reader drains up to READER_BATCH_MAX ready datagrams, groups them by the 24-bit receiver index of
their header and hands each group to the owning session actor in one bounded tell, or, for a few DATA datagrams
to an idle session, runs that session's handler itself (``run_or_tell``: opened on this thread, no hand-off);
datagrams for unknown indices (first handshake messages among them) go to the peer manager. The dispatch table is
changed in place by this actor, one index at a time, and the reader only looks indices up in its live read-only
view (IndexTable.view): a change costs O(1), not a copy of the table per bind.

The actor never chooses an index: owners pick their own (axiomnet/indices.py) and tell BindIndex,
MoveIndex and ReleaseIndex. A bind of an index another owner holds is refused (IndexRefused to the
owner) and the datagrams that named it are not sent, so the collision costs the owner one re-pick.

With offloads (the default), consecutive datagrams to one destination leave in one ``sendmsg`` with UDP_SEGMENT
(GSO) and the reader takes many datagrams per ``recvmsg`` with UDP_GRO (axiomnet/offload.py). A kernel that
refuses either option gets one system call per datagram instead (logged once); the wire is the same.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import select
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger

from axiomnet.breaker import BreakerBoard
from axiomnet.constants import (
    READER_BATCH_BYTES,
    READER_BATCH_MAX,
    UDP_GRO_BUFFER,
    UDP_GSO_MAX_BYTES,
    UDP_GSO_MAX_SEGMENTS,
    UNDERLAY_DATAGRAM_TARGET,
)
from axiomnet.cookie import boxed, penalised
from axiomnet.indices import IndexCommand, IndexIssued, IndexTable
from axiomnet.offload import gso_groups, split_gro
from axiomnet.wire import PacketType, peek_receiver, sender_index
from axiomnet.actors import messages as m
from axiomnet.actors.base import SupervisedActor, run_control_or_tell, run_or_tell, tell

SOCKET_BUFFER_BYTES = 4 << 20
_DATA_TYPE = int(PacketType.DATA)
SEND_ERROR_LOG_INTERVAL = 10.0  # one warning per peer address per this many seconds; every error is counted
SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: send one buffer as datagrams of this size (GSO)
UDP_GRO = 104  # linux/udp.h: receive consecutive datagrams of one flow in one buffer (GRO)
_GRO_ANCILLARY = socket.CMSG_SPACE(4)
GSO_MIN_SIZE = 576  # refused below this segment size too: the kernel will not segment at all
_GSO_OFF_ERRNOS = (errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)  # the device or kernel cannot segment: stop
_GSO_SIZE_ERRNOS = (errno.EINVAL, errno.EMSGSIZE)  # the segment does not fit the path: send that size singly


def enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel for UDP_GRO on ``sock``; False if it refuses (older kernel)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gso_supported(sock: socket.socket) -> bool:
    """True if the kernel knows UDP_SEGMENT (read back from ``sock``; no segment size is set by default)."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def gro_segment(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a UDP_GRO read from its ancillary data (0: one datagram)."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            return int.from_bytes(data[:4], "little" if sys.byteorder == "little" else "big")
    return 0


@dataclass(frozen=True, eq=False)
class SendPath:
    """The socket as the actor publishes it to the sessions (``SendPath`` message), for sends on their own thread.

    Sending is the only thing done with it: the datagrams of a batch leave from the thread that sealed them, with
    no hand-off to the socket actor (``sendmsg``/``sendto`` on one socket from many threads is safe in the kernel).
    Only the plain case is handled here: what fails (an endpoint that errors, a segment size the kernel refuses)
    is returned for the socket actor, which owns the circuit breakers, the error logs and the GSO settings, and
    publishes a new path when those change. A path whose socket the actor closed fails every send (EBADF), so its
    datagrams go to the actor too. ``avoid`` holds the endpoints whose breakers the actor tracks (they failed
    recently): a session leaves sends to them to the actor, whose breaker decides when they are tried and sees
    the success that closes it (a new path is published when that set changes).
    """

    sock: socket.socket
    mapped: bool  # an IPv6 socket: IPv4 destinations are sent to their IPv4-mapped address
    gso: bool
    gso_max_size: int
    avoid: frozenset[m.Addr] = frozenset()

    def send(self, items: list[tuple[bytes, m.Addr]]) -> tuple[int, int, int, list[tuple[bytes, m.Addr]]]:
        """Send ``items`` in order: (datagrams sent, UDP_SEGMENT sends among the system calls, datagrams dropped
        because the socket buffer is full, the rest for the actor: from the first datagram whose send failed
        otherwise)."""
        sock = self.sock
        sent = gso_sends = full = 0
        if self.gso and len(items) > 1:
            groups = gso_groups(items, UDP_GSO_MAX_SEGMENTS, UDP_GSO_MAX_BYTES, self.gso_max_size)
        else:
            groups = [(addr, [data]) for data, addr in items]
        for i, (addr, group) in enumerate(groups):
            target: tuple[Any, ...] = addr
            if self.mapped and "." in addr[0]:
                target = ("::ffff:" + addr[0], addr[1])
            try:
                if len(group) == 1:
                    sock.sendto(group[0], target)
                else:
                    segment = len(group[0]).to_bytes(2, sys.byteorder)
                    sock.sendmsg(group, [(SOL_UDP, UDP_SEGMENT, segment)], 0, target)
                    gso_sends += 1
                sent += len(group)
            except BlockingIOError:
                full += len(group)
            except OSError:
                return sent, gso_sends, full, [(data, a) for a, g in groups[i:] for data in g]
        return sent, gso_sends, full, []


def normalise_addr(addr: tuple[Any, ...]) -> m.Addr:
    """(host, port) with IPv4-mapped IPv6 hosts shown as plain IPv4, and a link-local IPv6 host (a scope id is
    set) with its interface ("fe80::1%eth0"): without it a reply could leave by another interface."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    elif len(addr) == 4 and addr[3] and "%" not in host:
        host = f"{host}%{_interface_name(addr[3])}"
    return (host, int(addr[1]))


@functools.lru_cache(maxsize=64)
def _interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


class SocketActor(SupervisedActor):
    """The node's single UDP socket (dual-stack when bound to an IPv6 address such as ``::``)."""

    role = "socket"

    def __init__(self, supervisor: Any, refs: dict[str, Any], listen: m.Addr, offload: bool = True) -> None:
        super().__init__(supervisor, refs)
        self.listen = listen
        self.offload = offload
        self.gso = False  # UDP_SEGMENT in use (setup(); switched off if the kernel refuses a send)
        self.gro = False  # UDP_GRO in use
        self.gso_max_size = UNDERLAY_DATAGRAM_TARGET  # larger datagrams go singly (they would not fit one segment)
        self.sock: socket.socket | None = None
        self._table: IndexTable[Any] = IndexTable()
        self._last_error_log: dict[m.Addr, float] = {}
        self._breakers: BreakerBoard[m.Addr] = BreakerBoard()  # endpoints whose sends keep failing
        self._penalty: dict[bytes, float] = {}  # sources whose INITs the reader drops (cookie.penalised); replaced whole
        self.family = socket.AF_INET6
        self._path: SendPath | None = None  # published to the sessions that asked (WantSendPath)
        self._path_takers: dict[str, Any] = {}  # actor urn -> ref of each session that asked for the path

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        host, port = self.listen
        ip = ipaddress.ip_address(host)
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
                except OSError:
                    pass
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind UDP {host}:{port}: {exc.strerror}") from exc
        sock.setblocking(False)
        self.sock = sock
        if self.offload:
            self.gso = gso_supported(sock)
            self.gro = enable_gro(sock)
        logger.info("listening on UDP {} (GSO {}, GRO {})", self.bound_address(), "on" if self.gso else "off",
                    "on" if self.gro else "off")
        self._path = self._new_path()
        self.wakeup_fd()  # before the reader starts: stopping must find it
        self.spawn_thread(self._read_loop, "reader")

    def _new_path(self) -> SendPath:
        assert self.sock is not None
        return SendPath(self.sock, self.family == socket.AF_INET6, self.gso, self.gso_max_size, self._breakers.tracked())

    def _publish_path(self) -> None:
        """A new SendPath to every session that asked, after the GSO settings or the failing endpoints changed."""
        if self.sock is None:
            return
        path = self._path = self._new_path()
        self.counters["send_paths_published"] += 1
        for ref in self._path_takers.values():
            tell(ref, m.SendPathUpdate(path))

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def bound_address(self) -> str:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # --- reader thread ---------------------------------------------------------------------------
    def _read_loop(self) -> None:
        sock = self.sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self.wakeup_fd(), select.POLLIN)  # readable once we stop: no timeout needed
        gro = self.gro
        while not self._stopping.is_set():
            poller.poll()
            if self._stopping.is_set():
                return
            batch: list[tuple[bytes, tuple[Any, ...]]] = []
            size = 0
            for _ in range(READER_BATCH_MAX):
                try:
                    if gro:
                        data, ancillary, _flags, addr = sock.recvmsg(UDP_GRO_BUFFER, _GRO_ANCILLARY)
                        size += len(data)
                        segment = gro_segment(ancillary)
                        if segment and len(data) > segment:
                            batch += [(d, addr) for d in split_gro(data, segment)]
                        else:
                            batch.append((data, addr))
                        if size >= READER_BATCH_BYTES:
                            break
                    else:
                        batch.append(sock.recvfrom(65535))
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        self.counters["rx_icmp_errors"] += 1
                        continue
                    if self._stopping.is_set():
                        return
                    raise
            if batch:
                self._dispatch_batch(batch)

    def _dispatch_batch(self, batch: list[tuple[bytes, tuple[Any, ...]]]) -> None:
        dispatch = self._table.view()  # the live table: single-key lookups only, from this thread
        # DATA goes on the owner's data lane; every other type (announcements, keepalives, handshakes) on its
        # control lane, so that a flood of data cannot delay or shed them (the type nibble is byte 4's low half).
        groups: dict[tuple[Any, bool], list[tuple[bytes, m.Addr]]] = {}
        default = self.refs.get("peers")
        box = self._penalty
        now = time.monotonic() if box else 0.0
        for data, addr in batch:
            control = len(data) < 5 or data[4] & 0x0F != _DATA_TYPE
            owner = dispatch.get(peek_receiver(data), default)
            item = (data, normalise_addr(addr))
            if box and owner is default and penalised(box, data, item[1], now):
                self.counters["rx_dropped_penalty_box"] += 1
                continue
            group = groups.get((owner, control))
            if group is None:
                groups[(owner, control)] = [item]
            else:
                group.append(item)
        for (owner, control), items in groups.items():
            if control and owner is not default:
                # A session's keepalives, beats and probes: opened here when it is idle (run_control_or_tell), as
                # a pool worker would, without waking one (at 10,000 idle sessions, 1,000 keepalives a second).
                if not run_control_or_tell(owner, m.ControlDatagrams(items)):
                    self.counters["rx_dropped_backpressure"] += len(items)
                continue
            # A few DATA datagrams for an idle session are opened on this thread (run_or_tell); the rest is told.
            if not run_or_tell(owner, m.Datagrams(items), len(items)):
                self.counters["rx_dropped_backpressure"] += len(items)
        self.counters["rx_datagrams"] += len(batch)

    # --- messages --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, m.SendDatagrams):
            return self._send(message.items)
        if isinstance(message, m.BindIndex):
            if self._table.bind(message.index, message.owner):
                if message.send:
                    self._send(list(message.send))
            else:
                self._refuse(message.index, message.owner, len(message.send))
            return None
        if isinstance(message, m.PenaltyBox):
            self._penalty = boxed(self._penalty, message.source, message.until, time.monotonic())
            return None
        if isinstance(message, m.MoveIndex):
            if not self._table.move(message.index, message.old, message.new):
                self._refuse(message.index, message.new, 0)
            return None
        if isinstance(message, m.ReleaseOwner):
            self._table.release_owner(message.owner)
            urn = getattr(message.owner, "actor_urn", None)
            if urn is not None:
                self._path_takers.pop(urn, None)
            return None
        if isinstance(message, m.WantSendPath):
            if self._path is not None:
                self._path_takers[message.ref.actor_urn] = message.ref
                tell(message.ref, m.SendPathUpdate(self._path))
            return None
        if isinstance(message, m.ReleaseIndex):
            owner = message.owner if message.owner is not None else self._table.owner(message.index)
            if owner is not None:
                self._table.release(message.index, owner)
            return None
        if isinstance(message, m.Snapshot):
            now = time.monotonic()
            breakers = [{**row, "endpoint": f"{row['endpoint'][0]}:{row['endpoint'][1]}"}  # type: ignore[index]
                        for row in self._breakers.snapshot(now)]
            return {"listen": self.bound_address(), "indices": len(self._table), "gso": self.gso, "gro": self.gro,
                    "send_path_takers": len(self._path_takers),
                    **self.counters, "breakers_open": self._breakers.open_count(now), "breakers": breakers}
        return super().handle(message)

    def _refuse(self, index: int, owner: Any, unsent: int) -> None:
        """Another owner holds ``index``: tell ``owner`` to pick again; what named the index stays unsent."""
        self.counters["index_collisions"] += 1
        self.counters["tx_dropped_index_refused"] += unsent
        tell(owner, m.IndexRefused(index))

    def _send(self, items: list[tuple[bytes, m.Addr]]) -> None:
        gso, max_size = self.gso, self.gso_max_size
        self._send_batch(items)
        if (gso, max_size) != (self.gso, self.gso_max_size):
            self._publish_path()  # the sessions' direct sends follow the new settings

    def _send_batch(self, items: list[tuple[bytes, m.Addr]]) -> None:
        if not self.gso or len(items) < 2:
            self._send_each(items)
            return
        breakers = self._breakers
        for addr, group in gso_groups(items, UDP_GSO_MAX_SEGMENTS, UDP_GSO_MAX_BYTES, self.gso_max_size):
            if len(group) == 1 or (breakers and breakers.is_tracked(addr)):
                self._send_each([(data, addr) for data in group])  # one by one, through the endpoint's breaker
            elif not self._send_gso(group, addr):
                self._send_each([(data, addr) for data in group])

    def _send_gso(self, group: list[bytes], addr: m.Addr) -> bool:
        """One UDP_SEGMENT send of ``group`` (all of the first one's size but the last); False: send them singly
        (the kernel refused the segment size, or GSO altogether: then it is switched off, logged once)."""
        sock = self.sock
        assert sock is not None
        target: tuple[Any, ...] = addr
        if self.family == socket.AF_INET6 and "." in addr[0]:
            target = ("::ffff:" + addr[0], addr[1])
        size = len(group[0])
        try:
            sock.sendmsg(group, [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, target)
        except BlockingIOError:
            self.counters["tx_dropped_full"] += len(group)
            return True
        except OSError as exc:
            if exc.errno in _GSO_OFF_ERRNOS:
                self.gso = False
                logger.warning("UDP GSO refused ({}): sending one datagram per system call", exc.strerror)
            elif exc.errno in _GSO_SIZE_ERRNOS:
                # Ambiguous: the segments may not fit the path, or the destination is invalid. Sent singly; if
                # they leave that way, segments of this size are sent singly from now on.
                errors = self.counters["tx_errors"]
                self._send_each([(data, addr) for data in group])
                if self.counters["tx_errors"] == errors:
                    self.counters["gso_size_refused"] += 1
                    self.gso_max_size = size - 1
                    if self.gso_max_size < GSO_MIN_SIZE:
                        self.gso = False
                        logger.warning("UDP GSO refused for every segment size ({}): sending one datagram per "
                                       "system call", exc.strerror)
                return True
            return False  # every other error is counted and logged per datagram by _send_each
        self.counters["tx_datagrams"] += len(group)
        self.counters["tx_gso_sends"] += 1
        return True

    def _send_each(self, items: list[tuple[bytes, m.Addr]]) -> None:
        sock = self.sock
        assert sock is not None
        mapped = self.family == socket.AF_INET6
        breakers = self._breakers
        now = time.monotonic()
        for data, addr in items:
            if breakers and not breakers.allow(addr, now):
                self.counters["tx_dropped_breaker_open"] += 1  # not hammering an endpoint that keeps failing
                continue
            target: tuple[Any, ...] = addr
            if mapped and "." in addr[0]:
                target = ("::ffff:" + addr[0], addr[1])
            try:
                sock.sendto(data, target)
                self.counters["tx_datagrams"] += 1
                if breakers and breakers.is_tracked(addr):
                    if breakers.success(addr, now).closed:
                        logger.info("UDP sends to {}:{} work again: circuit closed", addr[0], addr[1])
                    if not breakers.is_tracked(addr):
                        self._publish_path()  # the sessions may send to it themselves again
            except BlockingIOError:
                self.counters["tx_dropped_full"] += 1
            except OSError as exc:
                self._send_failed(addr, exc, now)

    def _send_failed(self, addr: m.Addr, exc: OSError, now: float) -> None:
        """Count, log (rate-limited per address) and feed the endpoint's circuit breaker."""
        self.counters["tx_errors"] += 1
        fresh = not self._breakers.is_tracked(addr)
        if self._breakers.failure(addr, now).opened:
            self.counters["breaker_opened"] += 1
            logger.warning("UDP sends to {}:{} keep failing ({}): circuit open, next try in {:.1f} s",
                           addr[0], addr[1], exc, self._breakers.retry_in(addr, now))
        if now - self._last_error_log.get(addr, -1e9) >= SEND_ERROR_LOG_INTERVAL:
            self._last_error_log[addr] = now
            if len(self._last_error_log) > 4096:
                self._last_error_log.clear()
            logger.warning("UDP send to {}:{} failed: {} (counted as tx_errors)", addr[0], addr[1], exc)
        if fresh:
            self._publish_path()  # the sessions leave this endpoint to us (and our breaker) from now on



def tell_indices(
    socket_ref: Any, owner: Any, commands: list[IndexCommand], items: list[tuple[bytes, m.Addr]]
) -> list[tuple[bytes, m.Addr]]:
    """Turn an owner's index commands into tells to the socket actor, in order (never an ask).

    A datagram that names a newly issued index as its sender rides with that index's BindIndex, so it leaves
    only if the bind holds. Returns the other datagrams, for the owner's usual bounded SendDatagrams (told
    after the binds, so the socket routes answers before it sends what asks for them).
    """
    if not commands:
        return items
    issued = {c.index for c in commands if isinstance(c, IndexIssued)}
    riding: dict[int, list[tuple[bytes, m.Addr]]] = {}
    rest: list[tuple[bytes, m.Addr]] = []
    for item in items:
        index = sender_index(item[0])
        if index in issued:
            riding.setdefault(index, []).append(item)
        else:
            rest.append(item)
    for command in commands:
        if isinstance(command, IndexIssued):
            tell(socket_ref, m.BindIndex(command.index, owner, tuple(riding.pop(command.index, ()))))
        else:
            tell(socket_ref, m.ReleaseIndex(command.index, owner))
    return rest
