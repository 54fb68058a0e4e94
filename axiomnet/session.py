"""One peer's session without I/O: the state machine over handshakes, keypairs, transport and timers.

A :class:`Session` is fed decoded headers, datagrams and the time (``now``, monotonic seconds) and hands back
datagrams to send plus events; it never reads a clock, opens a socket or sleeps, so one actor owns it and
every transition is unit-testable (h11 / aioquic style). It runs our side of Noise XX handshakes
(axiomnet/noise.py), places and rotates the keypairs they produce (axiomnet/keypairs.py) with the
simultaneous-open and rekey rules, and drives retransmission, rekey, keepalive and expiry timers. Handshakes a
peer starts arrive through the front door (axiomnet/responder.py) and are installed with :meth:`Session.install`.
docs/PROTOCOL.md §3 is the precise description (datagrams, nonce, AAD, timers, simultaneous open).
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from nacl.exceptions import CryptoError

from axiomnet.constants import (
    AEAD_TAG_SIZE,
    COOKIE_SECRET_LIFETIME,
    HANDSHAKE_INITIAL_RETRANSMIT,
    HEADER_SIZE,
    KEY_PROBE_CHALLENGE_SIZE,
    KEEPALIVE_TIMEOUT,
    MAX_PREVIOUS_KEYPAIRS,
    MAX_STAGED_PACKETS,
    NEW_HANDSHAKE_AFTER_SILENCE,
    PENDING_HANDSHAKE_TIMEOUT,
    PREVIOUS_KEYPAIR_GRACE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_ATTEMPT_TIME,
    SESSION_EXPIRY,
    SIMULTANEOUS_OPEN_WINDOW,
)
from axiomnet.control import HandshakePayload, decode_handshake_payload
from axiomnet.errors import (
    DecryptionFailed,
    InvalidMac,
    MalformedPacket,
    RemoteProtocolError,
    ReplayedPacket,
    UnknownReceiver,
)
from axiomnet.keypairs import (
    FIRST_TRANSPORT,
    LAST_TRANSPORT,
    VERSION_BITS,
    Keypair,
    open_sealed,
    opener,
    retransmit_delay,
    seal,
    seal_confirmation,
)
from axiomnet.indices import IndexCommand, LocalIndices, PooledRandom
from axiomnet.initiation import Initiation
from axiomnet.noise import NoiseFailure
from axiomnet.wire import (
    MAX_DATAGRAM_SIZE,
    NOISE_KEY_SIZE,
    Header,
    PacketType,
    decode_cookie_reply,
    decode_handshake_final,
    decode_header,
    decode_handshake_resp,
    decode_key_reply,
    encode_handshake_final,
)

_KEEPALIVE = PacketType.KEEPALIVE
_DATA = PacketType.DATA
# One for every Session that is given none: it draws from os.urandom (a Random of its own per session would carry
# 2.5 KiB of Mersenne Twister state), index picks from one pool of kernel random words shared by all sessions.
_SYSTEM_RANDOM = PooledRandom()
_Body = TypeVar("_Body")
_WORD_COUNTER = struct.Struct(">IQ")  # bytes 4..16 of the switch header: version/type/receiver, counter
_MIN_TRANSPORT = HEADER_SIZE + AEAD_TAG_SIZE


# --- events ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionEvent:
    """Something the owner of a Session should act on or log; drained with :meth:`Session.events`."""

    peer_name: str


@dataclass(frozen=True)
class Established(SessionEvent):
    """The session has transport keys (first handshake, or again after it had lost all of them)."""

    remote_static: bytes
    initiator: bool


@dataclass(frozen=True)
class Rekeyed(SessionEvent):
    """A newer keypair became current; the one it replaced still decrypts for PREVIOUS_KEYPAIR_GRACE."""

    initiator: bool


@dataclass(frozen=True)
class HandshakeGaveUp(SessionEvent):
    """Our handshake got no usable answer within REKEY_ATTEMPT_TIME; staged packets were dropped."""

    reason: str
    attempts: int
    dropped: int


@dataclass(frozen=True)
class KeyMismatch(SessionEvent):
    """The peer authenticated with another static key than expected; that handshake was aborted."""

    expected: bytes
    actual: bytes
    message: str


@dataclass(frozen=True)
class KeyRefused(SessionEvent):
    """The peer authenticated with a key that ``allowed_keys`` does not list; that handshake was aborted."""

    actual: bytes
    message: str


@dataclass(frozen=True)
class Expired(SessionEvent):
    """No usable keys and nothing heard for SESSION_EXPIRY; every index of the session was released."""

    idle: float


# --- values exchanged with the owner -------------------------------------------------------------------
@dataclass(frozen=True)
class HandshakeResult:
    """A handshake completed (by the HandshakeResponder); ownership of ``local_index`` goes with it."""

    remote_static: bytes
    remote_payload: HandshakePayload
    local_index: int
    remote_index: int
    send_key: bytes
    recv_key: bytes
    initiator: bool
    completed_at: float
    started_at: float | None = None  # when the peer's HANDSHAKE_INIT arrived (None: unknown, taken as completed_at)


class BatchReceived(NamedTuple):
    """Outcome of :meth:`Session.receive_batch`: what :meth:`Session.receive` gives per datagram, gathered.

    ``payloads`` are the authenticated transport payloads in the order of their datagrams (with their types),
    ``replies`` the datagrams to send back, ``errors`` what was refused (one RemoteProtocolError each, already
    counted in ``stats``), and ``last_authentic`` the index of the last datagram that authenticated (-1: none;
    only its source may become the peer's endpoint).
    """

    payloads: list[tuple[PacketType, bytes]]
    replies: list[bytes]
    errors: list[RemoteProtocolError]
    last_authentic: int


class Received(NamedTuple):
    """Outcome of :meth:`Session.receive` (and :meth:`Session.install`): a transport payload (ptype None for
    handshake traffic), replies, and whether the datagram proved it comes from the peer.

    ``authenticated`` is True only for a transport datagram that decrypted, a HANDSHAKE_RESP that completed our
    handshake with the expected key, and a handshake result ``install`` accepted: only those may move the peer's
    endpoint (WireGuard's roaming rule). Anything refused raises, or returns False, and changes no endpoint.
    """

    ptype: PacketType | None
    payload: bytes
    replies: list[bytes]
    authenticated: bool = False


# --- per-session state -----------------------------------------------------------------------------------

class _FinalRetransmit:
    """HANDSHAKE_FINAL we resend until the responder proves (by sending under the keys) that it got it."""

    __slots__ = ("keypair", "datagram", "started", "next_at", "attempts")

    def __init__(self, keypair: Keypair, datagram: bytes, started: float, next_at: float) -> None:
        self.keypair = keypair
        self.datagram = datagram
        self.started = started
        self.next_at = next_at
        self.attempts = 0


_SESSION_STATS = (
    "tx_packets",
    "tx_bytes",
    "rx_packets",
    "rx_bytes",
    "dropped",
    "staged_dropped",
    "handshakes_started",
    "handshakes_completed",
    "handshake_retransmits",
    "final_retransmits",
    "handshakes_given_up",
    "rekeys",
    "keepalives_sent",
    "simultaneous_opens",
    "nudges_sent",
    "key_mismatches",
    "keys_refused",
    "keys_discovered",
    "cookies_received",
    "forged_cookie_replies",
    "bad_key_replies",
    "bad_mac1",
    "index_collisions",
    "malformed",
    "decryption_failed",
    "replayed",
    "unknown_receiver",
)


class Session:
    """Cryptographic session with one peer: Noise XX handshakes, keypairs, transport, timers; no I/O.

    Owned by exactly one actor (never shared between threads). Every method takes ``now``.
    """

    def __init__(
        self,
        static_private: bytes,
        static_public: bytes,
        *,
        local_payload: HandshakePayload,
        expected_remote_key: bytes | None = None,
        peer_name: str = "peer",
        rng: random.Random | None = None,
        allowed_keys: frozenset[bytes] | None = None,
        keepalive_after: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        if len(static_private) != NOISE_KEY_SIZE or len(static_public) != NOISE_KEY_SIZE:
            raise ValueError("static keys must be 32-byte X25519 keys")
        if expected_remote_key is not None and len(expected_remote_key) != NOISE_KEY_SIZE:
            raise ValueError("expected_remote_key must be 32 bytes")
        self._static_private = bytes(static_private)
        self._static_public = bytes(static_public)
        self._payload = local_payload.encode()
        self.expected_remote_key = expected_remote_key
        self.allowed_keys = allowed_keys  # None: any key (trust on first use unless expected_remote_key is set)
        self.peer_name = peer_name
        # Retransmission jitter, receiver indices and key-probe challenges; never key material.
        self._rng = rng if rng is not None else _SYSTEM_RANDOM
        self._indices = LocalIndices(self._rng)
        self.remote_static: bytes | None = None  # set by the first authenticated handshake, then pinned
        self.remote_payload: HandshakePayload | None = None
        self._current: Keypair | None = None  # sends and receives
        self._next: Keypair | None = None  # our handshake's keys: receive-only until the peer sends under them
        self._pending: list[Keypair] = []  # the peer's handshakes' keys: likewise (confirmed, not yet used)
        self._retired: list[Keypair] = []  # receive-only until their dead_at (grace)
        self._by_index: dict[int, Keypair] = {}  # every live keypair by our receiver index
        self._init: Initiation | None = None
        self._confirm: _FinalRetransmit | None = None
        self._cookie: bytes | None = None  # from the peer's last COOKIE_REPLY, for mac2
        self._cookie_at = -math.inf
        self._staged: deque[tuple[PacketType, bytes]] = deque()
        self._events: list[SessionEvent] = []
        self._keepalive_due: float | None = None
        # Received but sent nothing for this long: an empty keepalive (the passive keepalive). End-to-end sessions
        # answer sooner than the dead-path detector looks (axiomnet/e2e.py E2E_KEEPALIVE_AFTER).
        self._keepalive_after = keepalive_after
        self._silence_due: float | None = None
        self._current_heard = 0.0  # last authentic packet under the current keypair (or when it became current)
        self._nudge_at = -math.inf
        self._born: float | None = None
        self._last_heard: float | None = None
        self._quiet_since = 0.0  # expiry baseline: creation, revival or the last thing heard
        self._keyed = False  # Established was reported and keys have not been lost since
        self._expired = False
        # Counted as they happen (a key reads 0 until then): an idle session holds no 27-key table.
        self.stats: Counter[str] = Counter()

    # --- public state ----------------------------------------------------------------------------
    @property
    def is_established(self) -> bool:
        """True while a current keypair exists (as of the last call; tick() drops expired ones)."""
        return self._current is not None

    @property
    def is_expired(self) -> bool:
        """True after an Expired event, until a handshake is started or keys are installed again."""
        return self._expired

    @property
    def last_heard(self) -> float | None:
        """When the last authenticated datagram or completed handshake arrived (None: never)."""
        return self._last_heard

    @property
    def is_handshaking(self) -> bool:
        """True while our own HANDSHAKE_INIT is in flight."""
        return self._init is not None

    def local_indices(self) -> set[int]:
        """Receiver indices this session owns (handshake in flight and live keypairs), for dispatch."""
        indices = set(self._by_index)
        if self._init is not None:
            indices.add(self._init.local_index)
        return indices

    def events(self) -> list[SessionEvent]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def index_commands(self) -> list[IndexCommand]:
        """Indices issued and retired since the last call, in order (axiomnet/indices.py). The owner routes an
        issued index to this session before it sends any datagram returned since the previous call."""
        return self._indices.take_commands()

    def index_refused(self, index: int, now: float) -> list[bytes]:
        """The dispatcher gave ``index`` to another owner; datagrams to send instead.

        Our handshake in flight picks a fresh index and sends again at once (its datagram naming the refused
        index never left); a keypair under it is dropped (nothing can reach it).
        """
        if not self._indices.forget(index):
            return []
        self.stats["index_collisions"] += 1
        init = self._init
        if init is not None and init.local_index == index:
            init.local_index = self._indices.pick()
            return [self._init_datagram(init, now)]
        kp = self._by_index.pop(index, None)
        if kp is not None:
            self._discard(kp, now)
        return []

    def snapshot(self, now: float) -> dict[str, object]:
        """Plain-data view for inspection (the admin socket's session entry, minus the endpoint)."""
        current = self._current
        if self._expired:
            state = "expired"
        elif current is not None:
            state = "established"
        else:
            state = "handshaking"
        return {
            "peer": self.remote_static.hex() if self.remote_static is not None else None,
            "state": state,
            "initiator": current.initiator if current is not None else None,
            "age": now - self._born if self._born is not None else 0.0,
            "keypair_age": now - current.created if current is not None else None,
            "last_heard": now - self._last_heard if self._last_heard is not None else None,
            "handshake_in_flight": self._init is not None,
            "staged": len(self._staged),
            "rx_packets": self.stats["rx_packets"],
            "tx_packets": self.stats["tx_packets"],
            "rx_bytes": self.stats["rx_bytes"],
            "tx_bytes": self.stats["tx_bytes"],
            "dropped": self.stats["dropped"],
            "stats": dict(self.stats),
        }

    # --- commands --------------------------------------------------------------------------------
    def initiate(self, now: float) -> list[bytes]:
        """HANDSHAKE_INIT datagram to send now; nothing if our handshake is already in flight."""
        self._touch(now)
        if self._init is not None:
            return []
        self._revive(now)
        return self._start_handshake(now)

    def send(self, ptype: PacketType, payload: bytes, now: float) -> list[bytes]:
        """Encrypted datagram(s) for one payload; without usable keys it is staged and a handshake started."""
        return self.send_batch(ptype, [payload], now)

    def send_batch(self, ptype: PacketType, payloads: list[bytes], now: float) -> list[bytes]:
        """Encrypted datagrams for ``payloads`` (bytes each) in order; stages them if no keypair can send.

        ``ptype`` is DATA, CONTROL or KEEPALIVE (ValueError otherwise, a local bug). The result may also hold a
        HANDSHAKE_INIT when the keypair is due for a rekey.
        """
        if not FIRST_TRANSPORT <= ptype <= LAST_TRANSPORT:
            raise ValueError(f"{ptype!r} is not a transport packet type")
        kp = self._current
        if kp is None or now >= kp.dead_at:
            self._touch(now)
            self._sweep(now)
            kp = self._current
            if kp is None:
                return self._stage(ptype, payloads, now)
        room = REJECT_AFTER_MESSAGES - kp.send_counter
        if len(payloads) > room:  # this keypair may never send past REJECT_AFTER_MESSAGES
            out = self._encrypt(kp, ptype, payloads[:room], now) if room > 0 else []
            return out + self._stage(ptype, payloads[room:], now)
        out = self._encrypt(kp, ptype, payloads, now)
        due = kp.send_counter >= REKEY_AFTER_MESSAGES or now >= kp.rekey_at
        if due and self._init is None and self._next is None:
            out += self._start_handshake(now)
        return out

    def receive(self, header: Header, datagram: bytes, now: float) -> Received:
        """Process one datagram addressed to this session (transport, HANDSHAKE_RESP/FINAL, COOKIE_REPLY,
        KEY_REPLY). Raises a RemoteProtocolError subclass for anything refused (the caller counts it and moves
        on, and moves no endpoint: only a returned ``Received`` with ``authenticated`` may do that).
        """
        ptype = header.ptype
        if FIRST_TRANSPORT <= ptype <= LAST_TRANSPORT:  # DATA / CONTROL / KEEPALIVE: the per-packet path
            kp = self._by_index.get(header.receiver)
            if kp is None:
                raise self._reject(UnknownReceiver, "unknown_receiver", f"no keypair has index {header.receiver}")
            if now >= kp.dead_at:
                raise self._reject(DecryptionFailed, "decryption_failed", "keypair expired")
            counter = header.counter
            if counter >= REJECT_AFTER_MESSAGES:
                raise self._reject(ReplayedPacket, "replayed", "counter past REJECT_AFTER_MESSAGES")
            replay = kp.replay
            if not replay.check(counter):
                raise self._reject(ReplayedPacket, "replayed", f"counter {counter} replayed or too old")
            try:
                payload = open_sealed(kp, datagram, counter)
            except CryptoError:
                raise self._reject(DecryptionFailed, "decryption_failed", "authentication tag mismatch") from None
            # Only an authentic packet may move the window (a forged huge counter must not wedge the peer).
            replay.update(counter)
            stats = self.stats
            stats["rx_packets"] += 1
            stats["rx_bytes"] += len(payload)
            self._last_heard = now
            self._silence_due = None
            if ptype is _KEEPALIVE:
                if payload:
                    raise self._reject(MalformedPacket, "malformed", "keepalive carries a payload")
            elif self._keepalive_due is None:  # a keepalive never asks for a keepalive (no ping-pong)
                self._keepalive_due = now + self._keepalive_after
            if kp is self._current and kp.heard:
                self._current_heard = now
                return Received(ptype, payload, [], True)
            return Received(ptype, payload, self._off_current(kp, ptype, counter, now), True)
        self._touch(now)
        if ptype is PacketType.HANDSHAKE_RESP:
            return self._receive_response(header, datagram, now)
        if ptype is PacketType.COOKIE_REPLY:
            return self._receive_cookie(header, datagram, now)
        if ptype is PacketType.HANDSHAKE_FINAL:
            return self._receive_final(header, datagram, now)
        if ptype is PacketType.KEY_REPLY:
            return self._receive_key_reply(header, datagram, now)
        raise self._reject(UnknownReceiver, "unknown_receiver", f"{ptype.name} belongs to the HandshakeResponder")

    def receive_batch(self, datagrams: list[bytes], now: float) -> BatchReceived:
        """:meth:`receive` for many datagrams at once, in order, refusals collected rather than raised.

        DATA under the current keypair (once the peer has used it) takes a fast path with the same checks as
        :meth:`receive` (header word, length, counter bound, replay window before and after the tag) and the
        same bookkeeping, done once for the batch; every other datagram goes through :meth:`receive`.
        """
        payloads: list[tuple[PacketType, bytes]] = []
        replies: list[bytes] = []
        errors: list[RemoteProtocolError] = []
        last = -1
        kp = self._current
        word = -1  # no switch-header word matches: everything takes the general path
        if kp is not None and kp.heard and now < kp.dead_at:
            word = VERSION_BITS | (int(_DATA) << 24) | kp.local_index
            replay = kp.replay
            open_one = opener(kp.recv_key, max(map(len, datagrams), default=0))
        opened = opened_bytes = 0
        unpack = _WORD_COUNTER.unpack_from
        for i, datagram in enumerate(datagrams):
            n = len(datagram)
            if _MIN_TRANSPORT <= n <= MAX_DATAGRAM_SIZE:
                got_word, counter = unpack(datagram, 4)
                if got_word == word and counter < REJECT_AFTER_MESSAGES:
                    if not replay.check(counter):
                        errors.append(self._reject(ReplayedPacket, "replayed", f"counter {counter} replayed or too old"))
                        continue
                    payload = open_one(datagram, counter)
                    if payload is None:
                        errors.append(self._reject(DecryptionFailed, "decryption_failed", "authentication tag mismatch"))
                        continue
                    replay.update(counter)
                    payloads.append((_DATA, payload))
                    opened += 1
                    opened_bytes += len(payload)
                    last = i
                    continue
            try:
                header = decode_header(datagram)
            except MalformedPacket as exc:  # counted here: no later step sees it
                errors.append(self._reject(MalformedPacket, "malformed", str(exc)))
                continue
            try:
                got = self.receive(header, datagram, now)
            except RemoteProtocolError as exc:
                errors.append(exc)
                continue
            if got.replies:
                replies += got.replies
            if got.authenticated:
                last = i
            if got.ptype is not None and got.ptype is not _KEEPALIVE:
                payloads.append((got.ptype, got.payload))
        if opened:
            stats = self.stats
            stats["rx_packets"] += opened
            stats["rx_bytes"] += opened_bytes
            self._last_heard = self._current_heard = now
            self._silence_due = None
            if self._keepalive_due is None:
                self._keepalive_due = now + self._keepalive_after
        return BatchReceived(payloads, replies, errors, last)

    def install(self, result: HandshakeResult, now: float) -> Received:
        """Take a handshake this node completed as responder: replies are a KEEPALIVE (key confirmation) and any
        staged packets; ``authenticated`` says whether it was accepted (False: refused, nothing changed but a
        KeyMismatch / KeyRefused event). Ownership of ``result.local_index`` passes to this session (released
        if refused)."""
        self._touch(now)
        self._indices.adopt(result.local_index)
        expected = self.expected_remote_key or self.remote_static
        if expected is not None and result.remote_static != expected:
            self._indices.release(result.local_index)
            self._key_mismatch(expected, result.remote_static)
            return Received(None, b"", [], False)
        if not self._key_allowed(result.remote_static):
            self._indices.release(result.local_index)
            return Received(None, b"", [], False)
        init = self._init
        if init is not None and result.remote_static < self._static_public:
            # Simultaneous open: the peer's handshake wins (smaller initiator key), ours would be discarded.
            self._init = None
            self._indices.release(init.local_index)
        self.remote_static = result.remote_static
        self.remote_payload = result.remote_payload
        kp = Keypair(
            result.local_index,
            result.remote_index,
            result.send_key,
            result.recv_key,
            False,
            result.remote_static,
            now,
            result.started_at,
        )
        return Received(None, b"", self._accept_keypair(kp, now, None), True)

    def tick(self, now: float) -> list[bytes]:
        """Run due timers: retransmissions, give-up, rekey, keepalive, silence, key and session expiry."""
        self._touch(now)
        if self._expired:
            return []
        out: list[bytes] = []
        self._sweep(now)
        init = self._init
        if init is not None:
            if now >= init.started + REKEY_ATTEMPT_TIME:  # the comparisons here are next_deadline()'s, exactly
                self._give_up(now)
            elif now >= init.next_at:
                init.attempts += 1
                init.next_at = now + retransmit_delay(init.attempts, self._rng)
                self.stats["handshake_retransmits"] += 1
                out.append(self._init_datagram(init, now))
        confirm = self._confirm
        if confirm is not None:
            if now >= confirm.started + REKEY_ATTEMPT_TIME:
                # The responder never proved it has these keys. An unconfirmed next keypair is useless; a current
                # one stays (it may be working one way) and the silence timer will rehandshake if it is not.
                self._confirm = None
                if confirm.keypair is self._next:
                    self._next = None
                    self._drop(confirm.keypair)
            elif now >= confirm.next_at:
                confirm.attempts += 1
                confirm.next_at = now + retransmit_delay(confirm.attempts, self._rng)
                self.stats["final_retransmits"] += 1
                out.append(confirm.datagram)
        kp = self._current
        if (
            kp is not None
            and self._init is None
            and self._next is None
            and (now >= kp.rekey_at or kp.send_counter >= REKEY_AFTER_MESSAGES)
        ):
            out += self._start_handshake(now)
        if self._silence_due is not None and now >= self._silence_due:
            # We sent but heard nothing back: the peer probably restarted and lost our keys.
            self._silence_due = None
            if self._init is None and self._next is None:
                out += self._start_handshake(now)
        if self._keepalive_due is not None and now >= self._keepalive_due:
            self._keepalive_due = None
            kp = self._current
            if kp is not None and kp.send_counter < REJECT_AFTER_MESSAGES:
                self.stats["keepalives_sent"] += 1
                out += self._encrypt(kp, _KEEPALIVE, [b""], now)
        if self._current is None and self._next is None and now >= self._quiet_baseline() + SESSION_EXPIRY:
            self._expire(now)
        return out

    def next_deadline(self) -> float | None:
        """Earliest time tick() has something to do (a time already past: it has work now), or None: nothing until a
        packet comes or one is sent. Whatever changes it (a send, a receive, a handshake started) happens in a call
        into this session, so a caller that asks again after each call never misses a deadline that moved earlier."""
        if self._expired:
            return None
        deadlines: list[float] = []
        init = self._init
        if init is not None:
            deadlines.append(min(init.next_at, init.started + REKEY_ATTEMPT_TIME))
        confirm = self._confirm
        if confirm is not None:
            deadlines.append(min(confirm.next_at, confirm.started + REKEY_ATTEMPT_TIME))
        deadlines.extend(kp.dead_at for kp in self._by_index.values())
        current = self._current
        if current is not None and init is None and self._next is None:
            if current.send_counter >= REKEY_AFTER_MESSAGES:
                deadlines.append(current.created)  # due already (send_batch starts it; tick() if that was blocked)
            elif current.rekey_at != math.inf:
                deadlines.append(current.rekey_at)
        if self._keepalive_due is not None:
            deadlines.append(self._keepalive_due)
        if self._silence_due is not None:
            deadlines.append(self._silence_due)
        if current is None and self._next is None and self._born is not None:
            deadlines.append(self._quiet_baseline() + SESSION_EXPIRY)
        return min(deadlines) if deadlines else None

    # --- handshake (initiator side) ------------------------------------------------------------------
    def _responder_key(self) -> bytes | None:
        return self.expected_remote_key or self.remote_static

    def _start_handshake(self, now: float) -> list[bytes]:
        self._revive(now)
        challenge = self._rng.randbytes(KEY_PROBE_CHALLENGE_SIZE)
        init = Initiation(self._static_private, self._indices.pick(), self._responder_key(), challenge, now)
        init.next_at = now + retransmit_delay(0, self._rng)
        self._init = init
        self.stats["handshakes_started"] += 1
        return [self._init_datagram(init, now)]

    def _restart_initiation(self, init: Initiation, forget_hint: bool = False) -> None:
        """Abort this Noise handshake but keep dialling: a fresh one goes out at the next retransmission."""
        self._indices.release(init.local_index)
        init.restart(self._indices.pick(), forget_hint)

    def _init_datagram(self, init: Initiation, now: float) -> bytes:
        cookie = self._cookie if now - self._cookie_at < COOKIE_SECRET_LIFETIME else None
        return init.datagram(cookie)

    def _give_up(self, now: float) -> None:
        init = self._init
        assert init is not None
        self._init = None
        self._indices.release(init.local_index)
        dropped = len(self._staged)
        self._staged.clear()
        self.stats["staged_dropped"] += dropped
        self.stats["dropped"] += dropped
        self.stats["handshakes_given_up"] += 1
        attempts = init.attempts + 1
        what = "key reply" if init.probing else "handshake response"
        reason = f"{self.peer_name}: no {what} after {attempts} attempts in {now - init.started:.1f} s"
        self._events.append(HandshakeGaveUp(self.peer_name, reason, attempts, dropped))

    def _in_flight(self, header: Header, what: str) -> Initiation:
        init = self._init
        if init is None or header.receiver != init.local_index:
            if header.receiver in self._by_index:
                raise self._reject(ReplayedPacket, "replayed", f"{what} for a completed handshake")
            raise self._reject(UnknownReceiver, "unknown_receiver", f"{what} for unknown index {header.receiver}")
        return init

    def _receive_key_reply(self, header: Header, datagram: bytes, now: float) -> Received:
        init = self._in_flight(header, "key reply")
        reply = self._decoded(decode_key_reply, datagram)
        if not init.learn_key(reply):
            raise self._reject(InvalidMac, "bad_key_replies", "key reply that does not answer our probe")
        self.stats["keys_discovered"] += 1
        init.next_at = now + retransmit_delay(init.attempts, self._rng)
        return Received(None, b"", [self._init_datagram(init, now)])

    def _receive_response(self, header: Header, datagram: bytes, now: float) -> Received:
        init = self._in_flight(header, "handshake response")
        resp = self._decoded(decode_handshake_resp, datagram)
        if not init.response_mac_ok(datagram):
            # Not from the node whose key we hold (or forged): refused before any Diffie-Hellman.
            raise self._reject(InvalidMac, "bad_mac1", "handshake response with an invalid mac1")
        try:
            payload_bytes = init.noise.read(resp.noise)
        except NoiseFailure as exc:
            # State restored: the genuine response can still complete this handshake.
            raise self._reject(DecryptionFailed, "decryption_failed", f"handshake response rejected ({exc})") from None
        remote = init.noise.remote_static()
        expected = self._responder_key() or init.responder_key
        if expected is not None and remote != expected:
            self._key_mismatch(expected, remote)
            self._restart_initiation(init, forget_hint=True)  # abort before message 3; the genuine peer may answer
            return Received(None, b"", [])
        if not self._key_allowed(remote):
            self._restart_initiation(init)
            return Received(None, b"", [])
        try:
            payload = decode_handshake_payload(payload_bytes)
        except MalformedPacket as exc:
            self._restart_initiation(init)
            raise self._reject(MalformedPacket, "malformed", f"handshake payload: {exc}") from None
        final = encode_handshake_final(resp.sender, init.noise.write(self._payload))
        send_key, recv_key = init.noise.transport_keys()
        self._init = None
        self.remote_static = remote
        self.remote_payload = payload
        kp = Keypair(init.local_index, resp.sender, send_key, recv_key, True, self._static_public, now, init.started)
        replies = [final]
        replies += self._accept_keypair(kp, now, final)
        return Received(None, b"", replies, True)

    def _receive_cookie(self, header: Header, datagram: bytes, now: float) -> Received:
        init = self._in_flight(header, "cookie reply")
        reply = self._decoded(decode_cookie_reply, datagram)
        cookie = init.open_cookie_reply(reply)
        if cookie is None:
            # Not sealed by the responder for our last INIT: forged, or answers another message. Nothing changes.
            raise self._reject(DecryptionFailed, "forged_cookie_replies", "cookie reply that does not open")
        self._cookie = cookie
        self._cookie_at = now
        self.stats["cookies_received"] += 1
        # Bound how fast cookie replies can make us resend (the responder's key is no secret: no reflection engine).
        if now < init.cookie_resend_at:
            return Received(None, b"", [])
        init.cookie_resend_at = now + HANDSHAKE_INITIAL_RETRANSMIT
        return Received(None, b"", [self._init_datagram(init, now)])

    def _key_allowed(self, remote: bytes) -> bool:
        """False (and a KeyRefused event) if ``allowed_keys`` is set and does not list ``remote``."""
        if self.allowed_keys is None or remote in self.allowed_keys:
            return True
        self.stats["keys_refused"] += 1
        message = f"{self.peer_name}: peer authenticated with key {remote.hex()[:16]}... which allowed_keys does not list"
        self._events.append(KeyRefused(self.peer_name, remote, message))
        return False

    def _receive_final(self, header: Header, datagram: bytes, now: float) -> Received:
        kp = self._by_index.get(header.receiver)
        if kp is None:
            raise self._reject(UnknownReceiver, "unknown_receiver", f"handshake final for index {header.receiver}")
        self._decoded(decode_handshake_final, datagram)
        if not kp.initiator and not kp.heard and now < kp.dead_at:
            # The initiator retransmits message 3 because our key confirmation was lost: confirm again.
            if kp in self._pending:
                return Received(None, b"", [self._confirmation(kp, now)])
            if kp is self._current:
                return Received(None, b"", self._encrypt(kp, _KEEPALIVE, [b""], now))
        raise self._reject(ReplayedPacket, "replayed", "handshake final for a confirmed keypair")

    # --- keypairs ----------------------------------------------------------------------------------
    #
    # Placement. A new keypair never replaces a usable current one before the peer has sent under it: the peer
    # may no longer hold it (its HANDSHAKE_FINAL or our answer was delayed past a newer handshake of its own).
    # Our own handshake waits as `next` (its FINAL retransmitted until then); the peer's waits as `pending`,
    # confirmed at once by a KEEPALIVE under it so that the peer can start using it.
    #
    # Arbitration. With simultaneous or overlapping handshakes both sides must end on the same keypair, but each
    # measures SIMULTANEOUS_OPEN_WINDOW on its own clock. So the side with the smaller static key (the
    # "leader", whose handshake the simultaneous-open rule prefers) decides, and announces every change of its
    # current keypair with a KEEPALIVE under it; the "follower" adopts the keypair the leader sends under.

    def _leads(self) -> bool:
        remote = self.remote_static
        return remote is not None and self._static_public < remote

    def _simultaneous(self, rival: Keypair | None, kp: Keypair, now: float) -> bool:
        """True if ``rival`` is a young keypair of the other role: both sides initiated at about the same time.

        Not if the peer had already sent under ``rival`` before ``kp``'s handshake began: then the peer started
        a new handshake while holding working keys, deliberately (it restarted and lost them, or rekeys).
        Keeping ``rival`` then would keep keys the peer may no longer have.
        """
        if rival is None or rival.initiator == kp.initiator or now - rival.created >= SIMULTANEOUS_OPEN_WINDOW:
            return False
        return rival.heard_at is None or rival.heard_at > kp.started

    def _accept_keypair(self, kp: Keypair, now: float, final: bytes | None) -> list[bytes]:
        """Place a freshly completed keypair (simultaneous-open rule, rekey rotation); datagrams to send."""
        self._revive(now)
        self._by_index[kp.local_index] = kp
        self._last_heard = now
        self._silence_due = None
        self.stats["handshakes_completed"] += 1
        self._sweep(now)
        current = self._current
        if current is None:
            # Nothing else to send with: use the new keys at once.
            self._current = kp
            self._current_heard = now
            if kp.initiator:
                assert final is not None
                self._confirm = _FinalRetransmit(kp, final, now, now + retransmit_delay(0, self._rng))
            self._report_new_current(kp)
            out = self._flush_staged(now)
            if not kp.initiator and not out:
                out = self._encrypt(kp, _KEEPALIVE, [b""], now)  # key confirmation for the initiator
            return out
        if self._simultaneous(self._next or current, kp, now):
            self.stats["simultaneous_opens"] += 1
            if kp.initiator and current.initiator_key < kp.initiator_key:
                # The peer's handshake wins (smaller initiator key): ours only decrypts, for the grace period.
                self._retire(kp, now)
                return []
        if kp.initiator:
            if self._next is not None:
                self._retire(self._next, now)
            self._next = kp
            assert final is not None
            self._confirm = _FinalRetransmit(kp, final, now, now + retransmit_delay(0, self._rng))
            return []
        # Like a half-open handshake: if the peer never sends under it, it is dropped.
        kp.dead_at = min(kp.dead_at, now + PENDING_HANDSHAKE_TIMEOUT)
        self._pending.append(kp)
        while len(self._pending) > MAX_PREVIOUS_KEYPAIRS:
            self._drop(self._pending.pop(0))
        return self._encrypt(kp, _KEEPALIVE, [b""], now)

    def _confirmation(self, kp: Keypair, now: float) -> bytes:
        """The KEEPALIVE at counter 0 that confirmed a pending keypair, byte for byte (the same message under the
        same nonce, so resending it reveals nothing): the peer tells a confirmation from use by counter 0."""
        if kp.send_counter != 1:  # never reuse a nonce for anything but the very same message
            return self._encrypt(kp, _KEEPALIVE, [b""], now)[0]
        return seal_confirmation(kp)

    def _report_new_current(self, kp: Keypair) -> None:
        if self._keyed:
            self.stats["rekeys"] += 1
            self._events.append(Rekeyed(self.peer_name, kp.initiator))
        else:
            self._keyed = True
            assert self.remote_static is not None
            self._events.append(Established(self.peer_name, self.remote_static, kp.initiator))

    def _off_current(self, kp: Keypair, ptype: PacketType, counter: int, now: float) -> list[bytes]:
        """An authentic packet under a keypair that is not current (or the first one under the current one)."""
        first = not kp.heard
        kp.heard = True
        if first:
            kp.heard_at = now
        confirm = self._confirm
        if confirm is not None and confirm.keypair is kp:
            self._confirm = None  # key confirmation: the responder has these keys
        current = self._current
        leads = self._leads()
        if kp is current:
            self._current_heard = now
            if first and leads and kp.initiator:
                # The follower may hold our handshake's keys pending (it had others): tell it we send under them.
                return self._encrypt(kp, _KEEPALIVE, [b""], now)
            return []
        if kp is self._next:
            # Our handshake, confirmed (never older than current: promoting a newer keypair retires an older next).
            # A leader announces the switch; a follower answers under the new keys, so that a leader holding them
            # pending switches as well.
            self._promote(kp, now)
            return self._flush_staged(now) or self._encrypt(kp, _KEEPALIVE, [b""], now)
        if leads:
            if kp in self._pending:
                older = current is not None and kp.created < current.created
                if older or (current is not None and current.initiator and self._simultaneous(current, kp, now)):
                    # Superseded (used only after a newer keypair became current), or a simultaneous open our
                    # own handshake wins (smaller initiator key).
                    self._pending.remove(kp)
                    self._retire(kp, now)
                else:
                    self._promote(kp, now)
                    return self._flush_staged(now) or self._encrypt(kp, _KEEPALIVE, [b""], now)
            # The follower sends under a keypair we do not send under: packets in flight, or it missed our
            # switch. Remind it which keypair is current, at a bounded rate.
            if self._current is not None and now >= self._nudge_at:
                self._nudge_at = now + HANDSHAKE_INITIAL_RETRANSMIT
                self.stats["nudges_sent"] += 1
                return self._encrypt(self._current, _KEEPALIVE, [b""], now)
            return []
        # Follower: adopt the keypair the leader sends under, if the packet is a KEEPALIVE (the leader's switch
        # signal or reminder) or the keypair is newer than ours (data alone under an older one is a straggler).
        # Under a keypair we initiated, the leader's first packet (counter 0) is only its key confirmation: it
        # holds those keys pending until we send under them, so that packet moves nothing.
        if current is None or (
            (ptype is _KEEPALIVE or kp.created > current.created) and (counter > 0 or not kp.initiator)
        ):
            self._promote(kp, now)
            return self._flush_staged(now)
        return []

    def _promote(self, kp: Keypair, now: float) -> None:
        """Make a live non-current keypair current; the old current (and an older next) are retired (grace)."""
        nxt = self._next
        if kp is nxt:
            self._next = None
        else:
            (self._pending if kp in self._pending else self._retired).remove(kp)
            kp.dead_at = kp.created + REJECT_AFTER_TIME  # current now: no pending/retirement deadline applies
            if nxt is not None and nxt.created <= kp.created:
                self._next = None  # our own older handshake is superseded: stop retransmitting its FINAL
                self._retire(nxt, now)
        old = self._current
        self._current = kp
        self._current_heard = now
        if old is not None:
            self._retire(old, now)
        self._report_new_current(kp)

    def _retire(self, kp: Keypair, now: float) -> None:
        """Make ``kp`` receive-only until PREVIOUS_KEYPAIR_GRACE from now (or its own expiry if sooner)."""
        kp.dead_at = min(kp.dead_at, now + PREVIOUS_KEYPAIR_GRACE)
        confirm = self._confirm
        if confirm is not None and confirm.keypair is kp:
            self._confirm = None
        retired = self._retired
        retired.append(kp)
        while len(retired) > MAX_PREVIOUS_KEYPAIRS:
            # Past the bound, drop a keypair nothing ever arrived under before one that carries traffic.
            victim = next((old for old in retired if not old.heard), retired[0])
            retired.remove(victim)
            self._drop(victim)

    def _drop(self, kp: Keypair) -> None:
        if self._by_index.pop(kp.local_index, None) is not None:
            self._indices.release(kp.local_index)
        confirm = self._confirm
        if confirm is not None and confirm.keypair is kp:
            self._confirm = None

    def _discard(self, kp: Keypair, now: float) -> None:
        """Take ``kp`` out of every role (its index is already gone), then let the usual rules fill the gap."""
        if self._current is kp:
            self._current = None
        if self._next is kp:
            self._next = None
        for held in (self._pending, self._retired):
            if kp in held:
                held.remove(kp)
        confirm = self._confirm
        if confirm is not None and confirm.keypair is kp:
            self._confirm = None
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop keypairs past their dead_at; an unconfirmed next keypair stands in for a dead current one."""
        current = self._current
        if current is not None and now >= current.dead_at:
            self._drop(current)
            self._current = None
        nxt = self._next
        if nxt is not None:
            if now >= nxt.dead_at:
                self._drop(nxt)
                self._next = None
            elif self._current is None:
                # Unconfirmed but the only keys left; its HANDSHAKE_FINAL keeps being retransmitted.
                self._next = None
                self._current = nxt
                self._current_heard = now
                self._report_new_current(nxt)
        for held in (self._retired, self._pending):
            for kp in [kp for kp in held if now >= kp.dead_at]:
                held.remove(kp)
                self._drop(kp)
        if self._current is None:
            self._keyed = False

    # --- transport ---------------------------------------------------------------------------------
    def _encrypt(self, kp: Keypair, ptype: PacketType, payloads: list[bytes], now: float) -> list[bytes]:
        """Seal ``payloads`` under ``kp`` (caller checked it is usable and has room for them)."""
        start = kp.send_counter
        out = seal(kp, ptype, payloads)
        counter = kp.send_counter
        stats = self.stats
        stats["tx_packets"] += counter - start
        stats["tx_bytes"] += sum(map(len, payloads))
        self._keepalive_due = None
        if ptype is not _KEEPALIVE and self._silence_due is None:
            self._silence_due = now + NEW_HANDSHAKE_AFTER_SILENCE
        return out

    def _stage(self, ptype: PacketType, payloads: list[bytes], now: float) -> list[bytes]:
        staged = self._staged
        for payload in payloads:
            if len(staged) >= MAX_STAGED_PACKETS:
                staged.popleft()
                self.stats["staged_dropped"] += 1
                self.stats["dropped"] += 1
            staged.append((ptype, payload))
        if self._init is None and self._next is None:
            return self._start_handshake(now)
        return []

    def _flush_staged(self, now: float) -> list[bytes]:
        kp = self._current
        if not self._staged or kp is None or now >= kp.dead_at:
            return []
        staged, self._staged = self._staged, deque()
        out: list[bytes] = []
        for ptype, payload in staged:
            if kp.send_counter >= REJECT_AFTER_MESSAGES:
                self._staged.append((ptype, payload))
                continue
            out += self._encrypt(kp, ptype, [payload], now)
        return out

    # --- housekeeping ------------------------------------------------------------------------------
    def _touch(self, now: float) -> None:
        if self._born is None:
            self._born = now
            self._quiet_since = now

    def _revive(self, now: float) -> None:
        if self._expired:
            self._expired = False
            self._quiet_since = now

    def _quiet_baseline(self) -> float:
        heard = self._last_heard
        return self._quiet_since if heard is None or heard < self._quiet_since else heard

    def _expire(self, now: float) -> None:
        idle = now - self._quiet_baseline()
        init = self._init
        if init is not None:
            self._init = None
            self._indices.release(init.local_index)
        for kp in list(self._by_index.values()):
            self._drop(kp)
        self._current = self._next = None
        self._retired = []
        self._pending = []
        self._confirm = None
        dropped = len(self._staged)
        self._staged.clear()
        self.stats["staged_dropped"] += dropped
        self.stats["dropped"] += dropped
        self._keepalive_due = self._silence_due = None
        self._keyed = False
        self._expired = True
        self._events.append(Expired(self.peer_name, idle))

    def _key_mismatch(self, expected: bytes, actual: bytes) -> None:
        self.stats["key_mismatches"] += 1
        message = (
            f"{self.peer_name}: peer authenticated with static key {actual.hex()[:16]}... "
            f"but {expected.hex()[:16]}... was expected; handshake aborted"
        )
        self._events.append(KeyMismatch(self.peer_name, expected, actual, message))

    def _decoded(self, decode: Callable[[bytes], _Body], datagram: bytes) -> _Body:
        """``decode(datagram)``, a MalformedPacket counted and re-raised with the peer's name."""
        try:
            return decode(datagram)
        except MalformedPacket as exc:
            raise self._reject(MalformedPacket, "malformed", str(exc)) from None

    def _reject(self, kind: type[RemoteProtocolError], stat: str, message: str) -> RemoteProtocolError:
        stats = self.stats
        stats[stat] += 1
        stats["dropped"] += 1
        return kind(f"{self.peer_name}: {message}")
