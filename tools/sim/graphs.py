"""Topologies for the simulator, as undirected edge arrays over nodes 0..n-1 (networkx, or the same
construction straight into numpy where building a networkx Graph object is the slow part at 10^5 nodes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from tools.sim.asgraph import as_graph_edges

TOPOLOGIES = ("rgg", "ba", "as", "grid", "chain", "tree")
RGG_DEGREE_FACTOR = 1.5  # pi r^2 n = 1.5 ln n: just above the connectivity threshold (ln n), connected w.h.p.
AS_NETWORKX_MAX = 10_000  # networkx's AS generator is quadratic (250 s at 2x10^4): above this, tools/sim/asgraph.py


@dataclass
class Graph:
    """An undirected simple graph: ``u[i] - v[i]`` for each edge, nodes 0..n-1."""

    name: str
    n: int
    u: npt.NDArray[np.int64]
    v: npt.NDArray[np.int64]
    notes: list[str] = field(default_factory=list)

    @property
    def edges(self) -> int:
        return len(self.u)

    def csr(self, alive: npt.NDArray[np.bool_] | None = None) -> coo_array:
        """Symmetric adjacency (scipy CSR), restricted to ``alive`` nodes if given."""
        u, v = self.u, self.v
        if alive is not None:
            keep = alive[u] & alive[v]
            u, v = u[keep], v[keep]
        data = np.ones(2 * len(u), dtype=np.int8)
        return coo_array((data, (np.concatenate([u, v]), np.concatenate([v, u]))), shape=(self.n, self.n)).tocsr()


def _from_nx(name: str, g: nx.Graph) -> Graph:
    g = nx.convert_node_labels_to_integers(g)
    edges = np.array([(a, b) for a, b in g.edges() if a != b], dtype=np.int64).reshape(-1, 2)
    return Graph(name, g.number_of_nodes(), edges[:, 0].copy(), edges[:, 1].copy())


def largest_component(graph: Graph) -> Graph:
    """``graph`` itself if connected, else its largest component relabelled 0..k-1 (with a note saying so)."""
    count, labels = connected_components(graph.csr(), directed=False)
    if count == 1:
        return graph
    biggest = np.argmax(np.bincount(labels))
    keep = labels == biggest
    new = np.full(graph.n, -1, dtype=np.int64)
    new[keep] = np.arange(int(keep.sum()))
    sel = keep[graph.u]
    notes = graph.notes + [f"not connected ({count} components): kept the largest, {int(keep.sum())} of {graph.n} nodes"]
    return Graph(graph.name, int(keep.sum()), new[graph.u[sel]], new[graph.v[sel]], notes)


def rgg(n: int, rng: np.random.Generator, radius: float | None = None) -> Graph:
    """Random geometric graph in the unit square at radius sqrt(1.5 ln n / (pi n)) (networkx's construction,
    a KD-tree query of all pairs within the radius, without its per-edge Graph object overhead)."""
    r = radius if radius is not None else math.sqrt(RGG_DEGREE_FACTOR * math.log(n) / (math.pi * n))
    points = rng.random((n, 2))
    pairs = cKDTree(points).query_pairs(r, output_type="ndarray").astype(np.int64)
    graph = Graph("rgg", n, pairs[:, 0].copy(), pairs[:, 1].copy(), [f"radius {r:.5f}"])
    return largest_component(graph)


def build(topology: str, n: int, seed: int, rgg_radius: float | None = None) -> Graph:
    """The topology ``topology`` with about ``n`` nodes (grid: the nearest square), seeded."""
    if n < 2:
        raise ValueError("a topology needs at least 2 nodes")
    rng = np.random.default_rng(seed)
    if topology == "rgg":
        return rgg(n, rng, rgg_radius)
    if topology == "ba":
        return _from_nx("ba", nx.barabasi_albert_graph(n, 2, seed=seed))
    if topology == "as":
        if n <= AS_NETWORKX_MAX:
            graph = _from_nx("as", nx.random_internet_as_graph(n, seed=seed))
            graph.notes.append("networkx random_internet_as_graph (Elmokashfi et al. 2010)")
        else:
            u, v = as_graph_edges(n, rng)
            graph = Graph("as", n, u, v, ["tools/sim/asgraph.py: networkx's AS model with fast sampling"])
        return largest_component(graph)
    if topology == "grid":
        side = max(2, round(math.sqrt(n)))
        graph = _from_nx("grid", nx.grid_2d_graph(side, side))
        graph.notes.append(f"{side} x {side} grid")
        return graph
    if topology == "chain":
        return _from_nx("chain", nx.path_graph(n))
    if topology == "tree":
        # Random recursive tree: node i attaches to a uniformly random earlier node (depth ~ e ln n).
        parents = np.floor(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)
        return Graph("tree", n, np.arange(1, n, dtype=np.int64), parents, ["random recursive tree"])
    raise ValueError(f"unknown topology {topology!r} (choose from {', '.join(TOPOLOGIES)})")
