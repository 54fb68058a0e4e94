"""Readable tables of the admin state document, one section at a time (pure: a dict in, text out).

Each section prints what the daemon's reply contains and nothing else: a section the daemon does not
report (a build without a spanning tree has no "tree") prints a one-line empty state, never made-up rows.
Sections the code does not know are rendered generically (key/value lines or a table of their keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

SECTIONS = ("self", "peers", "sessions", "e2e", "tree", "routes", "lookups", "actors", "health")
COMMANDS = SECTIONS + ("metrics", "all")
_EMPTY = {
    "tree": "no tree yet (the daemon reports no spanning tree)",
    "routes": "no routes yet (the daemon reports no route table)",
    "lookups": "no lookups yet (the daemon reports no lookup cache)",
    "e2e": "no end-to-end sessions (the daemon reports none)",
}
_TITLES = {"e2e": "END-TO-END SESSIONS"}
_PREFERRED = {
    "tree": ("root", "root_seq", "is_root", "parent", "depth", "coords", "key"),
}
_KEYS = ("public_key", "peer", "root", "parent", "key")  # shown cut to 16 hex characters
_SECONDS = ("last_seen", "last_handshake", "age", "expires_in", "announced")
MAX_GENERIC_COLUMNS = 10


class BadReply(Exception):
    """The reply does not have the shape a section needs; the message says which part."""


def cell(value: object) -> str:
    """One table cell: "-" for nothing, yes/no, 3 decimals, polar coordinates, compact JSON for structures."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return "/" + "/".join(str(v) for v in value)  # tree coordinates: the ports from the root ("/": the root)
    if isinstance(value, dict) and "path" in value:
        return f"{cell(value.get('path'))} under root {short_key(value.get('root'))}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def short_key(value: object) -> str:
    return value[:16] if isinstance(value, str) and len(value) > 16 else cell(value)


