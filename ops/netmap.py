"""The network map: what a node knows, or a whole lab's merged views, drawn on the Poincaré disk as SVG.

Pure but for :func:`write_file`: admin state documents in (actors/gather.py, the reply to ``{"cmd": "state"}``),
SVG text out; no socket, no browser. ``axiomnet-inspect map`` draws one node's view (:func:`view_of`), ``axiomnet
demo`` the merge of every node's (:func:`merge_views`); :func:`render_svg` draws either.

What a node knows and the map shows: itself; its chain to the root (``self.coords.chain``: each ancestor's
key and address); its peers and their tree positions (``peers``: path, root, link RTT); the destinations it
has looked up (``routes``: path, key, lookup round trip). Positions come from axiomnet/geometry.py's
:func:`~axiomnet.geometry.tree_layout` (a hyperbolic wedge layout of the paths: display only, the exact paths
stay the routing metric); a position implied by a path but not known by name (an ancestor of a looked-up
destination) is a small grey dot. Tree links are hyperbolic geodesics; peer links that are not tree links
are dashed geodesics. Each named node has a label: address, short key, hops, RTT.

Labels are placed greedily (self, root, chain, peers, destinations; shallow before deep): each takes the
first spot, searched ring by ring outwards from its node (the outward direction first), that overlaps no
placed label, no node dot and stays on the canvas; a label away from its node gets a leader line. When no
spot within LABEL_SEARCH_RINGS rings is free, the least-overlapping one is taken and counted: the SVG's root
carries ``data-label-overlaps`` (pairs of labels that overlap), which tests/unit/test_netmap.py bounds.
"""

from __future__ import annotations

import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from axiomnet.geometry import Coords, TreePath, geodesic, tree_layout
from axiomnet.greedy import tree_distance

SVG_NS = "http://www.w3.org/2000/svg"
FONT_FAMILY = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FONT_SIZE = 10.0
CHAR_WIDTH = 0.602 * FONT_SIZE  # DejaVu Sans Mono's advance; a wider fallback font only widens the boxes' text
LINE_HEIGHT = 12.0
LABEL_PAD = 2.0  # around the text inside a label's box
LABEL_GAP = 2.0  # kept free between two labels
LABEL_RING_STEP = 9.0  # px between two rings of candidate spots
LABEL_SEARCH_RINGS = 60
LABEL_DIRECTIONS = 24
LEADER_AFTER = 6.0  # a label whose box is further than this from its dot gets a leader line
DOT_RADIUS = {"self": 7.0, "root": 6.0, "chain": 5.0, "peer": 5.0, "lookup": 5.0, "node": 5.0, "relay": 2.5}
COLOURS = {"self": "#d62728", "root": "#b8860b", "chain": "#ff7f0e", "peer": "#1f77b4", "lookup": "#2ca02c",
           "node": "#1f77b4", "relay": "#9e9e9e"}
ROLE_NAMES = {"self": "this node", "root": "root", "chain": "chain to the root", "peer": "peer",
              "lookup": "looked-up destination", "node": "node", "relay": "known only by position"}
ROLE_ORDER = ("self", "root", "chain", "peer", "lookup", "node", "relay")
MIN_DISK_RADIUS = 300.0
MAX_DISK_RADIUS = 2400.0
MIN_DOT_SPACING = 2.0  # px between two dots' edges, at least (grows the disk when the layout is tight)


class MapError(Exception):
    """The state document cannot be drawn (no tree coordinates); the message says what is missing."""


@dataclass(frozen=True)
class MapNode:
    """One node on the map and what its label says."""

    path: TreePath
    role: str  # a key of ROLE_NAMES
    address: str | None = None
    public_key: str | None = None  # hex (the Noise key, as the admin document names nodes)
    hops: int | None = None
    rtt_ms: float | None = None
    rtt_kind: str = ""  # what the RTT is: "link" or "lookup"
    note: str = ""

    def lines(self) -> tuple[str, str]:
        """The label's two lines: address; short key, hops, RTT."""
        key = self.public_key[:8] if self.public_key else "key ?"
        hops = "-" if self.hops is None else "self" if self.hops == 0 and self.role == "self" else (
            f"{self.hops} hop" + ("" if self.hops == 1 else "s"))
        rtt = "rtt -" if self.rtt_ms is None else f"rtt {self.rtt_ms:.2f} ms"
        return (self.address or "(address unknown)", f"{key} {hops} {rtt}")


