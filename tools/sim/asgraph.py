"""networkx's AS-graph model (random_internet_as_graph: Elmokashfi, Kvalbein and Dovrolis, IEEE JSAC 2010),
with sampling that does not rescan every candidate: networkx's implementation sums the degrees of all options
for each pick and builds set differences over all middle-tier nodes for each peering link (250 s at 2x10^4
nodes, hours at 10^5). Same steps, parameters and distributions; different random stream, so a seed gives a
different graph than networkx's.

* Degree-preferential picks sample a list holding each node once per unit of degree (per region), so a pick
  is O(1); a node in both of a new node's regions is accepted with probability 1/2, so the union is exact.
* Picks that must avoid some nodes (already chosen, customers, providers, neighbours) are rejection sampled;
  after MAX_REJECTIONS misses the option set is built explicitly, which also covers networkx's "all option
  weights are zero: pick uniformly".
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt

REGIONS = 5
MAX_REJECTIONS = 200


def _uniform_int_from_avg(a: float, m: float, rnd: random.Random) -> int:
    """networkx's uniform_int_from_avg: an integer with minimum ``a`` and mean ``m``."""
    b = 2 * m - a
    p = (b - int(b)) / 2
    return round(rnd.random() * (int(b) - a) + a) + (1 if rnd.random() < p else 0)


