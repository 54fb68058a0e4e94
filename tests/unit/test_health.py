"""Health from the admin state: healthy, degraded and unhealthy, each for the reasons documented."""

from __future__ import annotations

from typing import Any

import pytest

from axiomnet.ops.health import DEGRADED, HEALTHY, UNHEALTHY, evaluate

ACTORS = ("socket", "router", "e2e", "tun", "peers", "heartbeat", "admin")


def state(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "self": {"uptime": 100.0},
        "actors": [{"name": name, "alive": True, "restarts": 0, "mailbox": 0} for name in ACTORS],
        "sessions": [{"peer": "ab", "state": "established", "static": True}],
        "unanswered": [],
    }
    document.update(changes)
    return document


def with_actor(name: str, **row: Any) -> list[dict[str, Any]]:
    return [{**a, **row} if a["name"] == name else a for a in state()["actors"]]


def test_a_running_node_is_healthy() -> None:
    health = evaluate(state())
    assert (health.status, health.exit_code, health.reasons) == (HEALTHY, 0, ())


@pytest.mark.parametrize("name", ["socket", "router", "e2e", "tun", "peers"])
def test_a_dead_data_path_actor_is_unhealthy(name: str) -> None:
    health = evaluate(state(actors=with_actor(name, alive=False, restarts=2)))
    assert health.status == UNHEALTHY and health.exit_code == 2
    assert health.reasons == (f"actor {name} is not running (restarts: 2)",)


def test_an_unanswered_data_path_actor_or_supervisor_is_unhealthy() -> None:
    assert evaluate(state(unanswered=["socket"])).status == UNHEALTHY
    health = evaluate(state(unanswered=["supervisor"], actors=[]))
    assert health.status == UNHEALTHY and "supervisor" in health.reasons[0]


def test_other_actors_sessions_and_backpressure_are_degraded() -> None:
    assert evaluate(state(actors=with_actor("heartbeat", alive=False))).status == DEGRADED
    assert evaluate(state(unanswered=["session 0123456789ab"])).status == DEGRADED
    health = evaluate(state(actors=with_actor("router", mailbox=200)), mailbox_warn=128)
    assert health.status == DEGRADED and "200 messages queued" in health.reasons[0]


def test_static_peers_unreached_after_the_grace_period_are_degraded() -> None:
    down = [{"peer": None, "state": "handshaking", "static": True}]
    assert evaluate(state(sessions=down, self={"uptime": 5.0}), peer_grace=30.0).status == HEALTHY
    health = evaluate(state(sessions=down, self={"uptime": 31.0}), peer_grace=30.0)
    assert health.status == DEGRADED and "static peer" in health.reasons[0]
    inbound_only = [{"peer": "cd", "state": "handshaking", "static": False}]
    assert evaluate(state(sessions=inbound_only, self={"uptime": 99.0})).status == HEALTHY


def test_unhealthy_lists_the_degraded_reasons_too() -> None:
    actors = [{**a, "alive": a["name"] not in ("router", "heartbeat")} for a in state()["actors"]]
    health = evaluate(state(actors=actors))
    assert health.status == UNHEALTHY and len(health.reasons) == 2
    assert health.as_dict() == {"status": "unhealthy", "code": 2, "reasons": list(health.reasons)}
