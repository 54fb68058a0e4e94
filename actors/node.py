"""The daemon: identity, the supervisor and its actors, signals, and a bounded shutdown.

``run_daemon(config)`` returns the process exit code: 0 after SIGTERM/SIGINT, 1 when start-up fails or
the supervisor gives up on a crash-looping actor. A second signal exits at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import pykka
from loguru import logger

from axiomnet.config import Config, PeerSpec
from axiomnet.constants import ACTOR_STOP_TIMEOUT, SHUTDOWN_DEADLINE
from axiomnet.control import HandshakePayload
from axiomnet.errors import AxiomNetError, ConfigError
from axiomnet.geometry import coords_from_key
from axiomnet.identity import Identity
from axiomnet.actors.admin import AdminActor
from axiomnet.actors.base import install_crash_hooks
from axiomnet.actors.heartbeat import HeartbeatActor
from axiomnet.actors.isolate import load_or_create_identity_isolated
from axiomnet.actors.peers import PeerManagerActor
from axiomnet.actors.router import RouterActor
from axiomnet.actors.socket import SocketActor
from axiomnet.actors.supervisor import ChildSpec, StartAll, StopAll, SupervisorActor
from axiomnet.actors.tun import TunActor

CAP_NET_ADMIN = 12


class _ToLoguru(logging.Handler):
    """Route stdlib logging (pykka reports actor crashes there) into loguru's sinks."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, "{}: {}", record.name, record.getMessage())


def route_stdlib_logging() -> None:
    """Make pykka's (and any library's) stdlib log records visible in the daemon's log."""
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.INFO, force=True)


