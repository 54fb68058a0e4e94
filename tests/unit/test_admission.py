"""Admission: every source while there is room; under pressure shared out by source, so one host minting keys,
or many hosts, cannot keep named peers, other hosts' peers or newcomers out."""

from __future__ import annotations

import random

import pytest
from tests.unit.lossy_link import Node, respond, types_of

from axiomnet.admission import Admission, Admit, Refuse
from axiomnet.constants import MAX_SESSIONS, MAX_UNPINNED_SESSIONS, STRANGER_BURST_PER_SOURCE, STRANGER_RATE_PER_SOURCE
from axiomnet.cookie import source_key
from axiomnet.errors import NotAllowed
from axiomnet.session import KeyRefused
from axiomnet.wire import Header, decode_header

ATTACKER = source_key(("198.51.100.66", 40000))


def admit(table: Admission, sid: object, *, named: bool, source: bytes, now: float) -> Admit | Refuse:
    """Decide, and on Admit evict and add, as the peer manager does."""
    decision = table.decide(named=named, source=source, now=now)
    if isinstance(decision, Admit):
        if decision.evict is not None:
            table.remove(decision.evict)
        table.add(sid, named=named, source=source, inbound=True, now=now)
    return decision


def test_twenty_nodes_behind_one_address_all_get_slots_while_there_is_room() -> None:
    """Issue 17: 8 strangers per IPv4 address was a hard cap even with the table empty, so ten nodes behind one
    NAT (or ten relay-only nodes on one host) could not all peer with a public node."""
    table = Admission()
    nat = source_key(("203.0.113.9", 40000))
    outcomes = [admit(table, f"office{i}", named=False, source=nat, now=float(i)) for i in range(20)]
    assert outcomes == [Admit()] * 20
    assert table.from_source(nat) == 20 and len(table) == 20


def test_a_host_with_5000_fresh_keys_cannot_push_out_other_hosts_peers_or_keep_newcomers_out() -> None:
    table = Admission(max_sessions=64, max_unpinned=48)
    others = [source_key((f"192.0.2.{n}", 7443)) for n in range(1, 6)]
    for n, source in enumerate(others):  # five hosts' peers were there first
        assert admit(table, f"peer{n}", named=False, source=source, now=0.0) == Admit()
    outcomes = [admit(table, f"key{i}", named=False, source=ATTACKER, now=1.0 + i * 0.01) for i in range(5000)]
    # The flood fills the strangers' share while there is room, then is refused: it never evicts anyone, not
    # even its own (a swap of its slots for its slots gains nothing).
    assert sum(isinstance(o, Admit) for o in outcomes) == 48 - 5
    assert all(o.evict is None for o in outcomes if isinstance(o, Admit))
    assert {o.reason for o in outcomes if isinstance(o, Refuse)} == {"refused_unpinned_limit", "refused_source_rate"}
    assert all(table.from_source(source) == 1 for source in others)  # nobody else lost a slot
    # A newcomer from elsewhere takes a slot from the host holding the most (its least recently active key).
    table.touch("key0", 100.0)
    decision = admit(table, "newcomer", named=False, source=source_key(("198.18.0.7", 7443)), now=60.0)
    assert isinstance(decision, Admit) and decision.evict == "key1"
    # Named and pinned peers fill the rest and, once the table is full, also evict from the largest source.
    for n in range(64 - 48):
        assert admit(table, f"named{n}", named=True, source=ATTACKER, now=70.0) == Admit()
    decision = admit(table, "late named", named=True, source=others[0], now=80.0)
    assert isinstance(decision, Admit) and str(decision.evict).startswith("key")
    assert table.from_source(ATTACKER) == 48 - 5 - 2 and len(table) == 64


def test_one_source_opens_strangers_sessions_at_a_bounded_rate_not_a_bounded_count() -> None:
    """How fast one host can make us spawn sessions is bounded (a burst for a NAT full of nodes, then a rate):
    a key flood is refused within its first second, and a refusal is load at the front door."""
    table = Admission()
    host = source_key(("198.51.100.9", 1))
    outcomes = [admit(table, f"k{i}", named=False, source=host, now=0.0) for i in range(100)]
    assert outcomes[:STRANGER_BURST_PER_SOURCE] == [Admit()] * STRANGER_BURST_PER_SOURCE
    assert set(outcomes[STRANGER_BURST_PER_SOURCE:]) == {Refuse("refused_source_rate")}
    assert admit(table, "later", named=False, source=host, now=1.0 / STRANGER_RATE_PER_SOURCE) == Admit()
    assert admit(table, "pinned", named=True, source=host, now=1.0) == Admit()  # named peers: never rate-bound
    assert admit(table, "elsewhere", named=False, source=source_key(("192.0.2.1", 1)), now=1.0) == Admit()


def test_under_pressure_slots_are_shared_out_by_source() -> None:
    """Max-min: a newcomer evicts only from a source holding at least two more slots than its own; so with the
    table full the sources converge on equal shares and nobody churns between equals."""
    table = Admission(max_sessions=12, max_unpinned=12)
    a, b, c = (source_key((f"198.51.100.{n}", 1)) for n in (1, 2, 3))
    for i in range(12):
        admit(table, f"a{i}", named=False, source=a, now=float(i))
    for i in range(20):
        admit(table, f"b{i}", named=False, source=b, now=20.0 + i)
        admit(table, f"c{i}", named=False, source=c, now=20.5 + i)
    assert [table.from_source(s) for s in (a, b, c)] == [4, 4, 4]
    assert table.decide(named=False, source=a, now=60.0) == Refuse("refused_session_limit")  # equals do not swap


