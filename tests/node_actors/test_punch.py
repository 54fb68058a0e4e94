"""NAT traversal in the actors (docs/PROTOCOL.md §8.2): a punched session probes its candidates with its handshake
only and settles on the one that authenticated; it keeps the NAT mapping open with keepalives; the peer manager
turns an end-to-end exchange into one bounded, pinned attempt, and stops it when it runs out."""

from __future__ import annotations

import time

from axiomnet import punch
from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.peers import PeerManagerActor
from axiomnet.actors.session import SessionActor
from tests.node_actors.fakes import GetOther, GetSent, wait_for
from tests.node_actors.test_peer_manager import start_manager
from tests.node_actors.test_session_actor import Peer, answer_dial

CANDIDATES = (("192.0.2.31", 7443), ("198.51.100.31", 40001))


def punched(recorder, peer: Peer, keepalive: float | None = None):
    me = Identity.generate()
    sock = recorder()
    actor = SessionActor.start(None, {"socket": sock}, static_private=me.private_key, static_public=me.public_key,
                               self_address=me.address.packed, endpoint=CANDIDATES[0],
                               expected_key=peer.identity.public_key, dial=True, local_payload=HandshakePayload(),
                               candidates=CANDIDATES, keepalive=keepalive)
    return actor, sock


def test_the_handshake_probes_every_candidate_and_the_one_that_answers_is_kept(recorder):
    peer = Peer()
    actor, sock = punched(recorder, peer)
    assert wait_for(lambda: len(sock.ask(GetSent())) >= 2)
    first = sock.ask(GetSent())[:2]
    assert [addr for _, addr in first] == list(CANDIDATES)  # the same INIT to each: nothing but the probe
    assert first[0][0] == first[1][0] and decode_header(first[0][0]).ptype is PacketType.HANDSHAKE_INIT
    # Only the second candidate is the peer (the first names some other host, which drops what it gets).
    result, seen = None, 0
    while result is None:
        assert wait_for(lambda: len(sock.ask(GetSent())) > seen)
        datagram, addr = sock.ask(GetSent())[seen]
        seen += 1
        handshake = decode_header(datagram).ptype in (PacketType.HANDSHAKE_INIT, PacketType.HANDSHAKE_FINAL)
        if addr == CANDIDATES[1] and handshake:
            replies, result = peer.answer(datagram)
            actor.tell(m.Datagrams([(reply, CANDIDATES[1]) for reply in replies]))
    assert wait_for(lambda: actor.ask(m.Snapshot())["state"] == "established")
    assert actor.ask(m.Snapshot())["endpoint"] == "198.51.100.31:40001"
    seen = len(sock.ask(GetSent()))
    actor.tell(m.Probe())
    assert wait_for(lambda: len(sock.ask(GetSent())) > seen)
    assert {addr for _, addr in sock.ask(GetSent())[seen:]} == {CANDIDATES[1]}  # from now on, only there


def test_a_punched_session_sends_keepalives_when_idle(recorder):
    peer = Peer()
    actor, sock = punched(recorder, peer, keepalive=0.3)
    answer_dial(actor, sock, peer, source=CANDIDATES[0])

    def kept_alive() -> bool:
        actor.tell(m.TimerDue())  # what the peer manager does at the deadline the session asks for (WakeAt)
        heard = peer.session.send(PacketType.KEEPALIVE, b"", time.monotonic())  # the peer is alive, but sends
        actor.tell(m.Datagrams([(d, CANDIDATES[0]) for d in heard]))  # nothing that asks us to answer
        return actor.ask(m.Snapshot())["counters"].get("tx_keepalives", 0) >= 2

    assert wait_for(kept_alive, timeout=10.0)
    keepalives = [d for d, _ in sock.ask(GetSent()) if decode_header(d).ptype is PacketType.KEEPALIVE]
    assert keepalives and peer.session.receive(decode_header(keepalives[-1]), keepalives[-1],
                                               time.monotonic()).ptype is PacketType.KEEPALIVE


