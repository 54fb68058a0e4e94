"""PeerManagerActor: inbound handshakes create one session actor per admitted peer; the front door and the
registry survive slow, dead and restarting collaborators; admission keeps one host from filling the table."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from axiomnet.ops.config import PeerSpec
from axiomnet.constants import REFUSALS_BEFORE_LOAD, SESSION_EXPIRY
from axiomnet.control import HandshakePayload
from axiomnet.identity import Identity
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header
from axiomnet.actors import messages as m
from axiomnet.actors.peers import PeerManagerActor
from tests.node_actors.fakes import GetOther, GetSent, RecordingActor, wait_for


@dataclass
class Manager:
    ref: Any
    sock: Any
    router: Any
    identity: Identity

    def snapshot(self) -> dict[str, Any]:
        return self.ref.ask(m.Snapshot(), timeout=5)

    def sessions(self) -> int:
        return self.snapshot()["sessions"]


def start_manager(recorder, sock=None, **kwargs: Any) -> Manager:
    me = Identity.generate()
    sock = sock or recorder()
    router = recorder()
    kwargs.setdefault("static_peers", ())
    mgr = PeerManagerActor.start(None, {"socket": sock, "router": router}, static_private=me.private_key,
                                 static_public=me.public_key, self_address=me.address.packed, **kwargs)
    return Manager(mgr, sock, router, me)


def replies_to(mgr: Manager, addr: tuple[str, int], seen: int, timeout: float = 10.0) -> tuple[bytes, int]:
    """The first datagram the manager sent to ``addr`` after the first ``seen`` ones; and the new count."""
    found: list[tuple[int, bytes]] = []

    def arrived() -> bool:
        sent = mgr.sock.ask(GetSent())
        found[:] = [(i, d) for i, (d, a) in enumerate(sent) if i >= seen and a == addr][:1]
        return bool(found)

    assert wait_for(arrived, timeout), f"no reply to {addr} within {timeout} s"
    index, datagram = found[0]
    return datagram, index + 1


def dial(mgr: Manager, addr: tuple[str, int], peer: Identity | None = None, timeout: float = 10.0) -> Session:
    """A remote initiator at ``addr`` that knows the manager's key runs a handshake with its front door
    (echoing a cookie if it gets one) and sends its HANDSHAKE_FINAL."""
    peer = peer or Identity.generate()
    session = Session(peer.private_key, peer.public_key, local_payload=HandshakePayload(),
                      peer_name=f"remote {addr[0]}", expected_remote_key=mgr.identity.public_key)
    seen = len(mgr.sock.ask(GetSent()))
    out = session.initiate(time.monotonic())
    while True:
        mgr.ref.tell(m.Datagrams([(d, addr) for d in out]))
        reply, seen = replies_to(mgr, addr, seen, timeout)
        if decode_header(reply).ptype is PacketType.HANDSHAKE_INIT:  # the manager's own dial to a static peer there
            out = []
            continue
        got = session.receive(decode_header(reply), reply, time.monotonic())
        out = got.replies
        if decode_header(reply).ptype is PacketType.HANDSHAKE_RESP:
            break
    mgr.ref.tell(m.Datagrams([(d, addr) for d in out]))  # HANDSHAKE_FINAL
    return session


def established_sessions(mgr: Manager) -> int:
    refs = mgr.ref.ask(m.ListSessions(), timeout=5)
    return sum(r.ask(m.Snapshot(), timeout=5)["state"] == "established" for r in refs)


# --- the registry ---------------------------------------------------------------------------------------
def test_each_inbound_peer_gets_one_session_actor(recorder):
    mgr = start_manager(recorder)
    for n in (1, 2):
        dial(mgr, (f"192.0.2.{n}", 7443))
    assert wait_for(lambda: mgr.sessions() == 2)
    assert wait_for(lambda: established_sessions(mgr) == 2)


def test_sessions_past_the_limit_are_refused(recorder):
    mgr = start_manager(recorder, max_sessions=2)
    for n in (1, 2, 3):
        dial(mgr, (f"192.0.2.{n}", 7443))
    assert wait_for(lambda: mgr.snapshot().get("refused_session_limit") == 1)
    assert mgr.sessions() == 2


@pytest.mark.slow
def test_expired_inbound_sessions_leave_the_registry(recorder, monkeypatch):
    mgr = start_manager(recorder)
    for n in (1, 2, 3):
        dial(mgr, (f"192.0.2.{n}", 7443))
    assert wait_for(lambda: mgr.sessions() == 3)
    assert wait_for(lambda: established_sessions(mgr) == 3)
    # The peers vanish; let the session actors' clock run past SESSION_EXPIRY (the ticker keeps ticking).
    real = time.monotonic
    monkeypatch.setattr("axiomnet.actors.session.time.monotonic", lambda: real() + SESSION_EXPIRY * 2)
    assert wait_for(lambda: mgr.sessions() == 0, timeout=15), _debug_remaining(mgr)


def _debug_remaining(mgr: Manager) -> str:
    return repr([r.ask(m.Snapshot(), timeout=5) for r in mgr.ref.ask(m.ListSessions(), timeout=5)])


# --- no blocking ask: slow, dead and restarting collaborators --------------------------------------------
@pytest.mark.slow
def test_a_slow_socket_actor_neither_blocks_nor_crashes_the_peer_manager(recorder):
    """The socket actor takes 2.5 s per message (the old ClaimIndex ask gave up after 2 s and crashed the peer
    manager): the manager keeps answering, and the handshake completes once the socket catches up."""
    recovered = threading.Event()
    slow = RecordingActor.start(delay=2.5, recovered=recovered)
    try:
        mgr = start_manager(recorder, sock=slow)
        addr = ("192.0.2.40", 7443)
        peer = Identity.generate()
        session = Session(peer.private_key, peer.public_key, local_payload=HandshakePayload(),
                          expected_remote_key=mgr.identity.public_key)
        mgr.ref.tell(m.Datagrams([(session.initiate(time.monotonic())[0], addr)]))
        # Answered while the socket is still busy with its first message (snapshots ride the control lane, ahead
        # of the datagrams: wait for the count rather than rely on the order).
        assert wait_for(lambda: mgr.snapshot()["pending_handshakes"] == 1, timeout=2.0)
        reply, _ = replies_to(mgr, addr, 0, timeout=20)
        (final,) = session.receive(decode_header(reply), reply, time.monotonic()).replies
        mgr.ref.tell(m.Datagrams([(final, addr)]))
        assert wait_for(lambda: mgr.sessions() == 1, timeout=20)
        assert wait_for(lambda: established_sessions(mgr) == 1, timeout=20)
        assert mgr.ref.is_alive()
    finally:
        recovered.set()  # the socket catches up: nothing queued behind the test keeps it busy
        slow.stop(block=False)


def test_handshakes_arriving_while_the_socket_actor_restarts_complete_afterwards(recorder):
    mgr = start_manager(recorder)
    dead = mgr.sock
    dead.stop(block=True)  # the socket actor crashed; the supervisor has not rewired a new one yet
    addr = ("192.0.2.41", 7443)
    peer = Identity.generate()
    session = Session(peer.private_key, peer.public_key, local_payload=HandshakePayload(),
                      expected_remote_key=mgr.identity.public_key)
    init = session.initiate(time.monotonic())[0]
    mgr.ref.tell(m.Datagrams([(init, addr)]))
    assert wait_for(lambda: mgr.snapshot()["pending_handshakes"] == 1)  # up, and the answer was lost
    fresh = recorder()
    mgr.sock = fresh
    mgr.ref.tell(m.Rewire("socket", fresh))
    assert wait_for(lambda: any(isinstance(x, m.BindIndex) for x in fresh.ask(GetOther())))  # rebound

    def retransmit() -> bool:  # the initiator retransmits its INIT (a copy within RESP_RESEND_INTERVAL is ignored)
        mgr.ref.tell(m.Datagrams([(init, addr)]))
        return any(a == addr for _, a in mgr.sock.ask(GetSent()))

    assert wait_for(retransmit)
    reply, _ = replies_to(mgr, addr, 0)
    (final,) = session.receive(decode_header(reply), reply, time.monotonic()).replies
    mgr.ref.tell(m.Datagrams([(final, addr)]))
    assert wait_for(lambda: mgr.sessions() == 1)
    assert wait_for(lambda: established_sessions(mgr) == 1)
    assert mgr.ref.is_alive()


def test_a_dead_session_actor_does_not_take_the_manager_down(recorder):
    mgr = start_manager(recorder)
    dial(mgr, ("192.0.2.42", 7443))
    assert wait_for(lambda: mgr.sessions() == 1)
    (ref,) = mgr.ref.ask(m.ListSessions(), timeout=5)
    ref.stop(block=True)  # gone without a word (no SessionGone)
    dial(mgr, ("192.0.2.43", 7443))
    mgr.ref.tell(m.TimerDue())  # ticks every session, the dead one included
    assert wait_for(lambda: mgr.sessions() == 2)
    assert mgr.ref.is_alive()


# --- admission ------------------------------------------------------------------------------------------
def test_one_host_minting_keys_cannot_keep_a_new_peer_out(recorder):
    """The issue's lockout: one host completes handshakes with fresh keys until the table is full, and a new
    peer that pinned our key cannot get in. The host fills the room there is, is refused past it, and a new peer
    from elsewhere takes one of its slots (the host holding the most gives one up)."""
    mgr = start_manager(recorder, max_sessions=6)
    for port in range(1000, 1010):
        dial(mgr, ("198.51.100.66", port))  # ten fresh keys from one host, any port
    assert wait_for(lambda: mgr.snapshot().get("refused_session_limit") == 4)
    assert mgr.sessions() == 6
    newcomer = Identity.generate()
    dial(mgr, ("192.0.2.50", 7443), peer=newcomer)  # a new peer from elsewhere
    assert wait_for(lambda: mgr.snapshot().get("evicted_for_fair_share") == 1)
    assert wait_for(lambda: established_sessions(mgr) == 6)
    assert newcomer.public_key.hex() in _session_keys(mgr)


def test_a_host_whose_handshakes_keep_being_refused_must_earn_cookies_and_a_pinned_peer_still_connects(recorder):
    """Refusals are load: once the table is full, a host minting keys is refused; past REFUSALS_BEFORE_LOAD
    refusals its INITs get cookie replies first (the node as a whole is not under load), and a pinned peer from
    elsewhere still connects at once."""
    pinned = Identity.generate()
    static = (PeerSpec("192.0.2.60", 7443, pinned.public_key),)
    mgr = start_manager(recorder, static_peers=static, max_sessions=4)
    for port in range(1000, 1000 + 3 + int(REFUSALS_BEFORE_LOAD)):  # 3 strangers fill the table, 8 refused
        dial(mgr, ("198.51.100.66", port))
    assert wait_for(lambda: mgr.snapshot().get("refused_session_limit") == REFUSALS_BEFORE_LOAD)
    assert mgr.snapshot()["responder"]["cookie_replies"] == 0
    dial(mgr, ("198.51.100.66", 2000))  # the next fresh key from that host must echo a cookie first
    assert wait_for(lambda: mgr.snapshot().get("refused_session_limit") == REFUSALS_BEFORE_LOAD + 1)
    responder = mgr.snapshot()["responder"]
    assert responder["cookie_replies_refused_source"] == 1 and responder["refusals"] == REFUSALS_BEFORE_LOAD + 1
    assert mgr.snapshot()["pending_handshakes"] < 64  # not node-wide load: the refusals did it
    dial(mgr, ("192.0.2.61", 7443), peer=pinned)  # the pinned peer calls in from a new address
    assert wait_for(lambda: pinned.public_key.hex() in _session_keys(mgr))
    assert mgr.snapshot()["responder"]["cookie_replies"] == 1  # it was asked for none


def test_twenty_nodes_behind_one_address_all_get_sessions(recorder):
    """Issue 17: with 8 per source a hard cap, ten nodes behind one NAT could not all peer with a public node."""
    mgr = start_manager(recorder)
    for port in range(2000, 2020):
        dial(mgr, ("203.0.113.77", port))
    assert wait_for(lambda: established_sessions(mgr) == 20, 30.0)
    assert not any(k.startswith("refused_") for k in mgr.snapshot())


def test_a_configured_pinned_peer_keeps_its_slot_when_strangers_fill_the_rest(recorder):
    pinned = Identity.generate()
    static = (PeerSpec("192.0.2.60", 7443, pinned.public_key),)
    mgr = start_manager(recorder, static_peers=static, max_sessions=5, max_unpinned_sessions=3)
    for n in range(1, 7):
        dial(mgr, (f"203.0.113.{n}", 7443))  # strangers from six hosts
    assert wait_for(lambda: mgr.snapshot().get("refused_unpinned_limit") == 3)
    assert mgr.sessions() == 4 and mgr.snapshot()["unnamed_sessions"] == 3
    dial(mgr, ("192.0.2.61", 7443), peer=pinned)  # the pinned peer calls in from a new address
    assert wait_for(lambda: established_sessions(mgr) == 4)
    refs = mgr.ref.ask(m.ListSessions(), timeout=5)
    peers = {r.ask(m.Snapshot(), timeout=5)["peer"] for r in refs}
    assert pinned.public_key.hex() in peers


def test_allowed_keys_refuses_everyone_else_before_any_session_exists(recorder):
    friend, pinned = Identity.generate(), Identity.generate()
    static = (PeerSpec("192.0.2.70", 7443, pinned.public_key),)
    mgr = start_manager(recorder, static_peers=static, allowed_keys=frozenset({friend.public_key}))
    assert wait_for(lambda: mgr.sessions() == 1)  # the static peer's own session
    for n in range(1, 4):
        dial(mgr, (f"203.0.113.{n}", 7443))
    assert wait_for(lambda: mgr.snapshot().get("rx_NotAllowed") == 3)
    assert mgr.snapshot()["responder"]["not_allowed"] == 3 and mgr.sessions() == 1
    dial(mgr, ("192.0.2.71", 7443), peer=friend)
    dial(mgr, ("192.0.2.72", 7443), peer=pinned)  # a pinned static peer's key is always allowed
    assert wait_for(lambda: mgr.sessions() == 2)
    assert wait_for(lambda: established_sessions(mgr) == 2)
    released = [x for x in mgr.sock.ask(GetOther()) if isinstance(x, m.ReleaseIndex)]
    assert len(released) >= 3  # the refused handshakes' indices went back


def _session_keys(mgr: Manager) -> set[str]:
    refs = mgr.ref.ask(m.ListSessions(), timeout=5)
    return {r.ask(m.Snapshot(), timeout=5)["peer"] for r in refs}


def test_allowed_keys_changed_at_runtime_closes_the_revoked_and_admits_the_new(recorder):
    friend, stranger, later = Identity.generate(), Identity.generate(), Identity.generate()
    mgr = start_manager(recorder, allowed_keys=None)
    dial(mgr, ("192.0.2.81", 7443), peer=friend)
    dial(mgr, ("192.0.2.82", 7443), peer=stranger)
    assert wait_for(lambda: established_sessions(mgr) == 2)
    reply = mgr.ref.ask(m.SetAllowedKeys(frozenset({friend.public_key, later.public_key})), timeout=5)
    assert reply["sessions_closed"] == 1 and reply["allowed_keys"] == 2
    assert wait_for(lambda: _session_keys(mgr) == {friend.public_key.hex()})
    assert mgr.snapshot()["sessions_closed_not_allowed"] == 1
    downs = [x for x in mgr.router.ask(GetOther()) if isinstance(x, m.SessionDown)]
    assert [d.peer_key for d in downs] == [stranger.public_key]  # its routes are withdrawn
    dial(mgr, ("192.0.2.82", 7443), peer=stranger)  # the front door now refuses it
    assert wait_for(lambda: mgr.snapshot()["responder"]["not_allowed"] == 1)
    dial(mgr, ("192.0.2.83", 7443), peer=later)  # and admits a key the new list names
    assert wait_for(lambda: established_sessions(mgr) == 2)
    assert _session_keys(mgr) == {friend.public_key.hex(), later.public_key.hex()}
    mgr.ref.ask(m.SetAllowedKeys(None), timeout=5)  # anyone again
    dial(mgr, ("192.0.2.82", 7443), peer=stranger)
    assert wait_for(lambda: established_sessions(mgr) == 3)


def test_a_static_peer_added_at_runtime_is_allowed_under_allowed_keys(recorder):
    # Its pinned key is not in allowed_keys: pinned static peers are always allowed, also when added at runtime
    # (before, the key set was fixed at start and the new peer's own session refused the key it had pinned).
    friend, pinned = Identity.generate(), Identity.generate()
    mgr = start_manager(recorder, allowed_keys=frozenset({friend.public_key}))
    reply = mgr.ref.ask(m.AddPeer("192.0.2.90", 7443, pinned.public_key), timeout=5)
    assert reply["added"]
    dial(mgr, ("192.0.2.90", 7443), peer=pinned)  # the pinned peer's own handshake reaches our front door
    assert wait_for(lambda: mgr.snapshot()["responder"].get("not_allowed", 0) == 0 and established_sessions(mgr) == 1)
    assert _session_keys(mgr) == {pinned.public_key.hex()}
    reply = mgr.ref.ask(m.RemovePeer("192.0.2.90", 7443), timeout=5)
    assert reply["sessions_closed"] == 1
    dial(mgr, ("192.0.2.90", 7443), peer=pinned)  # no longer configured: no longer allowed
    assert wait_for(lambda: mgr.snapshot()["responder"].get("not_allowed", 0) == 1)


def test_a_spoofed_source_flood_cannot_stop_the_real_peer_at_that_source(recorder):
    """Hundreds of INITs that carry a victim's address (and a valid mac1: the attacker knows our key) put the
    front door under load; the victim, who receives at that address, still connects through the cookie."""
    mgr = start_manager(recorder)
    victim_addr = ("192.0.2.80", 7443)
    for burst in range(4):
        forged = []
        for _ in range(100):
            spoofer = Identity.generate()
            s = Session(spoofer.private_key, spoofer.public_key, local_payload=HandshakePayload(),
                        expected_remote_key=mgr.identity.public_key)
            forged.append((s.initiate(time.monotonic())[0], victim_addr))
        mgr.ref.tell(m.Datagrams(forged))
    assert wait_for(lambda: mgr.snapshot()["responder"]["inits"] >= 400)
    assert mgr.snapshot()["responder"]["cookie_replies"] > 0  # under load
    dial(mgr, victim_addr)  # the real peer at that address: cookie reply, mac2, then the handshake
    assert wait_for(lambda: mgr.sessions() == 1)
    assert wait_for(lambda: established_sessions(mgr) == 1)
    assert mgr.snapshot()["responder"]["rate_limited"] == 0  # nobody could drain the victim's bucket


def test_key_probes_are_answered_only_when_discoverable(recorder):
    from axiomnet.wire import decode_datagram, encode_key_probe

    open_mgr = start_manager(recorder)
    probe = encode_key_probe(7, bytes(range(16)))
    open_mgr.ref.tell(m.Datagrams([(probe, ("192.0.2.90", 7443))]))
    reply, _ = replies_to(open_mgr, ("192.0.2.90", 7443), 0)
    assert decode_datagram(reply)[1].public_key == open_mgr.identity.public_key
    hidden = start_manager(recorder, discoverable=False)
    hidden.ref.tell(m.Datagrams([(probe, ("192.0.2.91", 7443))]))
    assert wait_for(lambda: hidden.snapshot()["responder"]["key_probes_ignored"] == 1)
    assert hidden.sock.ask(GetSent()) == []
