"""docs/ROUTING.md's simulator tables and plots: run tools/simulate.py over every topology and size, then draw.

    python -m tools.sim.sweep run            # every run (about an hour on 2 cores), results in docs/img/sim.json
    python -m tools.sim.sweep run --only ba:10000
    python -m tools.sim.sweep plot           # docs/img/*.png from docs/img/sim.json
    python -m tools.sim.sweep table          # the markdown tables of docs/ROUTING.md

Each run is its own process (`tools/simulate.py --json`), so its time and peak memory are its own; results
are saved after every run, and a run already in the file is not repeated unless --again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "img" / "sim.json"
IMAGES = ROOT / "docs" / "img"
TOPOLOGIES = ("as", "ba", "rgg", "grid", "chain", "tree")
SIZES = (1000, 10_000, 100_000)
REPAIR_SIZES = (1000, 10_000)  # every failure case at these sizes; at 10^5 only the cold start (time)
NO_REPAIR = (("chain", 10_000), ("grid", 10_000))  # past the depth bound: delivery never 100%, no repair time
TARGETS = {("as", 10_000): 1.056, ("ba", 10_000): 1.246, ("rgg", 3000): 1.43}  # issue 8, mean stretch
EXTRA = (("rgg", 3000),)  # the size of the RGG target


def runs() -> list[tuple[str, int]]:
    return [(t, n) for n in SIZES[:2] for t in TOPOLOGIES] + list(EXTRA) + [(t, SIZES[2]) for t in TOPOLOGIES]


def command(topology: str, nodes: int) -> list[str]:
    cmd = [sys.executable, str(ROOT / "tools" / "simulate.py"), "--topology", topology, "--nodes", str(nodes),
           "--json"]
    if (nodes in REPAIR_SIZES or (topology, nodes) in EXTRA) and (topology, nodes) not in NO_REPAIR:
        cmd += ["--repair", "--fail-nodes", "0.1"]
    return cmd


def run(args: argparse.Namespace) -> None:
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    wanted = runs() if not args.only else [(s.split(":")[0], int(s.split(":")[1])) for s in args.only]
    for topology, nodes in wanted:
        key = f"{topology}:{nodes}"
        if key in results and not args.again:
            continue
        cmd = command(topology, nodes)
        print(f"{key}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode != 0:
            print(f"  FAILED ({proc.returncode}): {proc.stderr[-2000:]}", flush=True)
            continue
        result = json.loads(proc.stdout)
        result["command"] = "python tools/simulate.py " + " ".join(cmd[2:])
        results[key] = result
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
        print(f"  {time.perf_counter() - start:.0f} s: delivery {result['delivery']:.4f}, stretch "
              f"{result['stretch_mean']:.3f}, depth {result['max_tree_depth']}", flush=True)


def _load() -> dict[str, Any]:
    if not RESULTS.exists():
        sys.exit(f"no results yet: run `python -m tools.sim.sweep run` first ({RESULTS})")
    return json.loads(RESULTS.read_text())


def plot(_: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _load()
    color = {t: f"C{i}" for i, t in enumerate(TOPOLOGIES)}  # one colour per topology in every plot
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for topology in TOPOLOGIES:
        rows = sorted((r["nodes"], r) for k, r in results.items() if k.startswith(topology + ":"))
        if not rows:
            continue
        sizes = [n for n, _ in rows]
        ax1.plot(sizes, [100 * r["delivery"] for _, r in rows], marker="o", label=topology,
                 color=color[topology])
        ax2.plot(sizes, [r["stretch_mean"] for _, r in rows], marker="o", label=topology, color=color[topology])
    for (topology, n), target in TARGETS.items():
        ax2.scatter([n], [target], marker="x", color="black", zorder=5)
        ax2.annotate(f"target {topology}", (n, target), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax1.set(xscale="log", xlabel="nodes", ylabel="delivery (%)", title="Delivery (pairs of the largest component)")
    ax2.set(xscale="log", xlabel="nodes", ylabel="mean stretch (hops / shortest)", title="Mean stretch")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(IMAGES / "sim-delivery-stretch.png", dpi=110)
    plt.close(fig)

    cases = ("leaf", "inner", "root-link", "root", "nodes")
    fig, axes = plt.subplots(1, len(cases), figsize=(17, 3.6), sharey=True)
    for ax, case in zip(axes, cases):
        for topology in TOPOLOGIES:
            r = results.get(f"{topology}:10000")
            f = next((f for f in (r or {}).get("failures", []) if f["case"] == case and "curve" in f), None)
            if f:
                ax.plot(range(len(f["curve"])), [100 * x for x in f["curve"]], label=topology, drawstyle="steps-post",
                        color=color[topology])
        ax.set(title=f"{case} lost (10^4 nodes)", xlabel="heartbeats after the failure")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("delivery (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMAGES / "sim-recovery.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for topology in TOPOLOGIES:
        r = results.get(f"{topology}:100000")
        if r and r.get("cold_start_root_share"):
            share = r["cold_start_root_share"]
            ax.plot(range(1, len(share) + 1), [100 * x for x in share], label=topology, drawstyle="steps-post",
                    color=color[topology])
    ax.set(title="Cold start, 10^5 nodes: nodes under the final root", xlabel="heartbeats",
           ylabel="nodes of the largest component (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMAGES / "sim-cold-start.png", dpi=110)
    plt.close(fig)
    print(f"wrote {IMAGES}/sim-delivery-stretch.png, sim-recovery.png, sim-cold-start.png")


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def table(args: argparse.Namespace) -> None:
    """Print the two markdown tables, or with --doc rewrite them in docs/ROUTING.md between their markers."""
    text = "\n".join(_tables(_load()))
    if not args.doc:
        sys.stdout.write(text + "\n")
        return
    doc = ROOT / "docs" / "ROUTING.md"
    content = doc.read_text()
    first, second = text.split("\n\n", 1)
    for name, body in (("results", first), ("repair", second)):
        start = content.index(f"<!-- {name} table:")
        start = content.index("\n", start) + 1
        end = content.index(f"<!-- end {name} table -->")
        content = content[:start] + body.strip() + "\n" + content[end:]
    doc.write_text(content)
    print(f"rewrote the tables in {doc}")


def _tables(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out.append("| topology | nodes | links | delivery | stretch mean | p99 | target | cold start (rounds) | max depth |"
          " trees / unplaced | lookup msgs mean / p99 | ann. bytes mean / max | filters bytes mean / max |"
          " s/round | CPU s | peak MiB |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in sorted(results.items(), key=lambda kv: (TOPOLOGIES.index(kv[1]["topology"]), kv[1]["nodes"])):
        s = r["state"]
        target = TARGETS.get((r["topology"], r["nodes_requested"]))
        out.append(f"| {r['topology']} | {r['nodes']} | {r['edges']} | {100 * r['delivery']:.1f}% | "
                   f"{r['stretch_mean']:.3f} | {r['stretch_p99']:.2f} | {_cell(target)} | "
                   f"{r['converge_rounds']}{'' if r['converged'] else ' (not stable)'} | {r['max_tree_depth']} | "
                   f"{r['trees']} / {r['unplaced']} | {r['lookup_messages_mean']:.1f} / {r['lookup_messages_p99']:.0f} | "
                   f"{s['announcements_bytes_mean']:.0f} / {s['announcements_bytes_max']:.0f} | "
                   f"{s['bloom_bytes_mean']:.0f} / {s['bloom_bytes_max']:.0f} | {r['seconds']['per_round']:.3f} | "
                   f"{r['seconds']['cpu']:.0f} | {r['peak_rss_mib']:.0f} |")
    out.append("")
    out.append("| topology | nodes | depth | leaf | inner node | link near the root | root (target 3+2x depth) |"
               " 10% of nodes | cold start |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in sorted(results.items(), key=lambda kv: (TOPOLOGIES.index(kv[1]["topology"]), kv[1]["nodes"])):
        if not r["failures"]:
            continue
        f = {x["case"]: x for x in r["failures"]}

        def cell(case: str) -> str:
            x = f.get(case)
            if x is None or "skipped" in x:
                return "-"
            return f"{_cell(x['delivery_rounds'])} / {x['stable_rounds']}"

        root = f.get("root")
        root_cell = cell("root") + (f" ({root['target_rounds']})" if root and root.get("target_rounds") else "")
        out.append(f"| {r['topology']} | {r['nodes']} | {r['max_tree_depth']} | {cell('leaf')} | {cell('inner')} | "
                   f"{cell('root-link')} | {root_cell} | {cell('nodes')} | "
                   f"{_cell(r['cold_start_delivery_round'])} / {r['converge_rounds']} |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("run", help="run the simulations (results saved after each)")
    p.add_argument("--only", nargs="*", help="topology:nodes pairs to run (default: all)")
    p.add_argument("--again", action="store_true", help="re-run results already saved")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run before giving up (default 3600)")
    p.set_defaults(func=run)
    sub.add_parser("plot", help="draw docs/img/*.png").set_defaults(func=plot)
    p = sub.add_parser("table", help="print the markdown tables")
    p.add_argument("--doc", action="store_true", help="rewrite them in docs/ROUTING.md instead")
    p.set_defaults(func=table)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