@dataclass
class NetMap:
    """What to draw: nodes by tree path (one tree, one root), extra peer links, and nodes that have no place."""

    title: str
    root: str | None
    nodes: dict[TreePath, MapNode] = field(default_factory=dict)
    links: set[tuple[TreePath, TreePath]] = field(default_factory=set)  # peer links that are not tree links
    unplaced: list[MapNode] = field(default_factory=list)  # no coordinates yet, or under another root
    notes: list[str] = field(default_factory=list)

    def put(self, node: MapNode) -> None:
        """Add ``node``, or fill in what the node already at its path lacks (the stronger role is kept)."""
        old = self.nodes.get(node.path)
        if old is None:
            self.nodes[node.path] = node
            return
        role = min(old.role, node.role, key=ROLE_ORDER.index)
        rtt_from = old if old.rtt_ms is not None else node
        self.nodes[node.path] = replace(
            old, role=role, address=old.address or node.address, public_key=old.public_key or node.public_key,
            hops=old.hops if old.hops is not None else node.hops, rtt_ms=rtt_from.rtt_ms, rtt_kind=rtt_from.rtt_kind,
            note=old.note or node.note)


# --- from admin documents --------------------------------------------------------------------------------
def _path(value: object) -> TreePath | None:
    if isinstance(value, list) and all(type(p) is int and p > 0 for p in value):
        return tuple(value)
    return None


def _same_root(root: str | None, other: object) -> bool:
    """Whether ``other`` (a root key in hex, possibly cut to 16 characters, or None: not said) names ``root``."""
    if not isinstance(other, str) or not other or root is None:
        return other is None
    return root.startswith(other) or other.startswith(root)


