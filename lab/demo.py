"""`axiomnet demo`: N real daemons in N network namespaces linked as a topology, proven to carry traffic.

Steps: one namespace per node, one veth per link of the topology, one identity and one daemon per namespace
peering only with its topology neighbours (lab/daemons.py ``start_overlay``); wait until every link has its session;
ping every pair of nodes (a live table shows path, hops, RTT and loss as the answers come); send random
bytes over TCP across the longest path and compare SHA-256 on both ends; print each node's
``axiomnet-inspect`` tables; stop every daemon with SIGTERM (exit 0 within 5 s, TUN removed); remove
everything — on success, on failure and on Ctrl-C or SIGTERM.

A pair that does not answer is a failed check, never hidden. Nodes that are not neighbours reach each other
only through relays, which needs multi-hop routing in the daemons; when the daemons report no route table
the summary says so.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from axiomnet.lab import daemons, namespaces, nat, processes, topology, traffic
from axiomnet.constants import DEFAULT_MTU, SHUTDOWN_DEADLINE

NOT_ROOT_MESSAGE = "axiomnet demo needs root for network namespaces and TUN devices; run it as root or use sudo"
READY_TIMEOUT = 15.0  # how long the links get to come up
PAIR_TIMEOUT = 40.0  # how long each pair gets to answer its first ping (the tree and a lookup must settle)
PING_INTERVAL = 0.2
TRANSFER_PORT = 5301
MAX_NODES = 10  # namespaces, veths and daemons on a 2-core machine
PARALLEL_PROBES = 4  # pairs pinged at the same time


@dataclass
class Check:
    """One line of the summary."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<24} {self.detail}"


class _Terminated(Exception):
    """SIGTERM arrived while the demo ran."""


EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a process stopped by Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises _Terminated (main thread only), so cleanup runs.

    Both are installed explicitly instead of trusting the inherited disposition: a shell without job control
    starts a background command (``axiomnet demo &``, a CI script) with SIGINT *ignored*, and Python then
    leaves it ignored, so the demo ran on to ``RESULT: PASS`` through a SIGINT (issue 17). A demo asked to
    stop must stop, however it was started.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated()

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                signal.SIGTERM: signal.signal(signal.SIGTERM, terminated)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _missing_tools() -> list[str]:
    needed = {"ip": "iproute2", "ping": "iputils-ping", "ss": "iproute2"}
    return [f"`{tool}` is missing: install the {package} package (apt-get install {package})"
            for tool, package in needed.items() if shutil.which(tool) is None]


def _say(message: str) -> None:
    print(message, flush=True)


