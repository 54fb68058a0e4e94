"""What every AxiomNet actor shares: two-lane mailboxes, supervision hooks, bounded hand-offs, threads, one timer.

pykka mailboxes are unbounded queues; on the data path a peer on the network controls the rate, so every
hand-off goes through :func:`bounded_tell`, which drops (and counts) a batch when the receiver's data lane
is already MAX_QUEUED_BATCHES deep, like a NIC ring that is full. Each mailbox has two lanes
(:class:`TwoLaneInbox`): messages marked :class:`~axiomnet.actors.messages.Urgent` (ticks, announcements,
session changes, snapshots) are served first and bounded on their own (MAX_QUEUED_URGENT), so control
traffic is never stuck or shed behind data.

Time reaches an actor one way: a :class:`DeadlineTimer` tells it one message when the earliest deadline asked for
comes. A periodic clock re-arms it from the handler (:class:`Periodic`); messages due later (a restart after a
backoff) wait in a :class:`Later` whose earliest entry arms the same timer.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from types import TracebackType
from typing import Any, Callable, Mapping

import pykka
from loguru import logger
from pykka.messages import _ActorStop  # pykka's stop request (ActorRef.stop): see TwoLaneInbox

from axiomnet.constants import HOSTED_SLICE, MAX_QUEUED_BATCHES, MAX_QUEUED_URGENT, TIMER_RETRY
from axiomnet.actors import messages as m


class TwoLaneInbox(queue.Queue[Any]):
    """A pykka mailbox with a control lane: envelopes of Urgent messages are served before all others.

    pykka's stop request goes first of all: a node actor is stopped only at shutdown (or by a test), and a stop
    queued behind a full data lane (MAX_QUEUED_BATCHES batches of a flood) waited seconds for data nobody would
    use, so a SIGTERM'd daemon under load overran its shutdown deadline (docs/RELIABILITY.md: shutdown under
    load). What was still queued is answered ActorDeadError, as pykka does for messages told after a stop."""

    def __init__(self) -> None:
        super().__init__()
        # Unbounded, and nobody joins it: one condition serves all three of queue.Queue's (each holds a deque,
        # ~0.8 KiB, and every session actor has a mailbox). A spurious notify wakes the only getter, harmlessly.
        self.not_full = self.all_tasks_done = self.not_empty

    def _init(self, maxsize: int) -> None:
        self.queue: deque[Any] = deque()
        self.urgent: deque[Any] = deque()

    def _qsize(self) -> int:
        return len(self.queue) + len(self.urgent)

    def _put(self, item: Any) -> None:
        message = getattr(item, "message", None)
        if isinstance(message, _ActorStop):
            self.urgent.appendleft(item)
        else:
            (self.urgent if isinstance(message, m.Urgent) else self.queue).append(item)

    def _get(self) -> Any:
        return self.urgent.popleft() if self.urgent else self.queue.popleft()

    def lane_depth(self, urgent: bool) -> int:
        """Messages waiting in one lane (a racy read, as qsize is: good enough for shedding)."""
        return len(self.urgent if urgent else self.queue)


def mailbox_depth(ref: pykka.ActorRef[Any], urgent: bool = False) -> int:
    """Messages waiting in one lane of ``ref``'s mailbox (the data lane by default)."""
    inbox: Any = ref.actor_inbox
    if isinstance(inbox, (TwoLaneInbox, HostedInbox)):
        return inbox.lane_depth(urgent)
    return int(inbox.qsize())


def bounded_tell(ref: pykka.ActorRef[Any] | None, message: Any, limit: int | None = None) -> bool:
    """Tell ``ref`` unless the lane ``message`` goes to already holds ``limit`` messages (default
    MAX_QUEUED_BATCHES for data, MAX_QUEUED_URGENT for the control lane) or it is dead; True if told."""
    if ref is not None:
        urgent = isinstance(message, m.Urgent)
        if limit is None:
            limit = MAX_QUEUED_URGENT if urgent else MAX_QUEUED_BATCHES
        if mailbox_depth(ref, urgent) >= limit:
            return False
    return tell(ref, message)


