"""AxiomNet daemons in the lab: start one or a pair in namespaces, wait for the overlay, inspect, stop.

A :class:`DaemonProcess` is ``python -m axiomnet daemon`` in a namespace with its own data directory, log
file and admin socket; it is stopped by process group, bounded in time (lab/namespaces.py and lab/processes.py do the bookkeeping).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Collection, Sequence

from axiomnet.constants import DEFAULT_UDP_PORT, SHUTDOWN_DEADLINE


from axiomnet.lab.namespaces import Namespace, NetnsLab, NetnsPair
from axiomnet.lab.processes import (
    CLI_TIMEOUT,
    KILL_WAIT,
    HarnessError,
    process_cpu_seconds,
    process_memory_kib,
    run_bounded,
    signal_group,
    signal_process,
    wait_until,
)
from axiomnet.lab.traffic import ping

IDENTITY_WORKERS = 8  # identities created at once by start_overlay

# --- AxiomNet daemons -------------------------------------------------------------------------------
def relayed_packets(state: dict[str, Any]) -> int:
    """How many routed packets a node relayed, from its admin document: by its router (greedy TRAFFIC and
    SOURCE_ROUTED, and the first batch of every flow) and by its link sessions on the router's published
    decisions (the relay fast path, ``relayed_fast``)."""
    router = state["counters"]["router"]
    by_sessions = sum(int(row.get("counters", {}).get("relayed_fast", 0)) for row in state.get("sessions", [])
                      if isinstance(row, dict))
    return int(router.get("fwd_relayed", 0)) + int(router.get("fwd_source_relayed", 0)) + by_sessions


def _python_env() -> dict[str, str]:
    # PYTHONSAFEPATH (python -P): the caller's working directory is never put on sys.path, so a checkout's
    # axiomnet/ folder (the core alone: ops/, actors/ and lab/ are installed beside it) cannot shadow the
    # installed package when the demo runs from the source tree after a plain `pip install .`.
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli_json(args: Sequence[str], *, ns: Namespace | None = None, timeout: float = CLI_TIMEOUT) -> Any:
    cmd = [sys.executable, *args]
    try:
        proc = ns.exec(cmd, timeout=timeout, env=_python_env()) if ns else run_bounded(cmd, timeout=timeout, env=_python_env())
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(args[:3])} timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(args[:3])} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise HarnessError(f"{' '.join(args[:3])} printed no JSON: {proc.stdout[:200]!r}") from exc


def identity_info(data_dir: str | Path) -> dict[str, str]:
    """``address`` and ``public_key`` (hex) of the identity in ``data_dir`` (created if absent), via
    `axiomnet identity create` (`identity show` creates nothing)."""
    info = _cli_json(["-m", "axiomnet", "identity", "create", "--data-dir", str(data_dir), "--json"])
    return {"address": str(ipaddress.IPv6Address(info["address"])), "public_key": str(info["public_key"])}


def overlay_address(data_dir: str | Path) -> str:
    """The overlay address of the identity in ``data_dir`` (created if absent)."""
    return identity_info(data_dir)["address"]


_INSPECT = "import sys; from axiomnet.ops.cli import inspect_main; sys.exit(inspect_main())"


class DaemonProcess:
    """A running ``axiomnet daemon`` inside a namespace, its log file, identity and admin socket."""

    def __init__(
        self,
        ns: Namespace,
        name: str,
        popen: subprocess.Popen[Any],
        *,
        address: str,
        listen: str,
        data_dir: Path,
        admin_socket: Path,
        tun: str | None,
        log_path: Path,
    ) -> None:
        self.ns = ns
        self.name = name
        self.popen = popen
        self.address = address
        self.listen = listen
        self.data_dir = data_dir
        self.admin_socket = admin_socket
        self.tun = tun
        self.log_path = log_path
        self.stop_seconds: float | None = None  # how long the last stop() took
        self.killed = False  # stop() had to SIGKILL

    def __repr__(self) -> str:
        return f"DaemonProcess({self.name!r}, pid={self.pid}, ns={self.ns.name}, address={self.address})"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        """The daemon's stdout+stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = SHUTDOWN_DEADLINE) -> int:
        """SIGTERM the daemon, wait ``timeout`` s, then SIGKILL its group; return its exit code (reaped)."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        start = time.monotonic()
        signal_process(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            signal_group(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=KILL_WAIT)
        self.stop_seconds = time.monotonic() - start
        # Children the daemon may have left in its group go too (the group id is still reserved now).
        signal_group(self.pid, signal.SIGKILL)
        return self.popen.returncode

    def admin(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One JSON request on the daemon's admin socket (a filesystem path, reachable from any namespace)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.admin_socket))
            s.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        if not isinstance(reply, dict):
            raise HarnessError(f"admin socket replied {type(reply).__name__}, not an object")
        return reply

    def inspect(self, timeout: float = CLI_TIMEOUT) -> dict[str, Any]:
        """The daemon's state (``axiomnet-inspect --json``, run inside its namespace)."""
        state = _cli_json(["-c", _INSPECT, "--admin-socket", str(self.admin_socket), "--json"], ns=self.ns, timeout=timeout)
        if not isinstance(state, dict):
            raise HarnessError(f"axiomnet-inspect returned {type(state).__name__}, not an object")
        return state

    def actor_view(self, role: str, timeout: float = CLI_TIMEOUT) -> dict[str, Any]:
        """One actor as inspect shows it, counters and snapshot (e.g. the socket's breakers, GSO state) merged."""
        state = self.inspect(timeout=timeout)
        return {**state["snapshots"].get(role, {}), **state["counters"].get(role, {})}

    def inspect_text(self, timeout: float = CLI_TIMEOUT) -> str:
        """The human-readable tables of ``axiomnet-inspect`` (stdout, or stderr if it failed)."""
        try:
            proc = self.ns.exec(
                [sys.executable, "-c", _INSPECT, "--admin-socket", str(self.admin_socket)], timeout=timeout, env=_python_env()
            )
        except subprocess.TimeoutExpired:
            return f"axiomnet-inspect timed out after {timeout:g} s"
        return proc.stdout if proc.returncode == 0 else proc.stderr

    def inspect_map(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``axiomnet-inspect map ARGS`` inside the daemon's namespace (the SVG map of what it knows)."""
        return self.ns.exec([sys.executable, "-c", _INSPECT, "--admin-socket", str(self.admin_socket), "map", *args],
                            timeout=timeout, env=_python_env())

    def established_sessions(self) -> int:
        """How many sessions the daemon reports as established (0 if it cannot be asked yet)."""
        try:
            state = self.inspect(timeout=5.0)
        except HarnessError:
            return 0
        return sum(1 for s in state.get("sessions", []) if isinstance(s, dict) and s.get("state") == "established")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def memory_kib(self) -> dict[str, int]:
        return process_memory_kib(self.pid)


def format_endpoint(host: str, port: int) -> str:
    """``HOST:PORT``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start_daemon(
    ns: Namespace,
    *,
    name: str,
    listen: str,
    peers: Sequence[str],
    data_dir: str | Path,
    admin_socket: str | Path,
    tun: str | None,
    extra_args: Sequence[str] = (),
    log_path: str | Path | None = None,
    log_level: str = "INFO",
    address: str | None = None,
) -> DaemonProcess:
    """Start ``python -m axiomnet daemon`` in ``ns`` with stdout+stderr to ``log_path``
    (default: ``<data_dir's parent>/<name>.log``). The overlay address is learned first with
    `axiomnet identity create` (creating the identity if absent), unless the caller already knows it
    (``address``). Does not wait for the daemon to be ready."""
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    admin_socket = Path(admin_socket)
    log_file = Path(log_path) if log_path is not None else data_dir.parent / f"{name}.log"
    address = address or overlay_address(data_dir)
    args = [sys.executable, "-m", "axiomnet", "daemon", "--listen", listen]
    for peer in peers:
        args += ["--peer", peer]
    args += ["--tun", tun] if tun is not None else ["--no-tun"]
    args += ["--data-dir", str(data_dir), "--admin-socket", str(admin_socket), "--log-level", log_level]
    args += list(extra_args)
    with open(log_file, "ab") as out:
        popen = ns.popen(args, stdout=out, stderr=subprocess.STDOUT, env=_python_env())
    return DaemonProcess(
        ns, name, popen, address=address, listen=listen, data_dir=data_dir, admin_socket=admin_socket, tun=tun, log_path=log_file
    )


def start_daemon_pair(
    pair: NetnsPair,
    workdir: str | Path,
    *,
    port: int = DEFAULT_UDP_PORT,
    ipv6_underlay: bool = False,
    log_level: str = "INFO",
    extra_args: Sequence[str] = (),
) -> tuple[DaemonProcess, DaemonProcess]:
    """Start one daemon in each namespace of ``pair``, each listening on its veth address and peering
    with the other; data dirs, admin sockets and logs under ``workdir``. Does not wait for readiness."""
    workdir = Path(workdir)
    if ipv6_underlay:
        if pair.ip6_a is None or pair.ip6_b is None:
            raise HarnessError("the pair has no IPv6 veth addresses")
        host_a, host_b = pair.ip6_a, pair.ip6_b
    else:
        host_a, host_b = pair.ip_a, pair.ip_b
    daemons = []
    for ns, me, other in ((pair.a, host_a, host_b), (pair.b, host_b, host_a)):
        daemons.append(
            start_daemon(
                ns,
                name=f"node-{ns.suffix}",
                listen=format_endpoint(me, port),
                peers=[format_endpoint(other, port)],
                data_dir=workdir / f"node-{ns.suffix}",
                admin_socket=workdir / f"node-{ns.suffix}.sock",
                tun=ns.tun_name,
                extra_args=extra_args,
                log_level=log_level,
            )
        )
    return daemons[0], daemons[1]


def start_overlay(
    lab: NetnsLab,
    nodes: int,
    edges: Sequence[tuple[int, int]],
    workdir: str | Path,
    *,
    port: int = DEFAULT_UDP_PORT,
    log_level: str = "INFO",
    extra_args: Sequence[str] = (),
    tun_nodes: Collection[int] | None = None,
) -> list[DaemonProcess]:
    """``nodes`` namespaces (suffixes n0, n1, ...) joined by one veth per edge (198.18.<k>.0/24 and
    2001:2:0:<k>::/64 for the k-th edge) and one daemon in each, listening on every address; for each edge the
    lower-numbered node dials the other. Every node gets a TUN device unless ``tun_nodes`` names the ones that
    do (the others are relay-only, ``--no-tun``). Does not wait for readiness."""
    if not 1 <= nodes <= 200 or len(edges) > 250:
        raise HarnessError("an overlay lab holds 1..200 nodes and at most 250 links")
    workdir = Path(workdir)
    spaces = [lab.add_namespace(f"n{i}") for i in range(nodes)]
    dials: dict[int, list[str]] = {i: [] for i in range(nodes)}
    for k, (a, b) in enumerate(edges):
        a, b = min(a, b), max(a, b)
        link = lab.connect(spaces[a], spaces[b], ipv4_subnet=f"198.18.{k}.0/24", ipv6_subnet=f"2001:2:0:{k}::/64")
        dials[a].append(format_endpoint(link.ipv4_b, port))
    # The identities first, a few at a time: each is an `axiomnet identity create` process (an interpreter
    # start), which one after the other took 86 s of the 40-node chain's start on a loaded 2-core machine.
    with ThreadPoolExecutor(max_workers=IDENTITY_WORKERS) as pool:
        addresses = list(pool.map(overlay_address, [workdir / f"node-{i}" for i in range(nodes)]))
    daemons = []
    for i, ns in enumerate(spaces):
        daemons.append(
            start_daemon(
                ns,
                name=f"node-{i}",
                address=addresses[i],
                listen=format_endpoint("::", port),
                peers=dials[i],
                data_dir=workdir / f"node-{i}",
                admin_socket=workdir / f"node-{i}.sock",
                tun=ns.tun_name if tun_nodes is None or i in tun_nodes else None,
                extra_args=extra_args,
                log_level=log_level,
            )
        )
    return daemons


def wait_overlay_reachable(src: DaemonProcess, dst: DaemonProcess, timeout: float = 15.0) -> float | None:
    """Ping ``dst``'s overlay address from ``src``'s namespace until a reply comes back.

    Returns the seconds it took, or None after ``timeout`` (or as soon as either daemon has exited).
    """
    start = time.monotonic()

    def reachable() -> bool:
        if not (src.running() and dst.running()):
            raise _DaemonExited()
        return ping(src.ns, dst.address, count=1, interval=0.2, timeout=1.0).ok

    try:
        if wait_until(reachable, timeout, interval=0.2):
            return time.monotonic() - start
    except _DaemonExited:
        pass
    return None


class _DaemonExited(Exception):
    """A daemon being waited on exited: stop waiting at once."""