def _arg(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


@dataclass(frozen=True)
class Settings:
    """What one demo run does."""

    topology: topology.Topology
    seconds: float
    size_mb: int
    nat: bool = False  # --topology nat: A and B behind their own NATs, both peering with P (_run_nat_steps)


def _settings(args: argparse.Namespace) -> Settings | str:
    """The run's settings from ``args`` (missing attributes take defaults), or why they are unusable."""
    seconds = float(_arg(args, "seconds", _arg(args, "duration", 3.0)))
    size_mb = int(_arg(args, "size_mb", 5))
    nodes = int(_arg(args, "nodes", 2))
    kind = str(_arg(args, "topology", "line"))
    if not (0 < seconds <= 600) or not (1 <= size_mb <= 1024):
        return "--seconds must be in (0, 600] and --size-mb in [1, 1024]"
    if not 2 <= nodes <= MAX_NODES:
        return f"--nodes must be from 2 to {MAX_NODES}"
    if kind == "nat":  # three nodes, A - P - B as the line topology names them, A and B each behind a NAT
        return Settings(topology.build("line", 3), seconds, size_mb, nat=True)
    try:
        return Settings(topology.build(kind, nodes), seconds, size_mb)
    except ValueError as exc:
        return str(exc)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 if every check passed, 1 if one failed, 2 if it cannot run here, 130 after SIGINT
    (Ctrl-C), 143 after SIGTERM: the namespaces and processes are removed in every case.

    ``args``: ``nodes`` (2), ``topology`` (line), ``seconds`` of pinging per pair (3; ``duration`` is the
    older name), ``size_mb`` sent over TCP across the longest path (5), ``keep`` (leave the work directory
    with identities and logs); missing attributes take defaults.
    """
    try:
        with _signals_raise():
            return _run_demo(args)
    except KeyboardInterrupt:  # before the lab existed, or after it was removed: nothing of ours is left
        return EXIT_INTERRUPTED
    except _Terminated:
        return EXIT_TERMINATED


def _run_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(NOT_ROOT_MESSAGE, file=sys.stderr)
        return 2
    missing = _missing_tools()
    if missing:
        for line in missing:
            print(f"axiomnet demo: {line}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if isinstance(settings, str):
        print(f"axiomnet demo: {settings}", file=sys.stderr)
        return 2

    checks: list[Check] = []
    notes: list[str] = []
    keep = bool(getattr(args, "keep", False))
    workdir = tempfile.mkdtemp(prefix="axiomnet-demo-")
    try:
        try:
            with namespaces.NetnsLab() as lab:
                (_run_nat_steps if settings.nat else _run_steps)(lab, settings, Path(workdir), checks, notes)
        finally:
            if keep:
                _say(f"\nkept (--keep): identities, admin sockets and logs in {workdir}")
            else:
                interrupted = isinstance(sys.exc_info()[1], (KeyboardInterrupt, _Terminated))
                if not interrupted and (not checks or not all(c.passed for c in checks)):
                    _keep_logs(workdir)
                shutil.rmtree(workdir, ignore_errors=True)
    except (KeyboardInterrupt, _Terminated) as exc:
        _say("\ninterrupted: the demo's namespaces and processes have been removed")
        return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    except processes.HarnessError as exc:
        checks.append(Check("setup/teardown", False, str(exc)))
    _say("\n== summary ==")
    for check in checks:
        _say(check.line())
    for note in notes:
        _say(f"note: {note}")
    passed = bool(checks) and all(c.passed for c in checks)
    _say(f"RESULT: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


# --- the steps ------------------------------------------------------------------------------------------
def _run_steps(lab: namespaces.NetnsLab, settings: Settings, workdir: Path, checks: list[Check],
               notes: list[str]) -> None:
    topo = settings.topology
    links = ", ".join(f"{topo.name(a)}-{topo.name(b)}" for a, b in topo.edges)
    _say(f"[1/6] {topo.nodes} namespaces linked as a {topo.kind} by {len(topo.edges)} veth(s): {links}")
    nodes = daemons.start_overlay(lab, topo.nodes, topo.edges, workdir)
    for i, node in enumerate(nodes):
        node.name = f"node-{topo.name(i)}"
    _say("[2/6] daemons started, each peering only with its neighbours:")
    for i, node in enumerate(nodes):
        peers = ", ".join(topo.name(j) for j in topo.neighbours(i))
        _say(f"      {topo.name(i)}  pid {node.pid}  overlay {node.address}  tun {node.tun}  peers {peers}")
    _say(f"      logs: {workdir}/node-*.log (kept only on failure)")

    _say(f"[3/6] waiting up to {READY_TIMEOUT:.0f} s for every link's session ...")
    checks.append(_wait_links(topo, nodes))
    if not all(node.running() for node in nodes):
        exited = [f"{n.name} exited with code {n.returncode}" for n in nodes if not n.running()]
        checks.append(Check("daemons running", False, "; ".join(exited)))
        _stop_daemons(nodes, checks, show_logs=True)
        return
    routed = _reports_routes(nodes[0])

    board = Board(topo)
    count = max(3, round(settings.seconds / PING_INTERVAL))
    src, dst = topo.longest_pair()
    _say(f"[4/6] ping every pair ({len(topo.pairs())}), {count} pings each; "
         f"[5/6] then {settings.size_mb} MB over TCP {topo.name(src)} -> {topo.name(dst)} (the longest path):")
    with board.live():
        pair_checks = _ping_pairs(topo, nodes, count, board)
        checks.extend(pair_checks)
        checks.append(_transfer(topo, nodes, src, dst, settings.size_mb, board, pair_checks))
    failed = [pair for pair, check in zip(topo.pairs(), pair_checks) if not check.passed]
    if failed and not routed and all(len(topo.path(*pair)) > 2 for pair in failed):
        notes.append("every failed pair is two or more hops apart, and these daemons report no route table: "
                     "this build has no multi-hop routing, so nodes that are not neighbours cannot reach each "
                     "other yet")

    _say("[6/6] node state (axiomnet-inspect):")
    for node in nodes:
        _say(f"--- node {node.name} ({node.ns.name}) ---")
        _say(node.inspect_text().rstrip())
        _say(f"    (TUN {node.tun}: mtu {_link_mtu(node)}; expected {DEFAULT_MTU})")
    _write_network_map(nodes, notes)
    _stop_daemons(nodes, checks)


def _wait_links(topo: topology.Topology, nodes: list[daemons.DaemonProcess]) -> Check:
    """Every node has an established session with each of its neighbours (or the deadline passed)."""
    wanted = {i: len(topo.neighbours(i)) for i in range(topo.nodes)}
    seen: dict[int, int] = {}

    def all_up() -> bool:
        for i, node in enumerate(nodes):
            if not node.running():
                return True  # stop waiting: the caller reports the exit
            if seen.get(i, 0) < wanted[i]:
                seen[i] = node.established_sessions()
        return all(seen.get(i, 0) >= wanted[i] for i in wanted)

    started = time.monotonic()
    processes.wait_until(all_up, READY_TIMEOUT, interval=0.3)
    up = sum(min(seen.get(i, 0), wanted[i]) for i in wanted) // 2
    short = [f"{topo.name(i)} {seen.get(i, 0)}/{wanted[i]}" for i in wanted if seen.get(i, 0) < wanted[i]]
    detail = f"{up}/{len(topo.edges)} links with an established session after {time.monotonic() - started:.1f} s"
    return Check("links up", not short, detail + (f" (missing: {', '.join(short)})" if short else ""))


def _reports_routes(node: daemons.DaemonProcess) -> bool:
    """Whether the daemon's admin reply has a route table or a spanning tree (multi-hop routing)."""
    try:
        state = node.inspect(timeout=10.0)
    except processes.HarnessError:
        return False
    return any(state.get(section) is not None for section in ("routes", "tree"))


# --- pairs and the transfer, shown live --------------------------------------------------------------------
class Board:
    """The live table's rows, written by the probing threads, drawn by rich a few times a second."""

    def __init__(self, topo: topology.Topology) -> None:
        self.topo = topo
        self.lock = threading.Lock()
        self.rows: dict[str, dict[str, str]] = {}
        for a, b in topo.pairs():
            self.set(self._pair(a, b), status="waiting")

    def _pair(self, a: int, b: int) -> str:
        return f"{self.topo.name(a)} -> {self.topo.name(b)}"

    def set(self, key: str, **cells: str) -> None:
        with self.lock:
            self.rows.setdefault(key, {}).update(cells)

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"AxiomNet demo: {self.topo.nodes} nodes, {self.topo.kind}")
        for column in ("PAIR", "HOPS", "PATH", "STATUS", "FIRST REPLY (s)", "RTT avg (ms)", "LOSS", "THROUGHPUT"):
            table.add_column(column)
        with self.lock:
            rows = [(key, dict(cells)) for key, cells in self.rows.items()]
        for key, cells in rows:
            table.add_row(key, cells.get("hops", ""), cells.get("path", ""), cells.get("status", ""),
                          cells.get("first", ""), cells.get("rtt", ""), cells.get("loss", ""), cells.get("throughput", ""))
        return table

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        from rich.console import Console
        from rich.live import Live

        console = Console()
        if not console.is_terminal:  # a log or a pipe: no animation, one final table wide enough to read
            console = Console(width=max(console.width, 110))
        with Live(get_renderable=self.table, console=console, refresh_per_second=4, redirect_stdout=False,
                  redirect_stderr=False):
            yield
        console.print()


