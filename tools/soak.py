#!/usr/bin/env python3
"""Network soak: N real daemons in namespaces, a mesh with relays, under churn and loss, for a chosen time.

    sudo python tools/soak.py                                # 12 nodes, 5 minutes
    sudo python tools/soak.py --nodes 12 --seconds 1800 --seed 7 --json
    sudo python tools/soak.py --nodes 6 --seconds 60 --warmup 15 --quiet 8   # what CI runs

The network: one namespace and one daemon per node, one veth per link: a ring, plus a chord from every
other node to the node opposite (for 12 nodes, 15 links; most pairs are two to four hops apart, so their
traffic crosses relays, and no single kill or cut disconnects the rest). Every veth drops 1% of what it
receives (nftables ``numgen random mod 100 < 1 drop`` on the underlay; --loss-percent).

Churn, one event at a time, in a seeded random order: a daemon SIGKILLed or SIGTERMed (SIGTERM must exit 0)
and restarted with its identity after --hold seconds (only the odd-numbered nodes, --churn-nodes of them: the
others live the whole run, so their memory is measured over it while their neighbours come and go); a link cut on both ends with nftables and restored
after --hold seconds. Each event opens a *repair window* at the fault that closes when every probed pair
has answered a ping sent after the repair (bounded by --repair-cap); then --quiet seconds pass before the
next event.

Measured all along: every node pings another node (not a neighbour where it can) twice a second over the
overlay (a small prober in its namespace, raw ICMPv6); every --transfer-every seconds a random pair moves
--transfer-kib over TCP and both ends compare SHA-256; every 5 s each daemon's RSS and thread count (from
/proc). At the end: delivery of the pings sent outside repair windows, repair times, the RSS and thread
slope of every daemon incarnation after --warmup seconds (least squares), restarts (churn and actor
restarts from the admin socket), unexpected daemon exits, tracebacks in the daemons' logs, transfers ok,
corrupted, and failed outside repair windows (lost).

--json prints one object: delivery_outside_repair, repair_s_max, rss_slope_kib_per_min_max, tracebacks,
transfers_corrupted, and the rest of the figures; rss_slope_windows is the RSS trend of the daemons that lived the
whole run, the slope per 5-minute window after the warm-up (min / median / max): growth that levels off falls
window after window, a leak does not. Exit status: 0 when no daemon logged a traceback, none
exited unexpectedly, no transfer was corrupted or lost and delivery outside repair windows reached
--min-delivery; 1 otherwise; 2 when it cannot run here (not root, tools missing). Everything lives in
namespaces the run creates (198.18.0.0/15, 2001:2::/48, fc00::/8 inside them; no default route), is named
after a random run id and is removed by PID at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from axiomnet.constants import DEFAULT_UDP_PORT
from axiomnet.lab import daemons, namespaces, processes, traffic

PING_INTERVAL = 0.5  # seconds between two pings of one pair
PING_TIMEOUT = 2.0  # a reply later than this is a loss
SAMPLE_INTERVAL = 5.0  # seconds between two RSS/thread samples
CONVERGE_CAP = 240.0  # how long the network gets to carry every probed pair at first
TRANSFER_TIMEOUT = 30.0
MAX_NODES = 40
NFT_TABLE = "axsoak"

# One prober per source namespace: an echo request to each destination every interval, for `duration`
# seconds; prints "S <dst> <seq> <t>" per request and "R <dst> <seq> <t_sent> <t_reply>" per reply
# (time.monotonic(), which is one clock for every process of the machine).
_PROBER = r"""
import os, select, socket, struct, sys, time
dsts = sys.argv[1].split(","); interval = float(sys.argv[2]); duration = float(sys.argv[3])
sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
ident = os.getpid() & 0xFFFF
sent = {}
start = time.monotonic(); deadline = start + duration; seq = 0; next_send = start
while True:
    now = time.monotonic()
    if now >= deadline:
        break
    if now >= next_send:
        seq = (seq + 1) & 0xFFFF
        for i, dst in enumerate(dsts):
            sent[(i, seq)] = now
            try:
                sock.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"axiomnet-soak", (dst, 0))
            except OSError:
                pass
            print("S", i, seq, f"{now:.4f}", flush=False)
        sys.stdout.flush()
        next_send += interval
        for key in [k for k, t in sent.items() if now - t > 10]:
            del sent[key]
    ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline) - time.monotonic()))
    if ready:
        packet, addr = sock.recvfrom(2048)
        if len(packet) >= 8 and packet[0] == 129:
            _, _, _, rid, rseq = struct.unpack("!BBHHH", packet[:8])
            host = addr[0].split("%")[0]
            if rid == ident and host in dsts and (dsts.index(host), rseq) in sent:
                i = dsts.index(host)
                print("R", i, rseq, f"{sent.pop((i, rseq)):.4f}", f"{time.monotonic():.4f}", flush=True)
