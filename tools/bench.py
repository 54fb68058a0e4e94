#!/usr/bin/env python3
"""AxiomNet side by side with wireguard-go, Nebula and Yggdrasil, and against the raw veth, in one run.

Two network namespaces joined by a veth; in each, one daemon of each overlay in turn (same TUN MTU 1420
where it applies): iperf3 TCP single stream (median of --runs runs of --seconds), ping RTT, the daemons' CPU
seconds (/proc) and Mbit per CPU-second, their RSS, and the first overlay ping after the later daemon starts,
in both start orders. Then AxiomNet alone: over a relay (3 nodes in a line), at TUN MTU 1280 / 1420 / 9000 /
its default, with offloads off, with 1% underlay loss (nftables; wireguard-go too); a node idle with 10 peers
on loopback (and a Yggdrasil node the same way); a daemon holding --sessions sessions; and micro-benchmarks of
the core (tools/bench_micro.py). Prints a table with ratios (AxiomNet / each peer) and writes it, with the
date and the command, into the marked section of docs/PERFORMANCE.md (not with --smoke or --no-doc).

Run as root:  python tools/bench.py [--install] [--json] [--smoke]
Exit: 0 measured; 1 a measurement failed (its figures say why); 2 cannot run here; 130 interrupted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
# axiomnet is the installed package (pip install -e .); tools/ (bench_micro, benchlab) sits beside this file.

import bench_micro  # noqa: E402  (tools/, beside this file)

from axiomnet.constants import DEFAULT_MTU  # noqa: E402
from benchlab.session_holder import holder_key  # noqa: E402
from axiomnet.lab import daemons, namespaces, processes, traffic# noqa: E402
from benchlab import measure, peers  # noqa: E402
DOC = ROOT / "docs" / "PERFORMANCE.md"
DOC_BEGIN = "<!-- tools/bench.py: begin (this section is replaced on each full run) -->"
DOC_END = "<!-- tools/bench.py: end -->"
NA = "not available: "

PEERS = ("wireguard_go", "nebula", "yggdrasil", "yggdrasil_default")  # columns AxiomNet is compared with
COLUMNS = ("veth", "axiomnet", *PEERS)
MTU_SWEEP = (1280, 1420, 9000, DEFAULT_MTU)
IDLE_PEERS = 10
LOSS_PERCENT = 1
BASE_PACKAGES = ("iproute2", "iputils-ping", "iperf3")
NEXT_HOP_SIZES = bench_micro.NEXT_HOP_NEIGHBOURS
# The seal step per datagram against per segment (a TCP super-packet, Yggdrasil's 64 KB unit): issue 19's moonshot.
MICRO_SEGMENT_KEYS = [f"micro_seal_{size}_{kind}" for size in bench_micro.SEGMENT_SIZES
                      for kind in ("datagrams_gbps_per_core", "unit_gbps_per_core", "unit_over_datagrams")]
# What --only can select: the overlays of the side-by-side table, then AxiomNet's own figures.
SECTIONS = ("veth", "axiomnet", *PEERS, "loss", "mtu", "no_offload", "relay", "fanin", "idle", "sessions", "micro",
            "first_packet")
NOT_SELECTED = "not selected in this run (--only)"


class Settings:
    """Durations and counts of one run (full or smoke)."""

    def __init__(self, args: argparse.Namespace) -> None:
        smoke = args.smoke
        self.smoke = smoke
        self.seconds = 1.0 if smoke else args.seconds
        self.runs = 1 if smoke else args.runs
        self.pings = 3 if smoke else args.pings
        self.ping_interval = 0.05
        self.start_gap = 0.3 if smoke else 3.0  # between the first daemon being up and the later one's start
        self.first_ping_timeout = 15.0 if smoke else 20.0
        self.relay_timeout = 4.0 if smoke else 10.0
        self.idle_settle = 1.0 if smoke else 5.0
        self.idle_seconds = 1.0 if smoke else args.idle_seconds
        self.hub_peers = min(args.hub_peers, 12) if smoke else args.hub_peers  # 0: no hub figure
        self.sessions = 50 if smoke else args.sessions
        self.only: frozenset[str] = frozenset(args.only or SECTIONS)

    def wants(self, section: str) -> bool:
        """True if ``section`` is among those this run measures (--only; all by default)."""
        return section in self.only

    def describe(self) -> dict[str, Any]:
        return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in vars(self).items()}


class Skipped(Exception):
    """Raised inside Figures.section when --only leaves the section out: its figures say so."""


# --- figures -------------------------------------------------------------------------------------------------
class Figures:
    """Flat figure keys -> a number or "not available: reason"; and the failures of this run."""

    def __init__(self) -> None:
        self.values: dict[str, float | int | str] = {}
        self.failures: list[str] = []

    def set(self, key: str, value: float | int | None, reason: str = "no value") -> None:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            self.values[key] = NA + reason
        else:
            self.values[key] = round(value, 4) if isinstance(value, float) else value

    def unavailable(self, keys: Sequence[str], reason: str) -> None:
        for key in keys:
            self.values.setdefault(key, NA + reason)

    def num(self, key: str) -> float | None:
        value = self.values.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    @contextlib.contextmanager
    def section(self, name: str, keys: Sequence[str]) -> Iterator[None]:
        """Run a measurement; if it fails, its keys not yet set say why (and the run exits 1)."""
        try:
            yield
        except Skipped:
            self.unavailable(keys, NOT_SELECTED)
        except (processes.HarnessError, subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
            text = str(exc).strip().splitlines()
            reason = f"{name} failed: {text[0] if text else type(exc).__name__}"
            self.failures.append(f"{reason}\n" + "\n".join(text[1:]))
            _progress(reason)
            self.unavailable(keys, reason)


def overlay_keys(prefix: str, *, first_ping: bool = True, loss: bool = False) -> list[str]:
    keys = [f"{prefix}_{k}" for k in ("mbps", "rtt_min_ms", "rtt_avg_ms", "rtt_p99_loaded_ms", "cpu_s_per_10s",
                                      "mbit_per_cpu_s", "rss_mib", "mtu")]
    if first_ping:
        keys += [f"{prefix}_first_ping_ab_s", f"{prefix}_first_ping_ba_s"]
    if loss:
        keys.append(f"{prefix}_loss{LOSS_PERCENT}_mbps")
    return keys


def all_keys() -> list[str]:
    """Every figure key a run reports (a number or "not available: reason")."""
    keys = ["veth_mbps", "veth_rtt_min_ms", "veth_rtt_avg_ms"]
    keys += overlay_keys("axiomnet", loss=True)
    keys += overlay_keys("wireguard_go", loss=True)
    keys += overlay_keys("nebula") + overlay_keys("yggdrasil") + overlay_keys("yggdrasil_default", first_ping=False)
    keys += relay_keys() + fanin_keys()
    keys += [f"axiomnet_mtu{m}_mbps" for m in MTU_SWEEP[:-1]] + ["axiomnet_mtu_default_mbps"]
    keys += ["axiomnet_no_offload_mbps"]
    for who in ("axiomnet", "yggdrasil"):
        keys += [f"{who}_idle{IDLE_PEERS}_cpu_percent", f"{who}_idle{IDLE_PEERS}_rss_mib", f"{who}_idle{IDLE_PEERS}_threads"]
    keys += HUB_KEYS
    keys += ["axiomnet_daemon_sessions", "axiomnet_daemon_rss_kib_per_session", "axiomnet_daemon_sessions_cpu_percent"]
    keys += ["micro_encrypt_send_us", "micro_receive_decrypt_us", "micro_handshakes_per_s_core",
             "micro_handshakes_per_s_responder", "micro_session_kib_tracemalloc"]
    keys += MICRO_SEGMENT_KEYS
    keys += [f"micro_next_hop_{n}_us" for n in NEXT_HOP_SIZES]
    keys += FIRST_PACKET_KEYS
    return keys


# --- the first packet over 5 relays (issue 15 item 8; docs/ROUTING.md §4.2) ------------------------------------
FIRST_PACKET_RELAYS = 5
FIRST_PACKET_KEYS = ["axiomnet_first_packet_5hops_s", "axiomnet_first_packet_5hops_max_s"]
_ICMP_SEQ = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")


def measure_first_packet(workdir: Path, s: Settings, fig: Figures) -> None:
    """A line of FIRST_PACKET_RELAYS + 2 daemons on a quiet host, the tree settled; after the first round the last
    node restarts under a new identity each round (a new address: no node has a session, a cached route or a
    lookup for it); once the tree has it, the first node pings it every 50 ms until a reply: the time from the first echo request to
    the first reply (lookup both ways, the end-to-end handshake, the packet and its answer). Median and max."""
    with fig.section("first packet", FIRST_PACKET_KEYS), namespaces.NetnsLab() as lab:
        if not s.wants("first_packet"):
            raise Skipped
        count = FIRST_PACKET_RELAYS + 2
        spaces = [lab.add_namespace(f"f{i}") for i in range(count)]
        links = [lab.connect(spaces[i], spaces[i + 1], ipv4_subnet=f"198.18.{i}.0/24",
                             ipv6_subnet=f"2001:2:0:{i}::/64") for i in range(count - 1)]
        nodes = [_start_node(ns, workdir, f"first-{ns.suffix}", [f"{links[i - 1].ipv4_a}:{AXIOMNET_PORT}"] if i else [])
                 for i, ns in enumerate(spaces)]
        _wait_links(nodes, [1] + [2] * FIRST_PACKET_RELAYS + [1], s)
        times = []
        for round_ in range(1 if s.smoke else 5):  # smoke: the path runs, one round (7 daemons cost ~20 s)
            if round_:
                nodes[-1].stop()
                name = f"first-{spaces[-1].suffix}-{round_}"  # a fresh data dir: a new identity and address
                nodes[-1] = _start_node(spaces[-1], workdir, name, [f"{links[-1].ipv4_a}:{AXIOMNET_PORT}"])
                _wait_links(nodes[-1:], [1], s)
            _settle_tree(nodes, s)
            proc = spaces[0].exec(["ping", "-6", "-n", "-c", "1", "-i", "0.05", "-w", "10", nodes[-1].address],
                                  timeout=15.0, env={**os.environ, "LC_ALL": "C"})
            got = _ICMP_SEQ.search(proc.stdout)
            if got is None:
                raise measure.MeasureError(f"no first reply over {FIRST_PACKET_RELAYS} relays within 10 s "
                                           f"(round {round_ + 1})\n{nodes[0].log_tail()}")
            times.append((int(got.group(1)) - 1) * 0.05 + float(got.group(2)) / 1000)
            _progress(f"first packet over {FIRST_PACKET_RELAYS} relays, round {round_ + 1}: {times[-1]:.3f} s")
        times.sort()
        fig.set("axiomnet_first_packet_5hops_s", times[len(times) // 2])
        fig.set("axiomnet_first_packet_5hops_max_s", times[-1])


def _settle_tree(nodes: Sequence[daemons.DaemonProcess], s: Settings) -> None:
    """Every node has coordinates under one root; then three heartbeats more, for the lookup filters to carry the
    newest node's address (a quiet host: the first packet is timed on a settled tree, not a forming one)."""
    def one_root() -> bool:
        try:
            roots = {(n.inspect().get("self") or {}).get("coords", {}).get("root") for n in nodes}
        except processes.HarnessError:
            return False
        return len(roots) == 1 and None not in roots
    if not processes.wait_until(one_root, s.first_ping_timeout, interval=0.5):
        raise measure.MeasureError(f"the line did not settle under one root within {s.first_ping_timeout:g} s")
    time.sleep(3.0)


