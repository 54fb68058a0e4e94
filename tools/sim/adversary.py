"""Hostile nodes in the simulator: black holes, a rogue root holding the lowest key, and what honest pairs get.

A hostile node builds the tree like any other (it announces, it is chosen as parent) and then drops everything
it should relay or answer: TRAFFIC, lookups, lookup replies and ring searches. ``--blackholes F`` makes a share
F of the non-root nodes hostile at random; ``--rogue-root`` adds one extra node whose key is below every honest
key, linked to the highest-degree nodes (where an attacker would peer to sit on the most paths).

For each sampled pair of honest nodes joined by a path of honest nodes, the source does what a node does
(axiomnet/forward.py, axiomnet/lookup.py):

1. a tree lookup (Filters.lookup, the LOOKUP multicast, which stops at hostile relays), the owner's LOOKUP_REPLY
   routed greedily back, then the data routed greedily: delivered if none of the three crosses a hostile relay;
2. else (no reply, or the data path is dead: the source hears nothing back within DEAD_PATH_AFTER) an
   expanding-ring search over all links with TTL 2, 4, 8, .. RING_MAX_TTL: honest nodes forward it once to
   every neighbour but the sender, hostile ones drop it, the target answers along the reverse path, and the
   data follows the found path as a source route (the path the first copy took: a shortest honest path).

Messages are counted per transmission: the tree lookup's, each ring round's, the reply's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import connected_components, shortest_path

from axiomnet.constants import RING_FIRST_TTL, RING_MAX_TTL
from tools.sim.graphs import Graph
from tools.sim.measure import Filters, Forwarding, bfs_hops, percentile, sample_pairs

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class Attack:
    blackholes: float = 0.0  # share of the non-root nodes that black-hole
    rogue_root: bool = False  # one extra node holding the lowest key, black-holing
    rogue_links: int = 8  # the rogue root's links, to the highest-degree nodes
    ring: bool = True  # the expanding-ring fallback (off: the tree lookup and greedy data only)

    @property
    def active(self) -> bool:
        return self.blackholes > 0 or self.rogue_root


def ring_ttls() -> list[int]:
    """The TTLs of one expanding-ring search: 2, 4, 8, .. then RING_MAX_TTL (Pathfinder.ring_due)."""
    out, ttl = [], RING_FIRST_TTL
    while ttl < RING_MAX_TTL:
        out.append(ttl)
        ttl *= 2
    return out + [RING_MAX_TTL]


def add_rogue(graph: Graph, links: int) -> Graph:
    """``graph`` plus one node (id ``graph.n``) linked to the ``links`` highest-degree nodes."""
    degree = np.bincount(np.concatenate([graph.u, graph.v]), minlength=graph.n)
    peers = np.argsort(-degree, kind="stable")[: max(1, min(links, graph.n))]
    rogue = np.full(len(peers), graph.n, dtype=np.int64)
    return Graph(graph.name, graph.n + 1, np.concatenate([graph.u, rogue]), np.concatenate([graph.v, peers]),
                 graph.notes + [f"rogue root {graph.n} linked to the {len(peers)} highest-degree nodes"])


def choose_blackholes(n: int, exclude: list[int], fraction: float, rng: np.random.Generator) -> BoolArray:
    """A random ``fraction`` of the nodes not in ``exclude`` (the root, the rogue), as a mask."""
    hostile = np.zeros(n, dtype=bool)
    pool = np.setdiff1d(np.arange(n), np.array(exclude, dtype=np.int64))
    count = int(round(fraction * len(pool)))
    if count:
        hostile[rng.choice(pool, size=count, replace=False)] = True
    return hostile


def honest_component(graph: Graph, alive: BoolArray, hostile: BoolArray) -> IntArray:
    """The largest set of live honest nodes joined by honest paths."""
    honest = alive & ~hostile
    _, labels = connected_components(graph.csr(honest), directed=False)
    labels = np.where(honest, labels, -1)
    return np.flatnonzero(labels == np.argmax(np.bincount(labels[labels >= 0])))


def _crosses(nodes: list[int], hostile: BoolArray) -> bool:
    """Whether a packet's hops (the last one is the destination) pass a hostile relay."""
    return any(hostile[x] for x in nodes[:-1])


