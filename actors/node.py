"""The daemon: identity, the supervisor and its actors, signals, systemd notification, a bounded shutdown.

``run_daemon(config, reload)`` returns the process exit code: 0 after SIGTERM/SIGINT, 1 when start-up fails
or the supervisor gives up on a crash-looping actor. A second signal exits at once. SIGHUP re-reads the
configuration through ``reload`` and applies what can change at runtime (static peers, allowed_keys); a faulty
file is refused with a log line and the running settings stay. Under systemd (Type=notify) the daemon sends
READY=1 once its actors run, WATCHDOG=1 while the supervisor answers, RELOADING=1/READY=1 around a
reload and STOPPING=1 on the way out: one datagram to $NOTIFY_SOCKET each, no library needed.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pykka
from loguru import logger

from axiomnet.ops.bounded import CallTimedOut, call_bounded
from axiomnet.ops.config import Config, PeerSpec
from axiomnet.constants import ACTOR_STOP_TIMEOUT, ADMIN_TIMEOUT, SHUTDOWN_DEADLINE, WATCHDOG_MIN_INTERVAL
from axiomnet.control import HandshakePayload
from axiomnet.errors import AxiomNetError, ConfigError
from axiomnet.identity import Identity
from axiomnet.routed import NEIGHBOUR_CAPABILITY
from axiomnet.actors import messages as m
from axiomnet.actors.admin import FAULT_INJECTION_ENV, AdminActor
from axiomnet.actors.base import install_crash_hooks
from axiomnet.actors.discovery import DiscoveryActor, load_discover_secret
from axiomnet.actors.e2e import EndToEndActor
from axiomnet.actors.heapwatch import HeapWatch
from axiomnet.actors.heartbeat import HeartbeatActor
from axiomnet.actors.isolate import load_or_create_identity_isolated
from axiomnet.actors.malloc_env import unblock_stop_signals
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
    if ipv6_disabled():
        return ("IPv6 is disabled in this network namespace (net.ipv6.conf.all.disable_ipv6=1), so the TUN device "
                "cannot have its overlay address; in a container add --sysctl net.ipv6.conf.all.disable_ipv6=0")
    return None


def ipv6_disabled(proc: str = "/proc/sys/net/ipv6/conf") -> bool:
    """True when new interfaces get no IPv6 (Docker does this in containers unless told otherwise)."""
    for scope in ("all", "default"):
        try:
            with open(f"{proc}/{scope}/disable_ipv6") as handle:
                if handle.read().strip() == "1":
                    return True
        except OSError:
            continue  # no IPv6 at all: usable_listen_host and the TUN actor say so
    return False


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
        try:
            infos = call_bounded(lambda: socket.getaddrinfo(peer.host, peer.port, type=socket.SOCK_DGRAM),
                                 timeout, "axn-resolve")
        except CallTimedOut:
            raise ConfigError(f"peer {peer}: resolving {peer.host!r} took longer than {timeout:g} s") from None
        except OSError as exc:
            raise ConfigError(f"peer {peer}: cannot resolve {peer.host!r}: {exc}") from None
        if not infos:
            raise ConfigError(f"peer {peer}: cannot resolve {peer.host!r}: no address")
        host = str(infos[0][4][0])
        logger.info("peer {} resolved to {}", peer.host, host)
        resolved.append(PeerSpec(host, peer.port, peer.public_key))
    return tuple(resolved)


class PeerBook:
    """The static peers as they stand now (config, then `axiomnet peers add/remove` and SIGHUP), so that a
    restarted peer manager dials the current list, not the one of the start. Thread-safe."""

    def __init__(self, peers: Iterable[PeerSpec]) -> None:
        self._lock = threading.Lock()
        self._peers = tuple(peers)

    def current(self) -> tuple[PeerSpec, ...]:
        with self._lock:
            return self._peers

    def replace(self, peers: Iterable[PeerSpec | str]) -> None:
        parsed = tuple(p if isinstance(p, PeerSpec) else PeerSpec.parse(p) for p in peers)
        with self._lock:
            self._peers = parsed


# --- listen address ------------------------------------------------------------------------------
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def usable_listen_host(host: str) -> str:
    """``host``, except that the default ``::`` becomes ``0.0.0.0`` (one log line) where IPv6 is unavailable
    (kernel booted with ipv6.disable=1, or IPv6 compiled out): the node still runs, on IPv4."""
    if host != "::":
        return host
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            probe.bind(("::", 0))
        finally:
            probe.close()
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        logger.warning("IPv6 is not available on this host ({}): listening on 0.0.0.0 (IPv4 only) instead of [::]",
                       exc.strerror or exc)
        return "0.0.0.0"
    return host


# --- systemd notification (sd_notify without libsystemd) ---------------------------------------------
def sd_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` ("READY=1", "WATCHDOG=1", ...) to $NOTIFY_SOCKET; False when not under systemd."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logger.warning("cannot notify systemd ({}): {}", state.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half of $WATCHDOG_USEC), or None when systemd watches no one here."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return max(WATCHDOG_MIN_INTERVAL, usec / 2e6)


def fault_injection_enabled(config: Config, env: Mapping[str, str] | None = None) -> bool:
    """Fault injection needs both halves: the flag (or config key) and AXIOMNET_FAULT_INJECTION=1."""
    env = os.environ if env is None else env
    from_env = env.get(FAULT_INJECTION_ENV) == "1"
    if config.fault_injection and from_env:
        logger.warning("fault injection is ENABLED: callers of the admin socket may crash actors (tests only)")
        return True
    if config.fault_injection:
        logger.warning("--fault-injection ignored: {}=1 is not set in the environment", FAULT_INJECTION_ENV)
    elif from_env:
        logger.info("{}=1 is set but --fault-injection was not given: fault injection stays off",
                    FAULT_INJECTION_ENV)
    return False


def build_specs(config: Config, identity: Identity, with_tun: bool, started: float,
                peers: tuple[PeerSpec, ...] | PeerBook, *, listen_host: str | None = None,
                faults: bool = False, discover_secret: bytes | None = None) -> list[ChildSpec]:
    """The supervised actors in start order (dependencies first)."""
    address = identity.address
    # With a TUN device the node takes IP packets for its own address straight over a link (docs/PROTOCOL.md §6.6).
    payload = HandshakePayload(capabilities=("tun", NEIGHBOUR_CAPABILITY) if with_tun else ("relay",))
    book = peers if isinstance(peers, PeerBook) else PeerBook(peers)
    listen = (listen_host or config.listen_host, config.listen_port)
    specs = [
        ChildSpec("socket", lambda sup, refs: SocketActor.start(sup, refs, listen, offload=config.offload)),
        ChildSpec("router", lambda sup, refs: RouterActor.start(sup, refs, identity,
                                                                trusted_roots=config.trusted_roots)),
        ChildSpec("e2e", lambda sup, refs: EndToEndActor.start(sup, refs, identity)),
    ]
    if with_tun:
        specs.append(ChildSpec("tun", lambda sup, refs: TunActor.start(sup, refs, config.tun_name, address,
                                                                        config.mtu, offload=config.offload)))
    specs += [
        ChildSpec("peers", lambda sup, refs: PeerManagerActor.start(
            sup, refs, static_private=identity.private_key, static_public=identity.public_key,
            self_address=address.packed, static_peers=book.current(), local_payload=payload,
            allowed_keys=config.allowed_keys, discoverable=config.discoverable, listen=listen,
            max_sessions=config.max_sessions)),
    ]
    if config.discover:  # LAN discovery (issue 18): after the peer manager, which it tells what it hears
        if listen[0] not in ("::", "0.0.0.0"):
            logger.warning("discovery is on but the node listens on {} only: neighbours dial the address a beacon "
                           "came from (a link-local one over IPv6) and will not reach it; listen on [::]", listen[0])
        specs.append(ChildSpec("discovery", lambda sup, refs: DiscoveryActor.start(
            sup, refs, public_key=identity.public_key, port=config.listen_port, patterns=config.discover,
            secret=discover_secret, interval=config.discover_interval,
            exclude=(config.tun_name,) if with_tun else ())))
    specs += [
        ChildSpec("heartbeat", lambda sup, refs: HeartbeatActor.start(sup, refs)),
        ChildSpec("admin", lambda sup, refs: AdminActor.start(
            sup, refs, config.admin_socket, identity, config.tun_name if with_tun else None, started,
            admin_group=config.admin_group, metrics_listen=config.metrics_listen, faults_enabled=faults,
            peer_book=book, resolve=resolve_peers)),
    ]
    return specs


# --- SIGHUP ------------------------------------------------------------------------------------------
_RESTART_ONLY = ("listen_host", "listen_port", "tun_enabled", "tun_name", "mtu", "data_dir", "admin_socket",
                 "log_level", "log_json", "metrics_listen", "admin_group", "fault_injection", "trusted_roots")


def reload_config(reload: Callable[[], Config], running: Config, peers_ref: Any, book: PeerBook) -> Config:
    """Re-read the configuration and apply its static peers and allowed_keys; the running Config on any fault."""
    try:
        new = reload()
        wanted = resolve_peers(new.peers)
    except ConfigError as exc:
        logger.error("SIGHUP: configuration refused, the running settings stay: {}", exc)
        return running
    for name in _RESTART_ONLY:
        if getattr(new, name, None) != getattr(running, name, None):
            logger.warning("SIGHUP: {} changed; it takes effect at the next restart", name)
    current = book.current()
    keep = {str(p) for p in wanted}
    have = {str(p) for p in current}
    changes: list[Any] = [m.RemovePeer(p.host, p.port) for p in current if str(p) not in keep]
    changes += [m.AddPeer(p.host, p.port, p.public_key, origin="static") for p in wanted if str(p) not in have]
    if new.allowed_keys != running.allowed_keys:
        # After the peers: a pinned key the new file adds is allowed by the time the keys are checked.
        changes.append(m.SetAllowedKeys(new.allowed_keys))
    for change in changes:
        try:
            reply = peers_ref.ask(change, timeout=ADMIN_TIMEOUT)
        except (pykka.Timeout, pykka.ActorDeadError) as exc:
            logger.error("SIGHUP: the peer manager did not take {} ({!r}); retry with another SIGHUP", change, exc)
            return running
        if isinstance(reply, dict) and "peers" in reply:
            book.replace(reply["peers"])
        if isinstance(change, m.SetAllowedKeys) and isinstance(reply, dict):
            allowed = "any key" if change.keys is None else f"{len(change.keys)} key(s) and the pinned peers"
            logger.info("SIGHUP: allowed_keys now {}; {} session(s) closed", allowed, reply.get("sessions_closed", 0))
    logger.info("SIGHUP: configuration re-read: {} static peer(s), {} change(s)", len(wanted), len(changes))
    return new


MALLOC_ARENAS = 2  # glibc malloc arenas for the daemon's threads (docs/RELIABILITY.md: what grows)
_M_ARENA_MAX = -8  # glibc's mallopt() parameter number for the arena limit


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS, env: Mapping[str, str] = os.environ) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas, before the actors' threads start; True when it took it.

    By default every thread that finds an arena locked gets one of its own (up to 8 per core), and what is
    freed in one arena serves no other: in soaks, the RSS that grew outside the Python heap grew in those
    per-thread arenas. An operator's MALLOC_ARENA_MAX wins (nothing done); not glibc: nothing to do."""
    if "MALLOC_ARENA_MAX" in env:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas) == 1)