# --- the two-node comparison ------------------------------------------------------------------------------------
def measure_overlay(ov: peers.Overlay, pair: namespaces.NetnsPair, s: Settings, fig: Figures, *, prefix: str,
                    first_ping: bool = True, loss: bool = False, veth_rtt: float | None = None) -> None:
    """Start both ends of ``ov`` (a, then b), measure, optionally under loss, stop; then again b, then a."""
    ov.prepare()
    nodes: list[peers.OverlayNode] = []
    try:
        first_ab = _start_in_order(ov, pair, s, nodes, ("a", "b"))
        if first_ping:
            fig.set(f"{prefix}_first_ping_ab_s", first_ab)
        node_a, node_b = nodes
        target = node_b.address
        rtt = traffic.ping(pair.a, target, count=s.pings, interval=s.ping_interval)
        if not rtt.ok:
            raise measure.MeasureError(f"{ov.label}: no ping reply after the first one:\n{rtt.output[-300:]}")
        fig.set(f"{prefix}_rtt_min_ms", rtt.rtt_min)
        fig.set(f"{prefix}_rtt_avg_ms", rtt.rtt_avg)
        fig.set(f"{prefix}_mtu", peers.link_mtu(pair.a, node_a.tun))
        result = measure.iperf3_median(pair.b, pair.a, target, s.seconds, s.runs, pids=node_a.pids + node_b.pids)
        _progress(f"{ov.label}: {result['mbps']:.0f} Mbit/s (runs {result['runs_mbps']})")
        fig.set(f"{prefix}_mbps", result["mbps"])
        fig.set(f"{prefix}_cpu_s_per_10s", result.get("cpu_s_per_10s"))
        fig.set(f"{prefix}_mbit_per_cpu_s", result.get("mbit_per_cpu_s"))
        fig.set(f"{prefix}_rss_mib", (node_a.rss_kib() + node_b.rss_kib()) / 1024)
        with fig.section(f"{ov.label} RTT under load", [f"{prefix}_rtt_p99_loaded_ms"]):
            loaded = measure.rtt_under_load(pair.b, pair.a, target, s.seconds)
            fig.set(f"{prefix}_rtt_p99_loaded_ms", loaded["p99_ms"])
            _progress(f"{ov.label}: RTT under a full-speed transfer p50 {loaded['p50_ms']:.2f} ms, p99 "
                      f"{loaded['p99_ms']:.2f} ms, {100 * loaded['lost']:.0f}% of pings lost, {loaded['mbps']:.0f} Mbit/s")
        if loss:
            with fig.section(f"{ov.label} with {LOSS_PERCENT}% loss", [f"{prefix}_loss{LOSS_PERCENT}_mbps"]):
                fig.set(f"{prefix}_loss{LOSS_PERCENT}_mbps", _under_loss(pair, target, s))
    finally:
        peers.stop_nodes(nodes)
    if first_ping:
        nodes = []
        try:
            fig.set(f"{prefix}_first_ping_ba_s", _start_in_order(ov, pair, s, nodes, ("b", "a")))
        finally:
            for node in nodes:
                node.stop()