class _Builder:
    def __init__(self, n: int, rnd: random.Random) -> None:
        self.rnd = rnd
        self.n_t = min(n, round(rnd.random() * 2 + 4))
        self.n_m = round(0.15 * n)
        self.n_cp = round(0.05 * n)
        self.n_c = max(0, n - self.n_t - self.n_m - self.n_cp)
        self.d_m, self.d_cp, self.d_c = 2 + 2.5 * n / 10000, 2 + 1.5 * n / 10000, 1 + 5 * n / 100000
        self.p_m_m, self.p_cp_m, self.p_cp_cp = 1 + 2 * n / 10000, 0.2 + 2 * n / 10000, 0.05 + 2 * n / 100000
        self.adj: list[set[int]] = []
        self.kind: list[str] = []
        self.regions: list[list[int]] = []  # regions of each node
        self.members: dict[tuple[str, int], list[int]] = {}  # (kind, region) -> nodes
        self.deg_list: list[list[int]] = [[] for _ in range(REGIONS)]  # M nodes, once per unit of degree
        # networkx keeps customers[] and providers[] sets (transitive); x is a customer of m exactly when m is
        # one of x's providers, and providers only ever are T or M nodes (ids below n_t + n_m), so one bitset of
        # transitive providers per node answers both, without the O(n x providers) set updates.
        self.providers: list[int] = []
        self.peers: list[int] = []
        self.peer_list: list[int] = []  # M nodes, once per peering link
        self.m_count = [0] * REGIONS  # M nodes per region
        self.m_shared: dict[tuple[int, int], int] = {}  # M nodes in both of two regions

    def node(self, kind: str, regions: list[int]) -> int:
        i = len(self.adj)
        self.adj.append(set())
        self.kind.append(kind)
        self.regions.append(regions)
        self.providers.append(0)
        self.peers.append(0)
        for r in regions:
            self.members.setdefault((kind, r), []).append(i)
        if kind == "M":
            for r in regions:
                self.m_count[r] += 1
            if len(regions) == 2:
                pair = (min(regions), max(regions))
                self.m_shared[pair] = self.m_shared.get(pair, 0) + 1
        return i

    def edge(self, i: int, j: int) -> None:
        self.adj[i].add(j)
        self.adj[j].add(i)
        for x in (i, j):
            if self.kind[x] == "M":
                for r in self.regions[x]:
                    self.deg_list[r].append(x)

    def pick(self, lists: list[list[int]], regions: list[int], ok: object) -> int | None:
        """A node from the union of ``lists`` (one per region, a node listed in several regions counted once)
        with probability proportional to its multiplicity, among those ``ok(node)`` accepts."""
        accept = ok  # type: ignore[assignment]
        total = sum(len(lst) for lst in lists)
        for _ in range(MAX_REJECTIONS if total else 0):
            k = self.rnd.randrange(total)
            for lst in lists:
                if k < len(lst):
                    x = lst[k]
                    break
                k -= len(lst)
            shared = sum(1 for r in self.regions[x] if r in regions) if len(lists) > 1 else 1
            if (shared == 1 or self.rnd.random() < 1 / shared) and accept(x):  # type: ignore[operator]
                return x
        return None

    def transit(self, i: int, kind: str, avg_deg: float, t_prob: float, regions: list[int]) -> None:
        wanted = _uniform_int_from_avg(1, avg_deg, self.rnd)
        t_options = [x for x in self.members[("T", 0)] if x != i]
        # M options: the M nodes of our regions but us (counted, not listed: listing costs O(n) per node).
        m_options = sum(self.m_count[r] for r in regions) - (kind == "M")
        if len(regions) == 2:
            m_options -= self.m_shared.get((min(regions), max(regions)), 0)
        chosen: set[int] = set()
        m_chosen = 0
        for _ in range(wanted):
            m_left = m_options - m_chosen
            if not t_options and m_left == 0:
                break
            if m_left == 0 or (t_options and self.rnd.random() < t_prob):
                weights = [len(self.adj[x]) for x in t_options]
                j = self.rnd.choices(t_options, weights)[0] if sum(weights) else self.rnd.choice(t_options)
                t_options.remove(j)
            else:
                lists = [self.deg_list[r] for r in regions]
                j = self.pick(lists, regions, lambda x: x != i and x not in chosen)  # type: ignore[assignment]
                if j is None:  # no degree listed yet, or unlucky: networkx's rule on the explicit options
                    options = sorted({x for r in regions for x in self.members.get(("M", r), [])} - chosen - {i})
                    weights = [len(self.adj[x]) for x in options]
                    j = self.rnd.choices(options, weights)[0] if sum(weights) else self.rnd.choice(options)
                m_chosen += 1
            chosen.add(j)
            self.edge(i, j)
            if kind != "C":  # a C node is never a provider nor peers: nobody asks for its providers
                self.providers[i] |= (1 << j) | self.providers[j]

    def add(self, kind: str, reg2prob: float, avg_deg: float, t_prob: float) -> None:
        regions = self.rnd.sample(range(REGIONS), 2 if self.rnd.random() < reg2prob else 1)
        i = self.node(kind, regions)
        self.transit(i, kind, avg_deg, t_prob, regions)

    def excluded(self, x: int, m: int) -> bool:
        """x is m itself, a customer or a provider of m, or already linked to m."""
        return x == m or bool((self.providers[x] >> m) & 1) or bool((self.providers[m] >> x) & 1) or x in self.adj[m]

    def m_peering(self, m: int) -> None:
        j = self.pick([self.peer_list], [], lambda x: not self.excluded(x, m))
        if j is None:  # explicit options: networkx's exact rule, uniform when every option has 0 peers
            options = [x for x in self.members_of("M") if not self.excluded(x, m)]
            if not options:
                return
            weights = [self.peers[x] for x in options]
            j = self.rnd.choices(options, weights)[0] if sum(weights) else self.rnd.choice(options)
        self.edge(m, j)
        for x in (m, j):
            self.peers[x] += 1
            if self.kind[x] == "M":
                self.peer_list.append(x)

    def cp_peering(self, cp: int, to_kind: str) -> None:
        regions = self.regions[cp]
        lists = [self.members.get((to_kind, r), []) for r in regions]
        j = self.pick(lists, regions, lambda x: not self.excluded(x, cp))
        if j is None:
            options = sorted({x for lst in lists for x in lst if not self.excluded(x, cp)})
            if not options:
                return
            j = self.rnd.choice(options)
        self.edge(cp, j)
        self.peers[cp] += 1
        self.peers[j] += 1
        if self.kind[j] == "M":
            self.peer_list.append(j)

    def members_of(self, kind: str) -> list[int]:
        return sorted({x for r in range(REGIONS) for x in self.members.get((kind, r), [])})

    def build(self) -> None:
        tier1 = [self.node("T", list(range(REGIONS))) for _ in range(self.n_t)]
        for a in tier1:
            for b in tier1:
                if a < b:
                    self.edge(a, b)
        for _ in range(self.n_m):
            self.add("M", 0.2, self.d_m, 0.375)
        for _ in range(self.n_cp):
            self.add("CP", 0.05, self.d_cp, 0.375)
        for _ in range(self.n_c):
            self.add("C", 0.0, self.d_c, 0.125)
        for m in self.members_of("M"):
            for _ in range(_uniform_int_from_avg(0, self.p_m_m, self.rnd)):
                self.m_peering(m)
        for avg, to_kind in ((self.p_cp_m, "M"), (self.p_cp_cp, "CP")):
            for cp in self.members_of("CP"):
                for _ in range(_uniform_int_from_avg(0, avg, self.rnd)):
                    self.cp_peering(cp, to_kind)


def as_graph_edges(n: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Edges (u, v), u < v, of an AS-like graph of ``n`` nodes."""
    builder = _Builder(n, random.Random(int(rng.integers(1 << 62))))
    builder.build()
    pairs = np.array([(a, b) for a, nbrs in enumerate(builder.adj) for b in nbrs if a < b], dtype=np.int64)
    return pairs[:, 0].copy(), pairs[:, 1].copy()
