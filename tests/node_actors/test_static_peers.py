"""PeerManagerActor at runtime: AddPeer dials a new static peer, RemovePeer closes its session, both listed."""

from __future__ import annotations

from axiomnet.ops.config import PeerSpec
from axiomnet.identity import Identity
from axiomnet.actors import messages as m
from axiomnet.actors.peers import PeerManagerActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for

KEY = bytes(range(32))


def start_manager(recorder, static=(), max_sessions: int = 1024):
    me = Identity.generate()
    sock, router = recorder(), recorder()
    mgr = PeerManagerActor.start(None, {"socket": sock, "router": router}, static_private=me.private_key,
                                 static_public=me.public_key, self_address=me.address.packed,
                                 static_peers=tuple(static), max_sessions=max_sessions)
    return mgr, sock, router


def test_add_peer_dials_it_and_lists_it(recorder):
    mgr, sock, _ = start_manager(recorder, static=[PeerSpec("192.0.2.1", 7443)])
    reply = mgr.ask(m.AddPeer("192.0.2.9", 7443, KEY), timeout=5)
    assert reply == {"added": True, "peers": ["192.0.2.1:7443", f"192.0.2.9:7443#{KEY.hex()}"]}
    # A handshake initiation goes out to the new peer: it is dialled at once.
    assert wait_for(lambda: any(addr == ("192.0.2.9", 7443) for _, addr in sock.ask(GetSent())))
    assert len(mgr.ask(m.ListSessions(), timeout=5)) == 2
    again = mgr.ask(m.AddPeer("192.0.2.9", 7443, KEY), timeout=5)
    assert again["added"] is False and len(mgr.ask(m.ListSessions(), timeout=5)) == 2
    assert mgr.ask(m.ListStaticPeers(), timeout=5)["peers"] == reply["peers"]


def test_remove_peer_closes_its_session_and_stops_dialling(recorder):
    mgr, sock, _ = start_manager(recorder, static=[PeerSpec("192.0.2.1", 7443), PeerSpec("192.0.2.2", 7443)])
    refs = mgr.ask(m.ListSessions(), timeout=5)
    reply = mgr.ask(m.RemovePeer("192.0.2.2", 7443), timeout=5)
    assert reply == {"removed": 1, "sessions_closed": 1, "peers": ["192.0.2.1:7443"]}
    assert len(mgr.ask(m.ListSessions(), timeout=5)) == 1
    assert wait_for(lambda: sum(not r.is_alive() for r in refs) == 1)
    # The socket is told to forget the closed session's receiver indices.
    assert wait_for(lambda: any(isinstance(o, m.ReleaseOwner) for o in sock.ask(GetOther())))
    missing = mgr.ask(m.RemovePeer("192.0.2.77", 7443), timeout=5)
    assert missing["removed"] == 0 and missing["peers"] == ["192.0.2.1:7443"]


def test_add_peer_past_the_session_limit_is_refused(recorder):
    mgr, _, _ = start_manager(recorder, static=[PeerSpec("192.0.2.1", 7443)], max_sessions=1)
    reply = mgr.ask(m.AddPeer("192.0.2.9", 7443, None), timeout=5)
    assert "MAX_SESSIONS" in reply["error"]
    assert mgr.ask(m.ListStaticPeers(), timeout=5)["peers"] == ["192.0.2.1:7443"]