INLINE_DEPTH = 2  # hosted actors one thread runs inside each other (reader -> session -> next hop's session)
# Batches of at most this many packets are run inline; larger ones are told, so that on two cores the reader reads
# (and the next stage seals) the next batch while a pool worker opens this one: a pipeline for bulk transfers, no
# hand-off for what a round trip waits on (a ping, TCP's ACKs, a handshake's first data). Measured: PERFORMANCE.md.
INLINE_BATCH_MAX = 4
_inline = threading.local()


def run_or_tell(ref: pykka.ActorRef[Any] | None, message: Any, size: int) -> bool:
    """:func:`bounded_tell` for the data path, but when ``message`` carries at most INLINE_BATCH_MAX packets
    (``size``) and ``ref`` is a hosted actor that is idle (nobody runs it, nothing waits in its mailbox), this
    thread runs its handler for ``message`` at once instead of queueing it: no hand-off, no wake-up
    (:meth:`HostedInbox.run_inline`). Ownership is the pool's: the caller holds the
    actor's mailbox as a worker would, so no other thread runs it meanwhile and what others tell it meanwhile
    waits, in order, for the pool. At most INLINE_DEPTH actors are run inside each other on one thread; deeper,
    and for every other ref, it is a bounded tell. True if handled or told."""
    if ref is not None and size <= INLINE_BATCH_MAX and not isinstance(message, m.Urgent) and run_here(ref, message):
        return True
    return bounded_tell(ref, message)


def run_here(ref: pykka.ActorRef[Any], message: Any) -> bool:
    """Run the handler of the hosted actor ``ref`` for ``message`` on this thread, if it is idle (nobody runs it,
    nothing waits in its mailbox) and fewer than INLINE_DEPTH actors are already run inside each other here; True if
    run, False (nothing done) otherwise. :func:`run_or_tell` for small data batches, :func:`run_control_or_tell` for
    a timer's or the router's control messages."""
    inbox = ref.actor_inbox
    if not isinstance(inbox, HostedInbox):
        return False
    depth = getattr(_inline, "depth", 0)
    if depth >= INLINE_DEPTH:
        return False
    _inline.depth = depth + 1
    try:
        return inbox.run_inline(message)
    finally:
        _inline.depth = depth


def run_control_or_tell(ref: pykka.ActorRef[Any] | None, message: Any, limit: int | None = None) -> bool:
    """A control message (a timer's TimerDue, a beat or probe the router hands a link session) for a hosted actor:
    run on this thread if the actor is idle, else told on its control lane (:func:`bounded_tell`, ``limit``).

    The message was going to the front of an empty mailbox, so running it here keeps the order; what it saves is the
    hand-off. A hub forwarding its parent's beat to 99 children told 99 sessions, and each woke a pool worker that
    took the interpreter's lock from the others to seal about 100 bytes: ~100 us of CPU a beat, two thirds of it
    waking (docs/PERFORMANCE.md, idle sessions). True if run or told."""
    if ref is not None and run_here(ref, message):
        return True
    return bounded_tell(ref, message, limit)