MALLOC_TRIM_INTERVAL = 30.0  # seconds between two malloc_trim(0) calls of the main loop (docs/RELIABILITY.md)
MALLOC_TRIM_ENV = "AXIOMNET_MALLOC_TRIM_INTERVAL"  # seconds; 0 turns the trim off (for A/B soaks)


def malloc_trimmer(env: Mapping[str, str] = os.environ) -> tuple[Callable[[], int] | None, float]:
    """glibc's ``malloc_trim(0)`` and how often to call it; (None, 0) when off or not glibc.

    What the actors free (per-packet bytes, handshake state, 64 KB receive buffers) goes back to the arena's
    free lists, not to the kernel: glibc only shrinks an arena from its top, so one live chunk near the top pins
    every free page below it, and the daemon's RSS crept up for as long as it ran. malloc_trim(0) walks every
    arena and hands whole free pages back (madvise), wherever they lie."""
    raw = env.get(MALLOC_TRIM_ENV)
    try:
        interval = MALLOC_TRIM_INTERVAL if raw is None else float(raw)
    except ValueError:
        interval = MALLOC_TRIM_INTERVAL
    if interval <= 0:
        return None, 0.0
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None, 0.0
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return (lambda: int(trim(0))), interval


def run_daemon(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run the node until a signal (exit 0) or a fatal supervision decision (exit 1).

    ``reload`` builds a fresh Config (the same file, environment and flags) when SIGHUP arrives; without
    it SIGHUP is logged and ignored. The signal handlers go in first: a stop signal while the node is still
    starting (creating its identity, say) ends the start-up cleanly instead of killing the process half-way.
    """
    started = time.monotonic()
    limit_malloc_arenas()
    route_stdlib_logging()
    install_crash_hooks()
    stop = threading.Event()
    hangup = threading.Event()
    outcome: dict[str, Any] = {"code": 0, "signals": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        outcome["signals"] += 1
        if outcome["signals"] > 1:
            logger.warning("second signal: exiting at once")
            os._exit(130 if signum == signal.SIGINT else 143)
        logger.info("{} received: shutting down", signal.Signals(signum).name)
        stop.set()

    def on_hangup(_signum: int, _frame: Any) -> None:
        hangup.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    unblock_stop_signals()  # blocked across the malloc re-exec (actors/malloc_env.py): handled from here on
    try:
        return _run(config, reload, started, stop, hangup, outcome)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(config: Config, reload: Callable[[], Config] | None, started: float, stop: threading.Event,
         hangup: threading.Event, outcome: dict[str, Any]) -> int:
    """Start the node's actors and run until ``stop``; the exit code."""
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
    try:
        listen_host = usable_listen_host(config.listen_host)
    except OSError as exc:
        logger.error("cannot listen on {}: {}", config.listen, exc)
        return 1
    if stop.is_set():
        logger.info("stopped before start-up finished")
        return 0
    faults = fault_injection_enabled(config)
    book = PeerBook(peers)
    try:
        discover_secret = load_discover_secret(config)
    except ConfigError as exc:
        logger.error("{}", exc)
        return 1

    def on_fatal(reason: str) -> None:
        outcome["code"] = 1
        outcome["reason"] = reason
        stop.set()

    specs = build_specs(config, identity, why_no_tun is None, started, book, listen_host=listen_host, faults=faults,
                        discover_secret=discover_secret)
    heap = HeapWatch.from_env()  # AXIOMNET_TRACEMALLOC: traced from before the first actor starts
    if heap is not None:
        heap.start()
    supervisor = SupervisorActor.start(specs, on_fatal)
    try:
        try:
            supervisor.ask(StartAll(), timeout=30)
        except Exception as exc:
            logger.error("start-up failed: {}", exc)
            outcome["code"] = 1
            stop.set()
        else:
            logger.info("node up: {} on UDP {} with {} static peer(s)", identity.address,
                        f"[{listen_host}]:{config.listen_port}" if ":" in listen_host else
                        f"{listen_host}:{config.listen_port}", len(config.peers))
            sd_notify(f"READY=1\nSTATUS=up: {identity.address} on UDP port {config.listen_port}\nMAINPID={os.getpid()}")
        config = _main_loop(supervisor, stop, hangup, config, reload, book, heap=heap)
    finally:
        sd_notify("STOPPING=1")
        _arm_exit_watchdog()
        _shutdown(supervisor)
    if outcome["code"]:
        logger.error("exiting with status 1: {}", outcome.get("reason", "start-up failed"))
    else:
        logger.info("stopped cleanly")
    return int(outcome["code"])


def _main_loop(supervisor: Any, stop: threading.Event, hangup: threading.Event, config: Config,
               reload: Callable[[], Config] | None, book: PeerBook,
               trimmer: tuple[Callable[[], int] | None, float] | None = None, heap: HeapWatch | None = None) -> Config:
    """Wait for a stop signal; meanwhile apply SIGHUP, feed the systemd watchdog, hand the allocator's free
    pages back to the kernel every MALLOC_TRIM_INTERVAL (``trimmer``: malloc_trimmer()) and log a heap profile
    when ``heap`` (AXIOMNET_TRACEMALLOC, actors/heapwatch.py) says one is due. Returns the last Config."""
    interval = watchdog_interval()
    next_ping = time.monotonic()
    trim, trim_every = malloc_trimmer() if trimmer is None else trimmer
    next_trim = time.monotonic() + trim_every
    # Not a wait without a timeout: a signal may be delivered to any thread, and Python runs its handler only when
    # the main thread next runs bytecode, so a main thread blocked for good would never see SIGTERM (found by
    # integration/test_daemon.py::test_second_signal_exits_at_once). Two wake-ups a second cost nothing measurable.
    while not stop.wait(0.5):
        if hangup.is_set():
            hangup.clear()
            if reload is None:
                logger.warning("SIGHUP: no configuration source to re-read; ignored")
            else:
                sd_notify("RELOADING=1")
                config = reload_config(reload, config, _current_ref(supervisor, "peers"), book)
                sd_notify("READY=1")
        if interval is not None and time.monotonic() >= next_ping:
            next_ping = time.monotonic() + interval
            # The watchdog is fed only while the supervisor answers: a wedged daemon is restarted by systemd.
            if _current_ref(supervisor, "peers", timeout=min(interval, ADMIN_TIMEOUT)) is not None:
                sd_notify("WATCHDOG=1")
        if trim is not None and time.monotonic() >= next_trim:
            next_trim = time.monotonic() + trim_every
            trim()  # a few ms at most here; the actors' threads keep running (it locks one arena at a time)
        if heap is not None and heap.due(time.monotonic()):
            heap.profile()
    return config


def _current_ref(supervisor: Any, role: str, timeout: float = ADMIN_TIMEOUT) -> Any:
    try:
        return supervisor.ask(m.GetRef(role), timeout=timeout)
    except (pykka.Timeout, pykka.ActorDeadError):
        return None


def _shutdown(supervisor: Any, budget: float = SHUTDOWN_DEADLINE - 1.0) -> list[str]:
    """Stop every actor in reverse start order, all within ``budget`` seconds; the actors still running after it.

    The budget leaves a second of SHUTDOWN_DEADLINE for what comes around it: the main loop's wake-up (0.5 s at
    most) and the interpreter's exit. An actor late to stop is asked once and left: the rest are still stopped
    (pykka's ActorRegistry.stop_all gives up at the first one that times out, and left the supervisor running:
    the process then waited for it at exit, for ever; docs/RELIABILITY.md: shutdown under load). Every actor
    thread is a daemon thread, so one still stuck in a handler does not hold the exit either."""
    deadline = time.monotonic() + budget
    share = budget * 0.75  # the supervisor's orderly stop; what it could not stop gets the rest
    try:
        supervisor.ask(StopAll(ACTOR_STOP_TIMEOUT / 2, total=share), timeout=share + 0.25)
    except (pykka.Timeout, pykka.ActorDeadError) as exc:
        logger.error("supervisor did not stop the actors in time: {!r}", exc)
    # Whatever is still registered (the supervisor itself, a late child, a session), asked at once, then each
    # awaited under the one deadline.
    asked = [(ref, ref.stop(block=False)) for ref in reversed(pykka.ActorRegistry.get_all())]
    late = []
    for ref, future in asked:
        try:
            future.get(timeout=max(0.0, deadline - time.monotonic()))
        except pykka.Timeout:
            late.append(str(ref))
    if late:
        logger.error("{} actor(s) did not stop within {:.1f} s, left to the exit: {}", len(late), budget,
                     ", ".join(late))
    return late


def _arm_exit_watchdog(seconds: float = SHUTDOWN_DEADLINE) -> None:
    """Exit 1 if the process is still here ``seconds`` from now: the last bound on the shutdown, covering the
    interpreter's exit too (a daemon thread: it dies with a process that ends in time)."""

    def watchdog() -> None:
        time.sleep(seconds)
        logger.critical("shutdown exceeded {} s: forcing exit", seconds)
        os._exit(1)

    threading.Thread(target=watchdog, name="axn-shutdown-watchdog", daemon=True).start()
