"""Root loss on real Trees and on the simulator side by side (the twin harness of tests/unit/test_simulate.py, at
sizes too slow for the test suite): a Barabasi-Albert graph (m = 2), real Tree objects deciding at ticks only
(tests/unit/overlay_net.py, between_ticks=False) and a Network with the same keys and ports, converged, then the
root goes silent; every round both are compared node by node (root, parent, path, seq). Prints one JSON object per
size: the converged depth, the bound 3 + 2 x depth, the rounds until every live node is under the next lowest key
and until nothing changes, and the first round where the two differed (null: none).

    python -m tools.sim.twin --nodes 300 400 [--seed 0]   # docs/ROUTING.md "Repair under protocol 3"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.unit.test_simulate import _states, _tick_both, _twin  # noqa: E402


def root_loss(nodes: int, seed: int, cold_rounds: int = 40, rounds: int = 60) -> dict[str, object]:
    ov, net, by_signing, by_noise = _twin(nx.barabasi_albert_graph(nodes, 2, seed=seed), seed)
    for _ in range(cold_rounds):
        _tick_both(ov, net)
    real, sim = _states(ov, net, by_signing, by_noise)
    depth = max(len(state[2]) for state in real.values())
    root = by_signing[min(ov.nodes[v].identity.signing_key for v in ov.alive)]
    ov.alive.discard(root)
    net.kill(np.array([root]))
    new_root = by_signing[min(ov.nodes[v].identity.signing_key for v in ov.alive)]
    before = {v: state[:3] for v, state in real.items()}
    last, one_root, differ = 0, None, None
    for r in range(1, rounds + 1):
        _tick_both(ov, net)
        real, sim = _states(ov, net, by_signing, by_noise)
        if sim != real and differ is None:
            differ = r
        now = {v: state[:3] for v, state in real.items()}
        last = r if now != before else last
        before = now
        if one_root is None and all(state[0] == new_root for state in real.values()):
            one_root = r
    return {"nodes": nodes, "seed": seed, "depth": depth, "bound": 3 + 2 * depth, "one_root_rounds": one_root,
            "stable_rounds": last, "first_difference": differ}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[300, 400])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for n in args.nodes:
        print(json.dumps(root_loss(n, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
