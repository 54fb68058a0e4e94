"""The network map (ops/netmap.py): a node's view and merged views as SVG, parsed back and measured."""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest

from axiomnet.ops import netmap
from axiomnet.ops.netmap import MapError, MapNode, NetMap, merge_views, render_svg, view_of
from tools.sim.engine import Links, Network
from tools.sim.scenarios import run_rounds

SVG = "{http://www.w3.org/2000/svg}"
# The stated bound: at most one pair of overlapping labels per 100 labels (the placer finds a free spot for every
# label of the maps below: measured 0).
OVERLAPS_PER_100_LABELS = 1

ROOT = "0e" * 32
SELF_KEY, PARENT_KEY, PEER_KEY, FAR_KEY = "cd" * 32, "11" * 32, "22" * 32, "33" * 32
STATE: dict[str, Any] = {
    "self": {"address": "fc12:3456::1", "public_key": SELF_KEY, "coords": {
        "root": ROOT, "depth": 2, "path": [2, 1], "chain": [
            {"key": ROOT, "public_key": "0f" * 32, "address": "fc00:aaaa::1", "coords": []},
            {"key": "aa" * 32, "public_key": PARENT_KEY, "address": "fcaa::2", "coords": [2]},
            {"key": "bb" * 32, "public_key": SELF_KEY, "address": "fc12:3456::1", "coords": [2, 1]}]}},
    "peers": [
        {"public_key": PARENT_KEY, "address": "fcaa::2", "root": ROOT, "coords": [2], "tree_link": True,
         "rtt_ms": 0.5, "alive": True},
        {"public_key": PEER_KEY, "address": "fcbb::3", "root": ROOT, "coords": [3, 4], "tree_link": False,
         "rtt_ms": 1.25, "alive": True},
        {"public_key": "44" * 32, "address": "fcdd::5", "root": None, "coords": None, "tree_link": False,
         "rtt_ms": None, "alive": True}],
    "routes": [{"address": "fccc::4", "public_key": FAR_KEY, "root": ROOT[:16], "coords": [3, 7, 1],
                "rtt_ms": 4.5, "expires_in": 50.0}],
    "lookups": {"cache": [], "pending": [{"address": "fcee::6", "age": 0.2, "queued": 1}]},
}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed XML


def dots(root: ET.Element) -> dict[str, ET.Element]:
    return {c.get("data-path", ""): c for c in root.iter(f"{SVG}circle") if "node" in (c.get("class") or "")}


def label_boxes(root: ET.Element) -> list[tuple[float, float, float, float]]:
    boxes = []
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "label":
            rect = group.find(f"{SVG}rect")
            assert rect is not None
            x, y, w, h = (float(rect.get(k, "nan")) for k in ("x", "y", "width", "height"))
            boxes.append((x, y, x + w, y + h))
    return boxes


