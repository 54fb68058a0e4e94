"""SocketActor offloads on loopback: UDP GSO sends arrive as separate datagrams, UDP GRO reads are split back,
and a kernel that refuses GSO gets every datagram sent one by one (GSO switched off)."""

from __future__ import annotations

import errno
import socket
from typing import Any

from axiomnet.wire import PacketType, encode_header
from axiomnet.actors import messages as m
from axiomnet.actors.socket import SOL_UDP, UDP_SEGMENT, SocketActor
from tests.node_actors.fakes import GetOther, wait_for


def receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def received(s: socket.socket, count: int) -> list[bytes]:
    return [s.recv(70000) for _ in range(count)]


def items_to(port: int) -> list[tuple[bytes, m.Addr]]:
    """Ten equal datagrams then a shorter one, then one more of another size: two GSO groups and a single."""
    sizes = [1000] * 10 + [300, 1200]
    return [(bytes([i]) * n, ("127.0.0.1", port)) for i, n in enumerate(sizes)]


def test_consecutive_datagrams_leave_in_one_gso_send_and_arrive_separately(recorder):
    actor = SocketActor.start(None, {}, ("127.0.0.1", 0))
    try:
        assert actor.ask(m.Snapshot(), timeout=5)["gso"] is True
        with receiver() as s:
            items = items_to(s.getsockname()[1])
            actor.tell(m.SendDatagrams(items))
            assert received(s, len(items)) == [d for d, _ in items]
        snap = actor.ask(m.Snapshot(), timeout=5)
        assert snap["tx_gso_sends"] == 1 and snap["tx_datagrams"] == len(items)
    finally:
        actor.stop()


class _RefusingSocket:
    """A socket whose kernel refuses UDP_SEGMENT with EIO (a device that cannot segment)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.refused = 0

    def sendmsg(self, buffers: Any, ancillary: Any = (), *args: Any) -> int:
        if any(level == SOL_UDP and kind == UDP_SEGMENT for level, kind, _ in ancillary):
            self.refused += 1
            raise OSError(errno.EIO, "Input/output error")
        return self._sock.sendmsg(buffers, ancillary, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RefusingSocketActor(SocketActor):
    def setup(self) -> None:
        super().setup()
        self.sock = _RefusingSocket(self.sock)  # type: ignore[assignment]


def test_a_kernel_that_refuses_gso_gets_every_datagram_singly(recorder):
    actor = RefusingSocketActor.start(None, {}, ("127.0.0.1", 0))
    try:
        with receiver() as s:
            items = items_to(s.getsockname()[1])
            actor.tell(m.SendDatagrams(items))
            assert received(s, len(items)) == [d for d, _ in items]
            assert wait_for(lambda: actor.ask(m.Snapshot(), timeout=5)["gso"] is False)
            actor.tell(m.SendDatagrams(items))  # from now on without trying GSO
            assert received(s, len(items)) == [d for d, _ in items]
        snap = actor.ask(m.Snapshot(), timeout=5)
        assert snap["tx_datagrams"] == 2 * len(items) and snap.get("tx_gso_sends", 0) == 0
    finally:
        actor.stop()


def test_offloads_off_sends_one_datagram_per_call(recorder):
    actor = SocketActor.start(None, {}, ("127.0.0.1", 0), offload=False)
    try:
        snap = actor.ask(m.Snapshot(), timeout=5)
        assert snap["gso"] is False and snap["gro"] is False
        with receiver() as s:
            items = items_to(s.getsockname()[1])
            actor.tell(m.SendDatagrams(items))
            assert received(s, len(items)) == [d for d, _ in items]
    finally:
        actor.stop()


def test_a_gro_read_is_split_into_the_datagrams_it_holds(recorder):
    session = recorder()
    actor = SocketActor.start(None, {"peers": recorder()}, ("127.0.0.1", 0))
    try:
        snap = actor.ask(m.Snapshot(), timeout=5)
        assert snap["gro"] is True
        port = int(snap["listen"].rsplit(":", 1)[1])
        index = 0x0A0B0C
        actor.tell(m.BindIndex(index, session))
        # The bind is in (same lane, in order) before the reader sees a datagram: without this, a loaded run
        # dispatched the datagrams by the table before the bind, to the peer manager (seen once, two busy cores).
        actor.ask(m.Snapshot(), timeout=5)
        datagrams = [encode_header(PacketType.DATA, index, n) + bytes([n]) * 500 for n in range(20)]
        datagrams.append(encode_header(PacketType.DATA, index, 99) + b"short tail......")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # One GSO send over loopback reaches a GRO socket as one buffer: the reader must split it.
            s.sendmsg(datagrams, [(SOL_UDP, UDP_SEGMENT, len(datagrams[0]).to_bytes(2, "little"))], 0,
                      ("127.0.0.1", port))

            def got() -> list[bytes]:
                return [d for msg in session.ask(GetOther()) if isinstance(msg, m.Datagrams) for d, _ in msg.items]

            assert wait_for(lambda: len(got()) == len(datagrams))
            assert got() == datagrams
    finally:
        actor.stop()
