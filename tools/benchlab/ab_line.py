"""A/B of two AxiomNet builds in one run: ``python -m benchlab.ab_line --python-a OLD/bin/python``.

On a host shared with other work, figures of two bench runs minutes apart differ by 2x; this puts both builds up
at once, each in its own line of namespaces (``--relays`` relays between the two ends; 0: two nodes), and
alternates short iperf3 runs between them (A, B, A, B, ...), so both see the same load. Prints one JSON object:
every run's Mbit/s, the Mbit per CPU-second of all the line's daemons, the medians and B / A. Root only; traffic
stays in the namespaces it creates; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from axiomnet.lab import daemons, namespaces

from benchlab import measure

PORT = 7443


def start_line(lab: namespaces.NetnsLab, workdir: Path, tag: str, relays: int, python: str, subnet: int) -> list[daemons.DaemonProcess]:
    """``relays`` + 2 nodes in a line, each dialling the one before it, run by ``python``."""
    spaces = [lab.add_namespace(f"{tag}{i}") for i in range(relays + 2)]
    links = [lab.connect(spaces[i], spaces[i + 1], ipv4_subnet=f"198.18.{subnet + i}.0/24",
                         ipv6_subnet=f"2001:2:0:{subnet + i}::/64") for i in range(relays + 1)]
    saved = sys.executable
    sys.executable = python  # start_daemon runs `sys.executable -m axiomnet daemon`
    try:
        return [daemons.start_daemon(ns, name=f"{tag}-{i}", listen=f"0.0.0.0:{PORT}",
                                     peers=[f"{links[i - 1].ipv4_a}:{PORT}"] if i else [], data_dir=workdir / f"{tag}-{i}",
                                     admin_socket=workdir / f"{tag}-{i}.sock", tun=ns.tun_name, log_level="WARNING")
                for i, ns in enumerate(spaces)]
    finally:
        sys.executable = saved


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-a", required=True, help="the python whose axiomnet is build A (the baseline)")
    parser.add_argument("--python-b", default=sys.executable, help="build B (default: this python)")
    parser.add_argument("--relays", type=int, default=1, help="relays between the ends (0..3)")
    parser.add_argument("--rounds", type=int, default=4, help="A, B pairs of runs (1..20)")
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 seconds per run (1..60)")
    parser.add_argument("--pings", type=int, default=0,
                        help="per round and line, also this many pings 20 ms apart on the idle line (0..500): RTT avg")
    parser.add_argument("--loaded", action="store_true",
                        help="ping every 10 ms during each iperf3 run: the p99 RTT under load (Mbit/s as usual)")
    args = parser.parse_args(argv)
    if (not 0 <= args.relays <= 3 or not 1 <= args.rounds <= 20 or not 1 <= args.seconds <= 60
            or not 0 <= args.pings <= 500):
        parser.error("--relays 0..3, --rounds 1..20, --seconds 1..60, --pings 0..500")
    reason = namespaces.netns_unavailable_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    namespaces.cleanup_leftovers()
    with tempfile.TemporaryDirectory(prefix="axiomnet-ab-") as tmp, namespaces.NetnsLab(stop_grace=3.0) as lab:
        lines = {"a": start_line(lab, Path(tmp), "a", args.relays, args.python_a, 0),
                 "b": start_line(lab, Path(tmp), "b", args.relays, args.python_b, 10)}
        for tag, nodes in lines.items():
            if measure.ping_once_until(nodes[0].ns, nodes[-1].address, 60.0) is None:
                print(f"line {tag}: no overlay reply end to end within 60 s\n{nodes[0].log_tail()}", file=sys.stderr)
                return 1
        runs: dict[str, list[float]] = {"a": [], "b": []}
        per_cpu: dict[str, list[float]] = {"a": [], "b": []}
        rtt: dict[str, list[float]] = {"a": [], "b": []}  # each round's average idle RTT, ms (--pings)
        rtt_min: dict[str, list[float]] = {"a": [], "b": []}  # and its minimum and median (less moved by the host's load)
        rtt_p50: dict[str, list[float]] = {"a": [], "b": []}
        p99: dict[str, list[float]] = {"a": [], "b": []}  # each round's p99 RTT under load, ms (--loaded)
        for _ in range(args.rounds):
            for tag, nodes in lines.items():
                if args.pings:
                    times, _sent = measure.ping_times(nodes[0].ns, nodes[-1].address, args.pings, 0.02)
                    if times:
                        rtt[tag].append(round(statistics.fmean(times), 3))
                        rtt_min[tag].append(round(min(times), 3))
                        rtt_p50[tag].append(round(statistics.median(times), 3))
                if args.loaded:
                    loaded = measure.rtt_under_load(nodes[-1].ns, nodes[0].ns, nodes[-1].address, args.seconds)
                    if isinstance(loaded.get("p99_ms"), (int, float)):
                        p99[tag].append(round(loaded["p99_ms"], 2))
                    if isinstance(loaded.get("mbps"), (int, float)):
                        runs[tag].append(round(loaded["mbps"], 1))
                    print(f"ab: {tag} {loaded.get('mbps')} Mbit/s, p99 {loaded.get('p99_ms')} ms", file=sys.stderr,
                          flush=True)
                    continue
                result = measure.iperf3_median(nodes[-1].ns, nodes[0].ns, nodes[-1].address, args.seconds, 1,
                                               pids=[n.pid for n in nodes])
                runs[tag].append(round(result["mbps"], 1))
                per_cpu[tag].append(round(result["mbit_per_cpu_s"] or 0.0, 1))
                print(f"ab: {tag} {result['mbps']:.0f} Mbit/s", file=sys.stderr, flush=True)
        a, b = _median(runs["a"]), _median(runs["b"])
        ca, cb = _median(per_cpu["a"]), _median(per_cpu["b"])
        extra: dict[str, object] = {}
        for name, values in (("rtt_avg_ms", rtt), ("rtt_min_ms", rtt_min), ("rtt_p50_ms", rtt_p50),
                             ("rtt_p99_loaded_ms", p99)):
            if values["a"] or values["b"]:
                ra, rb = _median(values["a"]), _median(values["b"])
                extra.update({f"a_{name}": values["a"], f"b_{name}": values["b"],
                              f"{name}_b_over_a": round(rb / ra, 3) if ra else None})
        print(json.dumps({**extra, "relays": args.relays, "seconds": args.seconds, "load_average": os.getloadavg()[0], "a_mbps": runs["a"], "b_mbps": runs["b"],
                          "a_median": a, "b_median": b, "b_over_a": round(b / a, 3) if a else None,
                          "a_mbit_per_cpu_s": per_cpu["a"], "b_mbit_per_cpu_s": per_cpu["b"],
                          "cpu_b_over_a": round(cb / ca, 3) if ca else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
