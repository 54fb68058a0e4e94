"""A hub's per-handshake cost does not grow with the sessions it holds (the 10,000-session bench, tools/bench.py
--sessions, measures the figure; these tests pin the cause that made it grow)."""

from __future__ import annotations

import threading
import time
from typing import Any

from axiomnet.constants import MAX_QUEUED_BATCHES
from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.session import Session
from axiomnet.actors import messages as m
from tests.node_actors.fakes import GetSent, RecordingActor, wait_for
from tests.node_actors.test_peer_manager import dial, replies_to, start_manager


class CountingDict(dict):
    """The peer manager's session table, counting full scans (items()) made of it."""

    scans = 0

    def items(self) -> Any:
        CountingDict.scans += 1
        return super().items()


def test_a_completed_inbound_handshake_does_not_scan_every_session(recorder):
    mgr = start_manager(recorder)
    for n in (1, 2, 3):
        dial(mgr, (f"192.0.2.{n}", 7443))
    assert wait_for(lambda: mgr.ref.ask(m.Snapshot(), timeout=5)["sessions"] == 3)
    proxy = mgr.ref.proxy()
    proxy.specs = CountingDict(proxy.specs.get(timeout=5))  # set in the actor's own thread, between messages
    CountingDict.scans = 0
    dial(mgr, ("192.0.2.4", 7443))
    assert wait_for(lambda: mgr.ref.ask(m.Snapshot(), timeout=5)["sessions"] == 4)
    assert CountingDict.scans == 0  # only the sessions that dial can be waiting at that endpoint


def test_a_dialled_session_still_gets_the_keys_of_the_handshake_its_peer_completed(recorder):
    """The narrowed search still finds what the full one found: a static peer without a pinned key that
    dials us first (its handshake completes at our front door) hands its keys to our dialling session."""
    from axiomnet.ops.config import PeerSpec

    mgr = start_manager(recorder, static_peers=(PeerSpec("192.0.2.9", 7443, None),))
    before = mgr.ref.ask(m.ListSessions(), timeout=5)
    assert len(before) == 1
    # Its first KEY_PROBE out before we dial: dial() reads only what the manager sends after it starts.
    assert wait_for(lambda: len(mgr.sock.ask(GetSent(), timeout=5)) >= 1)
    dial(mgr, ("192.0.2.9", 7443))
    assert wait_for(lambda: before[0].ask(m.Snapshot(), timeout=5)["state"] == "established")
    assert mgr.ref.ask(m.ListSessions(), timeout=5) == before  # no second session for that peer


def test_handshake_answers_are_not_shed_behind_a_burst_of_session_sends(recorder):
    """A hub's sessions each send an announcement at the same heartbeat: the socket's data lane is full for a
    moment. The front door's answer to a handshake arriving then waits in that lane (bounded deeper) instead of
    being dropped: a dropped answer is a handshake lost and retried (the 10,000-session bench stalled so)."""
    recovered = threading.Event()
    busy = RecordingActor.start(delay=30.0, recovered=recovered)  # holds each message until ``recovered``
    try:
        mgr = start_manager(recorder, sock=busy)
        for _ in range(MAX_QUEUED_BATCHES + 1):  # one in its handler, a full lane behind it
            busy.tell(m.SendDatagrams([(b"announcement", ("192.0.2.200", 7443))]))
        addr = ("192.0.2.50", 7443)
        peer = Identity.generate()
        # Not knowing the hub's key, it asks for it first (KEY_PROBE): the answer, like a cookie reply or a resent
        # response, names no new index of ours, so it goes out as a plain SendDatagrams.
        session = Session(peer.private_key, peer.public_key, local_payload=HandshakePayload())
        mgr.ref.tell(m.Datagrams([(session.initiate(time.monotonic())[0], addr)]))
        assert wait_for(lambda: mgr.snapshot()["responder"].get("key_replies") == 1)
        assert mgr.snapshot().get("tx_dropped_backpressure", 0) == 0
        recovered.set()
        replies_to(mgr, addr, 0, timeout=20)  # the answer went out once the socket caught up
    finally:
        recovered.set()
        busy.stop(block=False)