def _rtt(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _records(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _coords(state: Mapping[str, Any]) -> tuple[str, TreePath, list[dict[str, Any]]]:
    me = state.get("self")
    coords = me.get("coords") if isinstance(me, dict) else None
    path = _path(coords.get("path")) if isinstance(coords, dict) else None
    if not isinstance(coords, dict) or not isinstance(coords.get("root"), str) or path is None:
        raise MapError("the daemon reports no tree coordinates (self.coords with root and path): "
                       "an older daemon, or not a state document")
    return coords["root"], path, _records(coords.get("chain"))


def view_of(state: Mapping[str, Any]) -> NetMap:
    """One node's map from its admin state document: itself, its chain, its peers, its looked-up destinations."""
    root, own, chain = _coords(state)
    me = state["self"]
    netmap = NetMap(title=f"AxiomNet map of {me.get('address', '?')}", root=root)
    peers = _records(state.get("peers"))
    parent_rtt = next((_rtt(p.get("rtt_ms")) for p in peers if _path(p.get("coords")) == own[:-1] and own), None)
    netmap.put(MapNode(own, "self", me.get("address"), me.get("public_key"), 0))
    for hop in chain:
        path = _path(hop.get("coords"))
        if path is None or path == own or own[:len(path)] != path:
            continue
        is_parent = len(path) == len(own) - 1
        netmap.put(MapNode(path, "root" if not path else "chain", hop.get("address"), hop.get("public_key"),
                           len(own) - len(path), parent_rtt if is_parent else None, "link" if is_parent else ""))
    if own and () not in netmap.nodes:
        netmap.put(MapNode((), "root", None, None, len(own), note=f"root key {root[:16]}"))
    for peer in peers:
        path = _path(peer.get("coords"))
        node = MapNode(path or (), "peer", peer.get("address"), peer.get("public_key"), 1,
                       _rtt(peer.get("rtt_ms")), "link", "" if peer.get("alive", True) else "not answering")
        if path is None or not _same_root(root, peer.get("root")):
            netmap.unplaced.append(replace(node, note=node.note or (
                "no tree position yet" if path is None else "under another root")))
            continue
        netmap.put(node)
        if not peer.get("tree_link") and path != own:
            netmap.links.add((own, path))
    for route in _records(state.get("routes")):
        path = _path(route.get("coords"))
        node = MapNode(path or (), "lookup", route.get("address"), route.get("public_key"),
                       None if path is None else tree_distance(own, path), _rtt(route.get("rtt_ms")), "lookup")
        if route.get("source_route") is not None:  # found by a ring search: ports, no coordinates
            netmap.unplaced.append(replace(node, note="reached by a source route"))
        elif path is None or not _same_root(root, route.get("root")):
            netmap.unplaced.append(replace(node, note="under another root"))
        else:
            netmap.put(node)
    lookups = state.get("lookups")
    for pending in _records(lookups.get("pending") if isinstance(lookups, dict) else None):
        netmap.unplaced.append(MapNode((), "lookup", pending.get("address"), note="being looked up"))
    netmap.notes.append("hops: tree distance from this node (a routed path is at most this long); rtt: link RTT "
                        "(peers, parent), lookup round trip (destinations)")
    return netmap


def merge_views(states: Sequence[Mapping[str, Any]], title: str = "") -> NetMap:
    """The map of a whole network from every node's state document: each node where it says it is, under the
    root most nodes report; hops = depth (hops from the root), rtt = the RTT of the node's link to its parent."""
    views = []
    for state in states:
        try:
            views.append((state, *_coords(state)))
        except MapError:
            continue
    if not views:
        raise MapError("no node reports tree coordinates")
    root = Counter(view[1] for view in views).most_common(1)[0][0]
    netmap = NetMap(title=title or f"AxiomNet: {len(states)} nodes, every node's view merged", root=root)
    placed: set[str] = set()
    link_rtt: dict[tuple[TreePath, TreePath], float] = {}
    for state, node_root, own, chain in views:
        me = state["self"]
        if node_root != root:
            netmap.unplaced.append(MapNode(own, "node", me.get("address"), me.get("public_key"), len(own),
                                           note=f"under another root ({node_root[:16]})"))
            continue
        netmap.put(MapNode(own, "root" if not own else "node", me.get("address"), me.get("public_key"), len(own)))
        placed.add(str(me.get("public_key")))
        for hop in chain:
            path = _path(hop.get("coords"))
            if path is not None and own[:len(path)] == path:
                netmap.put(MapNode(path, "root" if not path else "node", hop.get("address"), hop.get("public_key"),
                                   len(path)))
                placed.add(str(hop.get("public_key")))
        for peer in _records(state.get("peers")):
            path = _path(peer.get("coords"))
            if path is None or not _same_root(root, peer.get("root")):
                continue
            netmap.put(MapNode(path, "root" if not path else "node", peer.get("address"), peer.get("public_key"),
                               len(path)))
            placed.add(str(peer.get("public_key")))
            rtt = _rtt(peer.get("rtt_ms"))
            if rtt is not None:
                link_rtt[(own, path)] = rtt
            if path != own and path[:-1] != own and own[:-1] != path:
                netmap.links.add((min(own, path), max(own, path)))
    for path, node in list(netmap.nodes.items()):
        if path:  # the parent link's RTT as the child measured it, else as the parent did
            rtt = link_rtt.get((path, path[:-1]), link_rtt.get((path[:-1], path)))
            netmap.nodes[path] = replace(node, rtt_ms=rtt, rtt_kind="link" if rtt is not None else "")
    for state in states:
        for peer in _records(state.get("peers")):
            key = str(peer.get("public_key"))
            if key not in placed:
                placed.add(key)
                netmap.unplaced.append(MapNode((), "node", peer.get("address"), peer.get("public_key"),
                                               note="no tree position"))
    netmap.notes.append("hops: depth (hops from the root); rtt: the link to the parent")
    return netmap


# --- drawing --------------------------------------------------------------------------------------------
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


class _Grid:
    """Boxes bucketed by cell, so a candidate is checked only against boxes near it."""

    def __init__(self, cell: float = 64.0) -> None:
        self.cell = cell
        self.cells: dict[tuple[int, int], list[Box]] = {}

    def _keys(self, box: Box) -> Iterable[tuple[int, int]]:
        c = self.cell
        for i in range(int(box[0] // c), int(box[2] // c) + 1):
            for j in range(int(box[1] // c), int(box[3] // c) + 1):
                yield (i, j)

    def add(self, box: Box) -> None:
        for key in self._keys(box):
            self.cells.setdefault(key, []).append(box)

    def overlap(self, box: Box) -> float:
        seen: set[Box] = set()
        total = 0.0
        for key in self._keys(box):
            for other in self.cells.get(key, ()):
                if other not in seen:
                    seen.add(other)
                    total += _overlap(box, other)
        return total


@dataclass(frozen=True)
class _Placed:
    node: MapNode
    box: Box
    lines: tuple[str, str]


def _place_labels(nodes: Sequence[MapNode], points: Mapping[TreePath, tuple[float, float]], centre: tuple[float, float],
                  size: tuple[float, float]) -> list[_Placed]:
    """Greedy label placement (module docstring); every node of ``nodes`` gets a box."""
    dots = _Grid()
    for path, (x, y) in points.items():
        r = 3.0
        dots.add((x - r, y - r, x + r, y + r))
    labels = _Grid()
    placed = []
    for node in nodes:
        lines = node.lines()
        w = max(len(line) for line in lines) * CHAR_WIDTH + 2 * LABEL_PAD
        h = len(lines) * LINE_HEIGHT + 2 * LABEL_PAD
        x, y = points[node.path]
        outward = math.atan2(y - centre[1], x - centre[0]) if (x, y) != centre else -math.pi / 2
        near = DOT_RADIUS.get(node.role, 5.0) + 2.0
        best: tuple[float, Box] | None = None
        for ring in range(LABEL_SEARCH_RINGS):
            distance = near + ring * LABEL_RING_STEP
            for k in range(LABEL_DIRECTIONS):
                turn = (k + 1) // 2 * (1 if k % 2 else -1) * (math.tau / LABEL_DIRECTIONS)
                ux, uy = math.cos(outward + turn), math.sin(outward + turn)
                reach = distance + abs(ux) * w / 2 + abs(uy) * h / 2
                cx, cy = x + ux * reach, y + uy * reach
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                if box[0] < 0 or box[1] < 0 or box[2] > size[0] or box[3] > size[1]:
                    continue
                padded = (box[0] - LABEL_GAP, box[1] - LABEL_GAP, box[2] + LABEL_GAP, box[3] + LABEL_GAP)
                cost = labels.overlap(padded) + dots.overlap(box)
                if best is None or cost < best[0]:
                    best = (cost, box)
                if cost == 0.0:
                    break
            if best is not None and best[0] == 0.0:
                break
        if best is None:  # the canvas is smaller than the label: put it at the node
            best = (0.0, (x, y, x + w, y + h))
        labels.add(best[1])
        placed.append(_Placed(node, best[1], lines))
    return placed


def label_overlaps(boxes: Sequence[Box]) -> int:
    """Pairs of boxes that overlap (touching edges do not count)."""
    count = 0
    order = sorted(boxes)
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            if b[0] >= a[2]:
                break
            if _overlap(a, b) > 0:
                count += 1
    return count


def _disk_radius(points: Mapping[TreePath, Coords], netmap: NetMap) -> float:
    """Pixels per unit of the disk: room for the labels, and every two dots at least MIN_DOT_SPACING apart."""
    n = len(netmap.nodes)
    radius = max(MIN_DISK_RADIUS, 260.0 + 34.0 * math.sqrt(n))
    xy = {path: c.to_cartesian() for path, c in points.items()}
    items = sorted(xy.items(), key=lambda item: item[1])
    closest = math.inf
    for i, (pa, a) in enumerate(items):  # sweep on x: only neighbours within the current closest distance
        for pb, b in items[i + 1:]:
            if b[0] - a[0] >= closest:
                break
            d = math.hypot(a[0] - b[0], a[1] - b[1])
            if d > 0:
                need = (DOT_RADIUS[_role(netmap, pa)] + DOT_RADIUS[_role(netmap, pb)] + MIN_DOT_SPACING) / d
                radius = max(radius, min(need, MAX_DISK_RADIUS))
                closest = min(closest, d)
    return min(radius, MAX_DISK_RADIUS)


def _role(netmap: NetMap, path: TreePath) -> str:
    node = netmap.nodes.get(path)
    return node.role if node is not None else "relay"


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _node_id(path: TreePath) -> str:
    return "node-root" if not path else "node-" + "-".join(str(p) for p in path)


def render_svg(netmap: NetMap) -> str:
    """The map as a standalone SVG document (UTF-8 text, parseable XML)."""
    points = tree_layout(list(netmap.nodes) + [p for link in netmap.links for p in link])
    radius = _disk_radius(points, netmap)
    widest = max((len(line) for node in [*netmap.nodes.values(), *netmap.unplaced] for line in node.lines()),
                 default=20)
    margin = widest * CHAR_WIDTH + 40.0
    top = _legend_height(netmap)
    width = 2 * (radius + margin)
    height = top + 2 * (radius + margin)
    centre = (width / 2, top + margin + radius)

    def screen(c: Coords) -> tuple[float, float]:
        x, y = c.to_cartesian()
        return (centre[0] + radius * x, centre[1] - radius * y)

    xy = {path: screen(c) for path, c in points.items()}
    svg = ET.Element("svg", {
        "xmlns": SVG_NS, "version": "1.1", "width": _fmt(width), "height": _fmt(height),
        "viewBox": f"0 0 {_fmt(width)} {_fmt(height)}", "font-family": FONT_FAMILY, "font-size": _fmt(FONT_SIZE),
        "data-nodes": str(len(netmap.nodes)), "data-root": netmap.root or "",
    })
    ET.SubElement(svg, "title").text = netmap.title
    background = ET.SubElement(svg, "rect", {"fill": "#ffffff"})
    ET.SubElement(svg, "circle", {"id": "boundary", "cx": _fmt(centre[0]), "cy": _fmt(centre[1]), "r": _fmt(radius),
                                  "fill": "#f7f9fc", "stroke": "#8899aa", "stroke-width": "1.5"})

    def arc(a: TreePath, b: TreePath, parent: ET.Element, attrs: dict[str, str]) -> None:
        g = geodesic(points[a], points[b])
        (x0, y0), (x1, y1) = xy[a], xy[b]
        d = f"M {_fmt(x0)} {_fmt(y0)} "
        if g.centre is None or g.radius is None:
            d += f"L {_fmt(x1)} {_fmt(y1)}"
        else:
            cx, cy = centre[0] + radius * g.centre[0], centre[1] - radius * g.centre[1]
            sweep = 1 if (x0 - cx) * (y1 - cy) - (y0 - cy) * (x1 - cx) > 0 else 0
            d += f"A {_fmt(radius * g.radius)} {_fmt(radius * g.radius)} 0 0 {sweep} {_fmt(x1)} {_fmt(y1)}"
        ET.SubElement(parent, "path", {"d": d, "fill": "none", **attrs})

    links = ET.SubElement(svg, "g", {"id": "peer-links"})
    for a, b in sorted(netmap.links):
        arc(a, b, links, {"class": "peer-link", "stroke": "#6a9fd4", "stroke-width": "1", "stroke-dasharray": "4 3"})
    tree = ET.SubElement(svg, "g", {"id": "tree-links"})
    for path in sorted(points, key=lambda p: (len(p), p)):
        if path:
            arc(path[:-1], path, tree, {"class": "tree-link", "data-child": _node_id(path), "stroke": "#44546a",
                                        "stroke-width": "1.4"})

    order = sorted(netmap.nodes.values(), key=lambda n: (ROLE_ORDER.index(n.role), len(n.path), n.path))
    placed = _place_labels(order, xy, centre, (width, height))
    leaders = ET.SubElement(svg, "g", {"id": "leaders"})
    dots = ET.SubElement(svg, "g", {"id": "nodes"})
    for path in sorted(points, key=lambda p: (len(p), p)):
        node = netmap.nodes.get(path) or MapNode(path, "relay")
        x, y = xy[path]
        attrs = {"id": _node_id(path), "class": f"node {node.role}", "cx": _fmt(x), "cy": _fmt(y),
                 "r": _fmt(DOT_RADIUS[node.role]), "fill": COLOURS[node.role], "stroke": "#ffffff",
                 "stroke-width": "1", "data-path": "/" + "/".join(str(p) for p in path)}
        if node.address:
            attrs["data-address"] = node.address
        if node.public_key:
            attrs["data-key"] = node.public_key
        dot = ET.SubElement(dots, "circle", attrs)
        ET.SubElement(dot, "title").text = _tooltip(node)
    labels = ET.SubElement(svg, "g", {"id": "labels"})
    for item in placed:
        x, y = xy[item.node.path]
        x0, y0, x1, y1 = item.box
        nx, ny = min(max(x, x0), x1), min(max(y, y0), y1)  # the box's nearest point to the dot
        if math.hypot(nx - x, ny - y) > DOT_RADIUS[item.node.role] + LEADER_AFTER:
            ET.SubElement(leaders, "line", {"x1": _fmt(x), "y1": _fmt(y), "x2": _fmt(nx), "y2": _fmt(ny),
                                            "stroke": "#a0a8b0", "stroke-width": "0.8"})
        group = ET.SubElement(labels, "g", {"class": "label", "data-for": _node_id(item.node.path)})
        ET.SubElement(group, "rect", {"x": _fmt(x0), "y": _fmt(y0), "width": _fmt(x1 - x0), "height": _fmt(y1 - y0),
                                      "fill": "#ffffff", "fill-opacity": "0.88", "stroke": COLOURS[item.node.role],
                                      "stroke-width": "0.6", "rx": "2"})
        text = ET.SubElement(group, "text", {"x": _fmt(x0 + LABEL_PAD), "y": _fmt(y0 + LABEL_PAD),
                                             "fill": "#1a1a1a"})
        for i, line in enumerate(item.lines):
            ET.SubElement(text, "tspan", {"x": _fmt(x0 + LABEL_PAD), "dy": _fmt(LINE_HEIGHT if i else LINE_HEIGHT - 2.5),
                                          **({"font-weight": "bold"} if i == 0 else {})}).text = line
    overlaps = label_overlaps([item.box for item in placed])
    svg.set("data-label-overlaps", str(overlaps))
    # Crop the canvas to what is drawn: the disk, the labels, and the legend above them.
    boxes = [(centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius),
             *(item.box for item in placed)]
    x0, y0 = min(b[0] for b in boxes) - 16.0, min(b[1] for b in boxes) - 16.0 - top
    x1, y1 = max(b[2] for b in boxes) + 16.0, max(b[3] for b in boxes) + 16.0
    x1 = max(x1, x0 + _legend_width(netmap) + 24.0)
    drawn = {(netmap.nodes.get(path) or MapNode(path, "relay")).role for path in points}
    _legend(svg, netmap, overlaps, (x0 + 12.0, y0), drawn)
    view = {"x": _fmt(x0), "y": _fmt(y0), "width": _fmt(x1 - x0), "height": _fmt(y1 - y0)}
    background.attrib.update(view)
    svg.set("width", view["width"])
    svg.set("height", view["height"])
    svg.set("viewBox", " ".join(view.values()))
    ET.indent(svg, space=" ")
    for text in svg.iter("text"):  # no indentation inside a text: SVG would draw it as spaces
        if len(text):
            text.text = None
            for span in text:
                span.tail = None
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(svg, encoding="unicode") + "\n"


def _tooltip(node: MapNode) -> str:
    parts = [ROLE_NAMES[node.role], "path /" + "/".join(str(p) for p in node.path)]
    if node.address:
        parts.append(f"address {node.address}")
    if node.public_key:
        parts.append(f"key {node.public_key}")
    if node.hops is not None:
        parts.append(f"hops {node.hops}")
    if node.rtt_ms is not None:
        parts.append(f"{node.rtt_kind or 'rtt'} rtt {node.rtt_ms:.3f} ms")
    if node.note:
        parts.append(node.note)
    return "; ".join(parts)


def _legend_height(netmap: NetMap) -> float:
    """The legend's rows as _legend draws them: title, 3 rows, the notes, the colours, the unplaced nodes."""
    height = 16.0 + (3 + len(netmap.notes)) * (LINE_HEIGHT + 2) + LINE_HEIGHT + 4
    if netmap.unplaced:
        height += LINE_HEIGHT + 2 + len(netmap.unplaced) * LINE_HEIGHT
    return height + 12.0


def _legend_rows(netmap: NetMap, overlaps: int) -> list[str]:
    return [f"root {netmap.root[:16] if netmap.root else '?'}  nodes {len(netmap.nodes)}  "
            f"label overlaps {overlaps}",
            "the Poincaré disk: the root at the centre, depth d at hyperbolic radius proportional to d "
            "(display only: routing uses the exact tree paths)",
            "solid: tree links (hyperbolic geodesics); dashed: peer links outside the tree", *netmap.notes]


def _legend_width(netmap: NetMap) -> float:
    rows = [*_legend_rows(netmap, 0), *("  ".join(n.lines()) + f"  ({n.note})  " for n in netmap.unplaced)]
    colours = sum(14 + len(name) * CHAR_WIDTH + 16 for name in ROLE_NAMES.values())
    return max(max(len(row) for row in rows) * CHAR_WIDTH, colours, len(netmap.title) * 0.602 * 14)


def _legend(svg: ET.Element, netmap: NetMap, overlaps: int, origin: tuple[float, float], roles: set[str]) -> None:
    """Title, explanations, the colours, and the nodes that have no place on the disk, from ``origin`` down."""
    legend = ET.SubElement(svg, "g", {"id": "legend"})
    left, y = origin[0], origin[1] + 16.0
    ET.SubElement(legend, "text", {"x": _fmt(left), "y": _fmt(y), "font-size": "14",
                                   "font-weight": "bold"}).text = netmap.title
    for row in _legend_rows(netmap, overlaps):
        y += LINE_HEIGHT + 2
        ET.SubElement(legend, "text", {"x": _fmt(left), "y": _fmt(y)}).text = row
    y += LINE_HEIGHT + 4
    x = left
    for role in (r for r in ROLE_ORDER if r in roles):
        ET.SubElement(legend, "circle", {"cx": _fmt(x + 5), "cy": _fmt(y - 4), "r": "5", "fill": COLOURS[role]})
        ET.SubElement(legend, "text", {"x": _fmt(x + 14), "y": _fmt(y)}).text = ROLE_NAMES[role]
        x += 14 + len(ROLE_NAMES[role]) * CHAR_WIDTH + 16
    if netmap.unplaced:
        y += LINE_HEIGHT + 2
        ET.SubElement(legend, "text", {"x": _fmt(left), "y": _fmt(y), "font-weight": "bold"}).text = (
            f"not on the disk ({len(netmap.unplaced)}):")
        for node in netmap.unplaced:
            y += LINE_HEIGHT
            attrs = {"x": _fmt(left + 12), "y": _fmt(y), "class": f"unplaced {node.role}"}
            if node.address:
                attrs["data-address"] = node.address
            ET.SubElement(legend, "text", attrs).text = f"{'  '.join(node.lines())}  ({node.note})"


def write_file(path: Path, svg: str) -> Path:
    """Write ``svg`` to ``path`` atomically (a temporary file beside it, then a rename); the absolute path."""
    path = path.expanduser().absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(svg)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