def _start_in_order(ov: peers.Overlay, pair: namespaces.NetnsPair, s: Settings, nodes: list[peers.OverlayNode],
                    order: tuple[str, str]) -> float:
    """Start ``order[0]``, wait until it is up and ``start_gap`` more, start ``order[1]``; ping from a to b until
    a reply; the seconds from the later daemon's process start to that reply. ``nodes`` gets [a, b]."""
    first = ov.start(order[0])
    nodes.append(first)
    time.sleep(s.start_gap)
    later = ov.start(order[1])
    nodes.append(later)
    nodes.sort(key=lambda n: n.ns is not pair.a)
    started = measure.process_start_boottime(later.pids[0])
    replied = measure.ping_once_until(pair.a, ov.addresses["b"], s.first_ping_timeout)
    if replied is None:
        tails = "\n".join(f"--- {n.name} ---\n{n.log_tail()}" for n in nodes)
        raise measure.MeasureError(f"{ov.label}: no overlay ping reply within {s.first_ping_timeout:g} s "
                                   f"(started {order[0]} then {order[1]})\n{tails}")
    return replied - started


def _under_loss(pair: namespaces.NetnsPair, target: str, s: Settings) -> float:
    """Median Mbit/s with LOSS_PERCENT% of UDP input dropped in both namespaces."""
    try:
        for ns in (pair.a, pair.b):
            measure.inject_udp_loss(ns, LOSS_PERCENT)
        return float(measure.iperf3_median(pair.b, pair.a, target, s.seconds, s.runs)["mbps"])
    finally:
        for ns in (pair.a, pair.b):
            measure.remove_udp_loss(ns)


def offload_flag() -> str | None:
    """The daemon's flag that switches offloads off, if `axiomnet daemon --help` has one."""
    proc = processes.run_bounded([sys.executable, "-m", "axiomnet", "daemon", "--help"], timeout=processes.CLI_TIMEOUT)
    match = re.search(r"(--no-offloads?)\b", proc.stdout)
    return match.group(1) if match else None


def measure_pair(workdir: Path, s: Settings, fig: Figures, available: dict[str, str | None], meta: dict[str, Any]) -> None:
    """veth, then every overlay at MTU 1420, then AxiomNet's MTU sweep and offloads off, in one NetnsPair."""
    with namespaces.NetnsPair() as pair:
        with fig.section("raw veth", ["veth_mbps", "veth_rtt_min_ms", "veth_rtt_avg_ms"]):
            if not s.wants("veth"):
                raise Skipped
            _progress(f"raw veth {pair.ip_a} -> {pair.ip_b}")
            rtt = traffic.ping(pair.a, pair.ip_b, count=s.pings, interval=s.ping_interval)
            fig.set("veth_rtt_min_ms", rtt.rtt_min)
            fig.set("veth_rtt_avg_ms", rtt.rtt_avg)
            fig.set("veth_mbps", measure.iperf3_median(pair.b, pair.a, pair.ip_b, s.seconds, s.runs)["mbps"])
        overlays: list[tuple[str, peers.Overlay, bool]] = [
            ("axiomnet", peers.AxiomNetOverlay(pair, workdir, tag="main"), True),
            ("wireguard_go", peers.WireguardGoOverlay(pair, workdir), True),
            ("nebula", peers.NebulaOverlay(pair, workdir), True),
            ("yggdrasil", peers.YggdrasilOverlay(pair, workdir), True),
            ("yggdrasil_default", peers.YggdrasilOverlay(pair, workdir, mtu=None), False),
        ]
        for prefix, ov, first_ping in overlays:
            loss = prefix in ("axiomnet", "wireguard_go")
            keys = overlay_keys(prefix, first_ping=first_ping, loss=loss)
            reason = available.get(prefix) if s.wants(prefix) else NOT_SELECTED
            if loss and not s.wants("loss"):
                fig.unavailable([f"{prefix}_loss{LOSS_PERCENT}_mbps"], NOT_SELECTED)
                loss = False
            meta["overlays"][prefix] = {"label": LABELS[prefix], "settings": ov.settings(),
                                        "version": ov.version() if reason is None else reason}
            if reason is not None:
                fig.unavailable(keys, reason)
                continue
            if loss and available.get("nftables") is not None:
                fig.unavailable([f"{prefix}_loss{LOSS_PERCENT}_mbps"], str(available["nftables"]))
                loss = False
            _progress(f"{ov.label}: {ov.settings()}")
            with fig.section(ov.label, keys):
                measure_overlay(ov, pair, s, fig, prefix=prefix, first_ping=first_ping, loss=loss)

        for mtu in MTU_SWEEP:
            key = "axiomnet_mtu_default_mbps" if mtu == DEFAULT_MTU else f"axiomnet_mtu{mtu}_mbps"
            if not s.wants("mtu"):
                fig.unavailable([key], NOT_SELECTED)
                continue
            if mtu == peers.COMPARABLE_MTU and mtu != DEFAULT_MTU:
                fig.values[key] = fig.values.get("axiomnet_mbps", NA + "the main AxiomNet run failed")
                continue
            with fig.section(f"AxiomNet at MTU {mtu}", [key]):
                fig.set(key, _axiomnet_throughput(pair, workdir, s, mtu=mtu, tag=f"m{mtu}"))
        flag = offload_flag()
        meta["offload_flag"] = flag
        if not s.wants("no_offload"):
            fig.unavailable(["axiomnet_no_offload_mbps"], NOT_SELECTED)
        elif flag is None:
            fig.unavailable(["axiomnet_no_offload_mbps"], "`axiomnet daemon --help` has no flag to switch offloads "
                            "off (--no-offload); the data plane has no offloads yet")
        else:
            with fig.section("AxiomNet with offloads off", ["axiomnet_no_offload_mbps"]):
                fig.set("axiomnet_no_offload_mbps", _axiomnet_throughput(pair, workdir, s, mtu=peers.COMPARABLE_MTU,
                                                                         tag="nooff", extra_args=[flag]))


def _axiomnet_throughput(pair: namespaces.NetnsPair, workdir: Path, s: Settings, *, mtu: int, tag: str,
                         extra_args: Sequence[str] = ()) -> float:
    ov = peers.AxiomNetOverlay(pair, workdir, mtu=mtu, tag=tag, extra_args=extra_args)
    ov.prepare()
    nodes: list[peers.OverlayNode] = []
    try:
        _start_in_order(ov, pair, s, nodes, ("a", "b"))
        mbps = float(measure.iperf3_median(pair.b, pair.a, nodes[1].address, s.seconds, s.runs)["mbps"])
        _progress(f"AxiomNet {tag}: {mbps:.0f} Mbit/s")
        return mbps
    finally:
        peers.stop_nodes(nodes)