def overlapping_pairs(boxes: list[tuple[float, float, float, float]]) -> int:
    """Counted here from the drawn rectangles, independently of the renderer's own count."""
    return sum(1 for i, a in enumerate(boxes) for b in boxes[i + 1:]
               if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def label_text(root: ET.Element) -> str:
    return "\n".join(" | ".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def test_a_nodes_view_holds_itself_its_chain_peers_and_lookups_each_labelled() -> None:
    root = parse(render_svg(view_of(STATE)))
    placed = dots(root)
    by_address = {c.get("data-address"): c for c in placed.values() if c.get("data-address")}
    assert set(by_address) == {"fc12:3456::1", "fc00:aaaa::1", "fcaa::2", "fcbb::3", "fccc::4"}
    assert "self" in by_address["fc12:3456::1"].get("class", "")
    assert "root" in by_address["fc00:aaaa::1"].get("class", "") and by_address["fc00:aaaa::1"].get("data-path") == "/"
    assert "chain" in by_address["fcaa::2"].get("class", "")  # the parent: on the chain (and a peer)
    assert "peer" in by_address["fcbb::3"].get("class", "") and "lookup" in by_address["fccc::4"].get("class", "")
    assert {"/3", "/3/7"} <= set(placed)  # positions implied by the paths, known by no name: grey dots
    text = label_text(root)
    for expected in ("fc12:3456::1 | " + SELF_KEY[:8] + " self", PARENT_KEY[:8] + " 1 hop rtt 0.50 ms",
                     PEER_KEY[:8] + " 1 hop rtt 1.25 ms", FAR_KEY[:8] + " 5 hops rtt 4.50 ms",  # /2/1 -> /3/7/1
                     "0f0f0f0f 2 hops rtt -"):
        assert expected in text, expected
    # Nodes that have no place on the disk are listed, not dropped.
    unplaced = [t.get("data-address") for t in root.iter(f"{SVG}text") if "unplaced" in (t.get("class") or "")]
    assert unplaced == ["fcdd::5", "fcee::6"]
    assert "no tree position yet" in text and "being looked up" in text
    # The peer link outside the tree is drawn, dashed; every tree link is a path (arc or segment).
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "peer-link"]) == 1
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "tree-link"]) == len(placed) - 1
    assert root.get("data-label-overlaps") == "0" and overlapping_pairs(label_boxes(root)) == 0


def test_tree_links_off_a_diameter_are_circle_arcs() -> None:
    root = parse(render_svg(view_of(STATE)))
    arcs = [p.get("d", "") for p in root.iter(f"{SVG}path") if " A " in p.get("d", "")]
    assert arcs  # the geometry of the arcs themselves is tested in test_geometry.py
    for d in arcs:
        radius = float(d.split(" A ")[1].split()[0])
        assert radius > 0 and math.isfinite(radius)


def test_a_state_without_coordinates_is_a_map_error() -> None:
    with pytest.raises(MapError, match="no tree coordinates"):
        view_of({"self": {"address": "fc00::1"}})
    with pytest.raises(MapError):
        merge_views([{"self": {}}, {}])


def _three_nodes() -> list[dict[str, Any]]:
    """A line r - a - b plus a link r - b outside the tree, as three daemons would report it."""
    def me(address: str, key: str, path: list[int], chain: list[dict[str, Any]]) -> dict[str, Any]:
        return {"address": address, "public_key": key, "coords": {"root": ROOT, "path": path, "chain": chain}}

    r = {"public_key": "01" * 32, "address": "fc00::1", "coords": []}
    a = {"public_key": "02" * 32, "address": "fc00::2", "coords": [1]}
    b = {"public_key": "03" * 32, "address": "fc00::3", "coords": [1, 5]}

    def peer(node: dict[str, Any], rtt: float, tree: bool) -> dict[str, Any]:
        return {**node, "root": ROOT, "rtt_ms": rtt, "tree_link": tree}

    return [
        {"self": me("fc00::1", "01" * 32, [], [r]), "peers": [peer(a, 2.0, True), peer(b, 9.0, False)]},
        {"self": me("fc00::2", "02" * 32, [1], [r, a]), "peers": [peer(r, 2.5, True), peer(b, 3.0, True)]},
        {"self": me("fc00::3", "03" * 32, [1, 5], [r, a, b]), "peers": [peer(a, 3.5, True), peer(r, 9.0, False)]},
    ]


def test_merged_views_place_every_node_once_with_depth_and_parent_link_rtt() -> None:
    merged = merge_views(_three_nodes())
    assert {n.address: (n.path, n.hops, n.rtt_ms) for n in merged.nodes.values()} == {
        "fc00::1": ((), 0, None), "fc00::2": ((1,), 1, 2.5), "fc00::3": ((1, 5), 2, 3.5)}  # rtt: the child's own
    assert merged.links == {((), (1, 5))}
    root = parse(render_svg(merged))
    assert {c.get("data-address") for c in dots(root).values()} == {"fc00::1", "fc00::2", "fc00::3"}