def tell(ref: pykka.ActorRef[Any] | None, message: Any) -> bool:
    """Control-path tell that tolerates a collaborator being down (restarting); True if delivered.

    A message lost to a dead actor is recovered by the restart itself: the supervisor rewires the new
    actor and the peer manager replays what it must know (sessions up, indices bound).
    """
    if ref is None:
        return False
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class SupervisedActor(pykka.ThreadingActor):
    """A ThreadingActor that reports its own crash to a supervisor and can be rewired after a restart.

    Subclasses implement ``setup``/``teardown`` instead of ``on_start``/``on_stop`` and handle their own
    messages in ``handle(message)``. ``refs`` maps a role ("socket", "router", ...) to the current ref.
    """

    role = "actor"
    # A daemon thread: an actor still inside a handler when the daemon's bounded shutdown ends (a handler stuck on
    # something) must not hold the process at the interpreter's exit, which joins every other thread without a bound.
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        return TwoLaneInbox()

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, refs: Mapping[str, Any] | None = None,
                 share_refs: bool = False) -> None:
        super().__init__()
        self.supervisor = supervisor
        # Copied, unless ``share_refs``: then the mapping is one its maker never changes (the peer manager hands
        # all its sessions one read-only view); a Rewire replaces it by a copy (copy on write, never in place).
        self.refs: Mapping[str, Any] = refs if share_refs and refs is not None else dict(refs or {})
        self.counters: Counter[str] = Counter()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wakers: list[Callable[[], None]] = []  # called on stop: owned threads that block without a timeout

    # --- lifecycle -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Acquire resources and start owned threads (runs in the actor's thread)."""

    def teardown(self) -> None:
        """Undo what setup did, while owned threads may still run (they are asked to stop right after)."""

    def release(self) -> None:
        """Close what owned threads were using (sockets, devices); runs after they are joined, on stop and crash."""

    def on_start(self) -> None:
        try:
            self.setup()
        except Exception as exc:
            # pykka does not call on_failure when on_start raises: report it ourselves.
            logger.error("{} failed to start: {}; state: {}", self.role, exc, self.state_summary())
            self._report_failure(exc)
            self._stop_threads()
            raise

    def on_stop(self) -> None:
        self._stopping.set()
        try:
            self.teardown()
        finally:
            joined = len(self._threads)
            self._stop_threads()
            self.release()
        # The shutdown order, readable at DEBUG (tests prove from it that no thread outlives its actor).
        logger.debug("{} stopped ({} owned threads joined, {} still running)", self.role, joined, len(self._threads))

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # pykka has logged the traceback; this line says what the actor held when it died.
        logger.error("{} crashed: {!r}; state: {}", self.role, exception_value, self.state_summary())
        self._stopping.set()
        try:
            self.teardown()
        except Exception as exc:  # teardown of a crashed actor must not hide the first failure
            logger.warning("{}: teardown after crash failed: {!r}", self.role, exc)
        self._stop_threads()
        try:
            self.release()
        finally:
            self._report_failure(exception_value)

    def _report_failure(self, exc: BaseException | None) -> None:
        if self.supervisor is not None:
            try:
                self.supervisor.tell(m.ChildFailed(self.role, self.actor_urn, repr(exc)))
            except pykka.ActorDeadError:
                logger.error("{} crashed ({!r}) and the supervisor is gone", self.role, exc)

    def state_summary(self, limit: int = 2000) -> str:
        """One line for a crash report: mailbox depth, owned threads alive, and the actor's own Snapshot
        (or its counters when the snapshot itself fails), cut to ``limit`` characters."""
        try:
            view: Any = self.handle(m.Snapshot())
        except Exception as exc:  # the state that crashed the actor may break its snapshot too
            view = {"counters": dict(self.counters), "snapshot_failed": repr(exc)}
        alive = [t.name for t in self._threads if t.is_alive()]
        text = f"mailbox={mailbox_depth(self.actor_ref)} threads={alive} snapshot={view!r}"
        return text if len(text) <= limit else text[: limit - 3] + "..."

    # --- owned threads ---------------------------------------------------------------------------
    def spawn_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start a daemon thread this actor owns; it must poll ``self._stopping`` at least every 0.5 s, or block on
        something a waker in ``self._wakers`` interrupts (:meth:`wakeup_fd`, :meth:`start_deadline_timer`)."""

        def run() -> None:
            try:
                target()
            except Exception as exc:
                logger.exception("{}: thread {} crashed", self.role, name)
                # A dead reader means a dead actor: let the supervisor restart the whole actor.
                tell(self.actor_ref, m.ThreadCrashed(name, repr(exc)))

        thread = threading.Thread(target=run, name=f"axn-{self.role}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _stop_threads(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        for wake in self._wakers:
            wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is threading.current_thread():
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error("{}: thread {} did not stop within {} s", self.role, thread.name, timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._close_wakeup_fd()

    def start_deadline_timer(self, message: Any) -> DeadlineTimer:
        """An owned thread that tells us ``message`` when the earliest time given to its ``at`` comes (an actor
        whose work has deadlines sleeps until the next one instead of ticking)."""
        timer = DeadlineTimer(self.actor_ref, message, self._stopping)
        self._wakers.append(timer.wake)
        self.spawn_thread(timer.run, "timer")
        return timer

    def start_periodic(self, interval: float, message: Any) -> Periodic:
        """Tell ourselves ``message`` about every ``interval`` seconds until we stop, on a deadline timer: the
        handler of ``message`` calls the returned clock's :meth:`Periodic.next` to arm the following one."""
        return Periodic(self.start_deadline_timer(message), interval)

    def start_wheel(self, message: Any) -> DeadlineWheel:
        """A :class:`DeadlineWheel` whose thread this actor owns: many actors book times on it, each told ``message``."""
        wheel = DeadlineWheel(message, self._stopping)
        self._wakers.append(wheel.wake)
        self.spawn_thread(wheel.run, "wheel")
        return wheel

    def start_pool(self, name: str, workers: int) -> ActorPool:
        """An :class:`ActorPool` whose ``workers`` threads this actor owns: hosted actors it starts run there, and
        the workers stop with it (stop its hosted actors first: after that nothing runs them)."""
        pool = ActorPool(name)
        self._wakers.append(pool.close)  # called by _stop_threads, after teardown
        for i in range(workers):
            self.spawn_thread(pool.run, f"{name}{i}")
        return pool

    def wakeup_fd(self) -> int:
        """A file descriptor that becomes readable when this actor stops: reader threads poll it beside their
        socket or device, so they block without a timeout and still stop at once. One eventfd (one descriptor, where
        a pipe takes two: a daemon started under a tight RLIMIT_NOFILE must still come up), closed on stop."""
        fd: int | None = getattr(self, "_wake_fd", None)
        if fd is None:
            fd = self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

            def wake() -> None:
                try:
                    os.eventfd_write(fd, 1)
                except OSError:
                    pass  # closed: the readers are gone

            self._wakers.append(wake)
        return fd

    def _close_wakeup_fd(self) -> None:
        fd = getattr(self, "_wake_fd", None)
        if fd is not None and not [t for t in self._threads if t.is_alive()]:
            del self._wake_fd
            os.close(fd)

    # --- messages --------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, m.Rewire):
            self.refs = {**self.refs, message.role: message.ref}
            self.rewired(message.role)
            return None
        if isinstance(message, m.InjectFault):
            raise RuntimeError(f"fault injected into {self.role}: {message.reason}")
        if isinstance(message, m.ThreadCrashed):
            raise RuntimeError(f"{self.role}: owned thread {message.name} crashed: {message.error}")
        if isinstance(message, m.GetCounters):
            return dict(self.counters)
        return self.handle(message)

    def rewired(self, role: str) -> None:
        """Hook: a collaborator was restarted and ``self.refs[role]`` now points at the new one."""

    def handle(self, message: Any) -> Any:
        """Handle a message of this actor's own protocol."""
        raise TypeError(f"{self.role} got an unexpected message {type(message).__name__}")