# --- AxiomNet through relays, and four peers sending to one --------------------------------------------------
RELAYS = (1, 2)  # relays between the two ends of a line: a - b - c, a - b - c - d
FANIN_PEERS = 4
AXIOMNET_PORT = 7443


def relay_prefix(relays: int) -> str:
    return "axiomnet_relay" if relays == 1 else f"axiomnet_relay{relays}"


def relay_keys() -> list[str]:
    return [f"{relay_prefix(n)}_{k}" for n in RELAYS for k in ("mbps", "rtt_avg_ms", "mbit_per_cpu_s")]


def fanin_keys() -> list[str]:
    p = f"axiomnet_fanin{FANIN_PEERS}"
    return (["axiomnet_fanin1_mbps", f"{p}_mbps"] + [f"{p}_peer{i + 1}_mbps" for i in range(FANIN_PEERS)]
            + [f"{p}_spread"])


def _start_node(ns: namespaces.Namespace, workdir: Path, name: str, peers_of: Sequence[str]) -> daemons.DaemonProcess:
    return daemons.start_daemon(ns, name=name, listen=f"0.0.0.0:{AXIOMNET_PORT}", peers=list(peers_of),
                                data_dir=workdir / name, admin_socket=workdir / f"{name}.sock", tun=ns.tun_name,
                                log_level="WARNING")


def _wait_links(nodes: Sequence[daemons.DaemonProcess], wanted: Sequence[int], s: Settings) -> None:
    for node, n in zip(nodes, wanted):
        if not processes.wait_until(lambda: established(node) >= n, s.first_ping_timeout, interval=0.3):
            raise measure.MeasureError(f"{node.name} has {established(node)} of {n} links up after "
                                       f"{s.first_ping_timeout:g} s\n{node.log_tail()}")


def measure_relay(workdir: Path, s: Settings, fig: Figures, relays: int) -> None:
    """``relays`` + 2 nodes in a line over veths, each peering with its neighbours only: the overlay from the first
    to the last is forwarded by every node between them (end-to-end encryption on)."""
    prefix = relay_prefix(relays)
    keys = [k for k in relay_keys() if k.startswith(prefix + "_")]
    with fig.section(f"AxiomNet over {relays} relay(s)", keys), namespaces.NetnsLab() as lab:
        if not s.wants("relay"):
            raise Skipped
        spaces = [lab.add_namespace(chr(ord("a") + i)) for i in range(relays + 2)]
        links = [lab.connect(spaces[i], spaces[i + 1], ipv4_subnet=f"198.18.{i}.0/24",
                             ipv6_subnet=f"2001:2:0:{i}::/64") for i in range(relays + 1)]
        nodes = [_start_node(ns, workdir, f"line{relays}-{ns.suffix}",
                             [f"{links[i - 1].ipv4_a}:{AXIOMNET_PORT}"] if i else [])
                 for i, ns in enumerate(spaces)]
        _wait_links(nodes, [1] + [2] * relays + [1], s)
        first, last = spaces[0], spaces[-1]
        target = nodes[-1].address
        if measure.ping_once_until(first, target, s.first_ping_timeout) is None:
            raise measure.MeasureError(f"no overlay ping reply from {first.suffix} to {last.suffix} through "
                                       f"{relays} relay(s) within {s.first_ping_timeout:g} s while every link was up")
        rtt = traffic.ping(first, target, count=s.pings, interval=s.ping_interval)
        fig.set(f"{prefix}_rtt_avg_ms", rtt.rtt_avg)
        result = measure.iperf3_median(last, first, target, s.seconds, s.runs, pids=[n.pid for n in nodes])
        fig.set(f"{prefix}_mbps", result["mbps"])
        fig.set(f"{prefix}_mbit_per_cpu_s", result.get("mbit_per_cpu_s"))
        _progress(f"AxiomNet over {relays} relay(s): {result['mbps']:.0f} Mbit/s (runs {result['runs_mbps']}), "
                  f"RTT avg {rtt.rtt_avg} ms")