def test_merged_views_list_a_node_under_another_root_apart() -> None:
    states = _three_nodes()
    states.append({"self": {"address": "fc00::9", "public_key": "09" * 32,
                            "coords": {"root": "ff" * 32, "path": [], "chain": []}}, "peers": []})
    merged = merge_views(states)
    assert [n.address for n in merged.unplaced] == ["fc00::9"] and "another root" in merged.unplaced[0].note
    assert len(merged.nodes) == 3


def _address(rng: random.Random) -> str:
    return "fc" + f"{rng.getrandbits(8):02x}:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(7))


def _map_of_paths(paths: list[tuple[int, ...]], seed: int) -> NetMap:
    rng = random.Random(seed)
    result = NetMap(title=f"{len(paths)} nodes", root=ROOT)
    for path in paths:
        result.put(MapNode(path, "root" if not path else "node", _address(rng), f"{rng.getrandbits(256):064x}",
                           len(path), round(rng.uniform(0.1, 99.0), 2), "link"))
    return result


def test_a_100_node_tree_built_by_the_core_renders_with_labels_apart() -> None:
    # The tree: the simulator's network (tools/sim, which runs the core's select_parents) on a 100-node graph.
    graph = nx.connected_watts_strogatz_graph(100, 4, 0.3, seed=5)
    rng = np.random.default_rng(5)
    edges = np.array(list(graph.edges), dtype=np.int64).reshape(-1, 2)
    net = Network(Links(100, edges[:, 0], edges[:, 1], rng.permutation(100)), rng.permutation(100))
    assert run_rounds(net, 2000, lambda sim: None)[0]
    ports, depth = net.positions()
    paths = [tuple(int(p) for p in ports[i, :depth[i]]) for i in range(100)]
    assert len(set(paths)) == 100 and () in paths
    netmap_ = _map_of_paths(paths, seed=5)
    root = parse(render_svg(netmap_))
    addresses = {c.get("data-address") for c in dots(root).values()}
    assert addresses == {n.address for n in netmap_.nodes.values()}  # every node, by its address
    boxes = label_boxes(root)
    assert len(boxes) == 100
    assert overlapping_pairs(boxes) <= OVERLAPS_PER_100_LABELS
    assert int(root.get("data-label-overlaps", "-1")) == overlapping_pairs(boxes)


@pytest.mark.parametrize("depth", [30, 45])
def test_a_deep_chain_renders_inside_the_disk_with_distinct_dots(depth: int) -> None:
    paths = [tuple(range(1, d + 1)) for d in range(depth + 1)] + [(1, 2, 9), (2,)]
    root = parse(render_svg(_map_of_paths(paths, seed=depth)))
    boundary = next(c for c in root.iter(f"{SVG}circle") if c.get("id") == "boundary")
    cx, cy, big_r = (float(boundary.get(k, "nan")) for k in ("cx", "cy", "r"))
    placed = list(dots(root).values())
    assert len(placed) == len(paths)
    points = [(float(c.get("cx", "nan")), float(c.get("cy", "nan")), float(c.get("r", "nan"))) for c in placed]
    for x, y, r in points:
        assert math.hypot(x - cx, y - cy) + r < big_r  # inside the disk
    for i, (x0, y0, r0) in enumerate(points):
        for x1, y1, r1 in points[i + 1:]:
            assert math.hypot(x1 - x0, y1 - y0) >= r0 + r1  # no two dots overlap
    boxes = label_boxes(root)
    assert overlapping_pairs(boxes) <= max(1, len(boxes) * OVERLAPS_PER_100_LABELS // 100)


def test_write_file_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "map.svg"
    target.write_text("old")
    assert netmap.write_file(target, "<svg/>") == target
    assert target.read_text() == "<svg/>" and [p.name for p in tmp_path.iterdir()] == ["map.svg"]
    with pytest.raises(OSError):
        netmap.write_file(tmp_path / "missing-dir" / "map.svg", "<svg/>")