class HostedInbox:
    """A hosted actor's mailbox: :class:`TwoLaneInbox`'s two lanes (Urgent first), but no thread blocks on it.

    The put that finds it idle hands its actor to the :class:`ActorPool`; the worker that runs the actor takes
    messages with :meth:`take` and gives the mailbox back with :meth:`release`, which keeps it scheduled if more
    came meanwhile. So one worker at a time runs an actor, in the order its messages arrived (per lane), as its own
    thread did. Slots and one lock: a hub holds ten thousand of these."""

    __slots__ = ("queue", "urgent", "_lock", "_busy", "_pool", "_actor")

    def __init__(self) -> None:
        # A lane is a deque only while it holds messages (an empty deque is ~0.8 KiB; most sessions are idle).
        self.queue: deque[Any] | None = None
        self.urgent: deque[Any] | None = None
        self._lock = threading.Lock()
        self._busy = True  # until the actor starts, puts only queue (its on_start runs first)
        self._pool: ActorPool | None = None
        self._actor: Any = None

    def bind(self, pool: ActorPool, actor: Any) -> None:
        self._pool, self._actor = pool, actor

    def start(self) -> None:
        """The actor started: run it (its on_start, then whatever was told before)."""
        assert self._pool is not None
        self._pool.schedule(self._actor)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        urgent = isinstance(getattr(item, "message", None), m.Urgent)
        with self._lock:
            if urgent:
                if self.urgent is None:
                    self.urgent = deque()
                self.urgent.append(item)
            else:
                if self.queue is None:
                    self.queue = deque()
                self.queue.append(item)
            if self._busy:
                return
            self._busy = True
        assert self._pool is not None
        self._pool.schedule(self._actor)

    def take(self) -> Any:
        """The next envelope (control lane first), or None; only the worker running the actor calls it (a lane is
        dropped only by release(), under the lock, by that same worker: it cannot vanish under this read)."""
        urgent, data = self.urgent, self.queue
        if urgent:
            return urgent.popleft()
        if data:
            return data.popleft()
        return None

    def release(self) -> bool:
        """The worker is done with the actor for now: True if messages are waiting (it stays scheduled)."""
        with self._lock:
            if self.urgent or self.queue:
                return True
            self.urgent = self.queue = None
            self._busy = False
            return False

    def run_inline(self, message: Any) -> bool:
        """Run the actor's handler for ``message`` on this thread if its mailbox is idle and empty (taken as a
        worker takes it, so no worker runs it meanwhile); then give it back, to the pool if more came meanwhile.
        False, and nothing done, if it is busy, has messages waiting, has not started or has stopped."""
        actor = self._actor
        if actor is None or actor.actor_stopped.is_set():
            return False
        with self._lock:
            if self._busy or self.urgent or self.queue:
                return False
            self._busy = True
        try:
            actor._handle_envelope(_InlineEnvelope(message))
        finally:
            if self.release():
                assert self._pool is not None
                self._pool.schedule(actor)
        return True

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """pykka's stop path drains the mailbox with get() while not empty(); it never blocks here."""
        envelope = self.take()
        if envelope is None:
            raise queue.Empty
        return envelope

    def empty(self) -> bool:
        return not (self.urgent or self.queue)

    def qsize(self) -> int:
        return self.lane_depth(True) + self.lane_depth(False)

    def lane_depth(self, urgent: bool) -> int:
        lane = self.urgent if urgent else self.queue
        return 0 if lane is None else len(lane)


