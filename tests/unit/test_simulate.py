"""tools/simulate.py: the vectorised simulator agrees with the real Tree round by round, delivers on every
topology, and greedy forwarding on the tree metric never loops; the metric's invariants (hypothesis).

Sized for CI (seconds); the 10^3..10^5-node measurements are in docs/ROUTING.md with their commands.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axiomnet.bloom import Bloom
from axiomnet.constants import HEARTBEAT_INTERVAL, HOP_LIMIT, MAX_TREE_DEPTH, PEER_DEAD_AFTER
from axiomnet.greedy import distances_to, pad_paths, tree_distance
from tests.unit.overlay_net import Overlay
from tools import simulate
from tools.sim import graphs
from tools.sim.engine import Links, Network
from tools.sim.measure import Filters, Forwarding, address_bits
from tools.sim.scenarios import run_rounds

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = {"delivery", "stretch_mean", "stretch_p99", "converge_rounds", "nodes", "max_tree_depth",
                 "lookup_messages_mean", "lookup_messages_p99", "state", "failures", "unplaced", "trees"}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert simulate.main([*args, "--json", "--pairs", "150", "--curve-pairs", "40", "--lookups", "30"]) == 0
    return json.loads(capsys.readouterr().out)


def network_of(graph: nx.Graph, seed: int) -> Network:
    rng = np.random.default_rng(seed)
    n = graph.number_of_nodes()
    edges = np.array(list(graph.edges), dtype=np.int64).reshape(-1, 2)
    return Network(Links(n, edges[:, 0], edges[:, 1], rng.permutation(n)), rng.permutation(n))


def converge(net: Network, max_rounds: int = 2000) -> None:
    stable, _ = run_rounds(net, max_rounds, lambda sim: None)
    assert stable, "the forest did not settle"


# --- the simulator against the real core ------------------------------------------------------------------
def _twin(graph: nx.Graph, seed: int) -> tuple[Overlay, Network, dict[bytes, int], dict[bytes, int]]:
    """A real overlay (tests/unit/overlay_net.py) and a Network with the same keys' order and ports. The real
    trees decide only at ticks, as the simulator's synchronous rounds do (the daemon also decides between ticks,
    on a better root or a change of its parent: faster, never slower)."""
    ov = Overlay(graph, seed=seed, between_ticks=False)
    nodes = sorted(graph)
    signing = [ov.nodes[v].identity.signing_key for v in nodes]
    noise = [ov.nodes[v].identity.public_key for v in nodes]
    ports = {(v, u): ov.nodes[v].tree.neighbours[noise[u]].port for v in nodes for u in graph[v]}
    edges = np.array(list(graph.edges), dtype=np.int64)
    links = Links(len(nodes), edges[:, 0], edges[:, 1], np.argsort(np.argsort(noise)), ports=ports)
    # The overlay has no link sessions: a silent node stays its neighbours' neighbour (no PEER_DEAD_AFTER).
    net = Network(links, np.argsort(np.argsort(signing)), bits=address_bits([ov.address(v) for v in nodes]),
                  peer_dead_after=None)
    return ov, net, {k: i for i, k in enumerate(signing)}, {k: i for i, k in enumerate(noise)}


def _tick_both(ov: Overlay, net: Network) -> None:
    # Real RTT samples carry float noise (~1e-9 s) that breaks cost ties at random; pin them to one value so
    # that ties fall to the noise-key order in both.
    for node in ov.nodes.values():
        for nb in node.tree.neighbours.values():
            nb.rtt = 0.002
    ov.tick()
    net.step()


def _states(ov: Overlay, net: Network, by_signing: dict[bytes, int], by_noise: dict[bytes, int]):
    paths, depth = net.positions()
    real, sim = {}, {}
    for v in sorted(ov.alive):
        tree = ov.nodes[v].tree
        real[v] = (by_signing.get(tree.root, -1), by_noise[tree.parent] if tree.parent else -1, tree.path, tree.seq)
        sim[v] = (int(net.root[v]), int(net.parent[v]), tuple(paths[v, : depth[v]].tolist()), int(net.seq[v]))
    return real, sim


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_simulator_matches_real_trees_round_by_round(seed: int) -> None:
    """Root, parent, path and root number of every node equal those of real Tree objects exchanging signed
    announcements, every round: cold start, a node going silent, then the root going silent."""
    graph = nx.gnp_random_graph(14, 0.15, seed=seed)
    graph = nx.compose(graph, nx.random_labeled_tree(14, seed=seed))  # connected
    ov, net, by_signing, by_noise = _twin(graph, seed)
    for phase, rounds in (("cold start", 14), ("node 5 silent", 10), ("root silent", 25)):
        if phase == "node 5 silent":
            ov.alive.discard(5)
            net.kill(np.array([5]))
        elif phase == "root silent":
            root = by_signing[min(ov.nodes[v].identity.signing_key for v in ov.alive)]
            ov.alive.discard(root)
            net.kill(np.array([root]))
        for r in range(rounds):
            _tick_both(ov, net)
            real, sim = _states(ov, net, by_signing, by_noise)
            assert sim == real, f"{phase}, round {r + 1}"
    # The comparison covered the whole repair: each live component is one tree under its lowest key.
    for component in nx.connected_components(graph.subgraph(ov.alive)):
        nodes = sorted(component)
        assert set(net.root[nodes].tolist()) == {nodes[int(np.argmin(net.rank[nodes]))]}


@pytest.mark.slow
def test_simulator_matches_real_trees_through_a_root_loss_on_a_ba_graph() -> None:
    """Root loss where a dead root's stale branches take nodes back (BA 60, seed 3): the simulator's record of the
    root a node left (Network.lf_*, Tree._left) matches the real trees round by round, and both re-form within
    3 + 2 x depth rounds."""
    ov, net, by_signing, by_noise = _twin(nx.barabasi_albert_graph(60, 2, seed=3), 3)
    for _ in range(30):
        _tick_both(ov, net)
    depth = int(net.depth.max())
    root = by_signing[min(ov.nodes[v].identity.signing_key for v in ov.alive)]
    ov.alive.discard(root)
    net.kill(np.array([root]))
    left, last, before = 0, 0, None
    for r in range(1, 3 + 2 * depth + 10):
        _tick_both(ov, net)
        real, sim = _states(ov, net, by_signing, by_noise)
        assert sim == real, f"root silent, round {r}"
        left = max(left, int(np.count_nonzero(net.lf_root >= 0)))
        now = {v: s[:3] for v, s in real.items()}
        last = r if now != before else last
        before = now
    assert left > 0 and last <= 3 + 2 * depth and ov.converged()


def test_a_silent_neighbour_is_a_routing_neighbour_until_peer_dead_after() -> None:
    """Protocol 3: no beats cross a non-tree link, so a neighbour that fell silent is known dead only when its
    session times out (PEER_DEAD_AFTER, Tree.remove); until then greedy may still pick it. Without sessions (the
    twin's overlay) it is never removed."""
    graph = nx.cycle_graph(8)
    for timeout, removed in ((PEER_DEAD_AFTER, True), (None, False)):
        net = network_of(graph, 2)
        net.peer_dead_after = timeout
        converge(net)
        lk = net.links
        # A node whose ring neighbour is not its tree neighbour: the edge between the two subtrees' ends.
        e = next(int(e) for e in range(len(lk)) if net.parent[lk.dst[e]] != lk.src[e]
                 and net.parent[lk.src[e]] != lk.dst[e])
        x, y = int(lk.dst[e]), int(lk.src[e])
        net.kill(np.array([y]))
        killed = net.t
        while net.t - killed < PEER_DEAD_AFTER - 1:
            net.step()
        assert e in net.routing_edges(net.t * HEARTBEAT_INTERVAL), (x, y)
        net.step()
        net.step()
        assert (e not in net.routing_edges(net.t * HEARTBEAT_INTERVAL)) == removed
        assert net.removals_pending() == (not removed and timeout is not None)


@pytest.mark.slow
def test_simulated_filters_equal_the_real_trees_filters() -> None:
    """The vectorised up/down unions equal what real Trees put in their announcements (Tree.bloom_for)."""
    graph = nx.compose(nx.gnp_random_graph(16, 0.12, seed=4), nx.random_labeled_tree(16, seed=4))
    ov, net, _, by_noise = _twin(graph, 4)
    for _ in range(30):
        _tick_both(ov, net)
    addresses = [ov.address(v) for v in sorted(graph)]
    filters = Filters(net.parent, net.depth, net.alive, address_bits(addresses))
    for v in sorted(graph):
        tree = ov.nodes[v].tree
        for nb in tree.neighbours.values():
            u = by_noise[nb.noise_key]
            if net.parent[u] == v:  # nb is our child: what it told us is its subtree
                assert nb.bloom == Bloom(filters.up[u].copy())
            elif net.parent[v] == u:  # nb is our parent: what it told us is everything else
                assert nb.bloom == Bloom(filters.down[v].copy())
            else:
                assert nb.bloom is None


# --- the command line ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("topology,nodes", [("rgg", 150), ("ba", 150), ("as", 150), ("grid", 64), ("chain", 40),
                                            ("tree", 150)])
