"""A simulator run: build the topology, cold-start the tree until it is stable, measure, then each failure case
from the converged state, round by round until delivery is back at 100% and the forest is stable again."""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.sparse.csgraph import connected_components

from axiomnet.constants import (
    HEARTBEAT_INTERVAL,
    MAX_LINK_PLAINTEXT,
    MAX_TREE_DEPTH,
    NEIGHBOUR_TIMEOUT,
    ROOT_TIMEOUT,
)
from axiomnet.routed import FIXED_SIZE as ROUTED_FIXED_SIZE
from tools.sim import graphs
from tools.sim.adversary import Attack, add_rogue, choose_blackholes, honest_component, honest_delivery
from tools.sim.engine import FILTER_LINKS_MAX, NODE_EVERY, Links, Network
from tools.sim.measure import (
    Filters,
    address_bits,
    bfs_hops,
    delivery,
    percentile,
    sample_pairs,
    state_bytes,
)

# A forest unchanged for this many rounds is stable: longer than any wait in the core. In protocol 3 that is a
# node's own refresh (1.5 x CERT_REFRESH H, engine.NODE_EVERY): a node that declared its root dead at a seq its
# neighbours had not passed when they answered its new tree can stay apart until one of them refreshes (seen
# after 10-40% node failures). Pending session timeouts (PEER_DEAD_AFTER) are waited for as well (run_rounds).
QUIET_ROUNDS = math.ceil(max(NODE_EVERY, NEIGHBOUR_TIMEOUT, ROOT_TIMEOUT) / HEARTBEAT_INTERVAL) + 2
FAILURES = ("leaf", "inner", "root-link", "root", "nodes")
REPAIR_TARGET_ROUNDS = 5  # issue 8: inner node or link lost -> 100% delivery again within 5 heartbeats


@dataclass
class Options:
    topology: str
    nodes: int
    seed: int = 0
    pairs: int = 1000
    lookups: int = 200
    curve_pairs: int = 200  # pairs routed every round of a cold start or a repair
    max_rounds: int = 3000
    fail_nodes: float = 0.0
    failures: list[str] = field(default_factory=list)
    rgg_radius: float | None = None
    root: str = "random"  # "hub": give the lowest key to the highest-degree node (a what-if on root placement)
    attack: Attack = field(default_factory=Attack)
    trees: int = 1  # k trees over the same links, each under its own root order (salted root hashes; a wire change)
    link_rtt: str = "equal"  # "random": every link's RTT uniform in RANDOM_RTT (parent cost = (depth + 1) x RTT)
    parent_rule: str = "shallower"  # tree.py's rule; "cost": the rule before it (Network.parent_rule), measured only
    depth_bound: int = MAX_TREE_DEPTH  # the core's (protocol 4); smaller: what a bound does (ROUTING.md "Any depth")
    progress: int = 0  # every this many cold-start rounds, one line on stderr (0: none)


RANDOM_RTT = (0.005, 0.100)  # seconds: --link-rtt random draws each link's RTT uniformly from this range
# The deepest --depth-bound: a routed packet carrying two paths that deep (2 bytes a port) and a 1,280-byte payload
# still fits one link datagram (docs/PROTOCOL.md §6.1); the core's MAX_TREE_DEPTH is this bound since protocol 4.
MIN_PAYLOAD = 1280
MAX_DEPTH_BOUND = (MAX_LINK_PLAINTEXT - ROUTED_FIXED_SIZE - MIN_PAYLOAD) // 4


def _components(net: Network, graph: graphs.Graph) -> np.ndarray:
    """Component label of every live node over live links (-1 for dead nodes)."""
    lk = net.links
    keep = net.alive[lk.src] & net.alive[lk.dst] & net.link_up
    from scipy.sparse import coo_array
    adj = coo_array((np.ones(int(keep.sum()), dtype=np.int8), (lk.src[keep], lk.dst[keep])),
                    shape=(lk.n, lk.n)).tocsr()
    _, labels = connected_components(adj, directed=False)
    return np.where(net.alive, labels, -1)


def _largest(labels: np.ndarray) -> np.ndarray:
    live = labels[labels >= 0]
    return np.flatnonzero(labels == np.argmax(np.bincount(live)))


