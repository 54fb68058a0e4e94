#!/usr/bin/env python3
"""Measure AxiomNet against the raw link it runs on: TCP throughput (iperf3), ping RTT, daemon CPU and memory.

Topology: two network namespaces joined by one veth (198.18.0.1/24 <-> 198.18.0.2/24). First the raw veth
is measured, then one daemon per namespace is started (UDP on the veth addresses, TUN with the overlay
address, MTU 1400) and the same measurements run between the overlay addresses. During the overlay iperf3
run the daemons' CPU time (utime + stime from /proc/PID/stat) is sampled; their memory (VmHWM, VmRSS from
/proc/PID/status) is read at the end. Everything is bounded and removed afterwards.

Run as root:  python tools/bench_overlay.py [--seconds 10] [--pings 20] [--json]
See docs/PERFORMANCE.md (results, and the method under "How performance is measured").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from axiomnet.lab import daemons, netns, traffic
from axiomnet.constants import DEFAULT_MTU, DEFAULT_UDP_PORT, SHUTDOWN_DEADLINE

IPERF_PORT = 5201
READY_TIMEOUT = 20.0  # the overlay must answer a ping within this after the daemons start


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="iperf3 duration per run (default 10, max 120)")
    parser.add_argument("--pings", type=int, default=20, help="pings per RTT measurement (default 20, max 1000)")
    parser.add_argument("--ping-interval", type=float, default=0.05, help="seconds between pings (default 0.05)")
    parser.add_argument("--log-level", default="WARNING", help="daemon log level (default WARNING)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be between 1 and 120")
    if not 1 <= args.pings <= 1000 or not 0.01 <= args.ping_interval <= 1:
        parser.error("--pings must be 1..1000 and --ping-interval 0.01..1")
    return args


def iperf3_tcp(server_ns: netns.Namespace, client_ns: netns.Namespace, addr: str, seconds: float) -> dict[str, Any]:
    """One single-stream TCP iperf3 run from client_ns to addr (server: `iperf3 -s -1` in server_ns)."""
    server = server_ns.popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL)
    try:
        if not netns.wait_until(lambda: traffic.tcp_listening(server_ns, IPERF_PORT), timeout=10.0, interval=0.05):
            raise BenchError("iperf3 server did not start listening within 10 s")
        args = ["iperf3", "-c", addr, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "--json", "--connect-timeout", "5000"]
        try:
            proc = client_ns.exec(args, timeout=seconds + 30.0)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"iperf3 client to {addr} did not finish within {seconds + 30:.0f} s") from exc
        try:
            report = json.loads(proc.stdout)
        except ValueError as exc:
            raise BenchError(f"iperf3 printed no JSON (exit {proc.returncode}): {proc.stderr.strip()[-300:]}") from exc
        if "error" in report:
            raise BenchError(f"iperf3 to {addr}: {report['error']}")
        end = report["end"]
        return {
            "receiver_mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
            "sender_mbit_s": end["sum_sent"]["bits_per_second"] / 1e6,
            "retransmits": end["sum_sent"].get("retransmits"),
            "seconds": end["sum_received"].get("seconds"),
        }
    finally:
        netns.terminate_processes([server], grace=3.0)


def ping_rtt(ns: netns.Namespace, addr: str, count: int, interval: float) -> dict[str, Any]:
    result = traffic.ping(ns, addr, count=count, interval=interval)
    return {
        "sent": result.sent,
        "received": result.received,
        "loss_percent": result.loss_percent,
        "rtt_min_ms": result.rtt_min,
        "rtt_avg_ms": result.rtt_avg,
        "rtt_max_ms": result.rtt_max,
        "rtt_mdev_ms": result.rtt_mdev,
    }


def _version(cmd: list[str]) -> str:
    try:
        proc = netns.run_bounded(cmd, timeout=5.0)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (proc.stdout or proc.stderr).splitlines()[0].strip() if (proc.stdout or proc.stderr) else "?"


def host_info() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "iperf3": _version(["iperf3", "--version"]),
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "host": host_info(),
        "settings": {"seconds": args.seconds, "pings": args.pings, "ping_interval": args.ping_interval,
                     "overlay_mtu": DEFAULT_MTU, "udp_port": DEFAULT_UDP_PORT},
    }
    with tempfile.TemporaryDirectory(prefix="axiomnet-bench-") as workdir, netns.NetnsPair() as pair:
        results["topology"] = {"namespaces": [pair.a.name, pair.b.name], "veth": [pair.ip_a, pair.ip_b]}
        _progress(f"raw veth {pair.ip_a} -> {pair.ip_b}: ping, iperf3 {args.seconds:g} s")
        results["raw"] = {
            "ping": ping_rtt(pair.a, pair.ip_b, args.pings, args.ping_interval),
            "iperf3": iperf3_tcp(pair.b, pair.a, pair.ip_b, args.seconds),
        }
        node_a, node_b = daemons.start_daemon_pair(pair, workdir, log_level=args.log_level)
        ready = daemons.wait_overlay_reachable(node_a, node_b, timeout=READY_TIMEOUT)
        if ready is None:
            tails = "\n".join(f"--- {n.name} (exit {n.returncode}) ---\n{n.log_tail(15)}" for n in (node_a, node_b))
            raise BenchError(f"the overlay did not answer a ping within {READY_TIMEOUT:.0f} s\n{tails}")
        results["topology"]["overlay"] = [node_a.address, node_b.address]
        results["overlay_ready_s"] = ready
        _progress(f"overlay {node_a.address} -> {node_b.address}: ping, iperf3 {args.seconds:g} s")
        overlay_ping = ping_rtt(pair.a, node_b.address, args.pings, args.ping_interval)
        cpu_before = {n.name: n.cpu_seconds() for n in (node_a, node_b)}
        wall_start = time.monotonic()
        overlay_iperf = iperf3_tcp(pair.b, pair.a, node_b.address, args.seconds)
        wall = time.monotonic() - wall_start
        cpu = {n.name: n.cpu_seconds() - cpu_before[n.name] for n in (node_a, node_b)}
        results["overlay"] = {"ping": overlay_ping, "iperf3": overlay_iperf}
        memory = {n.name: n.memory_kib() for n in (node_a, node_b)}
        results["daemons"] = {
            n.name: {
                "pid": n.pid,
                "cpu_seconds_during_iperf": cpu[n.name],
                "cpu_percent_during_iperf": 100.0 * cpu[n.name] / wall if wall > 0 else None,
                "vm_hwm_kib": memory[n.name].get("VmHWM"),
                "vm_rss_kib": memory[n.name].get("VmRSS"),
            }
            for n in (node_a, node_b)
        }
        results["overlay_iperf_wall_s"] = wall
        stops = {}
        for node in (node_a, node_b):
            code = node.stop(timeout=SHUTDOWN_DEADLINE)
            stops[node.name] = {"exit_code": code, "seconds": node.stop_seconds, "killed": node.killed}
        results["shutdown"] = stops
    return results


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    raw, ov = r["raw"], r["overlay"]
    rows = [
        ("TCP throughput, 1 stream (Mbit/s, receiver)", _fmt(raw["iperf3"]["receiver_mbit_s"]), _fmt(ov["iperf3"]["receiver_mbit_s"])),
        ("TCP retransmits", _fmt(raw["iperf3"]["retransmits"], "d"), _fmt(ov["iperf3"]["retransmits"], "d")),
        ("ping RTT avg (ms)", _fmt(raw["ping"]["rtt_avg_ms"], ".3f"), _fmt(ov["ping"]["rtt_avg_ms"], ".3f")),
        ("ping RTT min / max (ms)",
         f"{_fmt(raw['ping']['rtt_min_ms'], '.3f')} / {_fmt(raw['ping']['rtt_max_ms'], '.3f')}",
         f"{_fmt(ov['ping']['rtt_min_ms'], '.3f')} / {_fmt(ov['ping']['rtt_max_ms'], '.3f')}"),
        ("ping loss (%)", _fmt(raw["ping"]["loss_percent"], ".0f"), _fmt(ov["ping"]["loss_percent"], ".0f")),
    ]
    for name, d in r["daemons"].items():
        rows.append((f"{name} CPU s during overlay iperf3 (% of one core)", "-",
                     f"{_fmt(d['cpu_seconds_during_iperf'], '.2f')} ({_fmt(d['cpu_percent_during_iperf'], '.0f')}%)"))
        hwm = d["vm_hwm_kib"] / 1024 if d["vm_hwm_kib"] is not None else None
        rss = d["vm_rss_kib"] / 1024 if d["vm_rss_kib"] is not None else None
        rows.append((f"{name} memory peak / now (MiB, VmHWM / VmRSS)", "-", f"{_fmt(hwm)} / {_fmt(rss)}"))
    return rows


def render_text(r: dict[str, Any]) -> str:
    rows = table_rows(r)
    width = max(len(row[0]) for row in rows)
    lines = [f"{'figure':<{width}}  {'raw veth':>14}  {'overlay':>22}"]
    lines += [f"{a:<{width}}  {b:>14}  {c:>22}" for a, b, c in rows]
    shutdown = ", ".join(f"{n}: exit {s['exit_code']} in {_fmt(s['seconds'], '.2f')} s" for n, s in r["shutdown"].items())
    lines.append(f"shutdown: {shutdown}")
    return "\n".join(lines)


def render_markdown(r: dict[str, Any]) -> str:
    h = r["host"]
    s = r["settings"]
    lines = [
        f"### Overlay vs raw veth, {r['date']}",
        "",
        f"Command: `{r['command']}`  ",
        f"Host: {h['cpu']} ({h['cpus']} CPUs), Linux {h['kernel']}, Python {h['python']}, {h['iperf3']}  ",
        f"Settings: iperf3 TCP 1 stream {s['seconds']:g} s; {s['pings']} pings every {s['ping_interval']:g} s; "
        f"overlay MTU {s['overlay_mtu']}; overlay ready {r['overlay_ready_s']:.1f} s after start",
        "",
        "| figure | raw veth | overlay |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in table_rows(r)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_overlay: needs root for network namespaces and TUN devices; run it as root or use sudo", file=sys.stderr)
        return 2
    for tool, package in (("iperf3", "iperf3"), ("ping", "iputils-ping"), ("ip", "iproute2"), ("ss", "iproute2")):
        if shutil.which(tool) is None:
            print(f"bench_overlay: `{tool}` is missing: install the {package} package (apt-get install {package})",
                  file=sys.stderr)
            return 2

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        results = run_bench(args)
    except KeyboardInterrupt:
        print("bench_overlay: interrupted; everything it created has been removed", file=sys.stderr)
        return 130
    except (BenchError, netns.HarnessError) as exc:
        print(f"bench_overlay: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render_text(results))
        print("\nMarkdown for docs/PERFORMANCE.md:\n")
        print(render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
