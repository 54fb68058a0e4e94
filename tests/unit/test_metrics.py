"""Metric families from the admin state: parsed back with prometheus_client's parser, explicit and generic."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from axiomnet.ops.metrics import drop_reason, drop_totals, render, snake

PEER = "11" * 32


def state(**extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "self": {"address": "fc12::1", "public_key": "cd" * 32, "uptime": 42.5, "version": "0.1.0",
                 "python": "3.11.7"},
        "peers": [{"public_key": PEER, "alive": True}, {"public_key": "22" * 32, "alive": False}],
        "sessions": [{"peer": PEER, "state": "established", "rx_packets": 10, "tx_packets": 12, "rx_bytes": 1000,
                      "tx_bytes": 1200, "counters": {"rx_ReplayedPacket": 2, "rx_dropped_no_tun": 1,
                                                     "tx_datagrams": 12}},
                     {"peer": None, "endpoint": None, "state": "unanswered"}],
        "actors": [{"name": "router", "alive": True, "restarts": 1, "mailbox": 3},
                   {"name": "heartbeat", "alive": False, "restarts": 4, "mailbox": 0}],
        "counters": {"router": {"forwarded": 100, "dropped_no_route": 7, "dropped_hop_limit": 1},
                     "socket": {"rx_datagrams": 50, "tx_dropped_full": 2},
                     "peers": {"rx_MalformedPacket": 3, "refused_session_limit": 1}},
        "snapshots": {"peers": {"sessions": 2, "pending_handshakes": 5,
                                "responder": {"completed": 4, "rate_limited": 6, "decryption_failed": 1}},
                      "socket": {"listen": "[::]:7443", "indices": 3}},
        "unanswered": ["session 0123456789ab"],
        "health": {"status": "degraded", "code": 1, "reasons": ["x"]},
    }
    document.update(extra)
    return document


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_exposition_parses_and_has_the_core_families() -> None:
    text = render(state())
    families = {family.name for family in text_string_to_metric_families(text)}
    core = {"axiomnet_build_info", "axiomnet_uptime_seconds", "axiomnet_health_status", "axiomnet_unanswered_actors",
            "axiomnet_peers", "axiomnet_sessions", "axiomnet_pending_handshakes", "axiomnet_actor_up",
            "axiomnet_actor_restarts", "axiomnet_actor_mailbox_depth", "axiomnet_peer_packets",
            "axiomnet_peer_bytes", "axiomnet_dropped", "axiomnet_handshakes"}
    assert core <= families and len(families) >= 12
    found = samples(text)
    assert value(found, "axiomnet_uptime_seconds") == 42.5
    assert value(found, "axiomnet_health_status") == 1
    assert value(found, "axiomnet_peers", alive="true") == 1 and value(found, "axiomnet_peers", alive="false") == 1
    assert value(found, "axiomnet_sessions", state="established") == 1
    assert value(found, "axiomnet_sessions", state="unanswered") == 1
    assert value(found, "axiomnet_pending_handshakes") == 5
    assert value(found, "axiomnet_actor_up", actor="heartbeat") == 0
    assert value(found, "axiomnet_actor_restarts_total", actor="heartbeat") == 4
    assert value(found, "axiomnet_actor_mailbox_depth", actor="router") == 3
    assert value(found, "axiomnet_peer_packets_total", peer=PEER[:16], direction="tx") == 12
    assert value(found, "axiomnet_peer_bytes_total", peer=PEER[:16], direction="rx") == 1000
    assert value(found, "axiomnet_unanswered_actors") == 1
    assert value(found, "axiomnet_handshakes_total", result="ok") == 4
    assert value(found, "axiomnet_handshakes_total", result="rate_limited") == 6
    assert value(found, "axiomnet_handshakes_total", result="failed") == 1
    assert value(found, "axiomnet_handshakes_total", result="refused") == 1


def test_drops_by_actor_and_reason() -> None:
    found = samples(render(state()))
    assert value(found, "axiomnet_dropped_total", actor="router", reason="no_route") == 7
    assert value(found, "axiomnet_dropped_total", actor="router", reason="hop_limit") == 1
    assert value(found, "axiomnet_dropped_total", actor="socket", reason="tx_full") == 2
    assert value(found, "axiomnet_dropped_total", actor="peers", reason="malformed_packet") == 3
    assert value(found, "axiomnet_dropped_total", actor="session", reason="replayed_packet") == 2
    assert value(found, "axiomnet_dropped_total", actor="session", reason="rx_no_tun") == 1
    assert drop_totals(state())[("router", "no_route")] == 7


def test_a_new_counter_or_actor_becomes_a_metric_without_new_code() -> None:
    extra = state()
    extra["counters"]["e2e"] = {"lookups_sent": 9, "dropped_no_key": 2}
    extra["snapshots"]["e2e"] = {"cached_routes": 17, "lookups_sent": 9}
    extra["sessions"][0]["counters"]["rekeys_started"] = 3
    found = samples(render(extra))
    assert value(found, "axiomnet_e2e_lookups_sent_total") == 9
    assert value(found, "axiomnet_e2e_cached_routes") == 17
    assert value(found, "axiomnet_dropped_total", actor="e2e", reason="no_key") == 2
    assert value(found, "axiomnet_session_rekeys_started_total", peer=PEER[:16]) == 3
    assert value(found, "axiomnet_router_forwarded_total") == 100
    assert value(found, "axiomnet_peers_responder_completed") == 4
    assert ("axiomnet_e2e_lookups_sent", ()) not in found  # a snapshot number that is a counter is one metric


def test_tree_routes_lookups_and_e2e_appear_only_when_reported() -> None:
    families = {f.name for f in text_string_to_metric_families(render(state()))}
    assert not {n for n in families if n.startswith(("axiomnet_routes", "axiomnet_lookups", "axiomnet_tree"))}
    found = samples(render(state(
        tree={"depth": 3, "root": "ab" * 32, "is_root": False, "root_seq": 77, "coords": [1, 2, 3]},
        routes=[{"address": "fc::1"}, {"address": "fc::2"}],
        lookups={"cache": [{"address": "fc::1"}], "pending": [], "sent": 4},
        e2e=[{"address": "fc::1", "state": "established"}])))
    assert value(found, "axiomnet_tree_depth") == 3 and value(found, "axiomnet_tree_root_seq") == 77
    assert value(found, "axiomnet_tree_is_root") == 0 and value(found, "axiomnet_tree_coords_entries") == 3
    assert value(found, "axiomnet_routes_entries") == 2
    assert value(found, "axiomnet_lookups_cache_entries") == 1 and value(found, "axiomnet_lookups_pending_entries") == 0
    assert value(found, "axiomnet_lookups_sent") == 4 and value(found, "axiomnet_e2e_entries") == 1


def test_an_empty_document_still_renders() -> None:
    families = list(text_string_to_metric_families(render({})))
    assert {f.name for f in families} >= {"axiomnet_build_info", "axiomnet_peers", "axiomnet_sessions"}


@pytest.mark.parametrize(("counter", "reason"), [
    ("dropped_no_route", "no_route"), ("rx_dropped_backpressure", "rx_backpressure"), ("staged_dropped", "staged"),
    ("rx_DecryptionFailed", "decryption_failed"), ("rx_unknown_receiver", "rx_unknown_receiver"),
    ("tx_errors", "tx_errors"), ("forwarded", None), ("rx_datagrams", None), ("heartbeat_skipped", None),
])
def test_drop_reason(counter: str, reason: str | None) -> None:
    assert drop_reason(counter) == reason


def test_snake() -> None:
    assert snake("rx_MalformedPacket") == "rx_malformed_packet"
    assert snake("weird name/with.dots") == "weird_name_with_dots"


def test_operations_doc_names_every_explicit_family() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    full = state(tree={"depth": 3}, routes=[], lookups={"cache": [], "pending": []}, e2e=[])
    generic_prefixes = tuple(f"axiomnet_{role}_" for role in (*full["counters"], *full["snapshots"], "session"))
    names = {f.name for f in text_string_to_metric_families(render(full))}
    explicit = {name for name in names if not name.startswith(generic_prefixes)}
    assert len(explicit) >= 15
    for name in explicit:
        family = name if name.endswith("_info") or f"`{name}`" in doc else f"{name}_total"
        assert f"`{family}`" in doc, f"docs/OPERATIONS.md does not name the metric family {name}"


def test_the_daemon_does_not_load_prometheus_client_until_metrics_are_asked_for() -> None:
    """An idle node's RSS is a target (issue 11: <= 64 MiB); prometheus_client costs 3.4 MiB of it and is only
    needed to build families (a scrape, `axiomnet-inspect metrics`). Checked in a fresh interpreter."""
    import subprocess
    import sys

    probe = ("import sys, axiomnet.actors.node, axiomnet.ops.metrics as m; before = 'prometheus_client' in sys.modules; "
             "text = m.render({'self': {'version': 'x'}}); print(before, 'prometheus_client' in sys.modules, "
             "'axiomnet_build_info' in text)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "True", "True"], out


def _router_counters() -> set[str]:
    """Every counter the router actor and its forwarder can raise: the literal names in actors/router.py, the
    ``announce_<metric>`` of every error class, and the forwarder's stats as the router reports them (fwd_)."""
    import re
    from pathlib import Path

    import axiomnet.actors.router as router
    import axiomnet.forward as forward
    from axiomnet import errors

    source = Path(router.__file__).read_text()
    names = set(re.findall(r'self\.counters\["(\w+)"\]', source))
    assert 'self.counters["announce_" + exc.metric]' in source  # the one computed name, expanded below
    classes = [errors.RemoteProtocolError]
    while classes:
        cls = classes.pop()
        names.add("announce_" + cls.metric)
        classes.extend(cls.__subclasses__())
    stats = set(re.findall(r'stats\["(\w+)"\]', Path(forward.__file__).read_text())) | set(forward._STATS)
    return names | {f"fwd_{name}" for name in stats}