def _probe(topo: topology.Topology, nodes: list[daemons.DaemonProcess], a: int, b: int, count: int,
           board: Board) -> Check:
    path = topo.path(a, b)
    hops = len(path) - 1
    via = ", via " + "-".join(topo.name(i) for i in path[1:-1]) if hops > 1 else ""
    key = board._pair(a, b)
    board.set(key, hops=str(hops), path="-".join(topo.name(i) for i in path), status="first reply?")
    name = f"ping {key}"
    ready = daemons.wait_overlay_reachable(nodes[a], nodes[b], timeout=PAIR_TIMEOUT)
    if ready is None:
        board.set(key, status="FAIL: no reply")
        return Check(name, False, f"({hops} hop{'s' if hops > 1 else ''}{via}) no reply from "
                                  f"{nodes[b].address} within {PAIR_TIMEOUT:.0f} s")
    board.set(key, status="pinging", first=f"{ready:.2f}")
    result = traffic.ping(nodes[a].ns, nodes[b].address, count=count, interval=PING_INTERVAL)
    passed = result.sent > 0 and result.received == result.sent
    board.set(key, status="ok" if passed else "FAIL", loss=f"{result.loss_percent:.0f}%",
              rtt=f"{result.rtt_avg:.2f}" if result.rtt_avg is not None else "-")
    return Check(name, passed, f"({hops} hop{'s' if hops > 1 else ''}{via}, first reply after {ready:.1f} s) "
                               f"{_ping_detail(result)}")


