"""`axiomnet demo`: two real daemons in two network namespaces, proven to carry traffic, then torn down.

Steps: namespaces joined by a veth (198.18.0.1 <-> 198.18.0.2), one identity and one daemon per namespace,
each peering with the other over UDP; wait until the overlay answers a ping; ping for a few seconds; send a
few MB of random bytes over TCP across the overlay and compare SHA-256 on both ends; print each node's
``axiomnet-inspect`` tables; stop both daemons with SIGTERM (exit 0 within 5 s, TUN removed); remove everything.
"""

from __future__ import annotations

import argparse
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
from typing import Iterator

from axiomnet.lab import daemons, netns, traffic
from axiomnet.constants import DEFAULT_MTU, DEFAULT_UDP_PORT, SHUTDOWN_DEADLINE

NOT_ROOT_MESSAGE = "axiomnet demo needs root for network namespaces and TUN devices; run it as root or use sudo"
READY_TIMEOUT = 15.0  # how long the overlay gets to answer its first ping
PING_INTERVAL = 0.2
TRANSFER_PORT = 5301


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


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception (main thread only) so cleanup runs as for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _missing_tools() -> list[str]:
    needed = {"ip": "iproute2", "ping": "iputils-ping", "ss": "iproute2"}
    return [f"`{tool}` is missing: install the {package} package (apt-get install {package})"
            for tool, package in needed.items() if shutil.which(tool) is None]


def _say(message: str) -> None:
    print(message, flush=True)


def _arg(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name, None)
    return default if value is None else value


def run_demo(args: argparse.Namespace) -> int:
    """Run the two-node demo; 0 if every check passed, 1 if one failed, 2 if it cannot run here, 130 if interrupted.

    ``args``: ``duration`` (s of pinging, default 3), ``size_mb`` (MB sent over TCP, default 5), ``keep``
    (leave the work directory with identities and logs, default False); missing attributes take defaults.
    """
    duration = float(_arg(args, "duration", 3.0))
    size_mb = int(_arg(args, "size_mb", 5))
    if os.geteuid() != 0:
        print(NOT_ROOT_MESSAGE, file=sys.stderr)
        return 2
    missing = _missing_tools()
    if missing:
        for line in missing:
            print(f"axiomnet demo: {line}", file=sys.stderr)
        return 2
    if duration <= 0 or size_mb <= 0 or duration > 600 or size_mb > 1024:
        print("axiomnet demo: --duration must be in (0, 600] s and --size-mb in [1, 1024]", file=sys.stderr)
        return 2

    checks: list[Check] = []
    keep = bool(getattr(args, "keep", False))
    workdir = tempfile.mkdtemp(prefix="axiomnet-demo-")
    try:
        with _sigterm_raises():
            try:
                with netns.NetnsPair() as pair:
                    _run_steps(pair, workdir, duration, size_mb, checks)
            finally:
                if keep:
                    _say(f"\nkept (--keep): identities, admin sockets and logs in {workdir}")
                else:
                    interrupted = isinstance(sys.exc_info()[1], (KeyboardInterrupt, _Terminated))
                    if not interrupted and (not checks or not all(c.passed for c in checks)):
                        _keep_logs(workdir)
                    shutil.rmtree(workdir, ignore_errors=True)
    except (KeyboardInterrupt, _Terminated):
        _say("\ninterrupted: the demo's namespaces and processes have been removed")
        return 130
    except netns.HarnessError as exc:
        checks.append(Check("setup/teardown", False, str(exc)))
    _say("\n== summary ==")
    for check in checks:
        _say(check.line())
    passed = bool(checks) and all(c.passed for c in checks)
    _say(f"RESULT: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def _run_steps(pair: netns.NetnsPair, workdir: str, duration: float, size_mb: int, checks: list[Check]) -> None:
    _say(f"[1/6] namespaces {pair.a.name} ({pair.ip_a}) and {pair.b.name} ({pair.ip_b}) joined by veth "
         f"{pair.link.ifname_a}/{pair.link.ifname_b}")
    node_a, node_b = daemons.start_daemon_pair(pair, workdir, port=DEFAULT_UDP_PORT)
    _say(f"[2/6] daemons started: A pid {node_a.pid} overlay {node_a.address} tun {node_a.tun}")
    _say(f"                       B pid {node_b.pid} overlay {node_b.address} tun {node_b.tun}")
    _say(f"      logs: {node_a.log_path} {node_b.log_path} (kept only on failure)")

    _say(f"[3/6] waiting up to {READY_TIMEOUT:.0f} s for the overlay to answer a ping ...")
    ready_after = daemons.wait_overlay_reachable(node_a, node_b, timeout=READY_TIMEOUT)
    if ready_after is None:
        exited = [f"daemon {n.name} exited with code {n.returncode}" for n in (node_a, node_b) if not n.running()]
        if exited:
            detail = "; ".join(exited) + " before the overlay answered"
        else:
            detail = f"no reply from {node_b.address} within {READY_TIMEOUT:.0f} s"
        checks.append(Check("overlay reachable", False, detail))
        _stop_daemons((node_a, node_b), checks, show_logs=True)
        return
    checks.append(Check("overlay reachable", True, f"first reply after {ready_after:.1f} s"))

    count = max(3, round(duration / PING_INTERVAL))
    _say(f"[4/6] ping -6 {node_b.address} from A: {count} pings, {PING_INTERVAL} s apart ...")
    result = traffic.ping(pair.a, node_b.address, count=count, interval=PING_INTERVAL)
    back = traffic.ping(pair.b, node_a.address, count=3, interval=PING_INTERVAL)
    checks.append(Check("ping A -> B", result.sent > 0 and result.received == result.sent, _ping_detail(result)))
    checks.append(Check("ping B -> A", back.sent > 0 and back.received == back.sent, _ping_detail(back)))

    size = size_mb * 1_000_000
    timeout = max(30.0, size_mb * 10.0)
    _say(f"[5/6] TCP transfer of {size_mb} MB of random bytes A -> [{node_b.address}]:{TRANSFER_PORT} ...")
    transfer = traffic.tcp_transfer(pair.b, pair.a, node_b.address, size, port=TRANSFER_PORT, timeout=timeout)
    if transfer.ok:
        detail = (f"{size_mb} MB, sha256 {transfer.sent_sha256[:16] if transfer.sent_sha256 else '?'}... equal on both "
                  f"ends, {transfer.seconds:.2f} s, {transfer.mbit_per_s:.1f} Mbit/s")
    else:
        detail = transfer.error or "failed"
    checks.append(Check(f"TCP {size_mb} MB A -> B", transfer.ok, detail))

    _say("[6/6] node state (axiomnet-inspect):")
    for node in (node_a, node_b):
        _say(f"--- node {node.name} ({node.ns.name}) ---")
        _say(node.inspect_text().rstrip())
        _say(f"    (TUN {node.tun}: mtu {_link_mtu(node)}; expected {DEFAULT_MTU})")
    _stop_daemons((node_a, node_b), checks)


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


def _stop_daemons(nodes: tuple[daemons.DaemonProcess, ...], checks: list[Check], *, show_logs: bool = False) -> None:
    """SIGTERM each daemon; a check per daemon (exit 0 within the deadline, TUN gone); logs of failures."""
    _say("stopping both daemons with SIGTERM ...")
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