def measure_fanin(workdir: Path, s: Settings, fig: Figures) -> None:
    """FANIN_PEERS spokes, each on its own veth to one hub, send one TCP stream each to the hub at once: the
    aggregate and each spoke's figure (the run with the median aggregate), and one spoke alone in the same lab."""
    p = f"axiomnet_fanin{FANIN_PEERS}"
    with fig.section(f"AxiomNet, {FANIN_PEERS} peers sending to one", fanin_keys()), namespaces.NetnsLab() as lab:
        if not s.wants("fanin"):
            raise Skipped
        hub_ns = lab.add_namespace("h")
        spoke_ns = [lab.add_namespace(f"s{i}") for i in range(FANIN_PEERS)]
        links = [lab.connect(hub_ns, ns, ipv4_subnet=f"198.18.{i}.0/24", ipv6_subnet=f"2001:2:0:{i}::/64")
                 for i, ns in enumerate(spoke_ns)]
        hub = _start_node(hub_ns, workdir, "fanin-hub", [])
        spokes = [_start_node(ns, workdir, f"fanin-{ns.suffix}", [f"{link.ipv4_a}:{AXIOMNET_PORT}"])
                  for ns, link in zip(spoke_ns, links)]
        _wait_links([hub, *spokes], [FANIN_PEERS] + [1] * FANIN_PEERS, s)
        for ns in spoke_ns:
            if measure.ping_once_until(ns, hub.address, s.first_ping_timeout) is None:
                raise measure.MeasureError(f"no overlay ping reply from {ns.suffix} to the hub")
        alone = measure.iperf3_median(hub_ns, spoke_ns[0], hub.address, s.seconds, s.runs)["mbps"]
        fig.set("axiomnet_fanin1_mbps", alone)
        runs = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=FANIN_PEERS) as pool:
            for _ in range(s.runs):
                futures = [pool.submit(measure.iperf3_tcp, hub_ns, ns, hub.address, s.seconds,
                                       port=measure.IPERF_PORT + i) for i, ns in enumerate(spoke_ns)]
                runs.append([f.result()["mbps"] for f in futures])
        runs.sort(key=sum)
        shares = runs[len(runs) // 2]
        total, mean = sum(shares), sum(shares) / len(shares)
        fig.set(f"{p}_mbps", total)
        for i, mbps in enumerate(shares):
            fig.set(f"{p}_peer{i + 1}_mbps", mbps)
        fig.set(f"{p}_spread", max(abs(x - mean) for x in shares) / mean if mean else None)
        _progress(f"AxiomNet, {FANIN_PEERS} peers to one: {total:.0f} Mbit/s together "
                  f"({', '.join(f'{x:.0f}' for x in shares)}), one alone {alone:.0f}")


# --- idle nodes with 10 peers on loopback, and a daemon holding many sessions -----------------------------------
ADMIN_WAIT = 30.0  # a daemon holding 1,000 sessions on a loaded host took up to 10 s to answer its admin socket
SESSIONS_WAIT = 150.0  # the daemon must report every session of the holder within this


def established(node: daemons.DaemonProcess, states: tuple[str, ...] = ("established",)) -> int:
    """Sessions ``node`` reports in ``states``, asked on its admin socket (0 while it cannot answer yet)."""
    try:
        state = node.admin({"cmd": "state"}, timeout=ADMIN_WAIT)
    except (OSError, ValueError, processes.HarnessError):
        return 0
    return sum(1 for row in state.get("sessions", []) if isinstance(row, dict) and row.get("state") in states)


def _cpu_ns(pid: int) -> dict[str, int]:
    """Nanoseconds on a CPU so far of each thread of ``pid`` (/proc/PID/task/TID/schedstat): an idle daemon's CPU is
    a few ms a second, and the process's user + system times count 10 ms ticks (Yggdrasil's 0.1% of a core over 20 s
    is two of them)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return out


def _idle_figures(pid: int, s: Settings) -> tuple[float, float, int | None]:
    time.sleep(s.idle_settle)
    before, t0 = _cpu_ns(pid), time.monotonic()
    ticks0 = processes.process_cpu_seconds(pid)
    time.sleep(s.idle_seconds)
    after = _cpu_ns(pid)
    wall = time.monotonic() - t0
    if after:  # every thread's own clock; a thread that started in the window counts from 0, one that ended is lost
        cpu = sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9
    else:  # no schedstat (a kernel without CONFIG_SCHEDSTATS): the process's tick-counted times
        cpu = processes.process_cpu_seconds(pid) - ticks0
    return 100.0 * cpu / wall, processes.process_memory_kib(pid)["VmRSS"] / 1024, processes.process_threads(pid)


HUB_KEYS = ["axiomnet_idle_hub_peers", "axiomnet_idle_hub_cpu_percent", "axiomnet_idle_hub_rss_mib",
            "axiomnet_idle_hub_threads", "axiomnet_idle_hub_cpu_ratio"]


def measure_idle_axiomnet(workdir: Path, s: Settings, fig: Figures) -> None:
    prefix = f"axiomnet_idle{IDLE_PEERS}"
    with fig.section("AxiomNet idle hub", [f"{prefix}_cpu_percent", f"{prefix}_rss_mib", f"{prefix}_threads"]):
        if not s.wants("idle"):
            raise Skipped
        cpu, rss, threads = _idle_hub(workdir / "idle", s, IDLE_PEERS)
        fig.set(f"{prefix}_cpu_percent", cpu)
        fig.set(f"{prefix}_rss_mib", rss)
        fig.set(f"{prefix}_threads", threads)
        _progress(f"AxiomNet hub idle with {IDLE_PEERS} peers: {cpu:.2f}% CPU, {rss:.0f} MiB, {threads} threads")
    with fig.section("AxiomNet idle hub, many peers", HUB_KEYS):
        if not s.wants("idle") or not s.hub_peers:
            raise Skipped
        base = fig.values.get(f"{prefix}_cpu_percent")
        cpu, rss, threads = _idle_hub(workdir / "hub", s, s.hub_peers)
        fig.set("axiomnet_idle_hub_peers", s.hub_peers)
        fig.set("axiomnet_idle_hub_cpu_percent", cpu)
        fig.set("axiomnet_idle_hub_rss_mib", rss)
        fig.set("axiomnet_idle_hub_threads", threads)
        if isinstance(base, (int, float)) and base > 0:
            fig.set("axiomnet_idle_hub_cpu_ratio", cpu / base)  # the target: <= 2x its own 10-peer figure
        else:
            fig.unavailable(["axiomnet_idle_hub_cpu_ratio"], "no 10-peer figure in this run")
        _progress(f"AxiomNet hub idle with {s.hub_peers} peers: {cpu:.2f}% CPU, {rss:.0f} MiB, {threads} threads")


def _idle_hub(workdir: Path, s: Settings, count: int) -> tuple[float, float, int | None]:
    """CPU %, RSS MiB and threads of a hub daemon idle with ``count`` spoke daemons, each on a loopback address of
    its own (distinct source addresses, as real peers)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with namespaces.NetnsLab() as lab:
        ns = lab.add_namespace("h")
        hub = daemons.start_daemon(ns, name="hub", listen="127.0.0.1:7443", peers=[], data_dir=workdir / "hub",
                                   admin_socket=workdir / "hub.sock", tun=ns.tun_name, log_level="WARNING")
        def spoke(i: int) -> daemons.DaemonProcess:
            # One loopback address per spoke (a node of its own, as in a real network).
            return daemons.start_daemon(ns, name=f"spoke{i}", listen=f"127.0.0.{2 + i}:7443", peers=["127.0.0.1:7443"],
                                        data_dir=workdir / f"spoke{i}", admin_socket=workdir / f"spoke{i}.sock",
                                        tun=None, log_level="WARNING")

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:  # their identities in parallel
            list(pool.map(spoke, range(count)))
        wait = max(60.0, 1.5 * count)
        if not processes.wait_until(lambda: established(hub) >= count, wait, interval=0.5):
            raise measure.MeasureError(f"the hub has {established(hub)} of {count} sessions after {wait:g} s")
        return _idle_figures(hub.pid, s)


def measure_idle_yggdrasil(workdir: Path, s: Settings, fig: Figures, reason: str | None) -> None:
    prefix = f"yggdrasil_idle{IDLE_PEERS}"
    keys = [f"{prefix}_cpu_percent", f"{prefix}_rss_mib", f"{prefix}_threads"]
    if not s.wants("idle"):
        reason = NOT_SELECTED
    if reason is not None:
        fig.unavailable(keys, reason)
        return
    with fig.section("Yggdrasil idle hub", keys), namespaces.NetnsLab() as lab:
        ns = lab.add_namespace("h")
        socket = workdir / "ygg-hub.sock"
        peers.yggdrasil_config(workdir / "ygg-hub.conf", listen="tcp://127.0.0.1:9001", peers=[], tun=ns.tun_name,
                               mtu=peers.COMPARABLE_MTU, admin_socket=socket)
        hub = peers.start_yggdrasil(ns, workdir / "ygg-hub.conf", workdir / "ygg-hub.log")
        for i in range(IDLE_PEERS):
            conf = workdir / f"ygg-spoke{i}.conf"
            peers.yggdrasil_config(conf, listen=f"tcp://127.0.0.1:{9002 + i}", peers=["tcp://127.0.0.1:9001"], tun=None,
                                   mtu=None, admin_socket=workdir / f"ygg-spoke{i}.sock")
            peers.start_yggdrasil(ns, conf, workdir / f"ygg-spoke{i}.log")
        if not processes.wait_until(lambda: peers.yggdrasil_peer_count(ns, socket) >= IDLE_PEERS, 60.0, interval=0.5):
            raise measure.MeasureError(f"the Yggdrasil hub has {peers.yggdrasil_peer_count(ns, socket)} of "
                                       f"{IDLE_PEERS} peers after 60 s")
        cpu, rss, threads = _idle_figures(hub.pid, s)
        fig.set(f"{prefix}_cpu_percent", cpu)
        fig.set(f"{prefix}_rss_mib", rss)
        fig.set(f"{prefix}_threads", threads)
        _progress(f"Yggdrasil hub idle with {IDLE_PEERS} peers: {cpu:.2f}% CPU, {rss:.0f} MiB, {threads} threads")


def measure_daemon_sessions(workdir: Path, s: Settings, fig: Figures) -> None:
    """RSS growth and CPU of a daemon (no TUN) while a client holds ``s.sessions`` sessions open to it (loopback)."""
    keys = ["axiomnet_daemon_sessions", "axiomnet_daemon_rss_kib_per_session", "axiomnet_daemon_sessions_cpu_percent"]
    with fig.section("AxiomNet daemon holding sessions", keys), namespaces.NetnsLab() as lab:
        if not s.wants("sessions"):
            raise Skipped
        ns = lab.add_namespace("h")
        # Strangers are bounded (MAX_UNPINNED_SESSIONS, 32 per source at once): the held sessions' keys are allowed, as the
        # keys of a node's real peers would be, so the daemon admits all of them.
        seed = 7
        allowed = [bytes(holder_key(seed, i).public_key).hex() for i in range(s.sessions)]
        config = workdir / "held.toml"
        config.write_text(f"max_sessions = {max(1024, s.sessions)}\nallowed_keys = [\n"
                          + "".join(f'  "{k}",\n' for k in allowed) + "]\n")
        node = daemons.start_daemon(ns, name="holder-target", listen="127.0.0.1:7443", peers=[], data_dir=workdir / "held",
                                    admin_socket=workdir / "held.sock", tun=None, log_level="ERROR",
                                    extra_args=["--config", str(config)])
        # 60 s: reading 10,000 allowed keys and starting took 16 s of wall time on the shared host at load 35.
        if not processes.wait_until(lambda: node.admin_socket.exists(), 60.0, interval=0.1):
            raise measure.MeasureError(f"the daemon did not come up:\n{node.log_tail()}")
        time.sleep(s.idle_settle)
        base = node.memory_kib()["VmRSS"]
        wait = SESSIONS_WAIT * max(1.0, s.sessions / 1000)  # handshakes at a few hundred a second on a loaded host
        holder = ns.popen([sys.executable, "-m", "benchlab.session_holder", "127.0.0.1", "7443", str(s.sessions),
                           "--seed", str(seed), "--timeout", f"{wait:g}",
                           "--hold", f"{2 * wait + s.idle_settle + s.idle_seconds + 60:g}"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parent)  # benchlab/ is beside this file, whatever the caller's cwd
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline()
            if not line.strip():
                raise measure.MeasureError(f"the session holder printed nothing (exit {holder.wait(5)})")
            opened = json.loads(line)["established"]
            held = [0]

            def all_held() -> bool:
                # With thousands of sessions some miss the admin's gather deadline ("unanswered"); the daemon makes
                # an inbound session only once its handshake completed, so those are held too.
                held[0] = max(held[0], established(node, ("established", "unanswered")))
                return held[0] >= opened

            # Each poll asks every session actor for its snapshot: poll less often the more there are.
            # The holder has already waited for its handshakes: the daemon only has to catch up with it.
            catch_up = max(60.0, wait / 5)
            processes.wait_until(all_held, catch_up, interval=max(1.0, s.sessions / 500))
            if held[0] < 0.9 * s.sessions:
                raise measure.MeasureError(f"the daemon holds {held[0]} of {s.sessions} sessions after "
                                           f"{wait + catch_up:g} s (the client opened {opened})")
            cpu, rss, threads = _idle_figures(node.pid, s)
        finally:
            processes.terminate_processes([holder], grace=2.0)
        fig.set("axiomnet_daemon_sessions", held[0])
        fig.set("axiomnet_daemon_rss_kib_per_session", (rss * 1024 - base) / held[0])
        fig.set("axiomnet_daemon_sessions_cpu_percent", cpu)
        _progress(f"AxiomNet daemon with {held[0]} sessions: {(rss * 1024 - base) / held[0]:.1f} KiB RSS per session, "
                  f"{cpu:.0f}% of a core, {threads} threads")


def measure_micro(s: Settings, fig: Figures) -> None:
    keys = ["micro_encrypt_send_us", "micro_receive_decrypt_us", "micro_handshakes_per_s_core",
            "micro_handshakes_per_s_responder", "micro_session_kib_tracemalloc"] + [f"micro_next_hop_{n}_us" for n in NEXT_HOP_SIZES] + MICRO_SEGMENT_KEYS
    with fig.section("micro-benchmarks", keys):
        if not s.wants("micro"):
            raise Skipped
        micro = bench_micro.run_all(smoke=s.smoke)
        fig.set("micro_encrypt_send_us", micro["packets"]["encrypt_send_us"])
        fig.set("micro_receive_decrypt_us", micro["packets"]["receive_decrypt_us"])
        fig.set("micro_handshakes_per_s_core", micro["handshakes"]["per_s_both_ends"])
        fig.set("micro_handshakes_per_s_responder", micro["handshakes"]["per_s_responder"])
        fig.set("micro_session_kib_tracemalloc", micro["session_memory"]["kib_per_session"])
        for key, value in micro["segments"].items():
            fig.set(f"micro_{key}", value)
        for row in micro["next_hop"]:
            fig.set(f"micro_next_hop_{row['neighbours']}_us", row["us"])
        _progress(f"micro: {micro}")


# --- availability and installation ------------------------------------------------------------------------------
def availability(install: bool) -> dict[str, str | None]:
    """Per column (and nftables): None if it can run, else "not available: reason". Installs with --install."""
    wanted = {"wireguard_go": ("wireguard-go", "wireguard-tools"), "nebula": ("nebula",),
              "yggdrasil": ("yggdrasil",), "nftables": ("nftables",)}
    missing = sorted({pkg for pkgs in wanted.values() for pkg in peers.missing_packages(pkgs)})
    install_error = None
    if missing and install:
        _progress(f"installing {' '.join(missing)} (apt-get)")
        install_error = peers.apt_install(missing)
        missing = sorted({pkg for pkgs in wanted.values() for pkg in peers.missing_packages(pkgs)})
    out: dict[str, str | None] = {}
    for column, pkgs in wanted.items():
        gone = [p for p in pkgs if p in missing]
        if not gone:
            out[column] = None
        elif install_error is not None:
            out[column] = f"{' '.join(gone)} could not be installed: {install_error}"
        else:
            out[column] = (f"{' '.join(gone)} not installed (apt-get install --no-install-recommends {' '.join(gone)}, "
                           "or run tools/bench.py --install)")
    out["yggdrasil_default"] = out["yggdrasil"]
    return out


def host_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "iperf3": peers.package_version("iperf3"), "load_at_start": os.getloadavg()[0]}


def _script_path() -> str:
    """This script's path as typed from the repository root (tools/bench.py), else as given."""
    path = Path(sys.argv[0]).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else sys.argv[0]


# --- output --------------------------------------------------------------------------------------------------
def _cell(value: Any, spec: str = ".1f") -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    if isinstance(value, str) and value.startswith(NA):
        return "n/a"
    return str(value)


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.2f}×"
    return "n/a"


