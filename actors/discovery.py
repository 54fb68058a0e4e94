"""DiscoveryActor: LAN discovery. Beacons out on the chosen interfaces, beacons in, new neighbours to the peer manager.

Every interval it looks at the interfaces whose names match one of the configured patterns (up, not loopback,
not our TUN device), joins the beacon group on the new ones and sends one beacon on each: to the IPv6
link-local multicast group ``BEACON_GROUP6`` where the interface has a usable link-local address, else to its
IPv4 broadcast address. Its reader thread hands what arrives on ``BEACON_PORT`` to the actor, which checks it in
the core's :class:`~axiomnet.beacon.BeaconListener` (size, group MAC, version, per-source rate, a bounded
table) and tells the peer manager :class:`Discovered` for a key heard for the first time; once per interval it
tells :class:`DiscoveredLive` (every key still heard), so the manager stops dialling neighbours that left.

It never answers a beacon and keeps nothing per source beyond the listener's bounded table: a beacon costs
the receiver at most one dial, and only one per key while that key keeps being heard.
"""

from __future__ import annotations

import ipaddress
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from axiomnet.beacon import (BEACON_GROUP6, BEACON_PORT, DEFAULT_BEACON_INTERVAL, BeaconListener, Heard,
                             encode_beacon, group_key)
from axiomnet.errors import ConfigError
from axiomnet.ops.bounded import CallTimedOut, call_bounded
from axiomnet.ops.config import MAX_DISCOVER_SECRET, Config
from axiomnet.actors import messages as m
from axiomnet.actors.base import Periodic, SupervisedActor, bounded_tell, tell

READ_BATCH = 64  # datagrams handed to the actor at once
IFF_UP, IFF_BROADCAST, IFF_LOOPBACK, IFF_MULTICAST = 0x1, 0x2, 0x8, 0x1000
SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK = 0x8915, 0x8919, 0x891B
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_TENTATIVE_OR_FAILED = 0x40 | 0x08  # IFA_F_TENTATIVE, IFA_F_DADFAILED


# --- messages to the peer manager (peer manager: actors/peers.py) ----------------------------------------
@dataclass(frozen=True)
class Discovered(m.Urgent):
    """A neighbour heard for the first time: dial it as a "discovered" peer (if admission allows)."""

    heard: Heard


@dataclass(frozen=True)
class DiscoveredLive(m.Urgent):
    """The keys heard within the expiry: a discovered peer not among them and not up is no longer dialled."""

    keys: frozenset[bytes]


class _Tick(m.Urgent):
    """The beacon clock (never leaves this actor)."""


@dataclass(frozen=True)
class _Received:
    """Datagrams the reader got: (data, source host, interface index, family) each (never leaves this actor)."""

    items: tuple[tuple[bytes, str, int, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    link_local: str | None  # a usable IPv6 link-local address: beacons by multicast
    broadcast: str | None  # the IPv4 broadcast address: beacons by broadcast where there is no IPv6
    subnet: ipaddress.IPv4Network | None = None  # the interface's IPv4 subnet: IPv4 beacons only from inside it


# --- interfaces ------------------------------------------------------------------------------------------
def compile_patterns(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


def _flags(name: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return 0


def _link_locals(proc: str = "/proc/net/if_inet6") -> dict[str, str]:
    """Interface name -> one usable (not tentative) IPv6 link-local address."""
    found: dict[str, str] = {}
    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) != 6:
            continue
        address = ipaddress.IPv6Address(int(parts[0], 16))
        if address in _LINK_LOCAL and not int(parts[4], 16) & _TENTATIVE_OR_FAILED:
            found.setdefault(parts[5], str(address))
    return found


def _ipv4(name: str) -> tuple[str, ipaddress.IPv4Network] | None:
    """The interface's IPv4 broadcast address and subnet, or None when it has no IPv4 address."""
    import fcntl

    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            address = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])
            broadcast = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFBRDADDR, request)[20:24])
            netmask = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFNETMASK, request)[20:24])
        except OSError:
            return None
    subnet = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
    if broadcast == "0.0.0.0":  # `ip addr add` without `brd +` leaves it unset: the subnet's own
        broadcast = str(subnet.broadcast_address)
    return broadcast, subnet


