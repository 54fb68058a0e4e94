"""The admin state document: every actor asked at once, one deadline, and who did not answer said so.

The admin actor (and its metrics listener) call :func:`gather_state` from their own threads, never from an
actor's handler. Every question goes out before any answer is awaited (pykka futures), so a slow actor
costs the whole reply at most ADMIN_GATHER_DEADLINE, and what it would have said is marked "unanswered"
instead of failing the reply. The document's schema is in docs/OPERATIONS.md.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from typing import Any

import pykka

from axiomnet import __version__
from axiomnet.constants import ADMIN_GATHER_DEADLINE
from axiomnet.ops.health import evaluate
from axiomnet.actors import messages as m

# Keys of the router's snapshot the document uses itself; any other key (tree, routes, lookups, ...) becomes
# a top-level section of its own.
_ROUTER_KEYS = ("peers", "counters", "coords")
_TOP_LEVEL = ("self", "peers", "sessions", "actors", "counters", "snapshots", "unanswered", "health", "errors")
# Lists in other actors' snapshots that are sections of their own: (role, key) -> section.
_ACTOR_SECTIONS = {("e2e", "sessions"): "e2e"}

UNANSWERED = object()  # the ask timed out or the actor is dead


class Asks:
    """Questions sent at once; answers collected against one shared deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.futures: dict[str, Any] = {}
        self.dead: set[str] = set()

    def send(self, name: str, ref: Any, message: Any) -> None:
        if ref is None:
            self.dead.add(name)
            return
        try:
            self.futures[name] = ref.ask(message, block=False)
        except pykka.ActorDeadError:
            self.dead.add(name)

    def get(self, name: str) -> Any:
        """The answer, UNANSWERED (timeout or dead), or the exception the handler raised."""
        if name in self.dead or name not in self.futures:
            return UNANSWERED
        try:
            return self.futures[name].get(timeout=max(0.0, self.deadline - time.monotonic()))
        except (pykka.Timeout, pykka.ActorDeadError):
            return UNANSWERED
        except Exception as exc:  # the actor answered with an error (e.g. it has no Snapshot handler)
            return exc


def _session_name(ref: Any) -> str:
    return f"session {str(getattr(ref, 'actor_urn', '?'))[-12:]}"


def gather_state(
    *,
    supervisor: Any,
    refs: Mapping[str, Any],
    self_info: Mapping[str, Any],
    own_role: str = "admin",
    own_snapshot: Mapping[str, Any] | None = None,
    own_counters: Mapping[str, Any] | None = None,
    deadline: float = ADMIN_GATHER_DEADLINE,
) -> dict[str, Any]:
    """The document ``axiomnet-inspect`` prints: self, peers, sessions, actors, counters, snapshots,
    unanswered, health, and every extra section the router reports (tree, routes, lookups, ...)."""
    started = time.monotonic()
    asks = Asks(started + deadline)
    roles = {role: ref for role, ref in refs.items() if role != own_role}
    # The supervisor reads every mailbox depth: ask it before our own questions sit in those mailboxes.
    asks.send("supervisor", supervisor, m.Snapshot())
    asks.send("peers/sessions", roles.get("peers"), m.ListSessions())
    actors = asks.get("supervisor")
    for role, ref in roles.items():
        asks.send(f"{role}/snapshot", ref, m.Snapshot())
        asks.send(f"{role}/counters", ref, m.GetCounters())
    session_refs = asks.get("peers/sessions")
    if not isinstance(session_refs, list):
        session_refs = []
    for ref in session_refs:
        asks.send(_session_name(ref), ref, m.Snapshot())

    unanswered: list[str] = []
    errors: dict[str, str] = {}
    counters: dict[str, dict[str, Any]] = {}
    snapshots: dict[str, dict[str, Any]] = {}
    for role in roles:
        snapshot, role_counters = asks.get(f"{role}/snapshot"), asks.get(f"{role}/counters")
        if snapshot is UNANSWERED and role_counters is UNANSWERED:
            unanswered.append(role)
            continue
        if isinstance(snapshot, dict):
            # A snapshot's own "counters" (an actor's and its core's statistics) are counters too.
            nested = snapshot.pop("counters", None)
            counters[role] = {**(nested if isinstance(nested, dict) else {}),
                              **(role_counters if isinstance(role_counters, dict) else {})}
            snapshots[role] = snapshot
        elif isinstance(role_counters, dict):
            counters[role] = role_counters
        elif isinstance(snapshot, Exception) and not isinstance(snapshot, TypeError):
            errors[role] = repr(snapshot)  # TypeError: the actor has no snapshot, only counters
    if own_counters is not None:
        counters[own_role] = dict(own_counters)
    if own_snapshot is not None:
        snapshots[own_role] = dict(own_snapshot)

    sessions: list[dict[str, Any]] = []
    for ref in session_refs:
        name = _session_name(ref)
        row = asks.get(name)
        if isinstance(row, dict):
            sessions.append(row)
        else:
            unanswered.append(name)
            sessions.append({"peer": None, "endpoint": None, "state": "unanswered"})

    if not isinstance(actors, list):
        unanswered.append("supervisor")
        actors = []

    router = snapshots.pop("router", {})
    sections = {section: snapshots.get(role, {}).pop(key) for (role, key), section in _ACTOR_SECTIONS.items()
                if key in snapshots.get(role, {})}
    endpoints = {s.get("peer"): s.get("endpoint") for s in sessions if s.get("peer")}
    peers = [{**p, "endpoint": endpoints.get(p.get("public_key"))} for p in router.get("peers", [])
             if isinstance(p, dict)]
    listen = (snapshots.get("socket") or {}).get("listen")
    state: dict[str, Any] = {
        "self": {
            **self_info,
            "coords": router.get("coords"),
            "listen": listen,
            "uptime": round(time.monotonic() - float(self_info.get("started", started)), 3),
            "version": __version__,
            "python": platform.python_version(),
            "pid": os.getpid(),
        },
        "peers": peers,
        "sessions": sessions,
        "actors": actors,
    }
    state["self"].pop("started", None)
    for key, value in [*router.items(), *sections.items()]:
        if key not in _ROUTER_KEYS:
            (state if key not in _TOP_LEVEL else snapshots.setdefault("router", {}))[key] = value
    # Snapshot values that are also counters are reported once, as counters.
    state["counters"] = counters
    state["snapshots"] = {role: {k: v for k, v in snap.items() if k not in counters.get(role, {})}
                          for role, snap in snapshots.items()}
    state["unanswered"] = unanswered
    if errors:
        state["errors"] = errors
    state["health"] = evaluate(state).as_dict()
    state["gathered_in"] = round(time.monotonic() - started, 3)
    return state