class _InlineEnvelope:
    """What a hosted actor's handler loop reads of a pykka envelope, for a message run inline (never asked)."""

    __slots__ = ("message",)
    reply_to = None

    def __init__(self, message: Any) -> None:
        self.message = message


class Flag:
    """What a hosted actor needs of threading.Event (set / is_set; nobody waits on it), in 48 bytes instead of
    ~1.2 KiB (an Event holds a Condition, a lock and a deque of waiters)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class ActorPool:
    """A few worker threads that run many :class:`HostedActor` mailboxes (the link sessions: an idle one costs a
    mailbox, not an OS thread).

    An actor with messages waits in the ready queue; a worker takes it, handles up to HOSTED_SLICE of its messages
    and puts it back at the tail if more are waiting, so a busy actor cannot starve the others and no actor runs
    on two workers at once. The workers are threads of the actor that owns the pool
    (:meth:`SupervisedActor.start_pool`): they stop with its other threads, after its teardown (which stops the
    hosted actors: their stop messages still need a worker)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.slices = 0  # actor runs so far (a racy read for snapshots)

    def schedule(self, actor: Any) -> None:
        with self._cond:
            if not self._closed:
                self._ready.append(actor)
                self._cond.notify()
                return
        actor._abandon()  # nothing will run it again: its callers get ActorDeadError instead of waiting

    def ready(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        """Stop the workers (each returns once its current actor's slice is done). An actor still alive on a closed
        pool (its owner stopped without stopping it) is abandoned when next told anything: marked dead, what
        waits in its mailbox answered ActorDeadError; no handler of it runs again."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = list(self._ready)
            self._ready.clear()
        for actor in left:
            actor._abandon()

    def run(self) -> None:
        """One worker: run ready actors until :meth:`close`."""
        ready, cond = self._ready, self._cond
        while True:
            with cond:
                while not ready and not self._closed:
                    cond.wait()
                if self._closed:
                    return
                actor = ready.popleft()
            self.slices += 1
            actor._run_slice()
            if actor.actor_inbox.release():
                self.schedule(actor)


_default_pool: ActorPool | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> ActorPool:
    """The pool of hosted actors started without one (tests and tools starting a single session actor): two daemon
    workers for the life of the process. The daemon never uses it: its peer manager owns the sessions' pool."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            pool = ActorPool("default")
            for i in range(2):
                threading.Thread(target=pool.run, name=f"hosted-default-{i}", daemon=True).start()
            _default_pool = pool
        return _default_pool


class HostedActor(SupervisedActor):
    """A SupervisedActor without a thread of its own: an :class:`ActorPool`'s workers run its mailbox.

    Everything else is SupervisedActor's: one message at a time, in order, the two lanes, ``setup``/``teardown``,
    crashes reported to the supervisor with the state summary, tell/ask/stop through its pykka ref. What changes is
    that a handler shares its worker with other actors: it must not block (the rule for every actor here) and
    must not own threads (it has no ``spawn_thread``; time comes from its supervisor's timer)."""

    actor_inbox: HostedInbox  # pykka declares its queue-based ActorInbox; a hosted actor has this one

    @staticmethod
    def _create_actor_inbox() -> Any:
        return HostedInbox()

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, refs: dict[str, Any] | None = None, *,
                 host: ActorPool | None = None) -> None:
        super().__init__(supervisor, refs, share_refs=True)
        self.actor_inbox.bind(host if host is not None else default_pool(), self)
        self._started = False
        # Nobody waits on these two (no thread of its own): flags instead of Events, ~2.4 KiB less per actor.
        self._stopping = Flag()  # type: ignore[assignment]
        self.actor_stopped = self.actor_ref.actor_stopped = Flag()  # type: ignore[assignment]

    def _start_actor_loop(self) -> None:
        self.actor_inbox.start()

    def spawn_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        raise TypeError(f"{self.role} is hosted on a pool: it owns no threads")

    def _run_slice(self) -> None:
        """Run by a pool worker: on_start the first time, then up to HOSTED_SLICE messages as pykka's own loop
        handles them; once stopped, what is left in the mailbox is answered ActorDeadError (pykka's teardown)."""
        if not self._started:
            self._started = True
            self._actor_loop_setup()
        inbox, stopped = self.actor_inbox, self.actor_stopped
        for _ in range(HOSTED_SLICE):
            if stopped.is_set():
                break
            envelope = inbox.take()
            if envelope is None:
                break
            self._handle_envelope(envelope)
        if stopped.is_set():
            self._actor_loop_teardown()

    def _abandon(self) -> None:
        """Its pool closed: dead from now on, without running on_stop (nothing may run its handlers any more)."""
        if not self.actor_stopped.is_set():
            logger.warning("{}: its pool closed while it was alive; abandoned", self.role)
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
        self._actor_loop_teardown()

    def _handle_envelope(self, envelope: Any) -> None:
        # pykka's ThreadingActor loop body (Actor._actor_loop_running), for one envelope.
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            logger.error("{}: {!r} in a hosted actor: stopping every actor", self.role, sys.exc_info()[1])
            self._stop()
            pykka.ActorRegistry.stop_all(block=False)


