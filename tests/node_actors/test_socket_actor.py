"""SocketActor on loopback: dispatch by receiver index, unknown indices to the peer manager, send errors
counted and logged with the peer address (seed failure #10), and a reader that stops promptly."""

from __future__ import annotations

import socket
import time

from loguru import logger

from axiomnet.wire import PacketType, encode_header
from axiomnet.actors import messages as m
from axiomnet.actors.socket import SocketActor
from tests.node_actors.fakes import GetOther, wait_for


def datagrams_received(ref) -> list[tuple[bytes, tuple[str, int]]]:
    return [item for msg in ref.ask(GetOther()) if isinstance(msg, m.Datagrams) for item in msg.items]


def test_datagrams_go_to_the_owner_of_their_receiver_index(recorder):
    peers, session = recorder(), recorder()
    sock_actor = SocketActor.start(None, {"peers": peers}, ("127.0.0.1", 0))
    port = int(sock_actor.ask(m.Snapshot(), timeout=5)["listen"].rsplit(":", 1)[1])
    index = 0x0ABCDE  # picked by its owner, told (never asked for)
    sock_actor.tell(m.BindIndex(index, session))
    sock_actor.ask(m.Snapshot(), timeout=5)  # the bind is in (same lane, in order) before the reader sees a datagram
    owned = encode_header(PacketType.DATA, index, 1) + bytes(16)
    stranger = encode_header(PacketType.DATA, index ^ 1 or 2, 1) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(owned, ("127.0.0.1", port))
        s.sendto(stranger, ("127.0.0.1", port))
        s.sendto(b"\x01\x02", ("127.0.0.1", port))
        src_port = s.getsockname()[1]
        assert wait_for(lambda: len(datagrams_received(session)) == 1 and len(datagrams_received(peers)) == 2)
    assert datagrams_received(session) == [(owned, ("127.0.0.1", src_port))]
    sock_actor.tell(m.ReleaseOwner(session))
    sock_actor.ask(m.Snapshot(), timeout=5)  # the release is processed before the next datagram arrives
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(owned, ("127.0.0.1", port))
    assert wait_for(lambda: len(datagrams_received(peers)) == 3)


def test_send_errors_are_counted_and_logged_with_the_peer_address(recorder):
    sock_actor = SocketActor.start(None, {}, ("::", 0))
    lines: list[str] = []
    sink = logger.add(lambda msg: lines.append(str(msg)), level="WARNING")
    try:
        # Port 0 is not a valid destination: sendto fails with EINVAL, synchronously, on loopback.
        sock_actor.tell(m.SendDatagrams([(b"x", ("::1", 0)), (b"y", ("::1", 0))]))
        assert wait_for(lambda: sock_actor.ask(m.Snapshot(), timeout=5).get("tx_errors") == 2)
    finally:
        logger.remove(sink)
    assert any("::1" in line and "failed" in line for line in lines)
    assert len([line for line in lines if "::1" in line]) == 1  # rate-limited per address, every error counted