def _ping_pairs(topo: topology.Topology, nodes: list[daemons.DaemonProcess], count: int, board: Board) -> list[Check]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL_PROBES, thread_name_prefix="demo-ping")
    try:
        futures = [pool.submit(_probe, topo, nodes, a, b, count, board) for a, b in topo.pairs()]
        while not all(f.done() for f in futures):  # wait in short steps: Ctrl-C must get through
            concurrent.futures.wait(futures, timeout=0.2)
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _transfer(topo: topology.Topology, nodes: list[daemons.DaemonProcess], src: int, dst: int, size_mb: int,
              board: Board, pair_checks: list[Check]) -> Check:
    key = f"{topo.name(src)} -> {topo.name(dst)} TCP {size_mb} MB"
    path = topo.path(src, dst)
    board.set(key, hops=str(len(path) - 1), path="-".join(topo.name(i) for i in path), status="waiting")
    name = f"TCP {size_mb} MB {topo.name(src)} -> {topo.name(dst)}"
    ping_check = pair_checks[topo.pairs().index((min(src, dst), max(src, dst)))]
    if not ping_check.passed:
        board.set(key, status="FAIL: path down")
        return Check(name, False, "not attempted: the ping across this path failed")
    board.set(key, status="sending")
    size = size_mb * 1_000_000
    transfer = traffic.tcp_transfer(nodes[dst].ns, nodes[src].ns, nodes[dst].address, size, port=TRANSFER_PORT,
                                    timeout=max(30.0, size_mb * 10.0))
    if transfer.ok:
        board.set(key, status="ok, sha256 equal", throughput=f"{transfer.mbit_per_s:.1f} Mbit/s")
        detail = (f"{size_mb} MB over {len(path) - 1} hop(s), sha256 "
                  f"{transfer.sent_sha256[:16] if transfer.sent_sha256 else '?'}... equal on both ends, "
                  f"{transfer.seconds:.2f} s, {transfer.mbit_per_s:.1f} Mbit/s")
    else:
        board.set(key, status="FAIL")
        detail = transfer.error or "failed"
    return Check(name, transfer.ok, detail)


# --- helpers -----------------------------------------------------------------------------------------------
MAP_FILE = "axiomnet-demo-map.svg"


def _write_network_map(nodes: list[daemons.DaemonProcess], notes: list[str]) -> None:
    """Every node's view merged into one map (ops/netmap.py), written to ./axiomnet-demo-map.svg; its path printed."""
    from axiomnet.ops import netmap

    try:
        svg = netmap.render_svg(netmap.merge_views([node.inspect(timeout=10.0) for node in nodes],
                                                   title=f"AxiomNet demo: {len(nodes)} nodes, every node's view merged"))
        _say(f"network map: {netmap.write_file(Path.cwd() / MAP_FILE, svg)}")
    except (processes.HarnessError, netmap.MapError, OSError) as exc:
        notes.append(f"no network map: {exc}")
def _keep_logs(workdir: str) -> None:
    """Copy the daemons' logs out of the work directory (about to be deleted) and say where they are."""
    logs = sorted(Path(workdir).glob("*.log"))
    if not logs:
        return
    keep = Path(tempfile.mkdtemp(prefix="axiomnet-demo-logs-"))
    for log_file in logs:
        shutil.copy2(log_file, keep / log_file.name)
    _say(f"daemon logs kept in {keep}")


def _ping_detail(result: traffic.PingResult) -> str:
    text = f"{result.received}/{result.sent} replies, {result.loss_percent:.0f}% loss"
    if result.rtt_avg is not None:
        text += f", rtt min/avg/max {result.rtt_min:.2f}/{result.rtt_avg:.2f}/{result.rtt_max:.2f} ms"
    return text


