"""Prometheus metric families built from the admin actor's state document (pure: no sockets, no clock).

Two kinds of families:

* explicit ones for the core gauges and the figures operators graph (build info, uptime, peers, sessions,
  pending handshakes, actor liveness/restarts/mailboxes, per-peer packets and bytes, drops by reason,
  handshakes, health, unanswered actors, and the sizes and numbers of the tree, routes, lookups and
  end-to-end sections once the daemon reports them);
* generic ones derived from whatever the actors report, so a counter or an actor added later becomes a
  metric without new code here: every actor counter ``C`` of role ``R`` is ``axiomnet_R_C_total`` (per peer
  for session actors) and every number in an actor's snapshot ``K`` is the gauge ``axiomnet_R_K``.

The exposition goes through prometheus_client (a custom Collector and ``generate_latest``), never by hand.
prometheus_client is imported when families are first built, not with this module: the daemon imports this
module for its drop summary, and a node nobody scrapes need not carry the library (3.4 MiB of RSS here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry

PREFIX = "axiomnet"
HEALTH_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
SECTION_FAMILIES = ("tree", "routes", "lookups", "e2e")  # sections whose sizes and numbers become gauges

# Responder statistics that are a handshake outcome (the rest are drops, counted by reason).
_HANDSHAKE_RESULTS = {"completed": "ok", "rate_limited": "rate_limited", "decryption_failed": "failed",
                      "pending_expired": "failed", "pending_evicted": "failed"}
# Peer-manager counters that are refused handshakes.
_HANDSHAKE_REFUSALS = {"refused_key_mismatch": "refused", "refused_session_limit": "refused"}

# Router counters that count a packet refused or not sent although their names do not say "drop" (PROTOCOL.md
# §3.8, forwarding and tree rows; unit/test_metrics.py checks every router and forwarder counter is either one of
# these, a drop by name, or an outcome below).
_DROPS_BY_NAME = frozenset({
    "fwd_replies_rejected", "fwd_lookup_dead_end", "fwd_path_broken_limited", "fwd_ring_duplicate",
    "fwd_ring_refused", "fwd_ring_ttl_end", "fwd_ring_relay_limited", "announce_not_queued",
    "control_not_queued"})
# The router's counters that are not drops: what it sent, relayed, delivered or noticed.
ROUTER_OUTCOMES = frozenset({
    "relay_tables_published", "origin_tables_published", "fault_corrupted", "link_packets", "peers_withdrawn",
    "fwd_originated", "fwd_relayed", "fwd_delivered", "fwd_lookups_forwarded", "fwd_lookups_answered",
    "fwd_path_broken_sent", "fwd_ring_messages_sent", "fwd_ring_forwarded", "fwd_ring_answered",
    "fwd_source_routed_sent", "fwd_source_relayed"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def snake(name: str) -> str:
    """A metric-name-safe snake_case form of an actor or counter name (``rx_MalformedPacket`` -> ``rx_malformed_packet``)."""
    return _NOT_NAME.sub("_", _CAMEL.sub("_", str(name)).lower()).strip("_") or "unnamed"


def drop_reason(counter: str) -> str | None:
    """The reason label when ``counter`` counts dropped packets or datagrams, else None.

    Drops are: any counter with "drop" in its name (``dropped_no_route`` -> ``no_route``,
    ``rx_dropped_backpressure`` -> ``rx_backpressure``), datagrams rejected by the protocol core
    (``rx_<metric>``, the name each error class states in axiomnet/errors.py, -> its snake_case),
    ``rx_unknown_receiver``, ``rx_bad_control`` and send errors; announcements the tree refused
    (``announce_<metric>`` -> ``announce_`` + its snake_case) and the router's drops whose names do not say so
    (``fwd_lookup_dead_end``, ``announce_not_queued``, ...: ``_DROPS_BY_NAME``, reason = the name).
    """
    if "drop" in counter:
        reason = counter.replace("dropped_", "").replace("_dropped", "").replace("dropped", "")
        return snake(reason) or "dropped"
    if counter.startswith("rx_") and counter[3:4].isupper():
        return snake(counter[3:])
    if counter.startswith("announce_") and counter[9:10].isupper():
        return "announce_" + snake(counter[9:])
    if counter in _DROPS_BY_NAME:
        return counter
    if counter in ("rx_unknown_receiver", "rx_bad_control", "tx_errors"):
        return snake(counter)
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _records(state: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    items = state.get(name)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _mapping(state: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = state.get(name)
    return value if isinstance(value, dict) else {}


def _short(key: object) -> str:
    return key[:16] if isinstance(key, str) else "unknown"


class _Families:
    """Families by name; the first one registered under a name wins (explicit before generic)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}
        self.samples: set[str] = set()

    def add(self, family: Metric, sample_names: Iterable[str] = ()) -> None:
        names = set(sample_names) or {family.name}
        if family.name in self.by_name or names & self.samples:
            return
        self.by_name[family.name] = family
        self.samples |= names


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def families(state: Mapping[str, Any]) -> list[Metric]:
    """Every metric family for one admin state document (see docs/OPERATIONS.md for the list)."""
    out = _Families()
    me = _mapping(state, "self")
    counters = {role: values for role, values in _mapping(state, "counters").items() if isinstance(values, dict)}
    sessions = _records(state, "sessions")
    actors = _records(state, "actors")

    from prometheus_client.core import InfoMetricFamily

    info = InfoMetricFamily(f"{PREFIX}_build", "AxiomNet version and this node's identity",
                            labels=["version", "python", "address", "public_key"])
    info.add_metric([str(me.get("version", "")), str(me.get("python", "")), str(me.get("address", "")),
                     str(me.get("public_key", ""))], {})
    out.add(info, [f"{PREFIX}_build_info"])

    uptime = _number(me.get("uptime"))
    if uptime is not None:
        family = _gauge("uptime_seconds", "Seconds since the daemon started")
        family.add_metric([], uptime)
        out.add(family)

    health = _mapping(state, "health")
    if health.get("status") in HEALTH_CODES:
        family = _gauge("health_status", "0 healthy, 1 degraded, 2 unhealthy (axiomnet-inspect health)")
        family.add_metric([], HEALTH_CODES[health["status"]])
        out.add(family)

    unanswered = state.get("unanswered")
    family = _gauge("unanswered_actors", "Actors that did not answer the last snapshot within the deadline")
    family.add_metric([], len(unanswered) if isinstance(unanswered, list) else 0)
    out.add(family)

    peers = _records(state, "peers")
    family = _gauge("peers", "Neighbours in the routing table, by liveness", labels=["alive"])
    alive = sum(1 for p in peers if p.get("alive"))
    family.add_metric(["true"], alive)
    family.add_metric(["false"], len(peers) - alive)
    out.add(family)

    by_state: dict[str, int] = {"established": 0, "handshaking": 0, "expired": 0}
    for session in sessions:
        name = str(session.get("state") or "unknown")
        by_state[name] = by_state.get(name, 0) + 1
    family = _gauge("sessions", "Link session actors, by state", labels=["state"])
    for name, count in sorted(by_state.items()):
        family.add_metric([name], count)
    out.add(family)

    snapshots = _mapping(state, "snapshots")
    peer_snapshot = _mapping(snapshots, "peers")
    pending = _number(peer_snapshot.get("pending_handshakes"))
    if pending is not None:
        family = _gauge("pending_handshakes", "Half-open responder handshakes")
        family.add_metric([], pending)
        out.add(family)

    up = _gauge("actor_up", "1 if the actor is alive", labels=["actor"])
    restarts = _counter("actor_restarts", "Restarts of the actor by the supervisor", labels=["actor"])
    mailbox = _gauge("actor_mailbox_depth", "Messages waiting in the actor's mailbox", labels=["actor"])
    for row in actors:
        name = str(row.get("name"))
        up.add_metric([name], 1.0 if row.get("alive") else 0.0)
        restarts.add_metric([name], _number(row.get("restarts")) or 0.0)
        mailbox.add_metric([name], _number(row.get("mailbox")) or 0.0)
    out.add(up)
    out.add(restarts, [f"{PREFIX}_actor_restarts_total"])
    out.add(mailbox)

    packets = _counter("peer_packets", "Packets through a peer's link session", labels=["peer", "direction"])
    octets = _counter("peer_bytes", "Payload bytes through a peer's link session", labels=["peer", "direction"])
    for session in sessions:
        if session.get("peer") is None:
            continue
        peer = _short(session.get("peer"))
        for direction in ("rx", "tx"):
            packets.add_metric([peer, direction], _number(session.get(f"{direction}_packets")) or 0.0)
            octets.add_metric([peer, direction], _number(session.get(f"{direction}_bytes")) or 0.0)
    out.add(packets, [f"{PREFIX}_peer_packets_total"])
    out.add(octets, [f"{PREFIX}_peer_bytes_total"])

    drops = _counter("dropped", "Packets and datagrams dropped, by actor and reason (session: sum over live "
                     "sessions)", labels=["actor", "reason"])
    for (role, reason), value in sorted(drop_totals(state).items()):
        drops.add_metric([role, reason], value)
    out.add(drops, [f"{PREFIX}_dropped_total"])

    handshakes = _counter("handshakes", "Handshakes answered by this node, by result", labels=["result"])
    results: dict[str, float] = {"ok": 0.0, "failed": 0.0, "rate_limited": 0.0, "refused": 0.0}
    responder = _mapping(peer_snapshot, "responder")
    for stat, result in _HANDSHAKE_RESULTS.items():
        results[result] += _number(responder.get(stat)) or 0.0
    for counter, result in _HANDSHAKE_REFUSALS.items():
        results[result] += _number(counters.get("peers", {}).get(counter)) or 0.0
    for result, value in sorted(results.items()):
        handshakes.add_metric([result], value)
    out.add(handshakes, [f"{PREFIX}_handshakes_total"])

    for section in SECTION_FAMILIES:
        _section_families(out, section, state.get(section))

    _generic_counters(out, counters, sessions)
    _generic_snapshots(out, snapshots, counters)
    return list(out.by_name.values())