def test_5000_hosts_fill_only_the_unnamed_share_and_named_peers_still_get_in() -> None:
    table = Admission()
    rng = random.Random(3)
    for i in range(5000):
        source = source_key((f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}", 1))
        admit(table, f"key{i}", named=False, source=source, now=float(i))
    assert table.unnamed == MAX_UNPINNED_SESSIONS == len(table)
    for n in range(MAX_SESSIONS - MAX_UNPINNED_SESSIONS):
        assert admit(table, f"named{n}", named=True, source=ATTACKER, now=9000.0) == Admit()
    assert len(table) == MAX_SESSIONS
    # The table is full: a named newcomer evicts a stranger; strangers from new hosts are refused (every source
    # holds one slot: no source holds two more than theirs).
    decision = admit(table, "late named", named=True, source=ATTACKER, now=9600.0)
    assert isinstance(decision, Admit) and str(decision.evict).startswith("key")
    assert admit(table, "late stranger", named=False, source=source_key(("192.0.2.9", 1)), now=9600.0) == Refuse(
        "refused_session_limit")


def test_named_newcomers_never_evict_named_or_outbound_sessions() -> None:
    table = Admission(max_sessions=2)
    table.add("static", named=False, source=b"x", inbound=False, now=0.0)  # a session we dialled
    table.add("friend", named=True, source=b"y", inbound=True, now=0.0)
    assert table.decide(named=True, source=b"z", now=6.0) == Refuse("refused_session_limit")
    table.remove("friend")
    table.add("stranger", named=False, source=b"z", inbound=True, now=5.0)
    assert table.decide(named=True, source=b"w", now=6.0) == Admit("stranger")


@pytest.mark.parametrize("bounds", [(0, 1), (2, -1)])
def test_bounds_must_make_sense(bounds: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        Admission(*bounds)


# --- allowed_keys (core) ---------------------------------------------------------------------------------
def test_allowed_keys_refuses_an_unlisted_initiator_before_any_result_exists() -> None:
    friend, stranger = Node("friend", 1), Node("stranger", 3)
    b = Node("b", 2, allowed_keys=frozenset({friend.public}))
    for dialler in (stranger, friend):
        s = dialler.session_for(b.public)
        final = dialler.handle(b.handle(s.initiate(0.0)[0], dialler.addr, 0.0)[0], b.addr, 0.0)
        b.handle(final[0], dialler.addr, 0.0)
    assert b.errors["NotAllowed"] == 1 and b.responder.stats["not_allowed"] == 1
    assert set(b.sessions) == {friend.public}  # no session was ever created for the stranger
    assert b.indices.live == b.owned_indices()  # and its half-open handshake's index went back
    with pytest.raises(NotAllowed):  # the refusal is the specific RemoteProtocolError the actors count
        b.responder.receive(*_final_from(Node("other", 4), b))


def test_allowed_keys_also_binds_the_initiator() -> None:
    a = Node("a", 1, allowed_keys=frozenset())  # a peer configured without a key, and nobody allowed
    b = Node("b", 2)
    sa = a.session_for(None, pin=False)
    out = sa.initiate(0.0)
    for _ in range(3):  # probe, reply, init, resp
        out = [r for d in out for r in b.handle(d, a.addr, 0.0)]
        out = [r for d in out for r in a.handle(d, b.addr, 0.0)]
    assert not sa.is_established and types_of(out) == []
    assert any(isinstance(e, KeyRefused) and e.actual == b.public for e in sa.events())
    assert sa.stats["keys_refused"] == 1 and b.responder.pending_count == 1  # msg 3 never sent


def test_an_unlisted_key_cannot_be_installed_either() -> None:
    a, b = Node("a", 1), Node("b", 2)
    sa = a.session_for(b.public)
    final = a.handle(b.handle(sa.initiate(0.0)[0], a.addr, 0.0)[0], b.addr, 0.0)
    _, result = respond(b.responder, final[0], a.addr)
    assert result is not None
    sb = b.session_for(a.public)
    sb.allowed_keys = frozenset()
    b.sync()
    assert b.indices.table.move(result.local_index, b.responder, sb)  # as the peer manager's MoveIndex does
    got = sb.install(result, 0.0)
    assert not got.authenticated and got.replies == [] and not sb.is_established
    assert sb.stats["keys_refused"] == 1 and b.indices.live == b.owned_indices()


def _final_from(dialler: Node, b: Node) -> tuple[Header, bytes, tuple[str, int], float]:
    """The arguments of b.responder.receive for a HANDSHAKE_FINAL from ``dialler`` (a key b does not list)."""
    s = dialler.session_for(b.public)
    final = dialler.handle(b.handle(s.initiate(1.0)[0], dialler.addr, 1.0)[0], b.addr, 1.0)[0]
    return decode_header(final), final, dialler.addr, 1.0
