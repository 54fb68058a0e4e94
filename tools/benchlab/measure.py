"""Measurements across the lab for tools/bench.py: iperf3 TCP, first overlay ping, underlay loss, /proc figures.

Every helper runs its program inside a namespace of the lab (lab/namespaces.py), bounded in time; a measurement
that cannot be taken raises :class:`MeasureError` with the reason.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import math
import os
import re
import statistics
import subprocess
import time
from typing import Any, Callable, Sequence

from axiomnet.lab.namespaces import Namespace
from axiomnet.lab.processes import (
    HarnessError,
    process_cpu_seconds,
    process_start_time,
    terminate_processes,
    wait_until,
)
from axiomnet.lab.traffic import tcp_listening

IPERF_PORT = 5201
LOSS_TABLE = "t"  # the nftables table (family inet) that inject_udp_loss creates inside a namespace
LOSS_CHAIN = "c"


class MeasureError(HarnessError):
    """A measurement could not be taken; the message says which and why."""


def iperf3_tcp(server_ns: Namespace, client_ns: Namespace, addr: str, seconds: float, *,
               port: int = IPERF_PORT, during: Callable[[], None] | None = None) -> dict[str, Any]:
    """One single-stream TCP iperf3 run from ``client_ns`` to ``addr`` (server `iperf3 -s -1` in ``server_ns``).

    Returns receiver and sender Mbit/s, retransmits and the run's wall seconds.
    """
    server = server_ns.popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: tcp_listening(server_ns, port), timeout=10.0, interval=0.05):
            raise MeasureError("iperf3 server did not start listening within 10 s")
        args = ["iperf3", "-c", addr, "-p", str(port), "-t", f"{seconds:g}", "--json", "--connect-timeout", "5000"]
        start = time.monotonic()
        try:
            proc = client_ns.exec(args, timeout=seconds + 30.0)
        except subprocess.TimeoutExpired as exc:
            raise MeasureError(f"iperf3 client to {addr} did not finish within {seconds + 30:.0f} s") from exc
        wall = time.monotonic() - start
        try:
            report = json.loads(proc.stdout)
        except ValueError as exc:
            raise MeasureError(f"iperf3 printed no JSON (exit {proc.returncode}): {proc.stderr.strip()[-300:]}") from exc
        if "error" in report:
            raise MeasureError(f"iperf3 to {addr}: {report['error']}")
        end = report["end"]
        return {
            "mbps": end["sum_received"]["bits_per_second"] / 1e6,
            "sender_mbps": end["sum_sent"]["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"].get("retransmits"),
            "wall_s": wall,
        }
    finally:
        terminate_processes([server], grace=3.0)


def iperf3_median(server_ns: Namespace, client_ns: Namespace, addr: str, seconds: float, runs: int,
                  pids: Sequence[int] = ()) -> dict[str, Any]:
    """``runs`` iperf3 runs; the median Mbit/s, every run's figure, and the CPU seconds ``pids`` spent
    over all runs together with the Mbit moved per CPU-second."""
    results = []
    cpu_before = sum(process_cpu_seconds(pid) for pid in pids)
    for _ in range(runs):
        results.append(iperf3_tcp(server_ns, client_ns, addr, seconds))
    cpu = sum(process_cpu_seconds(pid) for pid in pids) - cpu_before
    mbit_moved = sum(r["mbps"] * r["wall_s"] for r in results)
    wall = sum(r["wall_s"] for r in results)
    out: dict[str, Any] = {
        "mbps": statistics.median(r["mbps"] for r in results),
        "runs_mbps": [round(r["mbps"], 1) for r in results],
        "retransmits": sum(r["retransmits"] or 0 for r in results),
        "wall_s": wall,
    }
    if pids:
        out["cpu_s"] = cpu
        out["cpu_s_per_10s"] = 10.0 * cpu / wall if wall else None
        out["mbit_per_cpu_s"] = mbit_moved / cpu if cpu > 0 else None
    return out


def ping_once_until(ns: Namespace, addr: str, timeout: float, *, interval: float = 0.05) -> float | None:
    """Ping ``addr`` from ``ns`` every ``interval`` s until one reply comes; the CLOCK_BOOTTIME second of that
    reply (comparable with :func:`process_start_boottime`), or None after ``timeout``."""
    family = "-6" if ipaddress.ip_address(addr).version == 6 else "-4"
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        # -c 1 with a deadline: ping sends every `interval` and exits at the first reply.
        wait = max(1, int(min(remaining, 5.0)))
        try:
            proc = ns.exec(["ping", family, "-n", "-q", "-c", "1", "-i", f"{interval:g}", "-w", str(wait), addr],
                           timeout=wait + 5.0)
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode == 0:
            return time.clock_gettime(time.CLOCK_BOOTTIME)
        if proc.returncode != 1:  # 2: an error such as "network unreachable" (the TUN is not up yet)
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def process_start_boottime(pid: int) -> float:
    """When ``pid`` started, in CLOCK_BOOTTIME seconds (its start in clock ticks since boot; 10 ms resolution)."""
    ticks = process_start_time(pid)
    if ticks is None:
        raise MeasureError(f"process {pid} is gone")
    return ticks / os.sysconf("SC_CLK_TCK")


def inject_udp_loss(ns: Namespace, percent: int) -> None:
    """Drop ``percent``% of the UDP datagrams entering ``ns`` (nftables ``numgen random``), until
    :func:`remove_udp_loss`."""
    if not 0 < percent < 100:
        raise ValueError("percent must be 1..99")
    rules = (
        f"add table inet {LOSS_TABLE}\n"
        f"add chain inet {LOSS_TABLE} {LOSS_CHAIN} {{ type filter hook input priority 0 ; policy accept ; }}\n"
        f"add rule inet {LOSS_TABLE} {LOSS_CHAIN} meta l4proto udp numgen random mod 100 < {percent} drop\n"
    )
    proc = ns.exec(["nft", "-f", "-"], input=rules, timeout=10.0)
    if proc.returncode != 0:
        raise MeasureError(f"nft in {ns.name}: {proc.stderr.strip()[-300:]}")


def remove_udp_loss(ns: Namespace) -> None:
    """Remove the table :func:`inject_udp_loss` made (no error if it is not there)."""
    ns.exec(["nft", "delete", "table", "inet", LOSS_TABLE], timeout=10.0)


_PING_TIME = re.compile(r"time[=<]([0-9.]+) ms")
_PING_SENT = re.compile(r"([0-9]+) packets transmitted")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest rank (the value a fraction q of them do not exceed)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def ping_times(ns: Namespace, addr: str, count: int, interval: float) -> tuple[list[float], int]:
    """``count`` pings ``interval`` s apart from ``ns`` (root: intervals under 0.2 s); every reply's RTT in ms and
    how many were sent (ping's own count: it goes on past ``count`` while replies are missing). A reply later than
    1 s counts as lost."""
    family = "-6" if ipaddress.ip_address(addr).version == 6 else "-4"
    deadline = count * interval + 3.0
    args = ["ping", family, "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1", "-w", f"{math.ceil(deadline)}", addr]
    try:
        proc = ns.exec(args, timeout=deadline + 5.0, env={**os.environ, "LC_ALL": "C"})
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.output or ""
        out = out.decode() if isinstance(out, bytes) else out
    sent = _PING_SENT.search(out)
    return [float(t) for t in _PING_TIME.findall(out)], int(sent.group(1)) if sent else count


def rtt_under_load(server_ns: Namespace, client_ns: Namespace, addr: str, seconds: float, *,
                   interval: float = 0.01) -> dict[str, Any]:
    """Ping ``addr`` every ``interval`` s while one iperf3 TCP stream runs at full speed to it: the replies' p50 and
    p99 RTT (ms), the share of pings lost, and the stream's Mbit/s. The pings start about 0.5 s into the stream
    and end before it does."""
    count = max(20, int((seconds - 1.0) / interval))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        stream = pool.submit(iperf3_tcp, server_ns, client_ns, addr, seconds)
        time.sleep(0.5)
        times, sent = ping_times(client_ns, addr, count, interval)
        mbps = stream.result()["mbps"]
    if not times:
        raise MeasureError(f"no ping reply from {addr} during the transfer")
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "lost": max(0.0, 1.0 - len(times) / sent),
            "mbps": mbps}
