"""PeerManagerActor: inbound handshakes create one session actor per peer, bounded; expired ones leave."""

from __future__ import annotations

import time

from axiomnet.constants import SESSION_EXPIRY
from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.session import Session
from axiomnet.wire import decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.peers import PeerManagerActor
from tests.node_actors.fakes import GetSent, wait_for


def start_manager(recorder, max_sessions: int = 1024):
    me = Identity.generate()
    sock, router = recorder(), recorder()
    mgr = PeerManagerActor.start(None, {"socket": sock, "router": router}, static_private=me.private_key,
                                 static_public=me.public_key, self_address=me.address.packed, static_peers=(),
                                 max_sessions=max_sessions)
    return mgr, sock


def dial(mgr, sock, n: int) -> Session:
    """A remote initiator at 192.0.2.n completes a handshake with the manager's front door."""
    peer = Identity.generate()
    indices = iter(range(n * 1000 + 1, n * 1000 + 999))
    session = Session(peer.private_key, peer.public_key, allocate_index=lambda: next(indices),
                      release_index=lambda i: None, local_payload=HandshakePayload(), peer_name=f"remote{n}")
    addr = (f"192.0.2.{n}", 7443)
    before = len(sock.ask(GetSent()))
    (init,) = session.initiate(time.monotonic())
    mgr.tell(m.Datagrams([(init, addr)]))
    assert wait_for(lambda: any(a == addr for _, a in sock.ask(GetSent())[before:]))
    resp = next(d for d, a in sock.ask(GetSent())[before:] if a == addr)
    got = session.receive(decode_header(resp), resp, time.monotonic())
    (final,) = got.replies
    mgr.tell(m.Datagrams([(final, addr)]))
    return session


def sessions(mgr) -> int:
    return mgr.ask(m.Snapshot(), timeout=5)["sessions"]


def test_each_inbound_peer_gets_one_session_actor(recorder):
    mgr, sock = start_manager(recorder)
    for n in (1, 2):
        dial(mgr, sock, n)
    assert wait_for(lambda: sessions(mgr) == 2)
    refs = mgr.ask(m.ListSessions(), timeout=5)
    assert wait_for(lambda: all(r.ask(m.Snapshot(), timeout=5)["state"] == "established" for r in refs))


def test_sessions_past_the_limit_are_refused(recorder):
    mgr, sock = start_manager(recorder, max_sessions=2)
    for n in (1, 2, 3):
        dial(mgr, sock, n)
    assert wait_for(lambda: mgr.ask(m.Snapshot(), timeout=5).get("refused_session_limit") == 1)
    assert sessions(mgr) == 2


def test_expired_inbound_sessions_leave_the_registry(recorder, monkeypatch):
    mgr, sock = start_manager(recorder)
    for n in (1, 2, 3):
        dial(mgr, sock, n)
    assert wait_for(lambda: sessions(mgr) == 3)
    refs = mgr.ask(m.ListSessions(), timeout=5)
    assert wait_for(lambda: all(r.ask(m.Snapshot(), timeout=5)["state"] == "established" for r in refs))
    # The peers vanish; let the session actors' clock run past SESSION_EXPIRY (the ticker keeps ticking).
    real = time.monotonic
    monkeypatch.setattr("axiomnet.actors.session.time.monotonic", lambda: real() + SESSION_EXPIRY * 2)
    assert wait_for(lambda: sessions(mgr) == 0, timeout=15), _debug_remaining(mgr)


def _debug_remaining(mgr):
    return repr([r.ask(m.Snapshot(), timeout=5) for r in mgr.ask(m.ListSessions(), timeout=5)])