"""


# --- the network ---------------------------------------------------------------------------------------------
def mesh_with_relays(nodes: int) -> list[tuple[int, int]]:
    """A ring and, from every other node, a chord to the node opposite: 2-connected, diameter about n/4."""
    if nodes < 3:
        raise ValueError("a soak needs at least 3 nodes")
    edges = {(i, (i + 1) % nodes) if i < (i + 1) % nodes else ((i + 1) % nodes, i) for i in range(nodes)}
    if nodes >= 6:
        for i in range(0, nodes // 2, 2):
            edges.add((i, i + nodes // 2))
    return sorted(edges)


def hops(edges: list[tuple[int, int]], nodes: int, src: int) -> dict[int, int]:
    """Hop counts from ``src`` to every node (breadth first)."""
    adjacent: dict[int, set[int]] = {i: set() for i in range(nodes)}
    for a, b in edges:
        adjacent[a].add(b)
        adjacent[b].add(a)
    dist, frontier = {src: 0}, [src]
    while frontier:
        nxt = []
        for node in frontier:
            for other in adjacent[node]:
                if other not in dist:
                    dist[other] = dist[node] + 1
                    nxt.append(other)
        frontier = nxt
    return dist


def _nft(ns: namespaces.Namespace, script: str) -> None:
    proc = ns.exec(["nft", "-f", "-"], input=script, timeout=namespaces.IP_TIMEOUT)
    if proc.returncode != 0:
        raise processes.HarnessError(f"nft in {ns.name}: {proc.stderr.strip()}")


def install_filters(lab: namespaces.NetnsLab, ns: namespaces.Namespace, loss_percent: int) -> None:
    """This run's table in ``ns``: random loss on every veth's input, and a set of cut interfaces."""
    veths = f'"{namespaces.IFNAME_PREFIX}{lab.run_id}v*"'
    loss = f"    iifname {veths} numgen random mod 100 < {loss_percent} drop\n" if loss_percent > 0 else ""
    _nft(ns, f"""table inet {NFT_TABLE} {{
  set cut {{
    type ifname
  }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname @cut drop
{loss}  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    oifname @cut drop
  }}
}}
""")


def set_cut(link: namespaces.VethLink, cut: bool) -> None:
    """Cut (or restore) ``link`` on both of its ends: everything in and out of the veth is dropped."""
    verb = "add" if cut else "delete"
    for ns, ifname in ((link.a, link.ifname_a), (link.b, link.ifname_b)):
        _nft(ns, f'{verb} element inet {NFT_TABLE} cut {{ "{ifname}" }}\n')


# --- what is recorded ----------------------------------------------------------------------------------------
@dataclass
class Probe:
    """One source's prober: its destinations and the fate of every echo request."""

    src: int
    dsts: list[int]
    proc: subprocess.Popen[Any] | None = None
    sent: dict[tuple[int, int, float], float | None] = field(default_factory=dict)  # (dst, seq, t) -> rtt
    last_ok: dict[int, float] = field(default_factory=dict)  # dst -> send time of its latest answered ping
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, stream: IO[str]) -> None:
        pending: dict[tuple[int, int], tuple[int, int, float]] = {}
        for line in stream:  # ends when the prober exits (its duration) or the lab kills it
            parts = line.split()
            with self.lock:
                if parts[:1] == ["S"] and len(parts) == 4:
                    key = (self.dsts[int(parts[1])], int(parts[2]), float(parts[3]))
                    self.sent[key] = None
                    pending[(key[0], key[1])] = key
                elif parts[:1] == ["R"] and len(parts) == 5:
                    key2 = pending.pop((self.dsts[int(parts[1])], int(parts[2])), None)
                    rtt = float(parts[4]) - float(parts[3])
                    if key2 is not None and rtt <= PING_TIMEOUT:
                        self.sent[key2] = rtt
                        self.last_ok[key2[0]] = max(self.last_ok.get(key2[0], 0.0), key2[2])