def test_an_exchange_starts_one_pinned_attempt_and_a_repeat_starts_none(recorder):
    mgr = start_manager(recorder)
    other = Identity.generate()
    mgr.ref.tell(m.PeerCandidates(other.public_key, CANDIDATES))
    assert wait_for(lambda: mgr.snapshot()["found"].get(other.public_key.hex()) == "punched")
    assert wait_for(lambda: {a for _, a in mgr.sock.ask(GetSent())} >= set(CANDIDATES))
    mgr.ref.tell(m.PeerCandidates(other.public_key, (("203.0.113.77", 9),)))  # a second list: not dialled
    assert wait_for(lambda: mgr.snapshot().get("punch_rate_limited") == 1)
    assert mgr.sessions() == 1
    assert ("203.0.113.77", 9) not in {a for _, a in mgr.sock.ask(GetSent())}
    state = mgr.snapshot()["punch"][other.public_key.hex()]
    assert state["state"] == "probing" and state["candidates"] == ["192.0.2.31:7443", "198.51.100.31:40001"]


def test_a_key_not_allowed_is_never_dialled(recorder):
    allowed = Identity.generate()
    mgr = start_manager(recorder, allowed_keys=frozenset({allowed.public_key}))
    mgr.ref.tell(m.PeerCandidates(Identity.generate().public_key, CANDIDATES))
    assert wait_for(lambda: mgr.snapshot().get("punch_not_allowed") == 1)
    assert mgr.sessions() == 0 and mgr.sock.ask(GetSent()) == []


def test_an_attempt_that_runs_out_stops_its_session_and_says_why(recorder, monkeypatch):
    monkeypatch.setattr(punch, "PUNCH_ATTEMPT_TIME", 0.5)
    mgr = start_manager(recorder)
    other = Identity.generate()
    mgr.ref.tell(m.PeerCandidates(other.public_key, CANDIDATES))
    assert wait_for(lambda: mgr.sessions() == 1)
    assert wait_for(lambda: mgr.sessions() == 0, timeout=10.0)
    state = mgr.snapshot()["punch"][other.public_key.hex()]
    assert state["state"] == "relayed" and "no candidate answered" in state["reason"]
    assert mgr.snapshot()["punch_failed"] == 1  # its session actor is gone: nothing more goes to the candidates


def test_a_silent_punched_session_goes_down_so_traffic_falls_back(recorder):
    peer = Peer()
    me = Identity.generate()
    sock, peers, router = recorder(), recorder(), recorder()
    actor = SessionActor.start(None, {"socket": sock, "peers": peers, "router": router},
                               static_private=me.private_key, static_public=me.public_key,
                               self_address=me.address.packed, endpoint=CANDIDATES[0],
                               expected_key=peer.identity.public_key, dial=True, local_payload=HandshakePayload(),
                               candidates=CANDIDATES[:1], keepalive=0.3, silent_after=0.75)
    answer_dial(actor, sock, peer, source=CANDIDATES[0])

    def down() -> bool:
        actor.tell(m.TimerDue())
        return any(isinstance(o, m.SessionDown) for o in peers.ask(GetOther()))

    assert wait_for(down, timeout=10.0)  # the peer never answers the keepalives: 0.75 s of silence
    [gone] = [o for o in router.ask(GetOther()) if isinstance(o, m.SessionDown)]
    assert gone.reason == "punched link silent" and gone.peer_key == peer.identity.public_key


def test_a_failed_attempt_is_retried_by_asking_the_peer_for_a_new_exchange(recorder, monkeypatch):
    monkeypatch.setattr(punch, "PUNCH_ATTEMPT_TIME", 0.3)
    monkeypatch.setattr(punch, "PUNCH_RETRY_INTERVAL", 0.8)
    me, other = Identity.generate(), Identity.generate()
    sock, router, e2e = recorder(), recorder(), recorder()
    mgr = PeerManagerActor.start(None, {"socket": sock, "router": router, "e2e": e2e}, static_private=me.private_key,
                                 static_public=me.public_key, self_address=me.address.packed, static_peers=())
    mgr.tell(m.PeerCandidates(other.public_key, CANDIDATES))
    assert wait_for(lambda: m.ExchangeAgain(other.address.packed) in e2e.ask(GetOther()), timeout=10.0)
    assert mgr.ask(m.Snapshot())["punch_retries"] == 1
    assert [o for o in e2e.ask(GetOther()) if isinstance(o, m.ExchangeAgain)] == [m.ExchangeAgain(other.address.packed)]