def _rate(net: Network, pairs: np.ndarray) -> float:
    traces, _ = delivery(net, pairs)
    return sum(t.delivered for t in traces) / max(1, len(traces))


def _settled(curve: list[float]) -> int | None:
    """The first index from which every value is 1.0 (None if the last one is not)."""
    if not curve or curve[-1] < 1.0:
        return None
    r = len(curve)
    while r > 0 and curve[r - 1] >= 1.0:
        r -= 1
    return r


def run_rounds(net: Network, max_rounds: int, each: Callable[[Network], None]) -> tuple[bool, int]:
    """Step until the forest has not changed for QUIET_ROUNDS; (stable, round of the last change)."""
    last = net.t
    for _ in range(max_rounds):
        net.step()
        each(net)
        if net.changed:
            last = net.t
        elif net.t - last >= QUIET_ROUNDS and not net.removals_pending():  # and no silent neighbour still held
            return True, last
    return False, last


def subtree_sizes(parent: np.ndarray, depth: np.ndarray, alive: np.ndarray) -> np.ndarray:
    size = alive.astype(np.int64)
    child = np.flatnonzero(alive & (parent >= 0))
    for d in range(int(depth[child].max(initial=0)), 0, -1):
        level = child[depth[child] == d]
        np.add.at(size, parent[level], size[level])
    return size


