"""The fuzz targets: one small function per parser or state machine that reads untrusted bytes.

A target takes one input (``bytes``) and returns normally when the code under test accepted it or refused
it the documented way (a ``RemoteProtocolError``, or the error class the target names); anything else
escaping is a bug. Register a new target with the decorator; it becomes ``python tools/fuzz.py NAME``::

    @fuzz_target("announcement", seeds=lambda: [encode_announcement(...)])
    def announcement(data: bytes) -> None:
        try:
            msg = decode_announcement(data)
        except RemoteProtocolError:
            return
        check(decode_announcement(encode_announcement(msg)) == msg, "announcement does not re-encode")

Targets must be deterministic for a given input (state they need is rebuilt, or copied, per input) so
that a crash file replays. tools/fuzz.py imports this module under atheris' coverage instrumentation.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from axiomnet import beacon, control, punch, reflexive, wire
from axiomnet.actors.admin import AdminActor
from axiomnet.announce import (
    Announcement,
    Beat,
    Hop,
    PartAssembler,
    decode_announcement,
    encode_announcement,
    encode_beat,
    hop_statement,
    root_statement,
    sign,
)
from axiomnet.bloom import Bloom
from axiomnet.constants import ADMIN_REQUEST_MAX, MAX_ANNOUNCEMENT_SIZE, MAX_TREE_DEPTH
from axiomnet.control import HandshakePayload
from axiomnet.errors import CorruptIdentity, RemoteProtocolError
from axiomnet.forward import Forwarder
from axiomnet.identity import Identity, decode_identity, encode_identity
from axiomnet.lookup import Pathfinder
from axiomnet.routed import Kind, decode_routed, encode_routed
from axiomnet.tree import Tree
from axiomnet.responder import HandshakeResponder
from axiomnet.session import Session
from axiomnet.wire import PacketType, decode_header


class InvariantBroken(AssertionError):
    """The code under test accepted an input but broke a property it promises (e.g. lossless re-encode)."""


def check(condition: bool, message: str) -> None:
    """Raise InvariantBroken with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InvariantBroken(message)


@dataclass(frozen=True)
class FuzzTarget:
    """A registered target: its name, the function under fuzz and a few valid inputs to start from."""

    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    doc: str
    dictionary: tuple[bytes, ...] = ()  # tokens libFuzzer splices into inputs (its -dict)


TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(name: str, seeds: Callable[[], list[bytes]], dictionary: tuple[bytes, ...] = ()
                ) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register ``function`` as the fuzz target ``name`` with a seed corpus (and libFuzzer dictionary tokens)."""

    def register(function: Callable[[bytes], None]) -> Callable[[bytes], None]:
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} registered twice")
        doc = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else name
        TARGETS[name] = FuzzTarget(name, function, seeds, doc, dictionary)
        return function

    return register


# --- deterministic keys and a session pair ---------------------------------------------------------------
def _keys(seed: int) -> tuple[bytes, bytes]:
    private = PrivateKey(hashlib.sha256(b"axiomnet-fuzz-key-%d" % seed).digest())
    return bytes(private), bytes(private.public_key)


PAYLOAD = HandshakePayload(capabilities=("fuzz",))
ADDR = ("198.18.0.2", 7443)
NOW = 1000.0


def _session(seed: int, peer_seed: int | None = None) -> Session:
    """A Session of ``seed``'s key; pinned to ``peer_seed``'s key when given (its INIT then carries the mac1 the
    responder checks). The core picks its own receiver indices (axiomnet/indices.py); nobody routes them here."""
    private, public = _keys(seed)
    expected = _keys(peer_seed)[1] if peer_seed is not None else None
    return Session(private, public, local_payload=PAYLOAD, peer_name=f"fuzz{seed}", rng=random.Random(seed),
                   expected_remote_key=expected)


def _responder(seed: int) -> HandshakeResponder:
    private, public = _keys(seed)
    secret = random.Random(seed)
    return HandshakeResponder(private, public, local_payload=PAYLOAD, secret_source=secret.randbytes,
                              rng=random.Random(seed + 1))


def _deliver(datagrams: list[bytes], to: Session | HandshakeResponder, now: float) -> tuple[list[bytes], Any]:
    out: list[bytes] = []
    result = None
    for datagram in datagrams:
        header = decode_header(datagram)
        if isinstance(to, HandshakeResponder):
            replies, result = to.receive(header, datagram, ADDR, now)
        else:
            replies = to.receive(header, datagram, now).replies
        out += replies
    return out, result


@functools.lru_cache(maxsize=1)
def established_pair() -> tuple[Session, Session, list[bytes]]:
    """(our session, the peer's session, datagrams the peer sent us) after a completed handshake.

    Built once; targets deep-copy the session per input so every input starts from the same state.
    """
    ours = _session(1, 2)
    theirs_door = _responder(2)
    theirs = _session(2, 1)
    init = ours.initiate(NOW)
    resp, _ = _deliver(init, theirs_door, NOW)
    final, _ = _deliver(resp, ours, NOW)
    _, result = _deliver(final, theirs_door, NOW)
    confirm = theirs.install(result, NOW).replies
    _deliver(confirm, ours, NOW)
    check(ours.is_established and theirs.is_established, "fuzz fixture: the handshake did not complete")
    sent = confirm + theirs.send(PacketType.DATA, _routed_seeds()[0], NOW)
    sent += theirs.send(PacketType.CONTROL, _announcement_seeds()[0], NOW)
    sent += theirs.send(PacketType.KEEPALIVE, b"", NOW)
    return ours, theirs, sent + resp + final


def _split(data: bytes, limit: int = 4) -> list[bytes]:
    """Up to ``limit`` datagrams from one input: [count byte] then [2-byte length][body]... (fuzzer-friendly)."""
    if not data:
        return [b""]
    count, rest = 1 + data[0] % limit, data[1:]
    out = []
    for _ in range(count):
        if len(rest) < 2:
            break
        size = int.from_bytes(rest[:2], "big")
        out.append(rest[2 : 2 + size])
        rest = rest[2 + size :]
    return out or [rest]


def _join(datagrams: list[bytes]) -> bytes:
    return bytes([len(datagrams) - 1]) + b"".join(len(d).to_bytes(2, "big") + d for d in datagrams)


# --- the targets ------------------------------------------------------------------------------------------
def _wire_seeds() -> list[bytes]:
    rng = random.Random(1)
    return [
        wire.encode_handshake_init(1, rng.randbytes(32)),
        wire.encode_handshake_resp(7, 9, rng.randbytes(wire.NOISE_MSG2_MIN + 20)),
        wire.encode_handshake_final(7, rng.randbytes(wire.NOISE_MSG3_MIN + 20)),
        wire.encode_cookie_reply(7, rng.randbytes(24), rng.randbytes(32)),
        wire.encode_header(PacketType.DATA, 7, 3) + rng.randbytes(60),
        wire.encode_header(PacketType.KEEPALIVE, 7, 4) + rng.randbytes(16),
    ]


@fuzz_target("wire", seeds=_wire_seeds)
def wire_datagram(data: bytes) -> None:
    """wire.decode_datagram: every header and body decoder; what it accepts re-encodes exactly."""
    try:
        header, body = wire.decode_datagram(data)
    except RemoteProtocolError:
        return
    check(wire.encode_datagram(header, body) == data, "accepted datagram does not re-encode to the same bytes")
    check(wire.peek_receiver(data) == header.receiver, "peek_receiver disagrees with decode_header")


def _announcement_seeds() -> list[bytes]:
    root, mid, me = (Identity.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
    hop = Hop(mid.signing_key, 4, 8, sign(root.signing_secret, hop_statement(root.signing_key, 8, root.signing_key,
                                                                             mid.signing_key, 4)))
    cert = sign(mid.signing_secret, hop_statement(root.signing_key, 9, mid.signing_key, me.signing_key, 2))
    root_sig = sign(root.signing_secret, root_statement(root.signing_key, 9))
    plain = Announcement(root.signing_key, 9, root_sig, (hop,), 2, 9, cert, None)
    with_bloom = Announcement(root.signing_key, 9, root_sig, (hop,), 2, 9, cert, Bloom.of([bytes(16)]))
    beat = encode_beat(Beat(root.signing_key, 10, sign(root.signing_secret, root_statement(root.signing_key, 10))))
    return [encode_announcement(plain), encode_announcement(with_bloom), beat]


@fuzz_target("announcement", seeds=_announcement_seeds)
def announcement(data: bytes) -> None:
    """announce.decode_announcement (a neighbour's signed tree position); what it accepts re-encodes exactly."""
    try:
        ann = decode_announcement(data)
    except RemoteProtocolError:
        return
    check(encode_announcement(ann) == data, "accepted announcement does not re-encode to the same bytes")


@functools.lru_cache(maxsize=1)
def _tree_fixture() -> tuple[Tree, bytes]:
    """A Tree (node 3) with node 2 as its neighbour; announcements the fuzzer sends come from node 2."""
    me, peer = Identity.from_seed(bytes([3]) * 32), Identity.from_seed(bytes([2]) * 32)
    tree = Tree(me.signing_secret, me.signing_key, me.address.packed, now=NOW, seq_start=1)
    tree.add(peer.public_key, NOW)
    return tree, peer.public_key


@fuzz_target("tree_receive", seeds=_announcement_seeds)
def tree_receive(data: bytes) -> None:
    """Tree.receive (verification: sender key, dead roots, loops, every signature) and the tick after it."""
    template, peer = _tree_fixture()
    tree = copy.deepcopy(template)
    try:
        tree.receive(peer, data, NOW + 1.0)
    except RemoteProtocolError:
        pass
    for _, sent in tree.tick(NOW + 2.0):
        check(len(sent) <= MAX_ANNOUNCEMENT_SIZE, "the tree built an oversized announcement")
    check(len(tree.path) <= MAX_TREE_DEPTH, "the tree took a position deeper than the bound")


_PART_SPLIT = b"\xff\xfe\xfd"  # an input is up to 8 control messages from one neighbour, separated by this


def _parts_seeds() -> list[bytes]:
    cut = PartAssembler(7).split
    plain, with_bloom, beat = _announcement_seeds()
    big = encode_announcement(replace(decode_announcement(with_bloom), chain=(decode_announcement(plain).chain * 12)))
    return [_PART_SPLIT.join(cut(plain) + [beat]), _PART_SPLIT.join(cut(big)[::-1]),
            _PART_SPLIT.join(cut(big)[:2] + cut(plain))]


@fuzz_target("announce_parts", seeds=_parts_seeds)
def announce_parts(data: bytes) -> None:
    """announce.PartAssembler.receive (ANNOUNCE_PARTs from a neighbour, docs/PROTOCOL.md §5.7): only
    RemoteProtocolError, one partial announcement at most, never more bytes held than received."""
    assembler = PartAssembler()
    given = 0
    for i, message in enumerate(data.split(_PART_SPLIT)[:8]):
        given += len(message)
        try:
            whole = assembler.receive(b"n" * 32, message, NOW + i)
        except RemoteProtocolError:
            continue
        finally:
            check(len(assembler) <= 1 and 0 <= assembler.held <= given, "the assembler holds more than it may")
        if whole is not None and message[:1] != bytes([5]):
            check(whole == message, "a control message that is not a part was changed")
        elif whole is not None:
            check(len(whole) <= MAX_ANNOUNCEMENT_SIZE and len(whole) <= given, "an announcement larger than its parts")


def _routed_seeds() -> list[bytes]:
    return [encode_routed(kind, root_tag=7, dst=bytes([0xFC]) + bytes(15), src=bytes([0xFC, 1]) + bytes(14),
                          dst_path=(1, 2, 3), src_path=(4,), payload=b"payload")
            for kind in (Kind.TRAFFIC, Kind.LOOKUP, Kind.LOOKUP_REPLY, Kind.PATH_BROKEN)]


@functools.lru_cache(maxsize=1)
def _forwarder_fixture() -> tuple[Forwarder, bytes]:
    me, peer = Identity.from_seed(bytes([5]) * 32), Identity.from_seed(bytes([6]) * 32)
    tree = Tree(me.signing_secret, me.signing_key, me.address.packed, now=NOW, seq_start=1)
    tree.add(peer.public_key, NOW)
    pathfinder = Pathfinder(me.address.packed, me.signing_secret, me.signing_key, random.Random(5))
    return Forwarder(tree, pathfinder), peer.public_key


@fuzz_target("routed", seeds=_routed_seeds)
def routed_packet(data: bytes) -> None:
    """routed.decode_routed and Forwarder.receive (what every relay does with a routed packet from a link)."""
    try:
        header = decode_routed(data)
    except RemoteProtocolError:
        header = None
    if header is not None:
        rebuilt = encode_routed(header.kind, root_tag=header.root_tag, dst=header.dst, src=header.src,
                                dst_path=header.dst_path, src_path=header.src_path, payload=data[header.offset:],
                                hop_limit=header.hop_limit, watermark=header.watermark)
        check(rebuilt == data, "accepted routed packet does not re-encode to the same bytes")
    template, peer = _forwarder_fixture()
    forwarder = copy.deepcopy(template)
    out = forwarder.receive(peer, [data], NOW)
    for packets in out.links.values():
        check(all(decode_routed(p).hop_limit < 255 for p in packets), "a relayed packet kept its hop limit")


@fuzz_target("handshake_payload", seeds=lambda: [PAYLOAD.encode(), HandshakePayload().encode()])
def handshake_payload(data: bytes) -> None:
    """control.decode_handshake_payload (what a peer sends inside Noise messages 2 and 3)."""
    try:
        payload = control.decode_handshake_payload(data)
    except RemoteProtocolError:
        return
    check(control.decode_handshake_payload(payload.encode()) == payload, "handshake payload does not re-encode")


@fuzz_target("identity", seeds=lambda: [encode_identity(Identity.from_seed(_keys(3)[0]))])
def identity_file(data: bytes) -> None:
    """identity.decode_identity (a damaged key file must be CorruptIdentity, never another error)."""
    try:
        ident = decode_identity(data)
    except CorruptIdentity:
        return
    check(encode_identity(ident) == data, "accepted identity file does not re-encode")


_BEACON_KEY = beacon.group_key(b"fuzz group")


@fuzz_target("beacon", seeds=lambda: [beacon.encode_beacon(_keys(4)[1], 7443, _BEACON_KEY)],
             dictionary=(beacon.BEACON_MAGIC,))
def beacon_datagram(data: bytes) -> None:
    """beacon.BeaconListener.receive (a LAN discovery beacon from anyone on the link, docs/PROTOCOL.md §8)."""
    listener = beacon.BeaconListener(bytes(32), _BEACON_KEY)
    heard = listener.receive(data, "fe80::1%eth0", "eth0", 1.0)
    check(sum(listener.stats.values()) >= 1, "a beacon was neither accepted nor counted")
    if heard is not None:
        check(beacon.encode_beacon(heard.public_key, heard.endpoint[1], _BEACON_KEY) == data,
              "an accepted beacon does not re-encode")


@fuzz_target("observed_endpoint", seeds=lambda: [reflexive.encode_observed("198.51.100.7", 7443) or b"",
                                                 reflexive.encode_observed("2001:db8::1", 1) or b""])
def observed_endpoint(data: bytes) -> None:
    """reflexive.decode_observed (OBSERVED_ENDPOINT from a neighbour, docs/PROTOCOL.md §8.1)."""
    try:
        host, port = reflexive.decode_observed(data)
    except RemoteProtocolError:
        return
    check(reflexive.encode_observed(host, port) == data, "an accepted OBSERVED_ENDPOINT does not re-encode")


@fuzz_target("candidates", seeds=lambda: [punch.encode_candidates([("198.51.100.7", 7443), ("2001:db8::1", 443)])],
             dictionary=(bytes([punch.CANDIDATES]),))
def candidates(data: bytes) -> None:
    """punch.decode_candidates (CANDIDATES over an end-to-end session, docs/PROTOCOL.md §8.2)."""
    try:
        endpoints = punch.decode_candidates(data)
    except RemoteProtocolError:
        return
    check(len(endpoints) <= punch.MAX_CANDIDATES, "more candidates than MAX_CANDIDATES accepted")
    again = punch.decode_candidates(punch.encode_candidates(endpoints))  # re-encoding must decode (normalised)
    check(len(again) <= len(endpoints), "re-encoded candidates grew")


def _session_seeds() -> list[bytes]:
    _, _, sent = established_pair()
    return [_join([d]) for d in sent] + [_join(sent[:4])]


@fuzz_target("session_receive", seeds=_session_seeds)
def session_receive(data: bytes) -> None:
    """Session.receive on an established session (a copy per input): up to 4 datagrams from the peer."""
    template, _, _ = established_pair()
    session = copy.deepcopy(template)
    now = NOW + 1.0
    for datagram in _split(data):
        try:
            header = decode_header(datagram)
            got = session.receive(header, datagram, now)
        except RemoteProtocolError:
            continue
        check(header.ptype not in (PacketType.HANDSHAKE_INIT,), "HANDSHAKE_INIT reached a session")
        check(all(isinstance(r, bytes) for r in got.replies), "replies must be bytes")
        if got.ptype is PacketType.KEEPALIVE:
            check(got.payload == b"", "keepalive delivered a payload")
    session.tick(now + 0.5)  # timers must cope with whatever state the input left
    session.events()


def _responder_seeds() -> list[bytes]:
    initiator = _session(9, 4)  # pinned to the responder's key: its INIT carries a valid mac1
    init = initiator.initiate(NOW)[0]
    return [_join([init]), _join([init, init]),
            _join([init, wire.encode_handshake_final(5001, bytes(wire.NOISE_MSG3_MIN + 12))])]


@fuzz_target("responder_receive", seeds=_responder_seeds)
def responder_receive(data: bytes) -> None:
    """HandshakeResponder.receive (the front door anyone can reach): up to 4 datagrams, then expiry."""
    responder = _responder(4)
    now = NOW
    for i, datagram in enumerate(_split(data)):
        try:
            header = decode_header(datagram)
            replies, result = responder.receive(header, datagram, (f"198.18.0.{2 + i}", 7443 + i), now)
        except RemoteProtocolError:
            continue
        check(len(replies) <= 1, "the front door answered one datagram with several")
        check(all(len(r) <= len(datagram) + 64 for r in replies), "the front door amplifies")
        check(result is None or result.local_index in responder.pending_indices() | {result.local_index},
              "result with an index the responder never picked")
    check(responder.pending_count <= 4, "more half-open handshakes than datagrams")
    responder.expire(now + 3600.0)
    check(responder.pending_count == 0, "half-open handshakes outlive their timeout")


# Coverage cannot see nesting depth inside C parsers (json, msgpack), so a fuzzer does not climb towards
# the interpreter's recursion limit (1000) by itself. Parsing under a small budget makes "too deep" show at
# NESTING_PROBE levels, which short inputs and the dictionary's "[[[[..." token reach within seconds.
NESTING_PROBE = 48


@contextlib.contextmanager
def _recursion_budget(extra: int) -> Iterator[None]:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back  # type: ignore[assignment]
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + extra)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


class _FakeConnection:
    """What the admin accept thread reads from: the input in fuzzer-chosen chunks, then EOF."""

    def __init__(self, data: bytes) -> None:
        self.chunks = [data[i : i + 997] for i in range(0, len(data), 997)] or [b""]

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0)[:size] if self.chunks else b""