@dataclass
class Event:
    kind: str  # "kill" (SIGKILL), "term" (SIGTERM) or "cut"
    target: str
    start: float
    reverted: float | None = None
    repaired: float | None = None  # every probed pair answered a ping sent after `reverted`
    detail: str = ""

    def window(self, cap_end: float) -> tuple[float, float]:
        return self.start, self.repaired if self.repaired is not None else cap_end


@dataclass
class Transfer:
    src: int
    dst: int
    start: float
    end: float
    ok: bool
    corrupted: bool
    error: str | None


@dataclass
class Incarnation:
    """One run of one daemon (a restart starts a new one): its samples of (t, RSS KiB, threads)."""

    node: int
    pid: int
    started: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


RSS_WINDOW = 300.0  # seconds per window of the RSS slope's trend (rss_slope_windows)


def window_slopes(runs: list[list[tuple[float, float]]], start: float, end: float,
                  width: float = RSS_WINDOW) -> list[dict[str, float]]:
    """The RSS slope's trend: for each window of ``width`` seconds from ``start`` to ``end`` (the last one may be
    shorter, if it holds 3 samples), the least-squares slope (KiB/min) of each run's (t, RSS KiB) samples within it,
    as min / median / max over the runs. Growth that levels off falls window after window; a leak does not."""
    rows = []
    lo = start
    while lo + 2 * SAMPLE_INTERVAL < end:
        hi = min(lo + width, end)
        slopes = [s for s in (slope_per_min([p for p in run if lo <= p[0] < hi]) for run in runs) if s is not None]
        if slopes:
            rows.append({"from_s": round(lo, 1), "to_s": round(hi, 1), "min": round(min(slopes), 1),
                         "median": round(statistics.median(slopes), 1), "max": round(max(slopes), 1)})
        lo = hi
    return rows