def ring_cost(dist: npt.NDArray[np.float64], degree: IntArray, hostile: BoolArray, s: int, d: int,
              ttls: list[int], near: IntArray | None = None) -> tuple[int, int, int]:
    """(messages, rounds, ttl that reached ``d`` or 0) of an expanding-ring search from ``s`` for ``d``.

    ``dist`` holds the hop distances from ``s`` over honest relays (hostile nodes receive and drop, so they are
    leaves of the flood). A round of TTL T: s sends to all its links; every honest node at distance 1..T-1 that
    is not the target forwards once (Forwarder._on_ring): to the target alone if it is a neighbour (``near``: the
    target's neighbours), else to every link but the one it came on; the target answers along the reverse path
    (dist[d] messages) once it is within T.
    """
    target = dist[d]
    sends = np.where(hostile, 0, degree - 1).astype(np.float64)
    if near is not None:
        sends[near[~hostile[near]]] = 1
    sends[s] = 0
    sends[d] = 0
    finite = np.isfinite(dist)
    order = np.argsort(np.where(finite, dist, np.inf), kind="stable")
    sorted_dist = dist[order]
    cum = np.concatenate([[0.0], np.cumsum(sends[order])])
    messages, rounds = 0, 0
    for ttl in ttls:
        rounds += 1
        inside = int(np.searchsorted(sorted_dist, ttl - 1, side="right"))  # nodes at distance <= ttl - 1
        messages += int(degree[s] + cum[inside])
        if target <= ttl:
            return messages + int(target), rounds, ttl
    return messages, rounds, 0


def honest_delivery(graph: Graph, fwd: Forwarding, filters: Filters, hostile: BoolArray, comp: IntArray,
                    count: int, rng: np.random.Generator, ring: bool) -> dict[str, Any]:
    """Delivery, stretch and lookup cost among ``count`` sampled honest pairs (all joined by honest paths)."""
    pairs = sample_pairs(comp, count, rng)
    honest_csr = graph.csr(~hostile)
    degree = np.bincount(np.concatenate([graph.u, graph.v]), minlength=graph.n)
    csr = graph.csr()
    shortest = bfs_hops(csr, pairs)
    ttls = ring_ttls()
    tree_ok = np.zeros(len(pairs), dtype=bool)
    ok = np.zeros(len(pairs), dtype=bool)
    used_ring = np.zeros(len(pairs), dtype=bool)
    hops = np.zeros(len(pairs), dtype=np.int64)
    tree_msgs = np.zeros(len(pairs), dtype=np.int64)
    ring_msgs = np.zeros(len(pairs), dtype=np.int64)
    reasons: dict[str, int] = {}
    sources = np.unique(pairs[:, 0])
    for lo in range(0, len(sources), 32):
        chunk = sources[lo: lo + 32]
        # Distances over honest relays: the ring flood and the source route (hostile nodes forward nothing, so
        # what reaches them counts in their senders' transmissions only).
        dist = shortest_path(honest_csr, unweighted=True, directed=False, indices=chunk)
        for i in np.flatnonzero(np.isin(pairs[:, 0], chunk)):
            s, d = int(pairs[i, 0]), int(pairs[i, 1])
            row = dist[int(np.searchsorted(chunk, s))]
            msgs, reached = filters.lookup(s, d, hostile)
            tree_msgs[i] = msgs
            why = ""
            if not reached:
                why = "lookup_dropped"
            else:
                reply = fwd.route(d, s, keep_nodes=True)
                if not reply.delivered or _crosses(reply.nodes, hostile):
                    why = "reply_dropped" if reply.delivered or reply.reason == "" else f"reply_{reply.reason}"
                else:
                    data = fwd.route(s, d, keep_nodes=True)
                    if not data.delivered or _crosses(data.nodes, hostile):
                        why = "data_dropped" if data.delivered or data.reason == "" else f"data_{data.reason}"
                    else:
                        tree_ok[i] = ok[i] = True
                        hops[i] = data.hops
            if why:
                reasons[why] = reasons.get(why, 0) + 1
                if ring:
                    used_ring[i] = True
                    near = csr.indices[csr.indptr[d]: csr.indptr[d + 1]]
                    m, _, ttl = ring_cost(row, degree, hostile, s, d, ttls, near)
                    ring_msgs[i] = m
                    if ttl:
                        ok[i] = True
                        hops[i] = int(row[d])
    stretch = hops[ok] / np.maximum(shortest[ok], 1)
    total = tree_msgs + ring_msgs
    return {
        "delivery_honest": float(ok.mean()) if len(ok) else float("nan"),
        "delivery_honest_tree": float(tree_ok.mean()) if len(ok) else float("nan"),
        "honest_pairs": len(pairs),
        "honest_component": len(comp),
        "honest_failures": reasons,
        "stretch_honest_mean": float(stretch.mean()) if stretch.size else float("nan"),
        "stretch_honest_p99": percentile(stretch, 99),
        "ring_share": float(used_ring.mean()) if len(ok) else 0.0,
        "ring_messages_mean": float(ring_msgs[used_ring].mean()) if used_ring.any() else 0.0,
        "ring_messages_p99": percentile(ring_msgs[used_ring], 99) if used_ring.any() else 0.0,
        "lookup_messages_honest_mean": float(total.mean()) if len(total) else float("nan"),
        "lookup_messages_honest_p99": percentile(total, 99),
        "edges_directed": 2 * graph.edges,
    }

