"""The in-memory half of tools/bench.py: the core's per-packet, per-lookup, per-handshake and per-session costs.

Not a tool of its own (tools/bench.py runs it). Everything goes through the core's public API: Session and
HandshakeResponder (axiomnet/session.py, axiomnet/responder.py) and the forwarding decision behind
:func:`next_hop_lookup`, the one function to re-point when the routing core changes. Time is CPU time of
this process (``time.process_time``): one core. Each function is bounded by its ``budget`` of seconds or count.
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nacl.public import PrivateKey

from axiomnet.constants import HANDSHAKE_RATE_PER_SOURCE, MAX_TREE_DEPTH
from axiomnet.control import HandshakePayload
from axiomnet.greedy import NO_HOP, NeighbourPaths
from axiomnet.identity import derive_address
from axiomnet.responder import HandshakeResponder
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header

PACKET_SIZE = 1420  # bytes of one inner packet (the comparable TUN MTU)
BATCH = 64  # packets per send_batch call (READER_BATCH_MAX)
PAYLOAD = HandshakePayload(capabilities=("bench",))
ADDR = ("198.18.0.1", 7443)
# Fake time advances this much per handshake, so the responder's per-source rate limit never refuses one.
HANDSHAKE_STEP = 1.0 / HANDSHAKE_RATE_PER_SOURCE


@dataclass
class _Node:
    private: bytes
    public: bytes
    rng: random.Random

    @classmethod
    def make(cls, rng: random.Random) -> _Node:
        key = PrivateKey.generate()
        return cls(bytes(key), bytes(key.public_key), rng)

    def session(self, name: str, expected: bytes | None = None) -> Session:
        # The core picks its own receiver indices (axiomnet/indices.py); in memory nobody routes them.
        return Session(self.private, self.public, local_payload=PAYLOAD, peer_name=name, rng=self.rng,
                       expected_remote_key=expected)

    def responder(self) -> HandshakeResponder:
        return HandshakeResponder(self.private, self.public, local_payload=PAYLOAD, rng=self.rng)


def _handshake(client: Session, responder: HandshakeResponder, server: _Node, now: float,
               cpu: list[float] | None = None) -> Session:
    """One Noise XX handshake in memory; the responder's Session. ``cpu[0]`` accumulates the responder's CPU."""
    def on_responder(datagrams: list[bytes]) -> tuple[list[bytes], Any]:
        t = time.process_time()
        out: list[bytes] = []
        result = None
        for d in datagrams:
            replies, got = responder.receive(decode_header(d), d, ADDR, now)
            out += replies
            result = got or result
        if cpu is not None:
            cpu[0] += time.process_time() - t
        return out, result

    replies, _ = on_responder(client.initiate(now))
    finals: list[bytes] = []
    for r in replies:
        finals += client.receive(decode_header(r), r, now).replies
    _, result = on_responder(finals)
    if result is None:
        raise RuntimeError("in-memory handshake did not complete")
    t = time.process_time()
    peer = server.session("bench-server")
    confirmation = peer.install(result, now).replies
    if cpu is not None:
        cpu[0] += time.process_time() - t
    for c in confirmation:
        client.receive(decode_header(c), c, now)
    return peer


def session_pair(rng: random.Random) -> tuple[Session, Session]:
    """An established (initiator, responder) pair of sessions."""
    client_node, server_node = _Node.make(rng), _Node.make(rng)
    client = client_node.session("bench-client", server_node.public)
    peer = _handshake(client, server_node.responder(), server_node, 0.0)
    if not (client.is_established and peer.is_established):
        raise RuntimeError("in-memory session pair is not established")
    return client, peer


def packet_costs(packets: int, rng: random.Random) -> dict[str, float]:
    """µs per packet for encrypt+send (Session.send_batch, BATCH at a time) and receive+decrypt
    (decode_header + Session.receive) of ``packets`` inner packets of PACKET_SIZE bytes."""
    client, peer = session_pair(rng)
    payloads = [os.urandom(PACKET_SIZE)] * BATCH
    datagrams: list[bytes] = []
    t = time.process_time()
    for _ in range(max(1, packets // BATCH)):
        datagrams += client.send_batch(PacketType.DATA, payloads, 1.0)
    send_cpu = time.process_time() - t
    t = time.process_time()
    for d in datagrams:
        got = peer.receive(decode_header(d), d, 1.0)
    recv_cpu = time.process_time() - t
    if got.ptype is not PacketType.DATA or len(got.payload) != PACKET_SIZE:
        raise RuntimeError("receive+decrypt did not return the packet")
    n = len(datagrams)
    return {
        "packets": n,
        "encrypt_send_us": 1e6 * send_cpu / n,
        "receive_decrypt_us": 1e6 * recv_cpu / n,
        "encrypt_send_mbps_per_core": PACKET_SIZE * 8 * n / send_cpu / 1e6 if send_cpu else float("nan"),
        "receive_decrypt_mbps_per_core": PACKET_SIZE * 8 * n / recv_cpu / 1e6 if recv_cpu else float("nan"),
    }


# A TCP super-packet as the TUN hands it over with offloads on (38 KB at MTU 1420), and Yggdrasil's unit.
SEGMENT_SIZES = (27 * PACKET_SIZE, 65_535)


def segment_sealing(rounds: int, rng: random.Random) -> dict[str, float]:
    """Gbit per CPU-second of the seal step alone (axiomnet.keypairs.seal: header, AEAD, copy out) when a
    segment of SEGMENT_SIZES bytes is sealed as datagrams of PACKET_SIZE (what the protocol does) and as one unit
    (what a per-segment seal would do, as Yggdrasil seals each 64 KB unit): the ceiling a per-segment seal could
    lift, before any routing, hand-off or system call."""
    from axiomnet.keypairs import Keypair, seal

    kp = Keypair(1, 2, rng.randbytes(32), rng.randbytes(32), True, b"", 0.0)
    out: dict[str, float] = {}
    for size in SEGMENT_SIZES:
        segment = rng.randbytes(size)
        pieces = [segment[i:i + PACKET_SIZE] for i in range(0, size, PACKET_SIZE)]
        for name, payloads in (("datagrams", pieces), ("unit", [segment])):
            t = time.process_time()
            for _ in range(rounds):
                sealed = seal(kp, PacketType.DATA, payloads)
            cpu = time.process_time() - t
            if sum(map(len, sealed)) < size:
                raise RuntimeError("sealing returned fewer bytes than it was given")
            out[f"seal_{size}_{name}_gbps_per_core"] = size * 8 * rounds / cpu / 1e9 if cpu else float("nan")
        out[f"seal_{size}_unit_over_datagrams"] = (out[f"seal_{size}_unit_gbps_per_core"]
                                                   / out[f"seal_{size}_datagrams_gbps_per_core"])
    return out


def handshake_rate(seconds: float, rng: random.Random) -> dict[str, float]:
    """Complete handshakes per CPU-second: both ends in this process, and the responder's side alone."""
    server = _Node.make(rng)
    responder = server.responder()
    client_node = _Node.make(rng)
    responder_cpu = [0.0]
    count, now = 0, 0.0
    start = time.process_time()
    while time.process_time() - start < seconds or count < 3:
        _handshake(client_node.session(f"c{count}", server.public), responder, server, now, responder_cpu)
        count += 1
        now += HANDSHAKE_STEP
    total = time.process_time() - start
    return {"handshakes": count, "per_s_both_ends": count / total, "per_s_responder": count / responder_cpu[0]}