@functools.lru_cache(maxsize=1)
def _admin() -> AdminActor:
    """An AdminActor that was never started: no socket, no collaborators (every ask gets the default)."""
    return AdminActor(None, {}, Path("/nonexistent/admin.sock"), Identity.from_seed(_keys(5)[0]), None, 0.0)


@fuzz_target("admin_request", seeds=lambda: [b'{"cmd": "state"}\n', b'{"cmd": "inject-fault", "actor": "router"}\n',
                                             b'{"cmd": "nope"}\n', b"\n"],
             dictionary=(b'{"cmd": ', b'"state"', b'"inject-fault"', b'"actor"', b"[" * 64, b'{"a":' * 16, b"\\u"))
def admin_request(data: bytes) -> None:
    """The admin socket's request parser and dispatcher: a bad request is OSError/ValueError (a reply saying
    "bad request"); nothing else may escape, or it would kill the admin actor's accept thread."""
    data = data[: ADMIN_REQUEST_MAX * 2]
    admin = _admin()
    try:
        with _recursion_budget(NESTING_PROBE):
            request = admin._read_line(_FakeConnection(data))  # type: ignore[arg-type]
        reply = admin._answer(request)
    except (OSError, ValueError):
        return
    check(isinstance(reply, dict), "admin reply is not a JSON object")