def seconds(value: object) -> str:
    return f"{value:.1f}s" if isinstance(value, (int, float)) and not isinstance(value, bool) else cell(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def records(state: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    items = state.get(name) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadReply(f"{name!r} is not a list of objects")
    return items


def drops_by_reason(counters: object) -> str:
    """"reason=n ..." for a session's drop counters (see axiomnet.ops.metrics.drop_reason), "-" when none."""
    from axiomnet.ops.metrics import drop_reason

    if not isinstance(counters, dict):
        return "-"
    parts = []
    for name, value in sorted(counters.items()):
        reason = drop_reason(name)
        if reason is not None and isinstance(value, int) and value:
            parts.append(f"{reason}={value}")
    return " ".join(parts) or "-"


def _columns(headers: Sequence[tuple[str, str]], rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (header, key) pairs whose key at least one row has (a column of nothing but gaps is left out)."""
    return [(header, key) for header, key in headers if any(key in row for row in rows)]


# --- sections ------------------------------------------------------------------------------------------
def render_self(state: Mapping[str, Any]) -> list[str]:
    me = state.get("self") or {}
    if not isinstance(me, dict):
        raise BadReply("'self' is not an object")
    lines = ["SELF"]
    for label, key in (("address", "address"), ("public key", "public_key"), ("coords", "coords"),
                       ("listen", "listen"), ("tun", "tun"), ("uptime", "uptime"), ("version", "version"),
                       ("pid", "pid")):
        value = seconds(me.get(key)) if key == "uptime" else cell(me.get(key))
        lines.append(f"  {label:<11} {value}")
    reflexive = _reflexive(state)
    if reflexive:
        lines.append(f"  {'seen at':<11} {reflexive}")
    lines += _punch(state)
    return lines


def _punch(state: Mapping[str, Any]) -> list[str]:
    """NAT traversal (docs/PROTOCOL.md §8.2): per node we exchanged endpoints with, direct or relayed, and why."""
    snapshots = state.get("snapshots")
    manager = snapshots.get("peers") if isinstance(snapshots, dict) else None
    table = manager.get("punch") if isinstance(manager, dict) else None
    if not isinstance(table, dict):
        return []
    return [f"  {'punch':<11} {str(key)[:16]} {row.get('state')}: {row.get('reason')}"
            for key, row in list(table.items())[:8] if isinstance(row, dict)]


def _reflexive(state: Mapping[str, Any]) -> str:
    """Where our neighbours see us (docs/PROTOCOL.md §8.1): each reported endpoint and how many report it."""
    snapshots = state.get("snapshots")
    manager = snapshots.get("peers") if isinstance(snapshots, dict) else None
    table = manager.get("reflexive") if isinstance(manager, dict) else None
    reported = table.get("reported") if isinstance(table, dict) else None
    if not isinstance(reported, list):
        return ""
    items = [f"{row.get('endpoint')} ({row.get('neighbours')} peer{'s' if row.get('neighbours') != 1 else ''})"
             for row in reported[:4] if isinstance(row, dict)]
    confirmed = table.get("confirmed") if isinstance(table, dict) else None
    return ", ".join(items) + ("" if confirmed is None else "; confirmed")


def render_peers(state: Mapping[str, Any]) -> list[str]:
    peers = records(state, "peers")
    sessions = {s.get("peer"): s for s in records(state, "sessions") if s.get("peer")}
    found = _found(state)
    rows = []
    for peer in peers:
        session = sessions.get(peer.get("public_key"), {})
        rows.append({**peer, "found": found.get(str(peer.get("public_key"))), "state": session.get("state"), "rx_packets": session.get("rx_packets"),
                     "tx_packets": session.get("tx_packets"), "rx_bytes": session.get("rx_bytes"),
                     "tx_bytes": session.get("tx_bytes"), "drops": drops_by_reason(session.get("counters"))})
    headers = _columns((("PUBLIC KEY", "public_key"), ("ADDRESS", "address"), ("ENDPOINT", "endpoint"),
                        ("FOUND", "found"), ("STATE", "state"), ("ALIVE", "alive"), ("LAST SEEN", "last_seen"),
                        ("LAST HANDSHAKE", "last_handshake"), ("RTT MS", "rtt_ms"), ("PORT", "port"),
                        ("TREE LINK", "tree_link"), ("LOAD", "load"),
                        ("COORDS", "coords"), ("RX PKTS", "rx_packets"), ("TX PKTS", "tx_packets"),
                        ("RX BYTES", "rx_bytes"), ("TX BYTES", "tx_bytes"), ("DROPS", "drops")), rows)
    if not rows:
        headers = [("PUBLIC KEY", "public_key")]
    lines = [f"PEERS ({len(rows)})"]
    lines += table([h for h, _ in headers], [[_format(key, row.get(key)) for _, key in headers] for row in rows])
    return lines


def _found(state: Mapping[str, Any]) -> dict[str, str]:
    """How the peer manager found each peer (public key hex -> static, runtime, discovered, inbound)."""
    snapshots = state.get("snapshots")
    manager = snapshots.get("peers") if isinstance(snapshots, dict) else None
    found = manager.get("found") if isinstance(manager, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _format(key: str, value: object) -> str:
    if key in _KEYS:
        return short_key(value)
    if key in _SECONDS:
        return seconds(value)
    return cell(value)


def render_sessions(state: Mapping[str, Any]) -> list[str]:
    sessions = records(state, "sessions")
    lines = [f"SESSIONS ({len(sessions)})"]
    lines += table(
        ("PEER", "ENDPOINT", "STATE", "ROLE", "STATIC", "AGE", "RX PKTS", "TX PKTS", "RX BYTES", "TX BYTES",
         "DROPPED", "DROPS BY REASON"),
        [(short_key(s.get("peer")), cell(s.get("endpoint")), cell(s.get("state")),
          {True: "initiator", False: "responder"}.get(s.get("initiator"), "-"),  # type: ignore[arg-type]
          cell(s.get("static")), seconds(s.get("age")), cell(s.get("rx_packets")), cell(s.get("tx_packets")),
          cell(s.get("rx_bytes")), cell(s.get("tx_bytes")), cell(s.get("dropped")),
          drops_by_reason(s.get("counters")))
         for s in sessions],
    )
    return lines


def render_actors(state: Mapping[str, Any]) -> list[str]:
    actors = records(state, "actors")
    unanswered = [str(name) for name in state.get("unanswered") or []]
    lines = [f"ACTORS ({len(actors)})"]
    lines += table(
        ("NAME", "ALIVE", "RESTARTS", "MAILBOX", "ANSWERED"),
        [(cell(a.get("name")), cell(a.get("alive")), cell(a.get("restarts")), cell(a.get("mailbox")),
          "no" if str(a.get("name")) in unanswered else "yes")
         for a in actors],
    )
    others = [name for name in unanswered if name not in {str(a.get("name")) for a in actors}]
    if others:
        lines.append("  unanswered within the deadline: " + ", ".join(others))
    return lines


def render_lookups(state: Mapping[str, Any]) -> list[str]:
    """The lookup cache and the lookups in flight (the router's ``lookups``: cache, pending, statistics)."""
    lookups = state.get("lookups")
    if not isinstance(lookups, dict) or not ("cache" in lookups or "pending" in lookups):
        return render_generic("lookups", lookups)
    cache, pending = records(lookups, "cache"), records(lookups, "pending")
    lines = [f"LOOKUPS ({len(cache)} cached, {len(pending)} pending)"]
    lines += table(("ADDRESS", "ROOT", "COORDS", "EXPIRES IN"),
                   [(cell(r.get("address")), cell(r.get("root")), cell(r.get("coords")), seconds(r.get("expires_in")))
                    for r in cache] + [(cell(p.get("address")), "-", "(looking up)", "-") for p in pending])
    stats = {k: v for k, v in lookups.items() if k not in ("cache", "pending")}
    if stats:
        lines.append("  " + "  ".join(f"{k}={cell(v)}" for k, v in stats.items()))
    return lines


def render_health(state: Mapping[str, Any]) -> list[str]:
    health = state.get("health")
    if not isinstance(health, dict):
        return ["HEALTH", "  the daemon reports no health (an older daemon?)"]
    lines = [f"HEALTH {str(health.get('status', '?')).upper()}"]
    lines += [f"  - {reason}" for reason in health.get("reasons") or []]
    return lines


def render_generic(name: str, value: object) -> list[str]:
    """Any section: a one-line empty state when absent, key/value lines for an object, a table for a list."""
    title = _TITLES.get(name, name.upper())
    if value is None:
        return [title, "  " + _EMPTY.get(name, f"no {name} (the daemon reports none)")]
    if isinstance(value, dict):
        if not value:
            return [title, "  (empty)"]
        if all(isinstance(v, dict) for v in value.values()):  # keyed records (address -> entry)
            return render_generic(name, [{"key": k, **v} for k, v in value.items()])
        order = [k for k in _PREFERRED.get(name, ()) if k in value] + [k for k in value if k not in
                                                                       _PREFERRED.get(name, ())]
        width = max((len(str(k)) for k in order), default=0)
        return [title] + [f"  {str(k):<{width}}  {_format(str(k), value[k])}" for k in order]
    if isinstance(value, list):
        rows = [v if isinstance(v, dict) else {"value": v} for v in value]
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        keys = keys[:MAX_GENERIC_COLUMNS]
        lines = [f"{title} ({len(rows)})"]
        lines += table([k.upper().replace("_", " ") for k in keys] or ["VALUE"],
                       [[_format(k, row.get(k)) for k in keys] for row in rows])
        return lines
    return [title, "  " + cell(value)]


_RENDERERS = {"self": render_self, "peers": render_peers, "sessions": render_sessions, "actors": render_actors,
              "lookups": render_lookups, "health": render_health}


def render(state: Mapping[str, Any], sections: Sequence[str] = SECTIONS) -> str:
    """The tables of ``sections`` (default: every section of ``all``), separated by blank lines."""
    blocks = []
    for name in sections:
        renderer = _RENDERERS.get(name)
        blocks.append(renderer(state) if renderer is not None else render_generic(name, state.get(name)))
    return "\n\n".join("\n".join(block) for block in blocks)


def section_json(state: Mapping[str, Any], name: str) -> Any:
    """What ``--json SECTION`` prints: the section as the daemon sent it (null when absent); for ``all``
    the whole document with every section present (absent ones as null)."""
    if name == "all":
        return {**{section: state.get(section) for section in SECTIONS}, **state}
    return state.get(name)