def _link_mtu(node: daemons.DaemonProcess) -> str:
    proc = node.ns.exec(["cat", f"/sys/class/net/{node.tun}/mtu"], timeout=5.0)
    return proc.stdout.strip() if proc.returncode == 0 else "?"


def _run_nat_steps(lab: namespaces.NetnsLab, settings: Settings, workdir: Path, checks: list[Check],
                   notes: list[str]) -> None:
    """NAT traversal (docs/PROTOCOL.md §8.2): A and B, each behind its own masquerading router, peer only with P;
    they talk through P at once, punch a direct session, move their traffic to it, and keep talking without P."""
    from axiomnet.lab import punchlab

    reason = nat.nat_unavailable_reason()
    if reason is not None:
        checks.append(Check("NAT lab", False, reason))
        return
    _say("[1/5] A and B each behind its own NAT (nftables masquerade), both peering only with the public node P")
    pair = punchlab.build(lab, workdir)
    p, a, b = pair.p, pair.a, pair.b
    p.name, a.name, b.name = "node-P", "node-A", "node-B"
    for node in (p, a, b):
        _say(f"      {node.name}  pid {node.pid}  overlay {node.address}  listen {node.listen}")
    _say("[2/5] overlay ping A -> B (through P) ...")
    took = daemons.wait_overlay_reachable(a, b, timeout=READY_TIMEOUT)
    checks.append(Check("A -> B through P", took is not None, "no reply" if took is None else f"in {took:.1f} s"))
    if took is None:
        _stop_daemons([p, a, b], checks, show_logs=True)
        return
    _say("[3/5] waiting for the endpoint exchange and the punched direct session ...")
    start = time.monotonic()
    punched = processes.wait_until(lambda: punchlab.punch_state(a, b).get("state") == "direct"
                                   and punchlab.punch_state(b, a).get("state") == "direct", 15.0, interval=0.3)
    state = punchlab.punch_state(a, b)
    checks.append(Check("direct session A-B", punched,
                        f"in {time.monotonic() - start:.1f} s: {state.get('reason')}" if punched else str(state)))
    _say(f"[4/5] {settings.size_mb} MB over TCP A -> B; P's relayed-packet counter before and after:")
    before = punchlab.relayed_by(p)
    result = traffic.tcp_transfer(b.ns, a.ns, b.address, settings.size_mb * 1_000_000, timeout=120.0)
    grew = punchlab.relayed_by(p) - before
    rate = f"{result.mbit_per_s:.0f} Mbit/s" if result.mbit_per_s is not None else "-"
    checks.append(Check("transfer off P", result.ok and grew <= 10,
                        f"{rate}; P relayed {grew} packets meanwhile" if result.ok else str(result.error)))
    _say("[5/5] stopping P; A and B keep talking over their own session:")
    p.stop()
    alive = traffic.ping(a.ns, b.address, count=5, interval=0.2, timeout=10.0)
    checks.append(Check("A -> B without P", alive.ok, f"{alive.loss_percent:.0f}% loss"))
    _say(f"--- node {a.name} ---")
    _say(a.inspect_text().rstrip())
    _stop_daemons([a, b], checks)


def _stop_daemons(nodes: list[daemons.DaemonProcess], checks: list[Check], *, show_logs: bool = False) -> None:
    """SIGTERM each daemon; a check per daemon (exit 0 within the deadline, TUN gone); logs of failures."""
    _say(f"stopping {len(nodes)} daemons with SIGTERM ...")
    for node in nodes:
        was_running = node.running()
        start = time.monotonic()
        code = node.stop(timeout=SHUTDOWN_DEADLINE)
        elapsed = time.monotonic() - start
        tun_gone = node.tun is None or not node.ns.link_exists(node.tun)
        if not was_running:
            passed, detail = False, f"had already exited with code {code}"
        else:
            passed = code == 0 and not node.killed and tun_gone
            detail = f"exit {code} in {elapsed:.2f} s" if not node.killed else f"killed after {SHUTDOWN_DEADLINE:.0f} s"
            detail += ", TUN removed" if tun_gone else f", TUN {node.tun} still present"
        checks.append(Check(f"daemon {node.name} stopped", passed, detail))
        if show_logs or not passed:
            _say(f"--- last lines of {node.name}'s log ({node.log_path}) ---\n{node.log_tail(20)}")