def simulate(opts: Options) -> dict[str, Any]:
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    rng = np.random.default_rng(opts.seed)
    graph = graphs.build(opts.topology, opts.nodes, opts.seed, opts.rgg_radius)
    attack = opts.attack
    if attack.rogue_root:
        graph = add_rogue(graph, attack.rogue_links)
    n = graph.n
    rank = rng.permutation(n)  # Ed25519 key order: the lowest is the root
    if opts.root == "hub":
        hub = int(np.argmax(np.bincount(np.concatenate([graph.u, graph.v]), minlength=n)))
        rank[[hub, int(np.argmin(rank))]] = rank[[int(np.argmin(rank)), hub]]
    hostile = np.zeros(n, dtype=bool)
    if attack.rogue_root:  # the extra node grinds a key below every honest one
        rogue = n - 1
        rank[[rogue, int(np.argmin(rank))]] = rank[[int(np.argmin(rank)), rogue]]
        hostile[rogue] = True
    if attack.blackholes > 0:
        honest_root = int(np.argmin(np.where(hostile, n, rank)))
        hostile |= choose_blackholes(n, [honest_root, *np.flatnonzero(hostile).tolist()], attack.blackholes,
                                     np.random.default_rng([opts.seed, 2]))
    order = rng.permutation(n)  # noise key order: breaks cost ties between candidates
    rtt = None
    if opts.link_rtt == "random":
        rtt = np.random.default_rng([opts.seed, 4]).uniform(*RANDOM_RTT, size=graph.edges)
    links = Links(n, graph.u, graph.v, order, rtt=rtt)
    addresses = [b"\xfc" + rng.bytes(15) for _ in range(n)]
    bits = address_bits(addresses) if len(links) <= FILTER_LINKS_MAX else None  # filter-driven announcements
    net = Network(links, rank, bits=bits, depth_bound=opts.depth_bound)
    net.parent_rule = opts.parent_rule
    built = time.perf_counter()

    labels = _components(net, graph)
    comp = _largest(labels)
    main_root = int(comp[np.argmin(rank[comp])])
    curve_pairs = sample_pairs(comp, opts.curve_pairs, rng)
    cold_curve: list[float] = []
    root_share: list[float] = []  # share of the component under the final root, per round
    root_round: list[int] = []

    def cold_each(sim: Network) -> None:
        # Before one root covers the component some pairs straddle two trees and fail for sure: route the
        # sample only from then on (rounds before count as below 100%).
        under = sim.root[comp] == main_root
        root_share.append(float(under.mean()))
        if not root_round and bool(under.all()):
            root_round.append(sim.t)
        cold_curve.append(_rate(sim, curve_pairs) if root_round else 0.0)
        if opts.progress and sim.t % opts.progress == 0:
            print(f"round {sim.t}: {root_share[-1]:.1%} under the final root, max depth "
                  f"{int(sim.depth[sim.alive].max())}, {sim.changed} nodes moved, {time.process_time() - cpu0:.1f} s CPU, "
                  f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", file=sys.stderr,
                  flush=True)

    stable, converged = run_rounds(net, opts.max_rounds, cold_each)
    # Trees 1..k-1: the same links, each under its own key order (a salted hash of the keys), converged the same
    # way; the rogue root (it grinds one key per tree: k x n tries) is the root of every one.
    more: list[Network] = []
    more_rounds: list[int] = []
    for t in range(1, opts.trees):
        rank_t = np.random.default_rng([opts.seed, 3, t]).permutation(n)
        if attack.rogue_root:
            rank_t[[n - 1, int(np.argmin(rank_t))]] = rank_t[[int(np.argmin(rank_t)), n - 1]]
        net_t = Network(links, rank_t, bits=bits, depth_bound=opts.depth_bound)
        net_t.parent_rule = opts.parent_rule
        ok_t, last_t = run_rounds(net_t, opts.max_rounds, lambda sim: None)
        stable &= ok_t
        more.append(net_t)
        more_rounds.append(last_t)
    cold_done = time.perf_counter()

    # Steady state: delivery and stretch, depth, placement, lookups, state.
    pairs = sample_pairs(comp, opts.pairs, rng)
    traces, fwd = delivery(net, pairs, tuple(more))
    ok = np.array([t.delivered for t in traces])
    hops = np.array([t.hops for t in traces])
    shortest = bfs_hops(graph.csr(), pairs)
    stretch = hops[ok] / shortest[ok]
    same_tree = np.zeros(len(pairs), dtype=bool)
    for tree in (net, *more):
        same_tree |= tree.root[pairs[:, 0]] == tree.root[pairs[:, 1]]
    reasons: dict[str, int] = {}
    for t in traces:
        if not t.delivered:
            reasons[t.reason] = reasons.get(t.reason, 0) + 1
    in_main = comp[net.root[comp] == main_root]
    filters = Filters(net.parent, net.depth, net.alive, address_bits(addresses))
    lookup_pairs = sample_pairs(in_main, opts.lookups, rng)
    msgs, reached = [], 0
    for s, d in lookup_pairs:
        m, hit = filters.lookup(int(s), int(d))
        msgs.append(m)
        reached += hit
    state = state_bytes(net, filters)
    # Honest pairs joined by honest paths, with the hostile nodes dropping what they should relay or answer (its
    # own generator: the runs without an attack keep their samples).
    honest = honest_delivery(graph, fwd, filters, hostile, honest_component(graph, net.alive, hostile), opts.pairs,
                             np.random.default_rng([opts.seed, 1]), attack.ring)
    measured = time.perf_counter()

    cold_settled = _settled(cold_curve)
    result: dict[str, Any] = {
        "topology": opts.topology, "root_placement": opts.root, "nodes": n, "edges": graph.edges, "seed": opts.seed, "notes": graph.notes,
        "nodes_requested": opts.nodes, "largest_component": len(comp),
        "delivery": float(ok.mean()) if len(ok) else float("nan"),
        "stretch_mean": float(stretch.mean()) if stretch.size else float("nan"),
        "stretch_p99": percentile(stretch, 99),
        "shortest_mean": float(shortest.mean()) if len(shortest) else float("nan"),
        "pairs": len(pairs), "drops": reasons,
        "delivery_same_tree": float(ok[same_tree].mean()) if same_tree.any() else float("nan"),
        "converge_rounds": converged, "converged": stable, "one_root_round": root_round[0] if root_round else None,
        "cold_start_delivery_round": None if cold_settled is None else cold_settled + 1,  # curve[i]: round i+1
        "max_tree_depth": int(net.depth[net.alive].max()), "mean_tree_depth": float(net.depth[comp].mean()),
        "depth_bound": opts.depth_bound,
        "trees": int(np.unique(net.root[net.alive]).size),
        "unplaced": int(len(comp) - len(in_main)),
        "lookup_messages_mean": float(np.mean(msgs)) if msgs else float("nan"),
        "lookup_messages_p99": percentile(msgs, 99),
        "lookup_reached": reached / max(1, len(msgs)),
        "lookups": len(msgs),
        "state": state,
        "cold_start_curve": cold_curve,
        "cold_start_root_share": root_share,
        "failures": [],
        "tree_count": opts.trees, "link_rtt": opts.link_rtt, "parent_rule": opts.parent_rule,
        "trees_converge_rounds": [converged, *more_rounds],
        "trees_max_depth": [int(tree.depth[tree.alive].max()) for tree in (net, *more)],
        "trees_mean_depth": [float(tree.depth[comp].mean()) for tree in (net, *more)],
        "attack": {"blackholes": int(hostile.sum()) - int(attack.rogue_root), "blackhole_fraction": attack.blackholes,
                   "rogue_root": attack.rogue_root, "rogue_links": attack.rogue_links if attack.rogue_root else 0,
                   "ring_fallback": attack.ring},
        **honest,
    }
    fwd_depth = int(fwd.depth[net.alive].max())
    cases = list(opts.failures)
    if opts.fail_nodes > 0 and "nodes" not in cases:
        cases.append("nodes")
    for case in cases:
        result["failures"].append(_failure(net, graph, case, opts, rng, fwd_depth, main_root))
    done = time.perf_counter()
    result["seconds"] = {"build": round(built - t0, 2), "cold_start": round(cold_done - built, 2),
                         "measure": round(measured - cold_done, 2), "failures": round(done - measured, 2),
                         "total": round(done - t0, 2), "cpu": round(time.process_time() - cpu0, 2),
                         "per_round": round((cold_done - built) / max(1, net.t), 4)}
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _failure(base: Network, graph: graphs.Graph, case: str, opts: Options, rng: np.random.Generator,
             depth: int, main_root: int) -> dict[str, Any]:
    net = base.clone()
    start = net.t
    alive = np.flatnonzero(net.alive & (net.root == main_root))
    nonroot = alive[alive != main_root]
    children = np.bincount(net.parent[net.parent >= 0], minlength=graph.n)
    what: str
    if case == "root":
        net.kill(np.array([main_root]))
        what = f"root {main_root}"
    elif case == "leaf":
        leaves = nonroot[children[nonroot] == 0]
        victim = int(rng.choice(leaves))
        net.kill(np.array([victim]))
        what = f"leaf {victim} at depth {int(net.depth[victim])}"
    elif case == "inner":
        inner = nonroot[children[nonroot] > 0]
        if inner.size == 0:
            return {"case": case, "skipped": "no inner node"}
        victim = int(rng.choice(inner))
        size = subtree_sizes(net.parent, net.depth, net.alive)
        net.kill(np.array([victim]))
        what = f"inner node {victim} at depth {int(net.depth[victim])}, subtree {int(size[victim])} nodes"
    elif case == "root-link":
        size = subtree_sizes(net.parent, net.depth, net.alive)
        kids = np.flatnonzero((net.parent == main_root) & net.alive)
        child = int(kids[np.argmax(size[kids])])
        net.cut(main_root, child)
        what = f"link root-{child} (subtree {int(size[child])} nodes)"
    elif case == "nodes":
        count = max(1, int(round(opts.fail_nodes * len(nonroot))))
        net.kill(rng.choice(nonroot, size=count, replace=False))
        what = f"{count} random non-root nodes ({opts.fail_nodes:.0%})"
    else:
        raise ValueError(f"unknown failure {case!r} (choose from {', '.join(FAILURES)})")
    labels = _components(net, graph)
    comp = _largest(labels)
    pairs = sample_pairs(comp, opts.curve_pairs, rng)
    curve = [_rate(net, pairs)]
    roots: list[int] = []
    lowest = int(comp[np.argmin(net.rank[comp])])

    def each(sim: Network) -> None:
        curve.append(_rate(sim, pairs))
        if not roots and bool((sim.root[comp] == lowest).all()):
            roots.append(sim.t - start)

    stable, last = run_rounds(net, opts.max_rounds, each)
    settled = _settled(curve)
    target = 3 + 2 * depth if case == "root" else REPAIR_TARGET_ROUNDS if case in ("inner", "root-link") else None
    return {
        "case": case, "what": what, "live_component": len(comp), "depth_before": depth,
        "delivery_rounds": settled, "stable_rounds": max(0, last - start), "stable": stable,
        "one_root_rounds": roots[0] if roots else None, "target_rounds": target,
        "met": None if target is None or settled is None else settled <= target,
        "curve": curve, "max_tree_depth_after": int(net.depth[net.alive].max()),
    }