# --- the soak ------------------------------------------------------------------------------------------------
class Soak:
    def __init__(self, lab: namespaces.NetnsLab, args: argparse.Namespace, workdir: Path, rng: random.Random) -> None:
        self.lab, self.args, self.workdir, self.rng = lab, args, workdir, rng
        self.transfer_rng = random.Random(rng.random())  # its own: the transfer thread runs beside the churn
        self.n = args.nodes
        self.edges = mesh_with_relays(self.n)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.transfers: list[Transfer] = []
        self.incarnations: list[Incarnation] = []
        self.down: set[int] = set()  # nodes stopped by the churn right now
        self.unexpected_exits: list[str] = []
        self.actor_restarts = 0
        self.churn_restarts = 0
        self.term_exit_codes: list[int] = []
        self.probes: list[Probe] = []
        self.threads: list[threading.Thread] = []
        # The nodes the churn kills: every other one (by default), so the rest live the whole run and their
        # memory and threads are measured over it while their neighbours come and go.
        self.churned = list(range(1, self.n, 2))[: max(1, args.churn_nodes)] if args.churn_nodes else []

    # --- set-up ---
    def start(self) -> None:
        self.nodes = daemons.start_overlay(self.lab, self.n, self.edges, self.workdir, log_level=self.args.log_level)
        self.spaces = [node.ns for node in self.nodes]
        self.dials = {i: [daemons.format_endpoint(link.ipv4_b, DEFAULT_UDP_PORT)
                          for link in self.lab.links if link.a is self.spaces[i]] for i in range(self.n)}
        now = time.monotonic()
        self.incarnations = [Incarnation(i, node.pid, now) for i, node in enumerate(self.nodes)]
        for ns in self.spaces:
            install_filters(self.lab, ns, self.args.loss_percent)

    def start_probes(self, duration: float) -> None:
        """Each node pings one node as far away as possible (ties broken by the seed)."""
        for src in range(self.n):
            dist = hops(self.edges, self.n, src)
            far = max(dist.values())
            dst = self.rng.choice(sorted(d for d, h in dist.items() if h == far))
            probe = Probe(src, [dst])
            probe.proc = self.spaces[src].popen(
                [sys.executable, "-c", _PROBER, self.nodes[dst].address, str(PING_INTERVAL), str(duration)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert probe.proc.stdout is not None
            self._thread(f"soak-probe-{src}", probe.read, probe.proc.stdout)
            self.probes.append(probe)

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def all_answered_since(self, since: float) -> bool:
        for probe in self.probes:
            with probe.lock:
                if any(probe.last_ok.get(dst, 0.0) < since for dst in probe.dsts):
                    return False
        return True

    # --- background work ---
    def sample(self) -> None:
        while not self.stop.wait(SAMPLE_INTERVAL):
            now = time.monotonic()
            for i, node in enumerate(self.nodes):
                with self.lock:
                    if i in self.down:
                        continue
                    inc = self._incarnation(i)
                    if not node.running():
                        self.unexpected_exits.append(f"node-{i} exited with code {node.returncode}")
                        self._restart(i)
                        continue
                try:
                    status = Path(f"/proc/{node.pid}/status").read_text()
                except FileNotFoundError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                inc.samples.append((now, int(fields["VmRSS"].split()[0]), int(fields["Threads"])))

    def _incarnation(self, i: int) -> Incarnation:
        return [inc for inc in self.incarnations if inc.node == i][-1]

    def transfer_loop(self) -> None:
        port = 5400
        while not self.stop.wait(self.args.transfer_every):
            with self.lock:
                up = [i for i in range(self.n) if i not in self.down]
            src, dst = self.transfer_rng.sample(up, 2)
            port = 5400 + (port - 5399) % 200
            start = time.monotonic()
            result = traffic.tcp_transfer(self.spaces[dst], self.spaces[src], self.nodes[dst].address,
                                          self.args.transfer_kib * 1024, port=port, timeout=TRANSFER_TIMEOUT)
            corrupted = result.error is not None and "sha256 differs" in result.error
            with self.lock:
                self.transfers.append(Transfer(src, dst, start, time.monotonic(), result.ok, corrupted, result.error))

    # --- churn ---
    def _restart(self, i: int) -> None:
        """Start node ``i`` again with its identity (caller holds the lock)."""
        old = self.nodes[i]
        self.nodes[i] = daemons.start_daemon(
            old.ns, name=old.name, listen=old.listen, peers=self.dials[i], data_dir=old.data_dir,
            admin_socket=old.admin_socket, tun=old.tun, log_level=self.args.log_level, address=old.address)
        self.incarnations.append(Incarnation(i, self.nodes[i].pid, time.monotonic()))

    def _count_actor_restarts(self, node: daemons.DaemonProcess) -> None:
        try:
            state = node.admin({"cmd": "state"}, timeout=5.0)
        except (OSError, ValueError, processes.HarnessError):
            return
        self.actor_restarts += sum(int(a.get("restarts") or 0) for a in state.get("actors", []) if isinstance(a, dict))

    def churn_once(self) -> Event:
        kind = self.rng.choice(["kill", "term", "cut"] if self.churned else ["cut"])
        hold = self.args.hold
        if kind == "cut":
            k = self.rng.randrange(len(self.lab.links))
            link = self.lab.links[k]
            a, b = self.edges[k]
            event = Event(kind, f"link {a}-{b}", time.monotonic())
            set_cut(link, True)
            self.stop.wait(hold)
            set_cut(link, False)
        else:
            i = self.rng.choice(self.churned)
            node = self.nodes[i]
            event = Event(kind, f"node-{i}", time.monotonic())
            self._count_actor_restarts(node)
            with self.lock:
                self.down.add(i)
            if kind == "kill":
                processes.signal_group(node.pid, signal.SIGKILL)
                node.popen.wait(timeout=processes.KILL_WAIT)
            else:
                code = node.stop()
                self.term_exit_codes.append(code)
                if code != 0:
                    event.detail = f"SIGTERM exit {code}"
            self.stop.wait(hold)
            with self.lock:
                self._restart(i)
                self.churn_restarts += 1
                self.down.discard(i)
        event.reverted = time.monotonic()
        if processes.wait_until(lambda: self.all_answered_since(event.reverted or 0.0), self.args.repair_cap, interval=0.25):
            event.repaired = time.monotonic()  # within 0.25 s (the poll) of the last pair's first answer
        with self.lock:
            self.events.append(event)
        return event

    # --- the figures ---
    def report(self, started: float, ended: float) -> dict[str, Any]:
        windows = [e.window(ended) for e in self.events]
        inside = lambda t: any(a <= t <= b for a, b in windows)  # noqa: E731
        sent_out = delivered_out = sent_in = delivered_in = 0
        rtts: list[float] = []
        for probe in self.probes:
            with probe.lock:
                items = list(probe.sent.items())
            for (_dst, _seq, t), rtt in items:
                if t < started or t > ended - PING_TIMEOUT:
                    continue
                if inside(t):
                    sent_in += 1
                    delivered_in += rtt is not None
                else:
                    sent_out += 1
                    delivered_out += rtt is not None
                    if rtt is not None:
                        rtts.append(rtt * 1000)
        repairs = [e.repaired - e.reverted for e in self.events if e.repaired is not None and e.reverted is not None]
        unrepaired = [e.target for e in self.events if e.repaired is None]
        overlaps = lambda tr: any(a <= tr.end and tr.start <= b for a, b in windows)  # noqa: E731
        transfers = [t for t in self.transfers if t.start >= started]
        lost = [t for t in transfers if not t.ok and not t.corrupted and not overlaps(t)]
        daemons_report = []
        rss_slopes: list[float] = []
        late_slopes: list[float] = []
        thread_slopes: list[float] = []
        for inc in self.incarnations:
            warm = [s for s in inc.samples if s[0] - inc.started >= self.args.warmup]
            span = warm[-1][0] - warm[0][0] if len(warm) >= 2 else 0.0
            rss = slope_per_min([(t, r) for t, r, _ in warm]) if span >= self.args.min_span else None
            thr = slope_per_min([(t, h) for t, _, h in warm]) if span >= self.args.min_span else None
            # The second half alone: warm-up growth that is levelling off shows here as a smaller slope, a leak not.
            late_warm = [s for s in warm if s[0] >= (warm[0][0] + warm[-1][0]) / 2] if warm else []
            late = slope_per_min([(t, r) for t, r, _ in late_warm]) if rss is not None else None
            if rss is not None:
                rss_slopes.append(rss)
            if late is not None:
                late_slopes.append(late)
            if thr is not None:
                thread_slopes.append(thr)
            daemons_report.append({
                "node": inc.node, "pid": inc.pid, "samples": len(inc.samples), "measured_s": round(span, 1),
                "rss_kib_first": inc.samples[0][1] if inc.samples else None,
                "rss_kib_last": inc.samples[-1][1] if inc.samples else None,
                "threads_last": inc.samples[-1][2] if inc.samples else None,
                "rss_slope_kib_per_min": None if rss is None else round(rss, 1),
                "rss_slope_late_kib_per_min": None if late is None else round(late, 1),
                "thread_slope_per_min": None if thr is None else round(thr, 3),
            })
        # The daemons that lived the whole run (never churned): their RSS trend, window by window after the warm-up.
        lived = [[(t - started, r) for t, r, _ in inc.samples] for inc in self.incarnations if inc.node not in self.churned]
        windows_trend = window_slopes(lived, self.args.warmup, ended - started)
        tracebacks = {}
        for i in range(self.n):
            count = self.nodes[i].log().count("Traceback (most recent call last)")
            if count:
                tracebacks[f"node-{i}"] = count
        return {
            "nodes": self.n, "links": len(self.edges), "seconds": round(ended - started, 1),
            "loss_percent_per_link": self.args.loss_percent, "seed": self.args.seed,
            "pings_outside_repair": sent_out, "delivered_outside_repair": delivered_out,
            "delivery_outside_repair": round(delivered_out / sent_out, 4) if sent_out else None,
            "rtt_ms_median_outside_repair": round(statistics.median(rtts), 2) if rtts else None,
            "pings_inside_repair": sent_in,
            "delivery_inside_repair": round(delivered_in / sent_in, 4) if sent_in else None,
            "events": len(self.events), "events_unrepaired": unrepaired,
            "repair_s_max": round(max(repairs), 2) if repairs else None,
            "repair_s_median": round(statistics.median(repairs), 2) if repairs else None,
            "repair_windows_s_total": round(sum(min(b, ended) - max(a, started) for a, b in windows), 1),
            "rss_slope_kib_per_min_max": round(max(rss_slopes), 1) if rss_slopes else None,
            "rss_slope_kib_per_min_median": round(statistics.median(rss_slopes), 1) if rss_slopes else None,
            "rss_slope_late_kib_per_min_max": round(max(late_slopes), 1) if late_slopes else None,
            "thread_slope_per_min_max": round(max(thread_slopes), 3) if thread_slopes else None,
            "rss_slope_windows": windows_trend,
            "churned_nodes": self.churned, "restarts_churn": self.churn_restarts, "restarts_actors": self.actor_restarts,
            "sigterm_exit_codes_nonzero": [c for c in self.term_exit_codes if c != 0],
            "unexpected_exits": self.unexpected_exits,
            "tracebacks": sum(tracebacks.values()), "tracebacks_by_node": tracebacks,
            "transfers": len(transfers), "transfers_ok": sum(t.ok for t in transfers),
            "transfers_corrupted": sum(t.corrupted for t in transfers), "transfers_lost_outside_repair": len(lost),
            "transfers_failed_inside_repair": sum(1 for t in transfers if not t.ok and not t.corrupted and overlaps(t)),
            "transfer_errors_outside_repair": [t.error for t in lost][:5],
            "event_log": [{"kind": e.kind, "target": e.target, "at_s": round(e.start - started, 1),
                           "repair_s": None if e.repaired is None or e.reverted is None else round(e.repaired - e.reverted, 2),
                           **({"detail": e.detail} if e.detail else {})} for e in self.events],
            "daemons": daemons_report,
        }


def _print_human(report: dict[str, Any]) -> None:
    print(f"soak: {report['nodes']} nodes, {report['links']} links, {report['seconds']} s, "
          f"{report['loss_percent_per_link']}% loss per link, seed {report['seed']}")
    for e in report["event_log"]:
        repair = "NOT repaired" if e["repair_s"] is None else f"repaired {e['repair_s']:.1f} s after the revert"
        print(f"  t={e['at_s']:7.1f} s  {e['kind']:4s} {e['target']:10s} {repair} {e.get('detail', '')}")
    print(f"pings outside repair windows: {report['delivered_outside_repair']}/{report['pings_outside_repair']} "
          f"delivered ({report['delivery_outside_repair']}), median RTT {report['rtt_ms_median_outside_repair']} ms; "
          f"inside: {report['pings_inside_repair']} sent, delivery {report['delivery_inside_repair']}")
    print(f"repairs: {report['events']} events, max {report['repair_s_max']} s, median {report['repair_s_median']} s, "
          f"unrepaired {report['events_unrepaired']}")
    print(f"transfers: {report['transfers_ok']}/{report['transfers']} ok, {report['transfers_corrupted']} corrupted, "
          f"{report['transfers_lost_outside_repair']} lost outside repair windows, "
          f"{report['transfers_failed_inside_repair']} failed inside them")
    print(f"restarts: {report['restarts_churn']} by the churn, {report['restarts_actors']} actor restarts; "
          f"unexpected exits {report['unexpected_exits']}; tracebacks {report['tracebacks']} {report['tracebacks_by_node']}")
    print(f"RSS slope after warm-up: max {report['rss_slope_kib_per_min_max']} KiB/min, median "
          f"{report['rss_slope_kib_per_min_median']} KiB/min, second half max {report['rss_slope_late_kib_per_min_max']} "
          f"KiB/min; thread slope max {report['thread_slope_per_min_max']}/min")
    if report["rss_slope_windows"]:
        print(f"RSS slope per {RSS_WINDOW:.0f} s window, the daemons that lived the run (min / median / max KiB/min): " +
              "; ".join(f"{w['from_s'] / 60:.0f}-{w['to_s'] / 60:.0f} min {w['min']} / {w['median']} / {w['max']}"
                        for w in report["rss_slope_windows"]))
    print(f"  {'node':>4} {'pid':>7} {'samples':>7} {'measured s':>10} {'RSS first':>10} {'RSS last':>9} "
          f"{'threads':>7} {'RSS KiB/min':>11} {'thr/min':>8}")
    for d in report["daemons"]:
        print(f"  {d['node']:>4} {d['pid']:>7} {d['samples']:>7} {d['measured_s']:>10} {d['rss_kib_first'] or '-':>10} "
              f"{d['rss_kib_last'] or '-':>9} {d['threads_last'] or '-':>7} "
              f"{d['rss_slope_kib_per_min'] if d['rss_slope_kib_per_min'] is not None else '-':>11} "
              f"{d['thread_slope_per_min'] if d['thread_slope_per_min'] is not None else '-':>8}")


def verdict(report: dict[str, Any], min_delivery: float) -> list[str]:
    """Why the run failed (empty: it passed)."""
    problems = []
    if report["tracebacks"]:
        problems.append(f"{report['tracebacks']} traceback(s) in daemon logs")
    if report["unexpected_exits"]:
        problems.append(f"daemons exited unexpectedly: {report['unexpected_exits']}")
    if report["sigterm_exit_codes_nonzero"]:
        problems.append(f"SIGTERM exit codes {report['sigterm_exit_codes_nonzero']}")
    if report["transfers_corrupted"] or report["transfers_lost_outside_repair"]:
        problems.append(f"transfers corrupted {report['transfers_corrupted']}, lost {report['transfers_lost_outside_repair']}")
    if report["events_unrepaired"]:
        problems.append(f"not repaired: {report['events_unrepaired']}")
    delivery = report["delivery_outside_repair"]
    if delivery is None or delivery < min_delivery:
        problems.append(f"delivery outside repair windows {delivery} < {min_delivery}")
    return problems


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="axiomnet-soak-"))
    os.chmod(workdir, 0o700)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    try:
        with namespaces.NetnsLab(stop_grace=5.0) as lab:
            soak = Soak(lab, args, workdir, rng)
            say(f"soak: run {lab.run_id}, {args.nodes} daemons, {len(soak.edges)} links; work directory {workdir}")
            soak.start()
            budget = CONVERGE_CAP + args.seconds + args.repair_cap + args.hold + 60
            soak.start_probes(budget)
            converge_start = time.monotonic()
            if not processes.wait_until(lambda: soak.all_answered_since(converge_start), CONVERGE_CAP, interval=0.5):
                missing = [f"{p.src}->{d}" for p in soak.probes for d in p.dsts if d not in p.last_ok]
                say(f"soak: paths not up after {CONVERGE_CAP:.0f} s: {missing}")
                for i in sorted({int(m.split('->')[0]) for m in missing})[:3]:
                    say(f"--- node-{i} log ---\n{soak.nodes[i].log_tail(15)}")
                return 1
            started = time.monotonic()
            say(f"soak: every probed pair answers after {started - converge_start:.1f} s; churn for {args.seconds:.0f} s")
            soak._thread("soak-sampler", soak.sample)
            soak._thread("soak-transfers", soak.transfer_loop)
            deadline = started + args.seconds
            for _ in range(100_000):  # bounded in count as well as in time
                if soak.stop.wait(min(args.quiet, max(0.0, deadline - time.monotonic()))):
                    break
                if time.monotonic() + args.hold + 5 > deadline:
                    break
                event = soak.churn_once()
                repair = "NOT repaired" if event.repaired is None else f"repaired in {event.repaired - (event.reverted or 0):.1f} s"
                say(f"  t={event.start - started:7.1f} s  {event.kind:4s} {event.target:10s} {repair}")
            soak.stop.wait(max(0.0, deadline - time.monotonic()))
            ended = time.monotonic()
            soak.stop.set()
            for thread in soak.threads:
                if thread.name in ("soak-sampler", "soak-transfers"):
                    thread.join(TRANSFER_TIMEOUT + 15)
            for node in soak.nodes:
                soak._count_actor_restarts(node)
            report = soak.report(started, ended)
            if args.samples:
                with open(args.samples, "w") as out:
                    for inc in soak.incarnations:
                        for t, rss, threads in inc.samples:
                            out.write(json.dumps({"node": inc.node, "pid": inc.pid, "t": round(t - started, 1),
                                                  "rss_kib": rss, "threads": threads}) + "\n")
            for i, node in enumerate(soak.nodes):
                code = node.stop()
                if code != 0:
                    report["sigterm_exit_codes_nonzero"].append(code)
    except processes.HarnessError as exc:
        say(f"soak: the lab failed: {exc}; logs kept in {workdir}")
        return 1
    except (KeyboardInterrupt, _Terminated) as exc:
        say(f"soak: {'SIGTERM' if isinstance(exc, _Terminated) else 'interrupted'}: namespaces and processes removed")
        shutil.rmtree(workdir, ignore_errors=True)
        return 143 if isinstance(exc, _Terminated) else 130
    problems = verdict(report, args.min_delivery)
    if args.json:
        print(json.dumps({**report, "problems": problems}, indent=1))
    else:
        _print_human(report)
        print("soak: RESULT", "PASS" if not problems else "FAIL: " + "; ".join(problems))
    if problems or args.keep:
        say(f"soak: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not problems else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soak.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=12, help="daemons, one per namespace (3..%d, default 12)" % MAX_NODES)
    p.add_argument("--seconds", type=float, default=300.0, help="churn duration once every path is up (default 300)")
    p.add_argument("--seed", type=int, default=1, help="order of events, probed pairs and transfers (default 1)")
    p.add_argument("--loss-percent", type=int, default=1, help="random drop on every veth's input (default 1)")
    p.add_argument("--hold", type=float, default=8.0, help="seconds a node stays down or a link stays cut (default 8)")
    p.add_argument("--churn-nodes", type=int, default=None,
                   help="how many nodes (the odd-numbered ones) may be killed and restarted; the others live the "
                        "whole run, so their RSS/thread slope covers it (default: half the nodes; 0: only cut links)")
    p.add_argument("--quiet", type=float, default=20.0, help="seconds between a repair and the next event (default 20)")
    p.add_argument("--repair-cap", type=float, default=90.0, help="longest wait for a repair (default 90)")
    p.add_argument("--warmup", type=float, default=120.0,
                   help="seconds of each daemon's life left out of its RSS/thread slope (default 120)")
    p.add_argument("--min-span", type=float, default=30.0,
                   help="shortest sampled span after warm-up for a slope to be reported (default 30 s)")
    p.add_argument("--transfer-every", type=float, default=10.0, help="seconds between transfers (default 10)")
    p.add_argument("--transfer-kib", type=int, default=256, help="size of each checked transfer (default 256 KiB)")
    p.add_argument("--min-delivery", type=float, default=0.9,
                   help="pass only if this share of pings outside repair windows is answered (default 0.9)")
    p.add_argument("--log-level", default="WARNING", help="the daemons' log level (default WARNING)")
    p.add_argument("--samples", metavar="FILE", help="write every RSS/thread sample as JSON lines to FILE")
    p.add_argument("--keep", action="store_true", help="keep the work directory (identities, logs) afterwards")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object (progress on stderr)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 3 <= args.nodes <= MAX_NODES:
        parser.error(f"--nodes must be from 3 to {MAX_NODES}")
    if args.churn_nodes is None:
        args.churn_nodes = args.nodes // 2
    if not 0 <= args.churn_nodes <= args.nodes // 2:
        parser.error("--churn-nodes must be from 0 to half the nodes")
    if not (0 < args.seconds <= 86400 and 0 <= args.loss_percent <= 50 and args.hold > 0 and args.quiet > 0
            and args.repair_cap > 0 and args.transfer_every > 0 and 1 <= args.transfer_kib <= 65536):
        parser.error("durations must be positive, --seconds at most 86400, --loss-percent 0..50, --transfer-kib 1..65536")
    reason = namespaces.netns_unavailable_reason()
    if reason is None and shutil.which("nft") is None:
        reason = "the `nft` command is missing (install the nftables package)"
    if reason is not None:
        print(f"soak: cannot run here: {reason}", file=sys.stderr)
        return 2
    # Explicit handlers: an inherited SIG_IGN (a background job of a shell without job control) must not
    # keep Ctrl-C from removing what the run built.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    namespaces.cleanup_leftovers()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