def test_ipv4_peer_on_dual_stack_socket_is_reached(recorder):
    sock_actor = SocketActor.start(None, {}, ("::", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        sock_actor.tell(m.SendDatagrams([(b"hello", ("127.0.0.1", s.getsockname()[1]))]))
        assert s.recvfrom(100)[0] == b"hello"


def test_stop_is_prompt_with_no_traffic(recorder):
    sock_actor = SocketActor.start(None, {}, ("127.0.0.1", 0))
    sock_actor.ask(m.Snapshot(), timeout=5)
    started = time.monotonic()
    sock_actor.stop(timeout=5)
    assert time.monotonic() - started < 4.0  # readers wake every 0.5 s; slack for a loaded box


def bound_port(sock_actor) -> int:
    return int(sock_actor.ask(m.Snapshot(), timeout=5)["listen"].rsplit(":", 1)[1])


def test_a_bind_of_an_index_another_owner_holds_is_refused_and_sends_nothing(recorder):
    peers, first, second = recorder(), recorder(), recorder()
    sock_actor = SocketActor.start(None, {"peers": peers}, ("127.0.0.1", 0))
    port = bound_port(sock_actor)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        here = s.getsockname()
        sock_actor.tell(m.BindIndex(77, first, ((b"first", here),)))
        assert s.recvfrom(100)[0] == b"first"  # bound, then sent
        sock_actor.tell(m.BindIndex(77, second, ((b"second", here),)))  # the same index, picked by another owner
        assert wait_for(lambda: m.IndexRefused(77) in second.ask(GetOther()))
        sock_actor.tell(m.BindIndex(77, first, ((b"again", here),)))  # the holder re-binding is fine
        assert s.recvfrom(100)[0] == b"again"  # and "second" never left
        snap = sock_actor.ask(m.Snapshot(), timeout=5)
        assert snap["index_collisions"] == 1 and snap["tx_dropped_index_refused"] == 1
        s.sendto(encode_header(PacketType.DATA, 77, 1) + bytes(16), ("127.0.0.1", port))
        assert wait_for(lambda: len(datagrams_received(first)) == 1)  # still routed to the holder
        assert datagrams_received(second) == []


def test_moves_and_releases_only_act_for_the_holder(recorder):
    peers, owner, thief, heir = recorder(), recorder(), recorder(), recorder()
    sock_actor = SocketActor.start(None, {"peers": peers}, ("127.0.0.1", 0))
    port = bound_port(sock_actor)
    sock_actor.tell(m.BindIndex(99, owner))
    sock_actor.tell(m.ReleaseIndex(99, thief))  # a stale or foreign release changes nothing
    sock_actor.tell(m.MoveIndex(99, thief, heir))  # nor does a move by someone who does not hold it
    assert wait_for(lambda: m.IndexRefused(99) in heir.ask(GetOther()))
    sock_actor.tell(m.MoveIndex(99, owner, heir))
    sock_actor.ask(m.Snapshot(), timeout=5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(encode_header(PacketType.DATA, 99, 1) + bytes(16), ("127.0.0.1", port))
    assert wait_for(lambda: len(datagrams_received(heir)) == 1)
    assert datagrams_received(owner) == [] and datagrams_received(thief) == []
    assert sock_actor.ask(m.Snapshot(), timeout=5)["indices"] == 1
    sock_actor.tell(m.ReleaseIndex(99, heir))
    assert wait_for(lambda: sock_actor.ask(m.Snapshot(), timeout=5)["indices"] == 0)


def test_circuit_breaker_opens_for_an_endpoint_whose_sends_keep_failing(recorder):
    """Seed hardening item 10: after BREAKER_FAILURE_THRESHOLD failed sends to one endpoint the socket stops
    hammering it (drops counted), says so once, and shows the open breaker in its snapshot; others still go."""
    from axiomnet.constants import BREAKER_FAILURE_THRESHOLD

    sock_actor = SocketActor.start(None, {}, ("::", 0))
    lines: list[str] = []
    sink = logger.add(lambda msg: lines.append(str(msg)), level="WARNING")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as good:
            good.bind(("::1", 0))
            good.settimeout(5)
            bad = ("::1", 0)  # EINVAL on every send, synchronously
            sock_actor.tell(m.SendDatagrams([(b"x", bad)] * (BREAKER_FAILURE_THRESHOLD + 20)))
            sock_actor.tell(m.SendDatagrams([(b"still-works", ("::1", good.getsockname()[1]))]))
            assert good.recvfrom(100)[0] == b"still-works"
        snap = sock_actor.ask(m.Snapshot(), timeout=5)
    finally:
        logger.remove(sink)
    assert snap["tx_errors"] == BREAKER_FAILURE_THRESHOLD
    assert snap["tx_dropped_breaker_open"] == 20
    assert snap["breaker_opened"] == 1 and snap["breakers_open"] == 1
    (row,) = snap["breakers"]
    assert row["endpoint"] == "::1:0" and row["state"] == "open" and row["retry_in"] > 0
    assert len([line for line in lines if "circuit open" in line and "::1" in line]) == 1
