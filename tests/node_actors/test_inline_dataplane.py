"""Data-path hand-offs run inline (actors/base.py ``run_or_tell``): a reader thread (socket, TUN) or another actor
runs an idle hosted session's handler itself instead of queueing a message for the pool. Ownership stays the
pool's rule: whoever runs the actor holds its mailbox, so one thread at a time touches the session (its send
counters and replay windows), messages keep their order, and what arrives meanwhile waits for the pool."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from axiomnet.errors import ReplayedPacket
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.base import INLINE_BATCH_MAX, INLINE_DEPTH, ActorPool, HostedActor, run_or_tell
from tests.node_actors.fakes import GetOther, GetSent, wait_for
from tests.node_actors.test_session_actor import ENDPOINT, established, ipv6_packet, routed  # noqa: F401  (a fixture)


@dataclass(frozen=True)
class Note:
    tag: Any
    then: tuple[Any, ...] = ()  # (ref, Note) pairs to run_or_tell from the handler, in order


@dataclass(frozen=True)
class Hold:
    release: threading.Event


@dataclass(frozen=True)
class UrgentNote(m.Urgent):
    tag: Any


class Recorder(HostedActor):
    """Records (tag, thread name) per message; Hold blocks its worker until released (bounded)."""

    role = "recorder"

    def __init__(self, host: ActorPool | None = None, supervisor: Any = None) -> None:
        super().__init__(supervisor, {}, host=host)
        self.seen: list[tuple[Any, str]] = []

    def handle(self, message: Any) -> Any:
        name = threading.current_thread().name
        if isinstance(message, Hold):
            self.seen.append(("hold", name))
            assert message.release.wait(10)
        elif isinstance(message, Note):
            if message.tag == "boom":
                raise RuntimeError("a bug in a data-path handler")
            self.seen.append((message.tag, name))
            for ref, note in message.then:
                run_or_tell(ref, note, 1)
        elif isinstance(message, UrgentNote):
            self.seen.append((message.tag, name))
        elif message == "seen":
            return list(self.seen)
        else:
            return super().handle(message)
        return None


def started() -> Any:
    ref = Recorder.start()
    assert ref.ask("seen", timeout=5) == []  # on_start done and idle
    return ref


def seen(ref: Any) -> list[tuple[Any, str]]:
    return ref.ask("seen", timeout=5)


def test_an_idle_hosted_actor_handles_the_message_on_the_callers_thread_before_the_call_returns():
    ref = started()
    try:
        assert run_or_tell(ref, Note(1), 1) is True
        me = threading.current_thread().name
        assert ref._actor_weakref().seen == [(1, me)]  # already handled: no wait, no other thread
    finally:
        ref.stop()


def test_a_batch_larger_than_inline_batch_max_is_told_for_the_pool_even_to_an_idle_actor():
    ref = started()
    try:
        me = threading.current_thread().name
        assert run_or_tell(ref, Note("bulk"), INLINE_BATCH_MAX + 1) is True  # bulk: the pipeline keeps its stages
        assert run_or_tell(ref, Note("small"), INLINE_BATCH_MAX) is True
        assert wait_for(lambda: len(seen(ref)) == 2)
        assert [tag for tag, _ in seen(ref)] == ["bulk", "small"]
        assert seen(ref)[0][1] != me
    finally:
        ref.stop()


def test_a_busy_actor_gets_the_message_queued_and_handled_in_order_by_the_pool():
    ref = started()
    release = threading.Event()
    try:
        ref.tell(Hold(release))  # a pool worker runs it and blocks
        assert wait_for(lambda: len(ref._actor_weakref().seen) == 1)  # its worker holds it
        assert run_or_tell(ref, Note(1), 1) is True  # queued, not run here
        assert run_or_tell(ref, Note(2), 1) is True
        me = threading.current_thread().name
        release.set()
        assert wait_for(lambda: len(seen(ref)) == 3)
        tags = [tag for tag, _ in seen(ref)]
        assert tags == ["hold", 1, 2]
        assert all(name != me for _, name in seen(ref))
    finally:
        release.set()
        ref.stop()


def test_what_is_told_during_an_inline_run_waits_for_it_then_runs_on_the_pool_in_order():
    ref = started()
    try:
        me = threading.current_thread().name
        # The handler tells its own actor two more notes: it is held by this thread, so they queue behind it.
        assert run_or_tell(ref, Note("first", then=((ref, Note("second")), (ref, Note("third")))), 1)
        assert wait_for(lambda: len(seen(ref)) == 3)
        assert [tag for tag, _ in seen(ref)] == ["first", "second", "third"]
        assert seen(ref)[0][1] == me and seen(ref)[1][1] != me and seen(ref)[2][1] != me
    finally:
        ref.stop()


def test_inline_runs_nest_at_most_inline_depth_deep_on_one_thread():
    refs = [started() for _ in range(INLINE_DEPTH + 1)]
    try:
        note = Note(len(refs) - 1)
        for i in range(len(refs) - 2, -1, -1):
            note = Note(i, then=((refs[i + 1], note),))
        me = threading.current_thread().name
        assert run_or_tell(refs[0], note, 1)
        assert wait_for(lambda: all(seen(r) for r in refs))
        names = [seen(r)[0][1] for r in refs]
        assert names[:INLINE_DEPTH] == [me] * INLINE_DEPTH  # reader -> session -> next hop's session
        assert names[INLINE_DEPTH] != me  # one deeper is told: the pool runs it
    finally:
        for r in refs:
            r.stop()


def test_urgent_messages_and_stopped_actors_are_never_run_inline():
    ref = started()
    me = threading.current_thread().name
    assert run_or_tell(ref, UrgentNote("u"), 1)
    assert wait_for(lambda: len(seen(ref)) == 1)
    assert seen(ref)[0][1] != me  # control traffic keeps its lane and its order
    ref.stop()
    actor = ref._actor_weakref()
    assert run_or_tell(ref, Note("late"), 1) is False
    assert actor is None or [t for t, _ in actor.seen] == ["u"]


def test_a_crash_in_a_handler_run_inline_is_reported_as_from_the_pool_and_the_reader_goes_on(recorder):
    supervisor = recorder()
    ref = Recorder.start(supervisor=supervisor)
    assert ref.ask("seen", timeout=5) == []
    assert run_or_tell(ref, Note("boom"), 1) is True  # no exception reaches the reader's loop
    assert wait_for(lambda: any(isinstance(x, m.ChildFailed) and x.urn == ref.actor_urn
                                for x in supervisor.ask(GetOther(), timeout=5)))
    assert not ref.is_alive()
    assert run_or_tell(ref, Note("after"), 1) is False  # dead: nothing runs it again


def test_sessions_opened_and_sealed_on_many_reader_threads_refuse_replays_and_count_every_packet_once(
        established, monkeypatch):  # noqa: F811  (the fixture imported above)
    """Twenty threads act as socket readers and TUN readers at once: each hands the same SessionActor DATA
    datagrams (every one twice, from two threads: a replay) and routed packets to seal through run_or_tell, so
    some run inline on the caller and some on the pool, racing each other. Every original is routed exactly
    once, every copy refused as replayed, and every sealed datagram has a counter of its own."""
    monkeypatch.setattr("axiomnet.actors.base.MAX_QUEUED_BATCHES", 10**6)  # nothing shed: counting must be exact
    actor, peer, sock, router, me = established
    from axiomnet.session import Session
    opened_on: set[str] = set()
    receive_batch = Session.receive_batch

    def recording(self, datagrams, now):
        opened_on.add(threading.current_thread().name)
        return receive_batch(self, datagrams, now)

    monkeypatch.setattr(Session, "receive_batch", recording)
    threads_n, per_thread = 20, 25
    now = time.monotonic()
    incoming = [peer.session.send(PacketType.DATA, ipv6_packet(me.address.packed, i, peer.src), now)[0]
                for i in range(threads_n * per_thread)]
    outgoing = [ipv6_packet(peer.identity.address.packed, i) for i in range(threads_n * per_thread)]
    sent_before = len(sock.ask(GetSent()))
    rx_before = actor.ask(m.Snapshot(), timeout=5)["rx_packets"]  # the handshake's key confirmation
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def reader(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                n = t * per_thread + i
                twin = (t + 1) % threads_n * per_thread + i  # another thread's datagram: replayed from here
                run_or_tell(actor, m.Datagrams([(incoming[n], ENDPOINT)]), 1)
                run_or_tell(actor, m.RoutedToLink([outgoing[n]]), 1)
                run_or_tell(actor, m.Datagrams([(incoming[twin], ENDPOINT)]), 1)
        except BaseException as exc:  # noqa: BLE001 - any failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(t,), name=f"reader-{t}") for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    assert not errors
    total = threads_n * per_thread
    assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["counters"].get("rx_" + ReplayedPacket.metric, 0) == total)
    assert wait_for(lambda: len(sock.ask(GetSent())) >= sent_before + total)
    got = routed(router)
    assert sorted(got) == sorted(ipv6_packet(me.address.packed, i, peer.src) for i in range(total))  # each once
    snap = actor.ask(m.Snapshot(), timeout=5)
    assert snap["rx_packets"] == rx_before + total  # the core counted each original once, no copy
    data = [d for d, _ in sock.ask(GetSent())[sent_before:] if decode_header(d).ptype is PacketType.DATA]
    counters = [decode_header(d).counter for d in data]
    assert len(data) == total and len(set(counters)) == total, "a transport counter was reused"
    assert any(name.startswith("reader-") for name in opened_on)  # opened on the readers' threads too
    opened = {peer.session.receive(decode_header(d), d, time.monotonic()).payload for d in data}
    assert opened == set(outgoing)