def _section_families(out: _Families, section: str, value: object) -> None:
    """Sizes and numbers of a section the daemon reports: a list is ``axiomnet_S_entries``; in an object, a
    number K is ``axiomnet_S_K`` and a list K is ``axiomnet_S_K_entries``. Nothing when it is absent."""
    if isinstance(value, list):
        family = _gauge(f"{section}_entries", f"Entries of the {section} section")
        family.add_metric([], len(value))
        out.add(family)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if isinstance(item, list):
            family = _gauge(f"{section}_{snake(key)}_entries", f"Entries of {section}.{key}")
            family.add_metric([], len(item))
        elif (number := _number(item)) is not None:
            family = _gauge(f"{section}_{snake(key)}", f"{section}.{key}")
            family.add_metric([], number)
        else:
            continue
        out.add(family)


def drop_totals(state: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """Dropped packets/datagrams by (actor, reason) in ``state``; session actors are summed as "session"."""
    totals: dict[tuple[str, str], float] = {}
    session_totals: dict[str, float] = {}
    for session in _records(state, "sessions"):
        for name, value in _mapping(session, "counters").items():
            session_totals[name] = session_totals.get(name, 0.0) + (_number(value) or 0.0)
    roles = [(role, values) for role, values in _mapping(state, "counters").items() if isinstance(values, dict)]
    for role, values in [*roles, ("session", session_totals)]:
        for name, value in values.items():
            reason = drop_reason(name)
            number = _number(value)
            if reason is not None and number is not None:
                key = (snake(role), reason)
                totals[key] = totals.get(key, 0.0) + number
    return totals


def _generic_counters(out: _Families, counters: Mapping[str, Mapping[str, Any]],
                      sessions: list[dict[str, Any]]) -> None:
    for role, values in sorted(counters.items()):
        for name, value in sorted(values.items()):
            number = _number(value)
            if number is None:
                continue
            family = _counter(f"{snake(role)}_{snake(name)}", f"{role} actor counter {name}")
            family.add_metric([], number)
            out.add(family, [f"{family.name}_total"])
    per_name: dict[str, CounterMetricFamily] = {}
    for session in sessions:
        peer = _short(session.get("peer")) if session.get("peer") is not None else str(session.get("endpoint"))
        for name, value in sorted(_mapping(session, "counters").items()):
            number = _number(value)
            if number is None:
                continue
            if name not in per_name:
                per_name[name] = _counter(f"session_{snake(name)}", f"session actor counter {name}", labels=["peer"])
            per_name[name].add_metric([peer], number)
    for family in per_name.values():
        out.add(family, [f"{family.name}_total"])


def _generic_snapshots(out: _Families, snapshots: Mapping[str, Any], counters: Mapping[str, Mapping[str, Any]]) -> None:
    for role, snapshot in sorted(snapshots.items()):
        if not isinstance(snapshot, dict):
            continue
        own = counters.get(role, {})
        for key, value in sorted(snapshot.items()):
            if key in own:
                continue  # already a counter family
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, item in items:
                number = _number(item)
                if number is None:
                    continue
                name = "_".join(part for part in (snake(role), snake(key), snake(sub) if sub else "") if part)
                family = _gauge(name, f"{role} actor snapshot value {key}{'.' + str(sub) if sub else ''}")
                family.add_metric([], number)
                out.add(family)


def registry_for(source: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    """A registry holding only the AxiomNet state collector (no process/platform collectors: no surprises)."""
    from prometheus_client.registry import Collector, CollectorRegistry

    class StateCollector(Collector):
        """Turns the current admin state (from ``source``) into families at each scrape."""

        def collect(self) -> Iterator[Metric]:
            yield from families(source())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector())
    return registry


def render(state: Mapping[str, Any]) -> str:
    """The Prometheus text exposition of ``state``."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry_for(lambda: state)).decode("utf-8")