LABELS = {"veth": "raw veth", "axiomnet": "AxiomNet", "wireguard_go": "wireguard-go", "nebula": "Nebula",
          "yggdrasil": "Yggdrasil", "yggdrasil_default": "Yggdrasil, default MTU"}
ROWS = (  # figure suffix, label, format
    ("mtu", "TUN MTU", "d"),
    ("mbps", "TCP 1 stream, Mbit/s (median)", ".0f"),
    ("rtt_min_ms", "ping RTT min, ms", ".3f"),
    ("rtt_avg_ms", "ping RTT avg, ms", ".3f"),
    ("rtt_p99_loaded_ms", "ping RTT p99 under a full-speed transfer, ms", ".3f"),
    ("added_rtt_ms", "added RTT over veth (avg), ms", ".3f"),
    ("cpu_s_per_10s", "daemons' CPU s per 10 s of iperf3", ".1f"),
    ("mbit_per_cpu_s", "Mbit per CPU-second", ".0f"),
    ("rss_mib", "RSS of both daemons, MiB", ".0f"),
    ("first_ping_ab_s", "first ping after the later start (a, then b), s", ".2f"),
    ("first_ping_ba_s", "first ping after the later start (b, then a), s", ".2f"),
    (f"loss{LOSS_PERCENT}_mbps", f"TCP Mbit/s with {LOSS_PERCENT}% UDP loss each way", ".0f"),
)