def test_every_router_and_forwarder_drop_is_exported_and_documented() -> None:
    """A counter the router or forwarder raises is either an outcome (ROUTER_OUTCOMES) or a drop: then it has a
    reason in axiomnet_dropped_total and its name stands in PROTOCOL.md §3.8. A new counter left unclassified,
    or a drop missing from the table, fails here."""
    from pathlib import Path

    from axiomnet.ops.metrics import ROUTER_OUTCOMES

    names = _router_counters()
    assert {"fwd_replies_rejected", "fwd_lookup_dead_end", "fwd_dropped_no_route", "announce_InvalidAnnouncement",
            "fwd_relayed", "link_packets"} <= names  # the scan finds what it must
    drops = {name for name in names if drop_reason(name) is not None}
    assert not drops & ROUTER_OUTCOMES
    assert names - drops <= ROUTER_OUTCOMES, f"unclassified router counters: {sorted(names - drops - ROUTER_OUTCOMES)}"
    protocol = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()
    table = protocol.split("### 3.8 ", 1)[1].split("\n## ", 1)[0]
    missing = sorted(n for n in drops if f"`{n}`" not in table and not
                     (n.startswith("announce_") and n[9:10].isupper() and "`announce_<ErrorClass>`" in table))
    assert not missing, f"router drops missing from PROTOCOL.md §3.8: {missing}"
    totals = drop_totals({"counters": {"router": dict.fromkeys(names, 1)}})
    assert sum(totals.values()) == len(drops)  # every drop reaches the metric, each under its own reason
    assert totals[("router", "fwd_lookup_dead_end")] == 1 and totals[("router", "announce_invalid_announcement")] == 1