class DeadlineTimer:
    """Tells an actor ``message`` once the earliest time asked for with :meth:`at` (monotonic seconds) has come.

    It sleeps without a timeout while nothing is asked for, so an idle actor costs no wake-ups. Its thread is owned
    by the actor (:meth:`SupervisedActor.start_deadline_timer`); :meth:`at` may be called from the actor's thread.
    """

    def __init__(self, ref: pykka.ActorRef[Any], message: Any, stopping: threading.Event) -> None:
        self._ref = ref
        self._message = message
        self._stopping = stopping
        self._cond = threading.Condition()
        self._when: float | None = None

    def at(self, when: float) -> None:
        """Tell the actor at ``when`` (or earlier, if an earlier time was asked for and has not come yet)."""
        with self._cond:
            if self._when is None or when < self._when:
                self._when = when
                self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def start_thread(self, name: str) -> threading.Thread:
        """Run in a daemon thread of its own, for an actor that owns no threads (the supervisor); it ends once the
        ``stopping`` event given at construction is set and :meth:`wake` is called."""
        thread = threading.Thread(target=self.run, name=name, daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        cond, stopping = self._cond, self._stopping
        while True:
            with cond:
                while not stopping.is_set():
                    when = self._when
                    if when is None:
                        cond.wait()
                        continue
                    delay = when - time.monotonic()
                    if delay <= 0:
                        break
                    cond.wait(delay)
                if stopping.is_set():
                    return
                self._when = None
            if not bounded_tell(self._ref, self._message):
                if not self._ref.is_alive():
                    return
                self.at(time.monotonic() + TIMER_RETRY)  # its control lane is full: try again shortly


class DeadlineWheel:
    """One timer for many hosted actors: each books the time it wants its ``message`` at (:meth:`at`, a call, not a
    message), one thread hands each its message when that comes: it runs the actor's handler itself when the actor is
    idle (:func:`run_control_or_tell`: one wake-up for all the sessions due at once, none of the pool's), else tells it. The peer manager keeps one for all its sessions, so
    a session's timer costs a heap entry, not a WakeAt through the peer manager's mailbox (at 10,000 sessions those
    messages kept its control lane full and the front door's handshakes starved behind them).

    A session books only a deadline earlier than the one it has booked or after that one passed; the wheel keeps the
    earliest per actor and drops superseded entries when it pops them. Its thread is owned by the actor that made it
    (:meth:`SupervisedActor.start_wheel`)."""

    def __init__(self, message: Any, stopping: threading.Event) -> None:
        self._message = message
        self._stopping = stopping
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._booked: dict[str, float] = {}  # actor urn -> the earliest time it has booked
        self._order = itertools.count()
        self.told = 0  # messages told so far (a racy read for snapshots and tests)

    def at(self, ref: pykka.ActorRef[Any], when: float) -> None:
        urn = ref.actor_urn
        with self._cond:
            if when >= self._booked.get(urn, float("inf")):
                return
            self._booked[urn] = when
            heapq.heappush(self._heap, (when, next(self._order), ref))
            if self._heap[0][0] == when:
                self._cond.notify()

    def __len__(self) -> int:
        return len(self._booked)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def run(self) -> None:
        cond, heap, booked = self._cond, self._heap, self._booked
        while True:
            due: list[Any] = []
            with cond:
                while not self._stopping.is_set():
                    if not heap:
                        cond.wait()
                        continue
                    delay = heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    cond.wait(delay)
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    when, _, ref = heapq.heappop(heap)
                    if booked.get(ref.actor_urn) == when:  # else superseded by an earlier booking, told already
                        del booked[ref.actor_urn]
                        due.append(ref)
            for ref in due:
                # Run here when the session is idle (one wake-up for every session due at once, not one each);
                # told otherwise, and a dead or swamped session loses only a tick.
                run_control_or_tell(ref, self._message, limit=64)
            self.told += len(due)


class Periodic:
    """A clock on a :class:`DeadlineTimer`: due every ``interval`` seconds from its start, re-armed by the actor's
    handler (:meth:`next`), so a busy actor gets one late beat, never a queue of them."""

    def __init__(self, timer: DeadlineTimer, interval: float, now: float | None = None) -> None:
        self.timer = timer
        self.interval = interval
        self._due = (time.monotonic() if now is None else now) + interval
        timer.at(self._due)

    def next(self, now: float | None = None) -> float:
        """Arm the next beat: one interval after the last one was due, or after ``now`` when that has passed."""
        now = time.monotonic() if now is None else now
        due = self._due + self.interval
        self._due = due if due > now else now + self.interval
        self.timer.at(self._due)
        return self._due


class Later:
    """Messages an actor hands to itself at a later time, kept in order; the earliest arms the actor's
    :class:`DeadlineTimer` (whose message makes the actor call :meth:`due` and handle what it returns)."""

    def __init__(self, timer: DeadlineTimer) -> None:
        self.timer = timer
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()  # equal times keep their order; messages are never compared

    def after(self, delay: float, message: Any, now: float | None = None) -> float:
        when = (time.monotonic() if now is None else now) + delay
        heapq.heappush(self._heap, (when, next(self._order), message))
        self.timer.at(when)
        return when

    def due(self, now: float | None = None) -> list[Any]:
        """The messages whose time has come, oldest first; the timer is re-armed for the next one."""
        now = time.monotonic() if now is None else now
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        if heap:
            self.timer.at(heap[0][0])
        return out

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)


# --- last-resort crash reporting ---------------------------------------------------------------------
def install_crash_hooks() -> None:
    """Log, never lose, an exception nothing else caught: in any thread (threading.excepthook), in the main
    thread (sys.excepthook) and in finalizers (sys.unraisablehook). Actors and their owned threads report
    to the supervisor themselves (on_failure, ThreadCrashed); these hooks cover every other thread."""

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)).critical(
            "uncaught exception in thread {}: {!r}", name, args.exc_value)

    def main_hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        logger.opt(exception=(exc_type, exc, tb)).critical("uncaught exception in the main thread: {!r}", exc)

    def unraisable_hook(args: Any) -> None:
        logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)).error(
            "exception ignored in {!r}: {!r}", args.object, args.exc_value)

    threading.excepthook = thread_hook
    sys.excepthook = main_hook
    sys.unraisablehook = unraisable_hook