def session_memory(sessions: int, rng: random.Random) -> dict[str, float]:
    """Python heap (tracemalloc) held per idle responder-side Session, ``sessions`` of them established."""
    server = _Node.make(rng)
    responder = server.responder()
    clients = [_Node.make(rng) for _ in range(8)]  # initiator keys, reused: the server sees distinct sessions
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = []
        for i in range(sessions):
            client = clients[i % len(clients)].session(f"c{i}", server.public)
            held.append(_handshake(client, responder, server, i * HANDSHAKE_STEP))
            del client
        responder.expire(sessions * HANDSHAKE_STEP + 3600.0)
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if len(held) != sessions:
        raise RuntimeError("not every session was established")
    return {"sessions": sessions, "kib_per_session": (current - base) / sessions / 1024}


# --- the forwarding decision (re-point this when the routing core changes) --------------------------------
def next_hop_lookup(neighbours: int, rng: random.Random) -> Callable[[bytes], object]:
    """The node's per-packet forwarding decision over ``neighbours`` direct neighbours, as a function of a
    destination address, with DESTINATIONS destinations known (see :data:`next_hop_destinations`).

    The exact tree metric (axiomnet/greedy.py): every neighbour's position is a random 64-port path (the
    issue's worst case), each destination a random path sharing a random prefix with one of them; a lookup is
    ONE vectorised pass over all neighbours (``NeighbourPaths.next_hop``), uncached.
    """
    def path(length: int) -> tuple[int, ...]:
        return tuple(rng.randrange(1, 8) for _ in range(length))

    keys = [os.urandom(32) for _ in range(neighbours)]
    rows = [path(64) for _ in range(neighbours)]
    table = NeighbourPaths(keys, rows, [1.0] * neighbours)
    me = path(rng.randrange(1, 64))
    coords: dict[bytes, tuple[int, ...]] = {}
    next_hop_destinations.clear()
    for _ in range(DESTINATIONS):
        dst = derive_address(os.urandom(32)).packed
        near = rows[rng.randrange(neighbours)]
        cut = rng.randrange(len(near) + 1)
        coords[dst] = near[:cut] + path(min(64, MAX_TREE_DEPTH) - cut)
        next_hop_destinations.append(dst)

    def lookup(dst: bytes) -> object:
        index, _ = table.next_hop(me, coords[dst])
        return None if index == NO_HOP else table.keys[index]

    return lookup