def comparison_rows(v: dict[str, Any]) -> list[list[str]]:
    """The side-by-side table: one row per figure, the columns, then AxiomNet / each peer."""
    rows = [["figure", *(LABELS[c] for c in COLUMNS), *(f"AxiomNet / {LABELS[p]}" for p in PEERS)]]
    veth_rtt = v.get("veth_rtt_avg_ms")
    for suffix, label, spec in ROWS:
        def get(col: str) -> Any:
            if suffix == "added_rtt_ms":
                avg = v.get(f"{col}_rtt_avg_ms")
                if col == "veth" or not isinstance(avg, (int, float)) or not isinstance(veth_rtt, (int, float)):
                    return None
                return avg - veth_rtt
            return v.get(f"{col}_{suffix}")
        cells = [_cell(get(c), spec) for c in COLUMNS]
        ratios = [_ratio(get("axiomnet"), get(p)) if suffix != "mtu" else "" for p in PEERS]
        rows.append([label, *cells, *ratios])
    return rows


def axiomnet_rows(v: dict[str, Any]) -> list[list[str]]:
    """AxiomNet alone: relay, MTU sweep, offloads, idle, sessions, micro-benchmarks (with the issue's targets)."""
    two = v.get("axiomnet_mbps")
    rows = [["figure", "value", "target (issue 19)"]]
    for relays, share in zip(RELAYS, ("60%", "45%")):
        p = relay_prefix(relays)
        mbps = v.get(f"{p}_mbps")
        rows.append([f"over {relays} relay(s) ({relays + 2} nodes in a line), TCP Mbit/s", _cell(mbps, ".0f"),
                     f"≥ {share} of two nodes ({_ratio(mbps, two)} now)"])
        rows.append([f"over {relays} relay(s), ping RTT avg, ms / Mbit per CPU-second of all nodes",
                     f"{_cell(v.get(f'{p}_rtt_avg_ms'), '.3f')} / {_cell(v.get(f'{p}_mbit_per_cpu_s'), '.0f')}", ""])
    f = f"axiomnet_fanin{FANIN_PEERS}"
    rows.append([f"{FANIN_PEERS} peers sending to one node at once, TCP Mbit/s together (one peer alone)",
                 f"{_cell(v.get(f + '_mbps'), '.0f')} ({_cell(v.get('axiomnet_fanin1_mbps'), '.0f')})",
                 f"≥ 1.0× one peer alone ({_ratio(v.get(f + '_mbps'), v.get('axiomnet_fanin1_mbps'))} now)"])
    rows.append([f"{FANIN_PEERS} peers at once: each peer's Mbit/s (largest distance from the mean)",
                 " / ".join(_cell(v.get(f"{f}_peer{i + 1}_mbps"), ".0f") for i in range(FANIN_PEERS))
                 + f" ({_cell(100 * v[f + '_spread'] if isinstance(v.get(f + '_spread'), (int, float)) else None, '.0f')}%)",
                 "each within 25% of the mean"])
    for mtu in MTU_SWEEP:
        key = "axiomnet_mtu_default_mbps" if mtu == DEFAULT_MTU else f"axiomnet_mtu{mtu}_mbps"
        label = f"TUN MTU {mtu}{' (its default)' if mtu == DEFAULT_MTU else ''}, TCP Mbit/s"
        rows.append([label, _cell(v.get(key), ".0f"), ""])
    rows.append(["offloads off, TCP Mbit/s", _cell(v.get("axiomnet_no_offload_mbps"), ".0f"), "≥ 1.0× wireguard-go"])
    rows.append([f"with {LOSS_PERCENT}% UDP loss each way, TCP Mbit/s (wireguard-go: "
                 f"{_cell(v.get(f'wireguard_go_loss{LOSS_PERCENT}_mbps'), '.0f')})",
                 _cell(v.get(f"axiomnet_loss{LOSS_PERCENT}_mbps"), ".0f"), "≥ wireguard-go's"])
    for who, label in (("axiomnet", "AxiomNet"), ("yggdrasil", "Yggdrasil")):
        p = f"{who}_idle{IDLE_PEERS}"
        rows.append([f"{label} node idle with {IDLE_PEERS} peers on loopback: CPU % of a core / RSS MiB / threads",
                     f"{_cell(v.get(p + '_cpu_percent'), '.2f')} / {_cell(v.get(p + '_rss_mib'), '.0f')} / "
                     f"{_cell(v.get(p + '_threads'), 'd')}",
                     "CPU ≤ 2× Yggdrasil's; RSS ≤ 64 MiB" if who == "axiomnet" else ""])
    rows.append([f"daemon holding {_cell(v.get('axiomnet_daemon_sessions'), 'd')} idle sessions: RSS KiB per session",
                 _cell(v.get("axiomnet_daemon_rss_kib_per_session"), ".1f"), "≤ 16 KiB at 10,000 sessions"])
    rows.append([f"daemon holding {_cell(v.get('axiomnet_daemon_sessions'), 'd')} idle sessions: CPU % of a core",
                 _cell(v.get("axiomnet_daemon_sessions_cpu_percent"), ".1f"), "≤ 5% at 10,000 sessions"])
    rows.append(["core: Python heap per idle session (tracemalloc), KiB", _cell(v.get("micro_session_kib_tracemalloc"), ".1f"),
                 "≤ 32 KiB"])
    rows.append([f"core: encrypt+send, µs per {bench_micro.PACKET_SIZE}-byte packet",
                 _cell(v.get("micro_encrypt_send_us"), ".2f"), ""])
    rows.append([f"core: receive+decrypt, µs per {bench_micro.PACKET_SIZE}-byte packet",
                 _cell(v.get("micro_receive_decrypt_us"), ".2f"), ""])
    for n in NEXT_HOP_SIZES:
        rows.append([f"core: next hop over {n:,} neighbours, µs", _cell(v.get(f"micro_next_hop_{n}_us"), ".1f"),
                     "< 50 µs" if n == 1000 else ""])
    rows.append(["core: handshakes per CPU-second (both ends / responder only)",
                 f"{_cell(v.get('micro_handshakes_per_s_core'), '.0f')} / "
                 f"{_cell(v.get('micro_handshakes_per_s_responder'), '.0f')}", "≥ 1,000 /s/core"])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(rows[0]))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def not_available_notes(v: dict[str, Any]) -> list[str]:
    """One line per distinct "not available" reason, with the figures it covers."""
    reasons: dict[str, list[str]] = {}
    for key, value in v.items():
        if isinstance(value, str) and value.startswith(NA):
            reasons.setdefault(value[len(NA):], []).append(key)
    return [f"- n/a ({', '.join(keys)}): {reason}" for reason, keys in reasons.items()]


