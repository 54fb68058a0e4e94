"""Open many AxiomNet sessions to one daemon and hold them: ``python -m benchlab.session_holder``.

Run inside a lab namespace by tools/bench.py to measure a daemon's memory per idle session. Each session is a
fresh static key driven by the core's :class:`~axiomnet.session.Session` over UDP, so the daemon sees COUNT
distinct peers. Sources are spread over 127.0.0.2, 127.0.0.3, ... (at most PER_SOURCE sessions each, below the
daemon's per-source handshake burst) and at most IN_FLIGHT handshakes are open at once (below its cookie
threshold), so nothing is refused for load. It prints one JSON line when the sessions are up (or the deadline
passed), then keeps every session running (receiving what the daemon sends, running its timers, so a lost
HANDSHAKE_FINAL is sent again) until its stdin closes or HOLD seconds pass. Loopback only.

Sessions being opened are ticked every TICK_EVERY (handshake retransmission); established ones only at their own
next deadline (a heap), so holding 10,000 costs the holder what their traffic costs, not 100,000 ticks a second
taken from the daemon being measured on the same cores. Each held session sends a KEEPALIVE every
KEEPALIVE_EVERY (spread evenly over the sessions), as an idle neighbour node keeps its link alive: the daemon's
router withdraws a peer it has not heard from for PEER_DEAD_AFTER, and a bare session that only answered every
KEEPALIVE_TIMEOUT (10 s) was withdrawn and restored over and over (each time re-added to the tree, at a cost
that grows with the neighbours), which is not what holding idle sessions means.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import hashlib
import heapq
import itertools
import math
import os
import select
import socket
import sys
import time

from nacl.public import PrivateKey

from axiomnet.constants import KEEPALIVE_TIMEOUT, PEER_DEAD_AFTER
from axiomnet.control import HandshakePayload
from axiomnet.errors import RemoteProtocolError
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header

PER_SOURCE = 8  # sessions opened from one source address (well below the daemon's per-source handshake burst)
IN_FLIGHT = 32  # handshakes open at once (the daemon asks for cookies from COOKIE_LOAD_THRESHOLD on)
TICK_EVERY = 0.1  # session timers (handshake retransmission) run this often
# Each held session is heard from this often: the daemon keeps it live (PEER_DEAD_AFTER) and starts no handshake of
# its own for silence (it sent, heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: the holder cannot answer one).
KEEPALIVE_EVERY = min(PEER_DEAD_AFTER / 2, KEEPALIVE_TIMEOUT)


def holder_key(seed: int, i: int) -> PrivateKey:
    """The ``i``-th session's key for ``--seed`` (the bench lists their public keys in ``allowed_keys``)."""
    return PrivateKey(hashlib.blake2b(b"axiomnet-holder-%d-%d" % (seed, i), digest_size=32).digest())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host", help="the daemon's UDP address (a loopback address)")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int, help="sessions to open (1..10000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up opening after this many seconds")
    parser.add_argument("--hold", type=float, default=120.0, help="hold the sessions at most this long")
    parser.add_argument("--seed", type=int, default=None,
                        help="derive the keys from this seed (holder_key(seed, i)) so the daemon can allow them")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback or not 1 <= args.count <= 10000:
        parser.error("host must be a loopback address and count 1..10000")

    payload = HandshakePayload(capabilities=("relay",))
    sockets: list[socket.socket] = []
    owner: dict[int, tuple[Session, socket.socket]] = {}
    opening: list[tuple[Session, socket.socket]] = []
    dest = (args.host, args.port)
    start = time.monotonic()
    deadline = start + args.timeout
    started = 0
    next_tick = start

    def send(sock: socket.socket, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            try:
                sock.sendto(datagram, dest)
            except OSError:
                pass

    def claim(session: Session, sock: socket.socket) -> None:
        for index in session.local_indices():
            owner[index] = (session, sock)

    stdin = sys.stdin.fileno()
    by_fd: dict[int, socket.socket] = {}
    poller = select.poll()  # not select(): 10,000 sessions need over a thousand sockets (FD_SETSIZE is 1024)
    stdin_polled = False
    held: list[tuple[Session, socket.socket]] = []  # established: still ticked (a lost HANDSHAKE_FINAL is resent)
    due: list[tuple[float, int, Session, socket.socket]] = []  # held sessions by next deadline (stale ones harmless)
    order = itertools.count()  # equal deadlines never compare sessions
    booked: dict[int, float] = {}  # id(session) -> the earliest deadline it has in ``due``

    def book(session: Session, sock: socket.socket) -> None:
        """Tick an established session at its next deadline (if that is earlier than the one it has booked)."""
        when = session.next_deadline()
        if when is not None and when < booked.get(id(session), math.inf):
            booked[id(session)] = when
            heapq.heappush(due, (when, next(order), session, sock))
    reported = False
    hold_until = math.inf
    keepalive_cursor, keepalive_owed, keepalive_at = 0, 0.0, time.monotonic()
    while time.monotonic() < hold_until:
        now = time.monotonic()
        if not reported and (len(held) >= args.count or now >= deadline):
            print(json.dumps({"established": len(held), "seconds": round(now - start, 3)}), flush=True)
            reported, hold_until = True, now + args.hold
        while not reported and len(opening) < IN_FLIGHT and started < args.count:
            if started % PER_SOURCE == 0:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((str(ipaddress.IPv4Address("127.0.0.2") + len(sockets)), 0))
                sock.setblocking(False)
                sockets.append(sock)
                by_fd[sock.fileno()] = sock
                poller.register(sock.fileno(), select.POLLIN)
            private = PrivateKey.generate() if args.seed is None else holder_key(args.seed, started)
            session = Session(bytes(private), bytes(private.public_key), local_payload=payload,
                              peer_name=f"holder-{started}")
            send(sockets[-1], session.initiate(now))
            claim(session, sockets[-1])
            opening.append((session, sockets[-1]))
            started += 1
        if reported and not stdin_polled:
            poller.register(stdin, select.POLLIN | select.POLLHUP)
            stdin_polled = True
        readable = [fd for fd, _ in poller.poll(20)]
        if stdin in readable and not os.read(stdin, 4096):
            break  # the bench closed our stdin (or is gone): stop holding
        now = time.monotonic()
        for fd in readable:
            if fd == stdin:
                continue
            while True:
                try:
                    datagram = by_fd[fd].recv(65536)
                except BlockingIOError:
                    break
                try:
                    header = decode_header(datagram)
                    entry = owner.get(header.receiver)
                    if entry is not None:
                        send(entry[1], entry[0].receive(header, datagram, now).replies)
                        claim(*entry)
                        if entry[0].is_established:
                            book(*entry)
                except RemoteProtocolError:
                    pass
        if now >= next_tick:
            next_tick = now + TICK_EVERY
            for session, sock in opening:
                send(sock, session.tick(now))
                claim(session, sock)
        while due and due[0][0] <= now:
            _, _, session, sock = heapq.heappop(due)
            booked.pop(id(session), None)
            send(sock, session.tick(now))
            claim(session, sock)
            book(session, sock)
        # Keepalives spread evenly: len(held) of them per KEEPALIVE_EVERY, a few each loop.
        keepalive_owed += len(held) * (now - keepalive_at) / KEEPALIVE_EVERY
        keepalive_at = now
        while keepalive_owed >= 1 and held:
            keepalive_owed -= 1
            keepalive_cursor = (keepalive_cursor + 1) % len(held)
            session, sock = held[keepalive_cursor]
            if session.is_established:
                send(sock, session.send(PacketType.KEEPALIVE, b"", now))
                claim(session, sock)
                book(session, sock)
        still: list[tuple[Session, socket.socket]] = []
        for entry in opening:
            if entry[0].is_established:
                held.append(entry)
                book(*entry)
            else:
                still.append(entry)
        opening = still
    for sock in sockets:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