NEXT_HOP_NEIGHBOURS = (10, 1_000, 100_000)
DESTINATIONS = 1000  # distinct destinations the lookups cycle through (not neighbours: the greedy path)
next_hop_destinations: list[bytes] = []


def next_hop_cost(neighbours: int, seconds: float, rng: random.Random) -> dict[str, float]:
    """µs per forwarding decision over ``neighbours`` neighbours (mean over ``seconds`` of CPU, at least
    10 lookups)."""
    t = time.process_time()
    lookup = next_hop_lookup(neighbours, rng)
    build = time.process_time() - t
    dests = next_hop_destinations
    routed = lookups = 0
    start = time.process_time()
    while lookups < 10 or time.process_time() - start < seconds:
        first = lookups % len(dests)
        for dst in dests[first:first + 10]:
            if lookup(dst) is not None:
                routed += 1
            lookups += 1
    cpu = time.process_time() - start
    return {"neighbours": neighbours, "us": 1e6 * cpu / lookups, "lookups": lookups, "routed": routed,
            "build_s": build}


def run_all(*, smoke: bool, seed: int = 1) -> dict[str, Any]:
    """Every micro-benchmark, sized for a smoke run (a second or two in all) or a full one."""
    rng = random.Random(seed)
    return {
        "packets": packet_costs(2_048 if smoke else 65_536, rng),
        "segments": segment_sealing(20 if smoke else 2_000, rng),
        "handshakes": handshake_rate(0.2 if smoke else 3.0, rng),
        "session_memory": session_memory(100 if smoke else 1000, rng),
        "next_hop": [next_hop_cost(n, 0.1 if smoke else 2.0, rng) for n in NEXT_HOP_NEIGHBOURS],
    }
