#!/usr/bin/env python3
"""Routing simulator: AxiomNet's spanning tree, greedy next hop and lookups on 10^3..10^5-node topologies.

    python tools/simulate.py --topology ba --nodes 10000
    python tools/simulate.py --topology rgg --nodes 3000 --fail-root --fail-inner --json
    python tools/simulate.py --topology as --nodes 100000 --fail-nodes 0.1
    python tools/simulate.py --topology ba --nodes 10000 --blackholes 0.05 --rogue-root --json

Builds the graph (networkx), then runs the core's own decisions in synchronous heartbeat rounds over numpy
arrays: every round one axiomnet.tree.select_parents call for all nodes; packets forwarded hop by hop with
axiomnet.greedy (distances_to, greedy_choice), watermark and hop limit as axiomnet/forward.py; lookups over
axiomnet.bloom filters. It reports delivery and stretch over sampled pairs, rounds to converge from a cold
start, tree depth, per-node state and lookup messages, and for each failure asked for the rounds until
delivery over the live largest component is 100% again and until the forest is stable.
A node that would sit deeper than MAX_TREE_DEPTH (16,036 since protocol 4; --depth-bound D lowers it) cannot take a place in the
root's tree: it roots a tree of its own, and pairs across trees fail; the report counts those nodes ("unplaced")
and trees.
With --blackholes F and/or --rogue-root, hostile nodes drop everything they should relay or answer; the report
adds delivery among honest pairs joined by honest paths (delivery_honest; by the tree alone: delivery_honest_tree),
with the expanding-ring fallback and its message cost (tools/sim/adversary.py; --no-ring leaves it out).
What-ifs measured here only (docs/ROUTING.md "Stretch: protocol 2, and several trees"): --trees K runs K trees
over the same links, each under its own key order, with greedy on the minimum distance over trees
(axiomnet.greedy.forest_choice; a wire change the daemon does not have); --link-rtt random gives the links
different RTTs, which tree.py's parent cost weighs; --parent-rule cost runs the parent rule tree.py had before
the shallower rule (it oscillates with RTTs that differ);
--depth-bound D lets positions go at most D deep (hop limit 2 x D + 2): a smaller bound than the core's, to see
what a bound does to a deep graph (docs/ROUTING.md "Any depth").
Needs the `sim` extra (pip install -e '.[sim]'). docs/ROUTING.md has the measured tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The repository root, for tools.sim (the core it drives is the installed axiomnet, the same files).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.sim.graphs import TOPOLOGIES  # noqa: E402
from tools.sim.adversary import Attack  # noqa: E402
from tools.sim.scenarios import MAX_DEPTH_BOUND, Options, simulate  # noqa: E402
from axiomnet.constants import MAX_TREE_DEPTH  # noqa: E402

MAX_NODES = 1_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--topology", required=True, choices=TOPOLOGIES,
                        help="rgg: random geometric (radius just above connectivity); ba: Barabasi-Albert m=2; "
                             "as: AS-like (Elmokashfi model); grid: square grid; chain: path; "
                             "tree: random recursive tree")
    parser.add_argument("--nodes", required=True, type=int, help=f"number of nodes (2..{MAX_NODES})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (graph, keys, samples; default 0)")
    parser.add_argument("--fail-nodes", type=float, default=0.0, metavar="F",
                        help="after convergence, remove a random fraction F (0 < F < 1) of the non-root nodes")
    parser.add_argument("--fail-root", action="store_true", help="after convergence, remove the root")
    parser.add_argument("--fail-leaf", action="store_true", help="after convergence, remove a random leaf")
    parser.add_argument("--fail-inner", action="store_true",
                        help="after convergence, remove a random inner (non-root, non-leaf) node")
    parser.add_argument("--fail-root-link", action="store_true",
                        help="after convergence, cut the root's link to its largest subtree")
    parser.add_argument("--repair", action="store_true",
                        help="all four single failures (leaf, inner, root-link, root), each from the converged state")
    parser.add_argument("--pairs", type=int, default=1000, help="sampled pairs for delivery and stretch (default 1000)")
    parser.add_argument("--curve-pairs", type=int, default=200,
                        help="pairs routed after every round of the cold start and of each repair (default 200)")
    parser.add_argument("--lookups", type=int, default=200, help="sampled lookups (default 200)")
    parser.add_argument("--max-rounds", type=int, default=3000,
                        help="give up if the forest is not stable after this many rounds (default 3000)")
    parser.add_argument("--rgg-radius", type=float, default=None,
                        help="rgg only: connection radius in the unit square (default sqrt(1.5 ln n / (pi n)))")
    parser.add_argument("--root", choices=("random", "hub"), default="random",
                        help="random: the lowest key is a random node, as deployed (default); hub: give it to the "
                             "highest-degree node (a what-if on root placement)")
    parser.add_argument("--blackholes", type=float, default=0.0, metavar="F",
                        help="a random fraction F (0 <= F < 1) of the non-root nodes drops everything it should relay "
                             "or answer (data, lookups, replies, ring searches)")
    parser.add_argument("--rogue-root", action="store_true",
                        help="one extra node holding the lowest key, linked to the highest-degree nodes, black-holing")
    parser.add_argument("--rogue-links", type=int, default=8, metavar="K",
                        help="links of the rogue root, to the K highest-degree nodes (default 8)")
    parser.add_argument("--no-ring", action="store_true",
                        help="measure honest pairs without the expanding-ring fallback (tree lookup and greedy only)")
    parser.add_argument("--trees", type=int, default=1, metavar="K",
                        help="K spanning trees over the same links, each under its own root order (salted root "
                             "hashes), greedy on the minimum distance over trees (a wire change: K coordinate sets "
                             "per packet; measured here only; default 1, the deployed protocol)")
    parser.add_argument("--link-rtt", choices=("equal", "random"), default="equal",
                        help="equal: every link's RTT the same, parent cost = depth (default); random: uniform "
                             "5-100 ms per link, parent cost = (depth + 1) x RTT as tree.py weighs it")
    parser.add_argument("--parent-rule", choices=("cost", "shallower"), default="shallower",
                        help="shallower: tree.py's rule (default): a node whose parent is still a candidate moves only "
                             "to one above its own depth (no two-node cycles); cost: the rule before it, by cost alone")
    parser.add_argument("--depth-bound", type=int, default=MAX_TREE_DEPTH, metavar="D",
                        help=f"the deepest position a node may take (default MAX_TREE_DEPTH, {MAX_TREE_DEPTH}, the "
                             f"core's: routed headers of two u16 paths that deep with a 1,280-byte payload fill one "
                             f"datagram, announcements travel in parts; docs/ROUTING.md \"Any depth\"); smaller "
                             f"shows what a bound does, at most {MAX_DEPTH_BOUND}. Hop limit 2 x D + 2")
    parser.add_argument("--progress", type=int, default=0, metavar="N",
                        help="every N cold-start rounds, print the round, the share under the final root, the max "
                             "depth, nodes moved, CPU and peak RSS on stderr (for long runs; default 0: never)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= MAX_NODES:
        parser.error(f"--nodes must be between 2 and {MAX_NODES}")
    if not 0 <= args.fail_nodes < 1:
        parser.error("--fail-nodes must be a fraction: 0 <= F < 1")
    if args.pairs < 1 or args.curve_pairs < 1 or args.lookups < 0 or args.max_rounds < 1:
        parser.error("--pairs, --curve-pairs and --max-rounds must be positive, --lookups not negative")
    if not 0 <= args.blackholes < 1:
        parser.error("--blackholes must be a fraction: 0 <= F < 1")
    if not 1 <= args.trees <= 8:
        parser.error("--trees must be between 1 and 8")
    if args.trees > 1 and (args.repair or args.fail_nodes or args.fail_root or args.fail_leaf or args.fail_inner
                           or args.fail_root_link):
        parser.error("failures are simulated on one tree only: leave --trees at 1 with --repair / --fail-*")
    if args.progress < 0:
        parser.error("--progress must not be negative")
    if not 1 <= args.depth_bound <= MAX_DEPTH_BOUND:
        parser.error(f"--depth-bound must be between 1 and {MAX_DEPTH_BOUND}")
    if args.rogue_links < 1:
        parser.error("--rogue-links must be positive")
    if args.rgg_radius is not None and not 0 < args.rgg_radius < 1.5:
        parser.error("--rgg-radius must be in (0, 1.5)")
    return args


def options(args: argparse.Namespace) -> Options:
    chosen = [case for case, flag in (("leaf", args.fail_leaf), ("inner", args.fail_inner),
                                      ("root-link", args.fail_root_link), ("root", args.fail_root))
              if flag or args.repair]
    return Options(args.topology, args.nodes, seed=args.seed, pairs=args.pairs, lookups=args.lookups,
                   curve_pairs=args.curve_pairs, max_rounds=args.max_rounds, fail_nodes=args.fail_nodes,
                   failures=chosen, rgg_radius=args.rgg_radius, root=args.root,
                   attack=Attack(args.blackholes, args.rogue_root, args.rogue_links, not args.no_ring),
                   trees=args.trees, link_rtt=args.link_rtt, parent_rule=args.parent_rule,
                   depth_bound=args.depth_bound, progress=args.progress)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(r: dict[str, Any]) -> str:
    """The human-readable report."""
    s = r["state"]
    lines = [
        f"{r['topology']}: {r['nodes']} nodes, {r['edges']} links, seed {r['seed']}"
        + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""),
        f"  delivery           {r['delivery']:.2%} of {r['pairs']} pairs"
        + (f"  (drops: {r['drops']})" if r["drops"] else ""),
        f"  stretch            mean {r['stretch_mean']:.3f}, p99 {r['stretch_p99']:.3f} "
        f"(shortest path mean {r['shortest_mean']:.2f} hops; {r['tree_count']} tree(s), link RTT {r['link_rtt']}, "
        f"parent rule {r['parent_rule']})",
        f"  cold start         forest stable at round {r['converge_rounds']}"
        + ("" if r["converged"] else " (NOT stable: gave up)")
        + f", one root everywhere at round {_fmt(r['one_root_round'])}, 100% delivery from round "
        f"{_fmt(r['cold_start_delivery_round'])}",
        f"  tree               max depth {r['max_tree_depth']} (bound {r['depth_bound']}), mean "
        f"{r['mean_tree_depth']:.1f}, {r['trees']} tree(s), {r['unplaced']} node(s) outside the root's tree",
        f"  lookup             {r['lookup_messages_mean']:.1f} messages mean, p99 {r['lookup_messages_p99']:.0f} "
        f"({r['lookups']} lookups, {r['lookup_reached']:.0%} reached the owner)",
        f"  state per node     announcements held {s['announcements_bytes_mean']:.0f} B mean, "
        f"{s['announcements_bytes_max']:.0f} B max; lookup filters {s['bloom_bytes_mean']:.0f} B mean, "
        f"{s['bloom_bytes_max']:.0f} B max; bounded caches at most {s['bounded_caches_bytes'] / 2**20:.1f} MiB",
        f"                     degree mean {s['degree_mean']:.1f}, max {s['degree_max']}",
    ]
    a = r["attack"]
    lines.append(
        f"  honest pairs       delivery {r['delivery_honest']:.2%} ({r['delivery_honest_tree']:.2%} by the tree alone) "
        f"of {r['honest_pairs']} pairs joined by honest paths; stretch mean {r['stretch_honest_mean']:.3f}, "
        f"p99 {r['stretch_honest_p99']:.3f}")
    lines.append(
        f"  attack             {a['blackholes']} black holes ({a['blackhole_fraction']:.0%})"
        + (f", rogue root with {a['rogue_links']} links" if a["rogue_root"] else "")
        + f"; ring fallback {'on' if a['ring_fallback'] else 'off'}: used by {r['ring_share']:.1%} of pairs, "
        f"{r['ring_messages_mean']:.0f} messages mean (p99 {r['ring_messages_p99']:.0f}); lookup messages per pair "
        f"{r['lookup_messages_honest_mean']:.1f} mean, p99 {r['lookup_messages_honest_p99']:.0f}"
        + (f"; failures by the tree: {r['honest_failures']}" if r["honest_failures"] else ""))
    for f in r["failures"]:
        if "skipped" in f:
            lines.append(f"  fail {f['case']:<10} skipped: {f['skipped']}")
            continue
        target = "" if f["target_rounds"] is None else f" (target {f['target_rounds']}: " \
            f"{'met' if f['met'] else 'MISSED'})"
        lines.append(f"  fail {f['case']:<10} {f['what']}: 100% delivery over the live component "
                     f"({f['live_component']} nodes) after {_fmt(f['delivery_rounds'])} rounds{target}, "
                     f"forest stable after {f['stable_rounds']}" + ("" if f["stable"] else " (NOT stable)")
                     + f", one root after {_fmt(f['one_root_rounds'])}")
    sec = r["seconds"]
    lines.append(f"  time               {sec['total']:.1f} s wall, {sec['cpu']:.1f} s CPU (build {sec['build']}, cold start {sec['cold_start']} "
                 f"= {sec['per_round']} s/round, measure {sec['measure']}, failures {sec['failures']}); "
                 f"peak RSS {r['peak_rss_mib']} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = simulate(options(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