def has_cap_net_admin() -> bool:
    """True when this process may create and configure a TUN device."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def tun_available(config: Config) -> str | None:
    """Why the node must run relay-only, or None when it can have a TUN device."""
    if not config.tun_enabled:
        return "--no-tun given"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    if not has_cap_net_admin():
        return "no CAP_NET_ADMIN (run as root or grant the capability)"
    return None


RESOLVE_TIMEOUT = 5.0  # per peer host name, at start; a lookup never runs inside an actor


def resolve_peers(peers: tuple[PeerSpec, ...], timeout: float = RESOLVE_TIMEOUT) -> tuple[PeerSpec, ...]:
    """Peers with host names replaced by an address, each lookup bounded; ConfigError naming the peer."""
    resolved = []
    for peer in peers:
        try:
            ipaddress.ip_address(peer.host)
            resolved.append(peer)
            continue
        except ValueError:
            pass
        box: dict[str, Any] = {}

        def lookup(host: str = peer.host, port: int = peer.port) -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                box["error"] = exc

        worker = threading.Thread(target=lookup, name="axn-resolve", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise ConfigError(f"peer {peer}: resolving {peer.host!r} took longer than {timeout:g} s")
        if "error" in box or not box.get("infos"):
            raise ConfigError(f"peer {peer}: cannot resolve {peer.host!r}: {box.get('error')}")
        host = box["infos"][0][4][0]
        logger.info("peer {} resolved to {}", peer.host, host)
        resolved.append(PeerSpec(host, peer.port, peer.public_key))
    return tuple(resolved)


def build_specs(config: Config, identity: Identity, with_tun: bool, started: float,
                peers: tuple[PeerSpec, ...]) -> list[ChildSpec]:
    """The supervised actors in start order (dependencies first)."""
    coords = coords_from_key(identity.public_key)
    address = identity.address
    payload = HandshakePayload(capabilities=("tun",) if with_tun else ("relay",))
    specs = [
        ChildSpec("socket", lambda sup, refs: SocketActor.start(sup, refs, (config.listen_host, config.listen_port))),
        ChildSpec("router", lambda sup, refs: RouterActor.start(sup, refs, identity.public_key, coords)),
    ]
    if with_tun:
        specs.append(ChildSpec("tun", lambda sup, refs: TunActor.start(sup, refs, config.tun_name, address,
                                                                        config.mtu)))
    specs += [
        ChildSpec("peers", lambda sup, refs: PeerManagerActor.start(
            sup, refs, static_private=identity.private_key, static_public=identity.public_key,
            self_address=address.packed, static_peers=peers, local_payload=payload)),
        ChildSpec("heartbeat", lambda sup, refs: HeartbeatActor.start(sup, refs)),
        ChildSpec("admin", lambda sup, refs: AdminActor.start(sup, refs, config.admin_socket, identity,
                                                               config.tun_name if with_tun else None, started)),
    ]
    return specs


def run_daemon(config: Config) -> int:
    """Run the node until a signal (exit 0) or a fatal supervision decision (exit 1)."""
    started = time.monotonic()
    route_stdlib_logging()
    install_crash_hooks()
    try:
        identity, created = load_or_create_identity_isolated(config.data_dir)
    except AxiomNetError as exc:
        logger.error("cannot load identity: {}", exc)
        return 1
    logger.info("{} identity {} address {}", "created" if created else "loaded",
                identity.public_key.hex()[:16], identity.address)
    try:
        peers = resolve_peers(config.peers)
    except ConfigError as exc:
        logger.error("config error: {}", exc)
        return 2
    why_no_tun = tun_available(config)
    if why_no_tun is not None:
        logger.warning("running as a relay-only node without a TUN device: {}", why_no_tun)

    stop = threading.Event()
    outcome: dict[str, Any] = {"code": 0, "signals": 0}

    def on_fatal(reason: str) -> None:
        outcome["code"] = 1
        outcome["reason"] = reason
        stop.set()

    def on_signal(signum: int, _frame: Any) -> None:
        outcome["signals"] += 1
        if outcome["signals"] > 1:
            logger.warning("second signal: exiting at once")
            os._exit(130 if signum == signal.SIGINT else 143)
        logger.info("{} received: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    supervisor = SupervisorActor.start(build_specs(config, identity, why_no_tun is None, started, peers), on_fatal)
    try:
        try:
            supervisor.ask(StartAll(), timeout=30)
        except Exception as exc:
            logger.error("start-up failed: {}", exc)
            outcome["code"] = 1
            stop.set()
        else:
            logger.info("node up: {} on UDP {}:{} with {} static peer(s)", identity.address,
                        config.listen_host, config.listen_port, len(config.peers))
        while not stop.wait(0.5):
            pass
    finally:
        _shutdown(supervisor)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if outcome["code"]:
        logger.error("exiting with status 1: {}", outcome.get("reason", "start-up failed"))
    else:
        logger.info("stopped cleanly")
    return int(outcome["code"])


def _shutdown(supervisor: Any) -> None:
    """Stop every actor in reverse start order within SHUTDOWN_DEADLINE; a watchdog enforces the bound."""
    deadline = time.monotonic() + SHUTDOWN_DEADLINE

    def watchdog() -> None:
        if not done.wait(SHUTDOWN_DEADLINE + 1.0):
            logger.critical("shutdown exceeded {} s: forcing exit", SHUTDOWN_DEADLINE)
            os._exit(1)

    done = threading.Event()
    threading.Thread(target=watchdog, name="axn-shutdown-watchdog", daemon=True).start()
    try:
        supervisor.ask(StopAll(ACTOR_STOP_TIMEOUT / 2), timeout=SHUTDOWN_DEADLINE - 1.0)
    except (pykka.Timeout, pykka.ActorDeadError) as exc:
        logger.error("supervisor did not stop the actors in time: {!r}", exc)
    remaining = max(0.1, deadline - time.monotonic())
    try:
        pykka.ActorRegistry.stop_all(block=True, timeout=remaining / 2)
    except pykka.Timeout:
        logger.error("some actors did not stop within {:.1f} s", remaining / 2)
    done.set()