def test_every_topology_delivers_every_pair(capsys: pytest.CaptureFixture[str], topology: str, nodes: int) -> None:
    result = run_cli(capsys, "--topology", topology, "--nodes", str(nodes), "--seed", "3")
    assert REQUIRED_KEYS <= result.keys()
    assert result["delivery"] == 1.0 and result["drops"] == {}
    assert result["stretch_mean"] >= 1.0 and result["stretch_p99"] >= result["stretch_mean"] - 1e-9
    assert result["converged"] and result["trees"] == 1 and result["unplaced"] == 0
    assert result["max_tree_depth"] <= MAX_TREE_DEPTH
    assert result["lookup_reached"] == 1.0 and result["lookup_messages_mean"] >= 1
    if topology in ("chain", "tree"):
        assert result["stretch_mean"] == 1.0  # a tree has one path


@pytest.mark.slow
def test_failures_are_repaired_to_full_delivery(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--topology", "ba", "--nodes", "200", "--repair", "--fail-nodes", "0.1")
    cases = {f["case"]: f for f in result["failures"]}
    assert set(cases) == {"leaf", "inner", "root-link", "root", "nodes"}
    for case in cases.values():
        assert case["stable"] and case["delivery_rounds"] is not None
        assert case["curve"][-1] == 1.0
    assert cases["root"]["one_root_rounds"] is not None  # the next-lowest key took over everywhere
    assert cases["nodes"]["live_component"] < 200


@pytest.mark.slow
def test_a_chain_deeper_than_the_old_u8_bound_delivers_every_pair(capsys: pytest.CaptureFixture[str]) -> None:
    """Protocol 2 has no 127-hop bound: a 600-node chain (depth well past 255) is one tree, every pair delivered."""
    result = run_cli(capsys, "--topology", "chain", "--nodes", "600", "--seed", "1", "--pairs", "300")
    assert result["max_tree_depth"] > 255 and result["trees"] == 1 and result["unplaced"] == 0
    assert result["delivery"] == 1.0


def test_the_simulators_depth_bound_is_the_cores() -> None:
    """The engine places nodes as deep as the core does (MAX_TREE_DEPTH, protocol 4: the routed header's 16,036);
    chains past it are reported as trees of their own (the next test, with a smaller --depth-bound)."""
    from tools.sim.scenarios import MAX_DEPTH_BOUND, Options
    assert Options("chain", 50).depth_bound == MAX_DEPTH_BOUND == MAX_TREE_DEPTH == 16036
    assert simulate.parse_args(["--topology", "chain", "--nodes", "50"]).depth_bound == MAX_TREE_DEPTH
    assert inspect.signature(Network).parameters["depth_bound"].default == MAX_TREE_DEPTH


def test_a_depth_bound_below_the_chain_splits_it_into_trees_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """--depth-bound D is the bound the core's decisions and the hop limit (2 x D + 2) use: under a bound below the
    chain's depth nodes root trees of their own (pairs across fail, reported not hidden), under one above it every
    pair delivers."""
    small = run_cli(capsys, "--topology", "chain", "--nodes", "60", "--seed", "1", "--depth-bound", "12")
    assert small["depth_bound"] == 12 and small["max_tree_depth"] == 12
    assert small["unplaced"] > 0 and small["trees"] > 1 and set(small["drops"]) == {"other_tree"}
    whole = run_cli(capsys, "--topology", "chain", "--nodes", "60", "--seed", "1", "--depth-bound", "60")
    assert whole["max_tree_depth"] > 12 and whole["trees"] == 1 and whole["unplaced"] == 0
    assert whole["delivery"] == 1.0 and whole["delivery_honest"] == 1.0


def test_depth_bounds_past_the_routed_header_and_negative_progress_are_refused() -> None:
    """The bound stops where two u16 paths and a 1,280-byte payload no longer fit one link datagram."""
    from tools.sim.scenarios import MAX_DEPTH_BOUND
    assert MAX_DEPTH_BOUND == (65475 - 48 - 1280) // 4 == 16036 and 2 * MAX_DEPTH_BOUND + 2 <= 0xFFFF
    assert simulate.parse_args(["--topology", "chain", "--nodes", "50", "--depth-bound", "16036"]).depth_bound == 16036
    for bad in (["--depth-bound", "0"], ["--depth-bound", "16037"], ["--progress", "-1"]):
        with pytest.raises(SystemExit):
            simulate.parse_args(["--topology", "chain", "--nodes", "50", *bad])


def test_progress_lines_report_the_cold_start_every_n_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    """--progress N: one line on stderr every N cold-start rounds (long runs can be watched, or reported if cut)."""
    assert simulate.main(["--topology", "chain", "--nodes", "30", "--seed", "1", "--progress", "5", "--json",
                          "--pairs", "20", "--curve-pairs", "5", "--lookups", "5"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    lines = captured.err.splitlines()
    assert lines and all(line.startswith(f"round {5 * (i + 1)}: ") for i, line in enumerate(lines))
    assert 5 * len(lines) >= result["converge_rounds"]
    assert f"max depth {result['max_tree_depth']}," in lines[-1] and "100.0% under the final root" in lines[-1]


def test_the_chain_pool_reuses_freed_rows_without_overwriting_a_live_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of the chain pool keep their numbers and are reused once nobody points to them: through a cold start
    and several refresh waves (each renews every chain) on a 150-node chain with a small headroom, the pool stays
    within the live rows plus twice the headroom plus a round's new chains, and every node's chain row still holds
    its parent's path plus the port its parent gave it."""
    from tools.sim import engine
    monkeypatch.setattr(engine, "HEADROOM_CELLS", 32 * 128)  # 32 rows of headroom once the rows are 128 wide
    net = network_of(nx.path_graph(150), 2)
    over = []
    for _ in range(260):  # > 2 x the depth: the cold start, then 4+ refresh waves (CERT_REFRESH 30)
        net.step()
        if net.width == 128:
            live = np.unique(np.concatenate([net.chain, net.st_chain[net.st_has]])).size
            over.append(net.capacity - live)
    assert len(over) > 150 and max(over) <= 2 * 32 + 2 * 150, max(over)
    paths, depth = net.positions()
    lk = net.links
    for v in np.flatnonzero(net.parent >= 0):
        p = int(net.parent[v])
        assert tuple(paths[v, : depth[v]]) == tuple(paths[p, : depth[p]]) + (int(lk.port_from_src[net.pedge[v]]),)
    assert int(depth.max()) > 64


@pytest.mark.slow
def test_script_runs_and_rejects_bad_input() -> None:
    script = str(ROOT / "tools" / "simulate.py")
    ok = subprocess.run([sys.executable, script, "--topology", "tree", "--nodes", "30", "--pairs", "20",
                         "--curve-pairs", "10", "--lookups", "5"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "delivery           100.00%" in ok.stdout
    bad = subprocess.run([sys.executable, script, "--topology", "ba", "--nodes", "1"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--nodes must be between" in bad.stderr


# --- forwarding properties on random connected graphs ----------------------------------------------------------
@st.composite
def connected_graphs(draw: st.DrawFn) -> tuple[nx.Graph, int]:
    n = draw(st.integers(min_value=2, max_value=300))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    if draw(st.booleans()):
        graph = nx.random_labeled_tree(n, seed=seed)
        rng = np.random.default_rng(seed)
        extra = draw(st.integers(min_value=0, max_value=n))
        for a, b in rng.integers(0, n, size=(extra, 2)):
            if a != b:
                graph.add_edge(int(a), int(b))
    else:
        p = draw(st.floats(min_value=0.005, max_value=0.3))
        graph = nx.compose(nx.gnp_random_graph(n, p, seed=seed), nx.random_labeled_tree(n, seed=seed))
    return graph, seed


def _check_route(fwd: Forwarding, s: int, d: int) -> None:
    trace = fwd.route(s, d)
    assert trace.delivered, (s, d, trace.reason)
    wm = trace.watermarks
    assert all(b < a for a, b in zip(wm, wm[1:])), f"watermark did not fall strictly: {wm}"
    # No loop: each relay is strictly closer, so the hops are bounded by the source's distance.
    assert trace.hops <= wm[0] <= 2 * MAX_TREE_DEPTH < HOP_LIMIT
    assert wm[0] == tree_distance(fwd.path(s), fwd.path(d))


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(case=connected_graphs())
def test_prop_converged_forest_delivers_every_pair_without_loops(case: tuple[nx.Graph, int]) -> None:
    graph, seed = case
    net = network_of(graph, seed)
    converge(net)
    assert np.unique(net.root).size == 1
    fwd = Forwarding(net)
    rng = np.random.default_rng(seed)
    n = graph.number_of_nodes()
    pairs = [(s, d) for s in range(n) for d in range(n) if s != d] if n <= 12 else \
        [tuple(rng.choice(n, size=2, replace=False)) for _ in range(60)]
    for s, d in pairs:
        _check_route(fwd, int(s), int(d))


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(case=connected_graphs(), fraction=st.floats(min_value=0.05, max_value=0.4))
def test_prop_forest_repairs_after_nodes_fail(case: tuple[nx.Graph, int], fraction: float) -> None:
    graph, seed = case
    n = graph.number_of_nodes()
    net = network_of(graph, seed)
    converge(net)
    rng = np.random.default_rng(seed)
    victims = rng.choice(n, size=max(1, int(fraction * n)), replace=False)
    if len(victims) >= n:
        return
    net.kill(victims)
    converge(net)
    live = graph.subgraph([v for v in graph if net.alive[v]])
    fwd = Forwarding(net)
    for component in nx.connected_components(live):
        nodes = sorted(component)
        assert np.unique(net.root[nodes]).size == 1  # one tree per live component
        for _ in range(min(20, len(nodes) * (len(nodes) - 1))):
            s, d = rng.choice(nodes, size=2, replace=False)
            _check_route(fwd, int(s), int(d))


# --- the metric ----------------------------------------------------------------------------------------------
paths = st.lists(st.integers(min_value=1, max_value=3), max_size=12).map(tuple)  # small ports: shared prefixes


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(a=paths, b=paths)
def test_prop_coordinate_distance_commutative(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    assert tree_distance(a, b) == tree_distance(b, a)
    assert (tree_distance(a, b) == 0) == (a == b)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(a=paths, b=paths, c=paths)
def test_prop_tree_distance_triangle_inequality_and_vectorised_form(a: tuple[int, ...], b: tuple[int, ...],
                                                                     c: tuple[int, ...]) -> None:
    assert tree_distance(a, c) <= tree_distance(a, b) + tree_distance(b, c)
    matrix, lengths = pad_paths([a, b, c], MAX_TREE_DEPTH)
    target = np.zeros(MAX_TREE_DEPTH, dtype=np.uint16)
    target[: len(c)] = c
    assert distances_to(matrix, lengths, target, len(c)).tolist() == [tree_distance(p, c) for p in (a, b, c)]


def test_rgg_is_connected_or_says_it_kept_the_largest_component() -> None:
    graph = graphs.build("rgg", 400, seed=5, rgg_radius=0.03)  # far below connectivity: many components
    assert any("kept the largest" in note for note in graph.notes)
    assert nx.is_connected(nx.Graph(list(zip(graph.u.tolist(), graph.v.tolist()))))


# --- hostile nodes: black holes, a rogue root, and the ring fallback --------------------------------------------
def test_a_rogue_root_with_black_holes_cuts_tree_lookups_and_the_ring_restores_every_honest_pair(
        capsys: pytest.CaptureFixture[str]) -> None:
    on = run_cli(capsys, "--topology", "ba", "--nodes", "300", "--seed", "2", "--blackholes", "0.05", "--rogue-root",
                 "--pairs", "300")
    assert on["nodes"] == 301 and on["attack"]["rogue_root"] and on["attack"]["rogue_links"] == 8
    assert on["attack"]["blackholes"] == round(0.05 * 299)  # of the non-root honest nodes (not the rogue)
    # The rogue is everyone's root and drops the lookups crossing it: the tree alone loses most honest pairs.
    assert on["delivery_honest_tree"] < 0.6
    assert on["honest_failures"].get("lookup_dropped", 0) > 0
    assert on["delivery_honest"] == 1.0
    assert 0 < on["ring_share"] <= 1 - on["delivery_honest_tree"] + 1e-9
    # A ring search costs about a flood of the honest graph, never more than its TTL rounds can send.
    assert 0 < on["ring_messages_mean"] <= len(simulate_ttls()) * on["edges_directed"]
    assert on["stretch_honest_mean"] >= 1.0
    off = run_cli(capsys, "--topology", "ba", "--nodes", "300", "--seed", "2", "--blackholes", "0.05", "--rogue-root",
                  "--pairs", "300", "--no-ring")
    assert off["delivery_honest"] == off["delivery_honest_tree"] == on["delivery_honest_tree"]
    assert off["ring_share"] == 0 and off["ring_messages_mean"] == 0


def simulate_ttls() -> list[int]:
    from tools.sim.adversary import ring_ttls
    return ring_ttls()


def test_without_hostile_nodes_every_honest_pair_is_delivered_by_the_tree(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--topology", "rgg", "--nodes", "200", "--seed", "1")
    assert result["attack"]["blackholes"] == 0 and not result["attack"]["rogue_root"]
    assert result["delivery_honest"] == result["delivery_honest_tree"] == 1.0
    assert result["ring_share"] == 0 and result["honest_failures"] == {}
    assert result["lookup_messages_honest_mean"] >= 1


def test_ring_cost_counts_each_rounds_transmissions_and_the_reply() -> None:
    from tools.sim.adversary import ring_cost
    # Chain 0-1-2-3-4: from 0 for 3. TTL 1: 0 sends 1. TTL 2: 0 sends 1, 1 forwards 1. TTL 4: 0, 1, 2 send one
    # each (3 is the target: it answers, 3 hops back, and forwards nothing).
    degree = np.array([1, 2, 2, 2, 1])
    dist = np.array([0.0, 1, 2, 3, 4])
    assert ring_cost(dist, degree, np.zeros(5, dtype=bool), 0, 3, [1, 2, 4, 8]) == (1 + 2 + 3 + 3, 3, 4)
    # A relay next to the target sends to it alone: in a star, the hub forwards one copy, not one per leaf.
    star = np.array([4, 1, 1, 1, 1])
    assert ring_cost(np.array([1.0, 0, 2, 2, 2]), star, np.zeros(5, dtype=bool), 1, 2, [1, 2],
                     near=np.array([0])) == (1 + 2 + 2, 2, 2)
    # Node 2 black-holes: the flood never gets past it (distance over honest relays is infinite).
    hostile = np.array([False, False, True, False, False])
    cut = np.array([0.0, 1, np.inf, np.inf, np.inf])
    messages, rounds, ttl = ring_cost(cut, degree, hostile, 0, 3, [1, 2, 4])
    assert ttl == 0 and rounds == 3 and messages == 1 + 2 + 2


def test_a_hostile_relay_stops_a_tree_lookup_and_splits_the_honest_component() -> None:
    from tools.sim.adversary import honest_component
    g = nx.path_graph(6)
    net = network_of(g, seed=0)
    converge(net)
    bits = address_bits([b"\xfc" + bytes([i]) * 15 for i in range(6)])
    filters = Filters(net.parent, net.depth, net.alive, bits)
    assert filters.lookup(0, 5)[1]
    hostile = np.zeros(6, dtype=bool)
    hostile[3] = True
    messages, reached = filters.lookup(0, 5, hostile)
    assert not reached and messages >= 3  # it got to the black hole, which forwarded nothing
    graph = graphs.Graph("chain", 6, np.arange(5), np.arange(1, 6))
    comp = honest_component(graph, np.ones(6, dtype=bool), hostile)
    assert comp.tolist() == [0, 1, 2]  # 4-5 is the smaller honest side: no honest path to it from there


def test_bad_attack_options_are_refused() -> None:
    for bad in (["--blackholes", "1.5"], ["--blackholes", "-0.1"], ["--rogue-links", "0"]):
        with pytest.raises(SystemExit):
            simulate.parse_args(["--topology", "ba", "--nodes", "50", *bad])


# --- several trees (--trees K: a measured what-if, docs/ROUTING.md "Several trees") ------------------------------
@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(case=connected_graphs(), k=st.integers(min_value=2, max_value=3))
def test_prop_greedy_over_several_trees_delivers_every_pair_within_the_best_trees_distance(
        case: tuple[nx.Graph, int], k: int) -> None:
    graph, seed = case
    base = network_of(graph, seed)
    n = graph.number_of_nodes()
    more = tuple(Network(base.links, np.random.default_rng([seed, t]).permutation(n)) for t in range(1, k))
    for net in (base, *more):
        converge(net)
    fwd = Forwarding(base, more)
    single = Forwarding(base)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        s, d = (int(x) for x in rng.choice(n, size=2, replace=False))
        trace = fwd.route(s, d)
        best = min(tree_distance(Forwarding(net).path(s), Forwarding(net).path(d)) for net in (base, *more))
        assert trace.delivered, (s, d, trace.reason)
        assert trace.watermarks[0] == best
        assert all(b < a for a, b in zip(trace.watermarks, trace.watermarks[1:]))
        assert trace.hops <= best <= tree_distance(single.path(s), single.path(d))


def test_several_trees_cut_stretch_and_one_tree_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    one = run_cli(capsys, "--topology", "ba", "--nodes", "400")
    again = run_cli(capsys, "--topology", "ba", "--nodes", "400", "--trees", "1")
    three = run_cli(capsys, "--topology", "ba", "--nodes", "400", "--trees", "3")
    assert again["stretch_mean"] == one["stretch_mean"] and one["tree_count"] == 1
    assert three["delivery"] == 1.0 and three["delivery_honest"] == 1.0
    assert len(three["trees_max_depth"]) == 3 and len(set(three["trees_converge_rounds"])) >= 1
    assert three["stretch_mean"] < one["stretch_mean"]


def test_with_random_link_rtts_the_shallower_rule_settles_where_two_nodes_took_each_other_every_round() -> None:
    # Two nodes joined by a cheap link, each at the end of its own longer branch from the root: with parent cost
    # (depth + 1) x RTT each finds the other much cheaper than its parent, both move at the same tick on each
    # other's old chains (a two-node cycle), drop it at the next (the chain holds them), and so on every round.
    graph = nx.Graph([(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (4, 8)])
    edges = np.array(list(graph.edges), dtype=np.int64)
    rtt = np.where((edges == [4, 8]).all(axis=1), 0.001, 0.05)
    flips = {}
    for rule in ("cost", "shallower"):
        net = Network(Links(9, edges[:, 0], edges[:, 1], np.arange(9), rtt=rtt), np.arange(9))
        net.parent_rule = rule
        for _ in range(30):
            net.step()
        before = net.parent.copy()
        net.step()
        flips[rule] = int((net.parent != before).sum())
        if rule == "shallower":
            converge(net)
            fwd = Forwarding(net)
            for s, d in [(4, 8), (8, 4), (3, 7), (1, 6)]:
                _check_route(fwd, s, d)
    assert flips == {"cost": 2, "shallower": 0}


def test_random_link_rtts_with_the_shallower_rule_deliver(capsys: pytest.CaptureFixture[str]) -> None:
    spread = run_cli(capsys, "--topology", "rgg", "--nodes", "300", "--link-rtt", "random", "--parent-rule", "shallower")
    assert spread["converged"] and spread["delivery"] == 1.0 and spread["link_rtt"] == "random"


def test_several_trees_refuse_failure_runs() -> None:
    with pytest.raises(SystemExit):
        simulate.parse_args(["--topology", "ba", "--nodes", "100", "--trees", "2", "--repair"])
    with pytest.raises(SystemExit):
        simulate.parse_args(["--topology", "ba", "--nodes", "100", "--trees", "9"])
