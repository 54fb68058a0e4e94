"""SupervisorActor: starts the node's actors in dependency order, restarts crashed ones, stops them in reverse.

A crash reaches it as ChildFailed (from the child's on_failure, or its on_start). It restarts the child
after an exponential backoff and tells every other actor the new ref (Rewire). Too many crashes in the
restart window means the node is crash-looping: it calls ``on_fatal`` so the daemon exits non-zero and
systemd or the container runtime restarts the whole process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pykka
from loguru import logger

from axiomnet.constants import ACTOR_STOP_TIMEOUT
from axiomnet.supervision import RestartPolicy
from axiomnet.actors import messages as m
from axiomnet.actors.base import DeadlineTimer, Later, mailbox_depth, tell


@dataclass(frozen=True)
class ChildSpec:
    """A supervised actor: its role name and how to start it given the supervisor and current refs."""

    role: str
    start: Callable[[Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class StartAll:
    """Start every child in order (ask; fails if one dies in its start)."""


@dataclass(frozen=True)
class StopAll:
    """Stop every child in reverse start order, each within ``timeout``, all within ``total`` (None: no overall
    bound); a child late past its share is left with its stop request queued and the next one goes on."""

    timeout: float = ACTOR_STOP_TIMEOUT
    total: float | None = None


class _RestartsDue(m.Urgent):
    """The restart timer's wake-up (never leaves this actor)."""


class SupervisorActor(pykka.ThreadingActor):
    """One-for-one supervision of the node's fixed actors (sessions are supervised by the peer manager)."""

    use_daemon_thread = True  # as its children's: the daemon's bounded shutdown decides when the process ends

    def __init__(self, specs: list[ChildSpec], on_fatal: Callable[[str], None],
                 policy: RestartPolicy | None = None) -> None:
        super().__init__()
        self.specs = specs
        self.on_fatal = on_fatal
        self.policy = policy or RestartPolicy()
        self.refs: dict[str, Any] = {}
        self.stopping = False
        self._timer_stop = threading.Event()
        timer = DeadlineTimer(self.actor_ref, _RestartsDue(), self._timer_stop)
        self._restarts = Later(timer)  # RestartChild messages, each due after its backoff

    def on_start(self) -> None:
        self._restarts.timer.start_thread("axn-supervisor-timer")

    def on_stop(self) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        self._restarts.clear()
        self._timer_stop.set()
        self._restarts.timer.wake()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartAll):
            return self._start_all()
        if isinstance(message, StopAll):
            return self._stop_all(message.timeout, message.total)
        if isinstance(message, m.ChildFailed):
            return self._child_failed(message)
        if isinstance(message, m.RestartChild):
            return self._restart(message.role)
        if isinstance(message, _RestartsDue):
            for due in self._restarts.due():
                self.on_receive(due)
            return None
        if isinstance(message, m.Fatal):
            self._fatal(message.reason)
            return None
        if isinstance(message, m.Snapshot):
            return self._snapshot()
        if isinstance(message, m.GetRef):
            return self.refs.get(message.role)
        raise TypeError(f"supervisor got an unexpected message {type(message).__name__}")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # Nobody supervises the supervisor: a bug here must stop the daemon (exit 1), never leave it headless.
        logger.opt(exception=(exception_type, exception_value, traceback)).critical("supervisor crashed")
        self._stop_timer()
        self.on_fatal(f"supervisor crashed: {exception_value!r}")

    # --- start / stop ----------------------------------------------------------------------------
    def _start_all(self) -> list[str]:
        started = []
        for spec in self.specs:
            ref = spec.start(self.actor_ref, dict(self.refs))
            self._wait_started(spec.role, ref)
            # Those started before learn the new child at once, before the next one starts: a later child may
            # set traffic going at once (the TUN reader, the peer manager dialling) and an answer must find
            # its way back (router -> e2e) from the first packet, not from the end of start-up.
            for other_ref in self.refs.values():
                tell(other_ref, m.Rewire(spec.role, ref))
            self.refs[spec.role] = ref
            started.append(spec.role)
        # Everyone learns everyone (cycles such as socket <-> peers are closed here).
        for role, ref in self.refs.items():
            for other, other_ref in self.refs.items():
                if other != role:
                    tell(ref, m.Rewire(other, other_ref))
        return started

    def _wait_started(self, role: str, ref: Any) -> None:
        """Fail start-up loudly when a child dies in on_start (bind error, no TUN...)."""
        try:
            ref.ask(m.GetCounters(), timeout=ACTOR_STOP_TIMEOUT * 2)
        except pykka.ActorDeadError:
            raise RuntimeError(f"{role} failed to start (see the log above)") from None

    def _stop_all(self, timeout: float, total: float | None = None) -> list[str]:
        self.stopping = True
        self._stop_timer()
        deadline = None if total is None else time.monotonic() + total
        stopped = []
        for spec in reversed(self.specs):
            ref = self.refs.get(spec.role)
            if ref is None:
                continue
            wait = timeout if deadline is None else min(timeout, max(0.0, deadline - time.monotonic()))
            try:
                ref.stop(block=True, timeout=wait)
                stopped.append(spec.role)
            except pykka.Timeout:
                logger.error("{} did not stop within {:.1f} s", spec.role, wait)
            except pykka.ActorDeadError:
                pass
        return stopped

    # --- failures --------------------------------------------------------------------------------
    def _child_failed(self, msg: m.ChildFailed) -> None:
        current = self.refs.get(msg.role)
        if current is None or current.actor_urn != msg.urn:
            return  # a stale report (already restarted) or an actor we do not supervise
        if self.stopping:
            return
        logger.error("actor {} crashed: {}", msg.role, msg.error)
        delay = self.policy.record_failure(msg.role, time.monotonic())
        if delay is None:
            self._fatal(f"actors crashed more than {self.policy.intensity} times within {self.policy.window:.0f} s "
                        f"(last: {msg.role}: {msg.error})")
            return
        logger.info("restarting {} in {:.2f} s", msg.role, delay)
        self._restarts.after(delay, m.RestartChild(msg.role))

    def _restart(self, role: str) -> None:
        if self.stopping:
            return
        spec = next(s for s in self.specs if s.role == role)
        try:
            ref = spec.start(self.actor_ref, {r: v for r, v in self.refs.items() if r != role})
            self._wait_started(role, ref)
        except Exception as exc:
            # Counted like a crash: a child that cannot start keeps failing until the limit stops us.
            self._child_failed(m.ChildFailed(role, self.refs[role].actor_urn, f"restart failed: {exc}"))
            return
        self.refs[role] = ref
        for other, other_ref in self.refs.items():
            if other != role:
                tell(other_ref, m.Rewire(role, ref))
                tell(ref, m.Rewire(other, other_ref))
        logger.info("actor {} restarted", role)

    def _fatal(self, reason: str) -> None:
        if self.stopping:
            return
        logger.critical("giving up: {}", reason)
        self.stopping = True
        self.on_fatal(reason)

    def _snapshot(self) -> list[dict[str, Any]]:
        rows = []
        for spec in self.specs:
            ref = self.refs.get(spec.role)
            rows.append({
                "name": spec.role,
                "alive": bool(ref is not None and ref.is_alive()),
                "restarts": self.policy.restarts.get(spec.role, 0),
                "mailbox": mailbox_depth(ref) if ref is not None else 0,
            })
        return rows
