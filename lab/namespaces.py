"""Network-namespace harness: real AxiomNet daemons on a private veth, for the demo, the benchmark and tests.

Everything here runs as root and touches only what it creates itself:

* namespaces are named ``axnt-<run id>-<suffix>``, interfaces ``axn<run id>...`` (at most 15 characters),
  the run id being 6 hex characters from ``os.urandom``; so parallel runs never collide;
* veth addresses come from 198.18.0.0/15 (IPv4 benchmarking range, RFC 2544) and 2001:2::/48 (IPv6
  benchmarking range, RFC 5180); the namespaces have no default route, so nothing can leave them;
* before a namespace is created, a marker ``/run/axiomnet-test/<run id>.json`` records the owning PID and its
  start time; :func:`cleanup_leftovers` removes the namespaces (and memory cgroups) of runs whose owner is gone;
* processes started in a namespace are tracked and stopped by process group on close (axiomnet/lab/processes.py);
  closing a lab also SIGKILLs whatever still lives in its namespaces, by PID;
* every subprocess call has a timeout.

The harness uses the ``ip`` command (iproute2) through :mod:`subprocess`; it imports nothing from pytest.
Processes: :mod:`axiomnet.lab.processes`; memory limits: :mod:`axiomnet.lab.cgroups`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Iterator, Mapping, Sequence

from axiomnet.constants import SHUTDOWN_DEADLINE
from axiomnet.lab.cgroups import MemoryCgroup, remove_cgroup, run_groups
from axiomnet.lab.processes import (
    KILL_WAIT,
    HarnessError,
    process_alive,
    process_start_time,
    require_root,
    run_bounded,
    signal_process,
    terminate_processes,
)

log = logging.getLogger(__name__)

IFNAME_PREFIX = "axn"  # every interface this harness creates starts with this
NETNS_PREFIX = "axnt-"  # every namespace (and memory cgroup) this harness creates starts with this
MARKER_DIR = Path("/run/axiomnet-test")  # one JSON marker per run: owner PID, start time, namespaces
IFNAMSIZ = 15  # Linux interface names are at most 15 characters

IPV4_ALLOWED = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range
IPV6_ALLOWED = ipaddress.IPv6Network("2001:2::/48")  # RFC 5180 benchmarking range
DEFAULT_IPV4_SUBNET = "198.18.0.0/24"
DEFAULT_IPV6_SUBNET = "2001:2::/64"

IP_TIMEOUT = 10.0  # bound on one `ip` command
EXEC_TIMEOUT = 30.0  # default bound on a command run inside a namespace

_RUN_ID_RE = re.compile(r"^[0-9a-f]{6}$")
_SUFFIX_RE = re.compile(r"^[a-z0-9]{1,5}$")
_NAME_RE = re.compile(r"^axnt-([0-9a-f]{6})-[a-z0-9]{1,5}$")  # a namespace's or a memory cgroup's


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, no `ip`, `ip netns` failing), or None if they can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces (run as root or with sudo)"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (install the iproute2 package)"
    try:
        proc = run_bounded(["ip", "netns", "list"], timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns list` failed: {exc}"
    if proc.returncode != 0:
        return f"`ip netns list` failed: {proc.stderr.strip()}"
    return None



# --- namespaces -------------------------------------------------------------------------------------
def list_namespaces() -> list[str]:
    """Names of all network namespaces known to `ip netns`."""
    proc = run_bounded(["ip", "netns", "list"], timeout=IP_TIMEOUT, check=True)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes living in namespace ``name`` (empty if it does not exist)."""
    proc = run_bounded(["ip", "netns", "pids", name], timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        return []
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def destroy_namespace(name: str) -> None:
    """SIGKILL every process in namespace ``name`` (by PID), then delete it (its veths and TUNs go too)."""
    if not _NAME_RE.match(name):
        raise HarnessError(f"refusing to destroy namespace {name!r}: not one of ours")
    deadline = time.monotonic() + KILL_WAIT
    while True:
        pids = [pid for pid in namespace_pids(name) if pid != os.getpid()]
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            signal_process(pid, signal.SIGKILL)
        time.sleep(0.05)
    if pids:
        log.warning("processes %s in %s survived SIGKILL", pids, name)
    proc = run_bounded(["ip", "netns", "del", name], timeout=IP_TIMEOUT)
    if proc.returncode != 0 and name in list_namespaces():
        raise HarnessError(f"could not delete namespace {name}: {proc.stderr.strip()}")


def new_run_id() -> str:
    """Six random hex characters naming one run's namespaces and interfaces."""
    return os.urandom(3).hex()


_NO_DAD_SCRIPT = (
    "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"
)


class Namespace:
    """One network namespace of a lab: run commands and start tracked processes inside it."""

    def __init__(self, lab: NetnsLab, suffix: str) -> None:
        self.lab = lab
        self.suffix = suffix
        self.name = lab.resource_name(suffix)
        # When set, processes started with popen() are born in this memory cgroup (so all they allocate counts).
        self.memory_cgroup: MemoryCgroup | None = None

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    @property
    def tun_name(self) -> str:
        """A TUN device name unique to this run and namespace (``axn<run id>t<suffix>``)."""
        return self.lab.ifname(f"t{self.suffix}")

    def exec(
        self,
        args: Sequence[str],
        *,
        timeout: float = EXEC_TIMEOUT,
        check: bool = False,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``args`` inside the namespace with captured output, killed (process group) after ``timeout``."""
        return run_bounded(
            ["ip", "netns", "exec", self.name, *args], timeout=timeout, check=check, input=input, env=env, text=text
        )

    def ip(self, *args: str, timeout: float = IP_TIMEOUT) -> subprocess.CompletedProcess[Any]:
        """Run ``ip -n NAME ARGS...``; raise HarnessError if it fails."""
        proc = run_bounded(["ip", "-n", self.name, *args], timeout=timeout)
        if proc.returncode != 0:
            raise HarnessError(f"ip -n {self.name} {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def popen(
        self,
        args: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        text: bool = False,
    ) -> subprocess.Popen[Any]:
        """Start ``args`` inside the namespace in a new session; the lab stops and reaps it on close."""
        command = ["ip", "netns", "exec", self.name, *args]
        if self.memory_cgroup is not None:  # join the cgroup first, then become the command (same PID)
            command = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.memory_cgroup.path), *command]
        proc = subprocess.Popen(
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            text=text,
            start_new_session=True,
        )
        self.lab.track(proc)
        return proc

    def link_exists(self, ifname: str) -> bool:
        """True if interface ``ifname`` exists in this namespace."""
        return run_bounded(["ip", "-n", self.name, "link", "show", "dev", ifname], timeout=IP_TIMEOUT).returncode == 0

    def exists(self) -> bool:
        """True while the namespace is listed by `ip netns`."""
        return self.name in list_namespaces()


@dataclasses.dataclass(frozen=True)
class VethLink:
    """A veth pair joining two namespaces, with one IPv4 (and optionally one IPv6) address on each end."""

    a: Namespace
    b: Namespace
    ifname_a: str
    ifname_b: str
    ipv4_a: str
    ipv4_b: str
    ipv6_a: str | None
    ipv6_b: str | None
    prefixlen4: int
    prefixlen6: int


class NetnsLab:
    """One run's namespaces, veths and processes; a context manager whose exit removes all of them.

    ``owner_pid`` is the process whose death makes this run's leftovers stale for
    :func:`cleanup_leftovers` (default: this process). ``stop_grace`` is how long tracked processes get
    between SIGTERM and SIGKILL on close.
    """

    def __init__(self, *, run_id: str | None = None, owner_pid: int | None = None, stop_grace: float = SHUTDOWN_DEADLINE) -> None:
        require_root()
        self.run_id = run_id or new_run_id()
        if not _RUN_ID_RE.match(self.run_id):
            raise HarnessError(f"run id must be 6 lowercase hex characters, not {self.run_id!r}")
        self.owner_pid = owner_pid if owner_pid is not None else os.getpid()
        self.stop_grace = stop_grace
        self.namespaces: list[Namespace] = []
        self.links: list[VethLink] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- naming and bookkeeping ---------------------------------------------------------------------
    @property
    def marker_path(self) -> Path:
        return MARKER_DIR / f"{self.run_id}.json"

    def resource_name(self, suffix: str) -> str:
        """``axnt-<run id>-<suffix>``: the name of this run's namespace or memory cgroup ``suffix`` (1-5 of [a-z0-9])."""
        if not _SUFFIX_RE.match(suffix):
            raise HarnessError(f"namespace suffix must be 1-5 characters of [a-z0-9], not {suffix!r}")
        return f"{NETNS_PREFIX}{self.run_id}-{suffix}"

    def ifname(self, tag: str) -> str:
        """An interface name unique to this run: ``axn<run id><tag>``, at most 15 characters."""
        name = f"{IFNAME_PREFIX}{self.run_id}{tag}"
        if len(name) > IFNAMSIZ or not re.fullmatch(r"[a-z0-9]+", tag):
            raise HarnessError(f"interface name {name!r} is longer than {IFNAMSIZ} or has odd characters")
        return name

    def track(self, proc: subprocess.Popen[Any]) -> None:
        """Have ``proc`` (a session leader) stopped and reaped when the lab closes."""
        with self._lock:
            self._procs.append(proc)

    def _write_marker(self, pending: Sequence[str]) -> None:
        MARKER_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {
            "pid": self.owner_pid,
            "start_time": process_start_time(self.owner_pid),
            "namespaces": [ns.name for ns in self.namespaces] + list(pending),
            "created": time.time(),
        }
        tmp = self.marker_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.marker_path)

    # --- building -----------------------------------------------------------------------------------
    def add_namespace(self, suffix: str) -> Namespace:
        """Create namespace ``axnt-<run id>-<suffix>`` (suffix: 1-5 of [a-z0-9]) with lo up."""
        if self._closed:
            raise HarnessError("lab is closed")
        ns = Namespace(self, suffix)
        if any(existing.name == ns.name for existing in self.namespaces):
            raise HarnessError(f"namespace {ns.name} already exists in this lab")
        # The marker goes first, so a namespace of ours never exists without a marker naming its owner.
        self._write_marker([ns.name])
        proc = run_bounded(["ip", "netns", "add", ns.name], timeout=IP_TIMEOUT)
        if proc.returncode != 0:
            self._write_marker([])
            raise HarnessError(f"ip netns add {ns.name}: {proc.stderr.strip()}")
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        # No duplicate address detection on links born here: the veth ends are alone on their wire, and
        # DAD would leave each new IPv6 address tentative (unusable for bind) for a second or two.
        proc = ns.exec(["sh", "-c", _NO_DAD_SCRIPT], timeout=IP_TIMEOUT)
        if proc.returncode != 0:
            raise HarnessError(f"disabling DAD in {ns.name}: {proc.stderr.strip()}")
        return ns

    def connect(
        self,
        a: Namespace,
        b: Namespace,
        *,
        ipv4_subnet: str = DEFAULT_IPV4_SUBNET,
        ipv6_subnet: str | None = DEFAULT_IPV6_SUBNET,
        mtu: int | None = None,
    ) -> VethLink:
        """Join ``a`` and ``b`` by a veth; ``.1`` of the subnet on ``a``, ``.2`` on ``b``; links up.

        Subnets must lie in 198.18.0.0/15 and 2001:2::/48 (benchmarking ranges); IPv6 addresses skip DAD.
        """
        net4 = ipaddress.IPv4Network(ipv4_subnet)
        if not net4.subnet_of(IPV4_ALLOWED) or net4.num_addresses < 4:
            raise HarnessError(f"IPv4 subnet {net4} must be a /30 or larger inside {IPV4_ALLOWED}")
        net6 = ipaddress.IPv6Network(ipv6_subnet) if ipv6_subnet else None
        if net6 is not None and (not net6.subnet_of(IPV6_ALLOWED) or net6.num_addresses < 4):
            raise HarnessError(f"IPv6 subnet {net6} must lie inside {IPV6_ALLOWED}")
        index = len(self.links)
        ifa, ifb = self.ifname(f"v{index}a"), self.ifname(f"v{index}b")
        # Locally administered MACs we choose, so the neighbour entries below need no lookup.
        maca, macb = (f"02:{self.run_id[0:2]}:{self.run_id[2:4]}:{self.run_id[4:6]}:{index:02x}:{end:02x}" for end in (1, 2))
        # Both ends are born inside their namespaces: nothing of ours ever sits in the root namespace.
        proc = run_bounded(
            ["ip", "link", "add", ifa, "netns", a.name, "address", maca, "type", "veth",
             "peer", "name", ifb, "netns", b.name, "address", macb],
            timeout=IP_TIMEOUT,
        )
        if proc.returncode != 0:
            raise HarnessError(f"creating veth {ifa}/{ifb}: {proc.stderr.strip()}")
        ip4a, ip4b = str(net4.network_address + 1), str(net4.network_address + 2)
        a.ip("addr", "add", f"{ip4a}/{net4.prefixlen}", "dev", ifa)
        b.ip("addr", "add", f"{ip4b}/{net4.prefixlen}", "dev", ifb)
        ip6a = ip6b = None
        if net6 is not None:
            ip6a, ip6b = str(net6.network_address + 1), str(net6.network_address + 2)
            a.ip("addr", "add", f"{ip6a}/{net6.prefixlen}", "dev", ifa, "nodad")
            b.ip("addr", "add", f"{ip6b}/{net6.prefixlen}", "dev", ifb, "nodad")
        # Permanent neighbour entries: no ARP/ND round trip, and no lost first neighbour solicitation
        # (seen here: IPv6 over a fresh veth stalled ~0.6-1 s until the solicitation was retransmitted).
        neighbours = [(a, ifa, ip4b, macb), (b, ifb, ip4a, maca)]
        if ip6a is not None and ip6b is not None:
            neighbours += [(a, ifa, ip6b, macb), (b, ifb, ip6a, maca)]
        for ns, ifname, addr, mac in neighbours:
            ns.ip("neigh", "replace", addr, "lladdr", mac, "dev", ifname, "nud", "permanent")
        for ns, ifname in ((a, ifa), (b, ifb)):
            if mtu is not None:
                ns.ip("link", "set", "dev", ifname, "mtu", str(mtu))
            ns.ip("link", "set", "dev", ifname, "up")
        link = VethLink(a, b, ifa, ifb, ip4a, ip4b, ip6a, ip6b, net4.prefixlen, net6.prefixlen if net6 else 0)
        self.links.append(link)
        return link

    def add_attacker(self, target: Namespace, *, suffix: str = "x", ipv4_subnet: str = "198.18.1.0/24",
                     extra_addresses: int = 0) -> tuple[Namespace, VethLink]:
        """A namespace on a link of its own to ``target`` that reaches *every* address of ``target`` (a route
        through it), so it can hit a daemon listening on another link's address from an address that is
        not its peer's. ``extra_addresses`` more IPv4 source addresses (.10, .11, ...) go on its end."""
        attacker = self.add_namespace(suffix)
        link = self.connect(target, attacker, ipv4_subnet=ipv4_subnet, ipv6_subnet=None)
        attacker.ip("route", "add", str(IPV4_ALLOWED), "via", link.ipv4_a)
        net = ipaddress.IPv4Network(ipv4_subnet)
        if extra_addresses > net.num_addresses - 12:
            raise HarnessError(f"{ipv4_subnet} has no room for {extra_addresses} extra addresses")
        for i in range(extra_addresses):
            attacker.ip("addr", "add", f"{net.network_address + 10 + i}/{net.prefixlen}", "dev", link.ifname_b)
        return attacker, link

    # --- teardown -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop tracked processes (SIGTERM, SIGKILL after stop_grace), kill what is left in our namespaces,
        delete the namespaces and the marker. Idempotent; raises HarnessError if a namespace survives."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            procs = list(self._procs)
        problems: list[str] = []
        with _interrupts_deferred():
            try:
                terminate_processes(procs, grace=self.stop_grace)
            except Exception as exc:  # keep going: the namespaces must go whatever happened
                problems.append(f"stopping processes: {exc}")
            for ns in reversed(self.namespaces):
                try:
                    destroy_namespace(ns.name)
                except Exception as exc:
                    problems.append(str(exc))
            if not problems:
                with contextlib.suppress(FileNotFoundError):
                    self.marker_path.unlink()
        if problems:
            raise HarnessError("; ".join(problems))

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.close()
        except HarnessError:
            if exc_type is None:
                raise
            log.exception("cleanup after %s also failed", exc_type.__name__)


class NetnsPair(NetnsLab):
    """Two namespaces ``a`` and ``b`` joined by one veth (198.18.0.1/24 on a, .2 on b; 2001:2::1/64, ::2).

    Attributes: ``a``, ``b`` (Namespace), ``link`` (VethLink), ``ip_a``/``ip_b`` (IPv4 str),
    ``ip6_a``/``ip6_b`` (IPv6 str or None). If building fails half-way, what was built is removed.
    """

    def __init__(
        self,
        *,
        run_id: str | None = None,
        owner_pid: int | None = None,
        stop_grace: float = SHUTDOWN_DEADLINE,
        ipv4_subnet: str = DEFAULT_IPV4_SUBNET,
        ipv6_subnet: str | None = DEFAULT_IPV6_SUBNET,
        mtu: int | None = None,
    ) -> None:
        super().__init__(run_id=run_id, owner_pid=owner_pid, stop_grace=stop_grace)
        try:
            self.a = self.add_namespace("a")
            self.b = self.add_namespace("b")
            self.link = self.connect(self.a, self.b, ipv4_subnet=ipv4_subnet, ipv6_subnet=ipv6_subnet, mtu=mtu)
        except BaseException:
            with contextlib.suppress(HarnessError):
                self.close()
            raise
        self.ip_a, self.ip_b = self.link.ipv4_a, self.link.ipv4_b
        self.ip6_a, self.ip6_b = self.link.ipv6_a, self.link.ipv6_b

    def __enter__(self) -> NetnsPair:
        return self


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back during cleanup (main thread only), then deliver a SIGINT that arrived."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            os.kill(os.getpid(), received[0])


def cleanup_leftovers(*, include_own: bool = False) -> list[str]:
    """Delete namespaces of ours (``axnt-*``) whose owner process is dead or that have no marker.

    Processes inside them are SIGKILLed by PID first. Returns the names of the namespaces removed.
    Runs whose owner is alive are left alone, except, with ``include_own``, those owned by this very
    process (for the end of a test session, when every lab should already be closed).
    """
    require_root()
    # List namespaces before reading markers: a marker is written before its namespace, so any
    # namespace seen here already has its marker on disk.
    candidates = [name for name in list_namespaces() if _NAME_RE.match(name)]
    markers: dict[str, dict[str, Any]] = {}
    if MARKER_DIR.is_dir():
        for path in MARKER_DIR.glob("*.json"):
            try:
                markers[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                markers[path.stem] = {}
    live_runs = {
        run_id
        for run_id, data in markers.items()
        if isinstance(data.get("pid"), int)
        and process_alive(data["pid"], data.get("start_time"))
        and not (include_own and data["pid"] == os.getpid())
    }
    removed: list[str] = []
    for name in candidates:
        match = _NAME_RE.match(name)
        assert match is not None
        if match.group(1) in live_runs:
            continue
        try:
            destroy_namespace(name)
            removed.append(name)
        except HarnessError as exc:
            log.warning("leftover %s: %s", name, exc)
    for group in run_groups(NETNS_PREFIX):
        match = _NAME_RE.match(group.name)
        if match is None or match.group(1) in live_runs:
            continue
        try:
            remove_cgroup(group)
            removed.append(group.name)
        except HarnessError as exc:
            log.warning("leftover %s: %s", group, exc)
    for run_id in markers:
        if run_id not in live_runs:
            with contextlib.suppress(FileNotFoundError):
                (MARKER_DIR / f"{run_id}.json").unlink()
    return removed