def render_markdown(result: dict[str, Any]) -> str:
    meta, v = result["meta"], result
    h = meta["host"]
    lines = [
        f"### Side by side, {meta['date']}",
        "",
        f"Command: `{meta['command']}` (as root)  ",
        f"Host: {h['cpu']} ({h['cpus']} CPUs), Linux {h['kernel']}, Python {h['python']}, iperf3 {h['iperf3']}; "
        f"1-minute load average {h['load_at_start']:.1f} at the start, {h['load_at_end']:.1f} at the end (the host is "
        "shared: compare ratios within this run)  ",
        f"Method: iperf3 TCP 1 stream, {meta['settings']['seconds']:g} s, median of {meta['settings']['runs']}; "
        f"{meta['settings']['pings']} pings every {meta['settings']['ping_interval']:g} s; CPU and RSS of the "
        "daemons from /proc; ratios are AxiomNet ÷ the peer (Mbit/s: higher is better; RTT, CPU, RSS, first ping: "
        "lower is better).",
        "",
        markdown_table(comparison_rows(v)),
        "",
        "AxiomNet alone:",
        "",
        markdown_table(axiomnet_rows(v)),
        "",
        "Versions and settings:",
        "",
    ]
    for info in meta["overlays"].values():
        lines.append(f"- {info['label']}: {info['version']}; {info['settings']}")
    notes = not_available_notes(v)
    if notes:
        lines += ["", "Not available in this run:", "", *notes]
    return "\n".join(lines)


def write_doc(markdown: str, path: Path = DOC) -> None:
    """Replace the marked section of docs/PERFORMANCE.md (or put it first under "## Results")."""
    text = path.read_text()
    block = f"{DOC_BEGIN}\n{markdown}\n{DOC_END}"
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        text = head + block + rest.split(DOC_END, 1)[1]
    elif "## Results\n" in text:
        text = text.replace("## Results\n", f"## Results\n\n{block}\n", 1)
    else:
        text += f"\n{block}\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- main ----------------------------------------------------------------------------------------------------
def _sections(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(SECTIONS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Figures and method: docs/PERFORMANCE.md. Needs root.")
    parser.add_argument("--smoke", action="store_true",
                        help="every path for a second or two, no thresholds, docs untouched (what CI runs)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object instead of tables")
    parser.add_argument("--install", action="store_true",
                        help="apt-get install the missing peers (wireguard-go, wireguard-tools, nebula, yggdrasil, nftables)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/PERFORMANCE.md")
    parser.add_argument("--seconds", type=float, default=10.0, help="iperf3 seconds per run (default 10, 1..120)")
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per figure, median taken (default 3, 1..9)")
    parser.add_argument("--pings", type=int, default=20, help="pings per RTT figure (default 20, 3..1000)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (default 30, 1..600)")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions the daemon holds (default 1000, 10..10000)")
    parser.add_argument("--hub-peers", type=int, default=100,
                        help="the idle hub's peers for its many-peers figure (default 100, 0 to skip, at most 250)")
    parser.add_argument("--only", type=_sections, metavar="SECTION[,SECTION...]",
                        help="measure only these (the others read 'not selected'; docs untouched): "
                        + ", ".join(SECTIONS))
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 120 or not 1 <= args.runs <= 9 or not 3 <= args.pings <= 1000:
        parser.error("--seconds must be 1..120, --runs 1..9, --pings 3..1000")
    if not 0 <= args.hub_peers <= 250:
        parser.error("--hub-peers must be 0..250")
    if not 1 <= args.idle_seconds <= 600 or not 10 <= args.sessions <= 10000:
        parser.error("--idle-seconds must be 1..600 and --sessions 10..10000")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = Settings(args)
    fig = Figures()
    available = availability(args.install)
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in ["python", _script_path(), *sys.argv[1:]]),
        "host": host_info(),
        "settings": s.describe(),
        "overlays": {},
    }
    namespaces.cleanup_leftovers()
    with tempfile.TemporaryDirectory(prefix="axiomnet-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "pair").mkdir()
        measure_pair(workdir / "pair", s, fig, available, meta)
        for relays in RELAYS:
            _progress(f"AxiomNet over {relays} relay(s)")
            measure_relay(workdir / f"line{relays}", s, fig, relays)
        _progress(f"AxiomNet, {FANIN_PEERS} peers sending to one node")
        measure_fanin(workdir / "fanin", s, fig)
        _progress(f"idle nodes with {IDLE_PEERS} peers")
        measure_idle_axiomnet(workdir, s, fig)
        measure_idle_yggdrasil(workdir, s, fig, available["yggdrasil"])
        _progress(f"a daemon holding {s.sessions} sessions")
        measure_daemon_sessions(workdir, s, fig)
        _progress(f"first packet over {FIRST_PACKET_RELAYS} relays, from cold")
        measure_first_packet(workdir / "first", s, fig)
    _progress("micro-benchmarks")
    measure_micro(s, fig)
    values = {key: fig.values.get(key, NA + "not measured (a bench bug)") for key in all_keys()}
    meta["failures"] = fig.failures
    meta["host"]["load_at_end"] = os.getloadavg()[0]
    return {**values, "meta": meta}


_STARTED = time.monotonic()


def _progress(message: str) -> None:
    print(f"bench: [{time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = namespaces.netns_unavailable_reason()
    if reason is not None:
        print(f"bench: {reason}", file=sys.stderr)
        return 2
    missing = peers.missing_packages(BASE_PACKAGES)
    if missing and args.install:
        error = peers.apt_install(missing)
        if error:
            print(f"bench: {error}", file=sys.stderr)
            return 2
        missing = peers.missing_packages(BASE_PACKAGES)
    if missing:
        print(f"bench: missing {' '.join(missing)} (apt-get install {' '.join(missing)}, or --install)", file=sys.stderr)
        return 2

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("bench: interrupted; everything it created has been removed", file=sys.stderr)
        return 130
    markdown = render_markdown(result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(text_table(comparison_rows(result)))
        print()
        print(text_table(axiomnet_rows(result)))
        for note in not_available_notes(result):
            print(note)
    if not args.smoke and not args.no_doc and not args.only:
        write_doc(markdown)
        _progress(f"wrote the results into {DOC.relative_to(ROOT)}")
    failures = result["meta"]["failures"]
    if failures:
        print(f"bench: {len(failures)} measurement(s) failed:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
