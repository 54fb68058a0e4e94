"""The socket's penalty box (axiomnet/cookie.py penalised; docs/SECURITY.md, the fresh-key flood): after the peer
manager boxes a source that met its rate limit, the reader drops that source's HANDSHAKE_INITs, counted, until
the box's time, and hands everything else on as before."""

from __future__ import annotations

import socket
import time

from axiomnet.cookie import source_key
from axiomnet.wire import PacketType, encode_header
from axiomnet.actors import messages as m
from axiomnet.actors.socket import SocketActor
from tests.node_actors.fakes import GetOther, wait_for


def received(ref) -> list[bytes]:
    return [data for msg in ref.ask(GetOther()) if isinstance(msg, m.Datagrams) for data, _ in msg.items]


def test_the_reader_drops_a_boxed_sources_inits_until_its_time_and_nothing_else(recorder):
    peers = recorder()
    sock_actor = SocketActor.start(None, {"peers": peers}, ("127.0.0.1", 0))
    try:
        port = int(sock_actor.ask(m.Snapshot(), timeout=5)["listen"].rsplit(":", 1)[1])
        init = encode_header(PacketType.HANDSHAKE_INIT, 0, 0) + bytes(240)
        probe = encode_header(PacketType.KEY_PROBE, 0, 0) + bytes(40)
        release = time.monotonic() + 1.0
        sock_actor.tell(m.PenaltyBox(source_key(("127.0.0.1", 1)), release))
        sock_actor.ask(m.Snapshot(), timeout=5)  # the box is in before the reader sees a datagram
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(5):
                s.sendto(init, ("127.0.0.1", port))
            s.sendto(probe, ("127.0.0.1", port))  # not an INIT: handed on
            assert wait_for(lambda: received(peers) == [probe])
            assert wait_for(lambda: sock_actor.ask(m.Snapshot(), timeout=5).get("rx_dropped_penalty_box") == 5)
            assert wait_for(lambda: time.monotonic() > release, timeout=5)
            s.sendto(init, ("127.0.0.1", port))  # released: the peer manager sees it again
            assert wait_for(lambda: received(peers) == [probe, init])
        assert sock_actor.ask(m.Snapshot(), timeout=5)["rx_dropped_penalty_box"] == 5
    finally:
        sock_actor.stop(timeout=5)