def chosen_interfaces(patterns: list[re.Pattern[str]], exclude: tuple[str, ...] = ()) -> list[Interface]:
    """The interfaces to beacon on: name matches a pattern, up, not loopback, not excluded (our TUN)."""
    link_locals = _link_locals()
    chosen = []
    for index, name in socket.if_nameindex():
        if name in exclude or not any(p.fullmatch(name) for p in patterns):
            continue
        flags = _flags(name)
        if not flags & IFF_UP or flags & IFF_LOOPBACK:
            continue
        link_local = link_locals.get(name) if flags & IFF_MULTICAST else None
        ipv4 = _ipv4(name) if flags & IFF_BROADCAST else None
        chosen.append(Interface(name, index, link_local, ipv4[0] if ipv4 and not link_local else None,
                                ipv4[1] if ipv4 else None))
    return chosen


SECRET_READ_TIMEOUT = 5.0  # reading the secret file at start (a hung disk must not hang the start)


def read_secret_file(path: Path) -> bytes:
    """The group secret in ``path`` (surrounding whitespace stripped); ConfigError says why not."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DISCOVER_SECRET + 2).strip()
    except OSError as exc:
        raise ConfigError(f"discover_secret_file {path}: {exc.strerror or exc}") from None
    if not data or len(data) > MAX_DISCOVER_SECRET:
        raise ConfigError(f"discover_secret_file {path}: empty or larger than {MAX_DISCOVER_SECRET} bytes")
    return data


def load_discover_secret(config: Config) -> bytes | None:
    """The discovery group secret: the file's (read bounded in time), else discover_secret, else None (the open
    group). ConfigError when the file cannot be read: a node told to use a secret never falls back to none."""
    path = config.discover_secret_file
    if path is not None:
        try:
            return call_bounded(lambda: read_secret_file(path), SECRET_READ_TIMEOUT, "axn-secret")
        except CallTimedOut:
            raise ConfigError(f"discover_secret_file {path}: read took longer than {SECRET_READ_TIMEOUT:g} s") \
                from None
    return None if config.discover_secret is None else config.discover_secret.encode()


# --- the actor ---------------------------------------------------------------------------------------------
class DiscoveryActor(SupervisedActor):
    """Beacons on the chosen interfaces; new neighbours told to the peer manager."""

    role = "discovery"

    def __init__(self, supervisor: Any, refs: dict[str, Any], *, public_key: bytes, port: int,
                 patterns: tuple[str, ...], secret: bytes | None, interval: float = DEFAULT_BEACON_INTERVAL,
                 exclude: tuple[str, ...] = (), beacon_port: int = BEACON_PORT) -> None:
        super().__init__(supervisor, refs)
        self.public_key = public_key
        self.patterns = compile_patterns(patterns)
        self.exclude = exclude
        self.interval = interval
        self.beacon_port = beacon_port
        self.grouped = secret is not None
        key = group_key(secret)
        self.beacon = encode_beacon(public_key, port, key)
        self.listener = BeaconListener(public_key, key, interval=interval)
        self.interfaces: dict[int, Interface] = {}
        self.joined: set[int] = set()
        self.sock6: socket.socket | None = None
        self.sock4: socket.socket | None = None

    def setup(self) -> None:
        try:
            sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock6.bind(("::", self.beacon_port))
            sock6.setblocking(False)
            self.sock6 = sock6
        except OSError as exc:
            logger.warning("discovery: no IPv6 beacon socket ({}): IPv4 broadcast only", exc.strerror or exc)
        sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock4.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock4.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock4.bind(("0.0.0.0", self.beacon_port))
        sock4.setblocking(False)
        self.sock4 = sock4
        self.wakeup_fd()
        self.spawn_thread(self._read_loop, "reader")
        self._clock: Periodic = self.start_periodic(self.interval, _Tick())
        self._tick()  # the first beacon at once: a neighbour started before us hears us without waiting
        logger.info("discovery on interfaces matching {} ({}; beacons every {:g} s to [{}]:{} / broadcast)",
                    [p.pattern for p in self.patterns],
                    "group secret set" if self.grouped else "no group secret: any node on the link may peer",
                    self.interval, BEACON_GROUP6, self.beacon_port)

    def release(self) -> None:
        for sock in (self.sock6, self.sock4):
            if sock is not None:
                sock.close()

    # --- reader thread ---------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        poller = select.poll()
        socks = [s for s in (self.sock6, self.sock4) if s is not None]
        for sock in socks:
            poller.register(sock.fileno(), select.POLLIN)
        poller.register(self.wakeup_fd(), select.POLLIN)
        ancillary = socket.CMSG_SPACE(12)
        while not self._stopping.is_set():
            poller.poll()
            if self._stopping.is_set():
                return
            items: list[tuple[bytes, str, int, int]] = []
            for sock in socks:
                for _ in range(READ_BATCH):
                    try:
                        if sock is self.sock6:
                            data, addr = sock.recvfrom(512)
                            items.append((data, addr[0], int(addr[3]), 6))
                        else:
                            data, cmsgs, _flags, addr = sock.recvmsg(512, ancillary)
                            index = next((struct.unpack("i", d[:4])[0] for level, kind, d in cmsgs
                                          if level == socket.IPPROTO_IP and kind == IP_PKTINFO), 0)
                            items.append((data, addr[0], index, 4))
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        if self._stopping.is_set():
                            return
                        self.counters["rx_errors"] += 1
                        logger.debug("discovery: receive error {}", exc)
                        break
            if items and not bounded_tell(self.actor_ref, _Received(tuple(items))):
                self.counters["rx_dropped_backpressure"] += len(items)

    def rewired(self, role: str) -> None:
        """A restarted peer manager knows none of the neighbours we hear (and we tell only new ones): tell it each
        neighbour still heard, so it dials them again."""
        if role == "peers":
            for heard in self.listener.live(time.monotonic()):
                tell(self.refs.get("peers"), Discovered(heard))

    # --- messages --------------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, _Received):
            self._received(message.items)
        elif isinstance(message, _Tick):
            self._tick()
            self._clock.next()
        elif isinstance(message, m.Snapshot):
            now = time.monotonic()
            return {"interfaces": [{"name": i.name, "via": "ipv6 multicast" if i.link_local else
                                    "ipv4 broadcast" if i.broadcast else "none"}
                                   for i in self.interfaces.values()],
                    "group_secret": self.grouped, "interval": self.interval,
                    "heard": self.listener.snapshot(now),
                    "counters": {**self.listener.stats, **self.counters}}  # the admin document merges them
        else:
            return super().handle(message)
        return None

    def _received(self, items: tuple[tuple[bytes, str, int, int], ...]) -> None:
        now = time.monotonic()
        for data, host, index, family in items:
            interface = self.interfaces.get(index)
            if interface is None:
                self.counters["beacons_other_interface"] += 1
                continue
            if family == 6:
                try:
                    if ipaddress.IPv6Address(host.split("%", 1)[0]) not in _LINK_LOCAL:
                        self.counters["beacons_not_link_local"] += 1
                        continue
                except ValueError:
                    self.counters["beacons_malformed_source"] += 1
                    continue
                host = f"{host.split('%', 1)[0]}%{interface.name}"
            elif interface.subnet is None or ipaddress.IPv4Address(host) not in interface.subnet:
                self.counters["beacons_off_subnet"] += 1  # an IPv4 beacon only from the interface's own subnet
                continue
            heard = self.listener.receive(data, host, interface.name, now)
            if heard is not None:
                logger.info("discovery: heard {} at {}:{} on {}", heard.public_key.hex()[:16], *heard.endpoint,
                            heard.interface)
                if not tell(self.refs.get("peers"), Discovered(heard)):
                    self.counters["discovered_not_told"] += 1

    def _tick(self) -> None:
        self._scan()
        self._send_beacons()
        now = time.monotonic()
        self.listener.expire(now)
        tell(self.refs.get("peers"), DiscoveredLive(frozenset(h.public_key for h in self.listener.live(now))))

    def _scan(self) -> None:
        """Follow the interfaces: join the group on new ones (an interface that comes later is picked up)."""
        try:
            current = {i.index: i for i in chosen_interfaces(self.patterns, self.exclude)}
        except OSError as exc:
            self.counters["scan_errors"] += 1
            logger.warning("discovery: cannot list interfaces: {}", exc)
            return
        for index, interface in current.items():
            if interface.link_local and index not in self.joined and self.sock6 is not None:
                mreq = socket.inet_pton(socket.AF_INET6, BEACON_GROUP6) + struct.pack("@I", index)
                try:
                    self.sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                    self.joined.add(index)
                except OSError as exc:
                    self.counters["join_errors"] += 1
                    logger.warning("discovery: cannot join {} on {}: {}", BEACON_GROUP6, interface.name, exc)
            if index not in self.interfaces:
                logger.info("discovery: beaconing on {}", interface.name)
        self.joined &= set(current)
        self.interfaces = current

    def _send_beacons(self) -> None:
        for interface in self.interfaces.values():
            try:
                if interface.link_local and self.sock6 is not None:
                    self.sock6.sendto(self.beacon, (BEACON_GROUP6, self.beacon_port, 0, interface.index))
                elif interface.broadcast and self.sock4 is not None:
                    self.sock4.sendto(self.beacon, (interface.broadcast, self.beacon_port))
                else:
                    continue
                self.counters["beacons_sent"] += 1
            except OSError as exc:
                self.counters["tx_errors"] += 1
                logger.debug("discovery: beacon on {} failed: {}", interface.name, exc)
