"""The front door: answers HANDSHAKE_INIT from senders that own no session yet, without I/O.

:class:`HandshakeResponder` holds the half-open handshakes (bounded, expiring), the per-source rate limiter
and the cookie checker consulted before any Diffie-Hellman is spent, and turns a verified HANDSHAKE_FINAL into
a :class:`~axiomnet.session.HandshakeResult` that the caller installs into the peer's Session.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import Callable

from axiomnet.constants import (
    COOKIE_LOAD_THRESHOLD,
    MAX_PENDING_HANDSHAKES,
    PENDING_HANDSHAKE_TIMEOUT,
)
from axiomnet.control import HandshakePayload, decode_handshake_payload
from axiomnet.cookie import CookieChecker, SourceRateLimiter
from axiomnet.errors import (
    DecryptionFailed,
    MalformedPacket,
    RateLimited,
    RemoteProtocolError,
    ReplayedPacket,
    UnknownReceiver,
)
from axiomnet.noise import NoiseFailure, NoiseHandshake
from axiomnet.session import HandshakeResult
from axiomnet.wire import (
    NOISE_KEY_SIZE,
    NOISE_MSG1_MIN,
    Header,
    PacketType,
    decode_handshake_final,
    decode_handshake_init,
    encode_cookie_reply,
    encode_handshake_resp,
)

class _Pending:
    """A half-open handshake: we answered HANDSHAKE_INIT and wait for HANDSHAKE_FINAL."""

    __slots__ = ("noise", "local_index", "initiator_index", "msg1", "deadline", "resp", "started")

    def __init__(
        self,
        noise: NoiseHandshake,
        local_index: int,
        initiator_index: int,
        msg1: bytes,
        deadline: float,
        resp: bytes,
        started: float,
    ) -> None:
        self.noise = noise
        self.local_index = local_index
        self.initiator_index = initiator_index
        self.msg1 = msg1
        self.deadline = deadline
        self.resp = resp
        self.started = started


_RESPONDER_STATS = (
    "inits",
    "rate_limited",
    "cookie_replies",
    "responses_sent",
    "responses_resent",
    "completed",
    "pending_evicted",
    "pending_expired",
    "malformed",
    "decryption_failed",
    "replayed",
    "unknown_receiver",
)


class HandshakeResponder:
    """The node's front door: answers HANDSHAKE_INIT from anyone, completes on HANDSHAKE_FINAL; no I/O.

    Denial-of-service bounds: a per-source token bucket before any Diffie-Hellman, cookies (no state) once
    COOKIE_LOAD_THRESHOLD handshakes are half-open, at most MAX_PENDING_HANDSHAKES half-open (oldest evicted),
    each dropped after PENDING_HANDSHAKE_TIMEOUT. A retransmitted INIT gets the stored response, no new state.
    ``rng`` is accepted for interface symmetry with Session; the responder has no random timing to draw.
    """

    def __init__(
        self,
        static_private: bytes,
        static_public: bytes,
        *,
        allocate_index: Callable[[], int],
        release_index: Callable[[int], None],
        local_payload: HandshakePayload,
        rng: random.Random | None = None,
        secret_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(static_private) != NOISE_KEY_SIZE or len(static_public) != NOISE_KEY_SIZE:
            raise ValueError("static keys must be 32-byte X25519 keys")
        self._static_private = bytes(static_private)
        self._static_public = bytes(static_public)
        self._allocate_index = allocate_index
        self._release_index = release_index
        self._payload = local_payload.encode()
        self._rng = rng
        self._cookies = CookieChecker(secret_source)
        self._limiter = SourceRateLimiter()
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # creation order == deadline order
        self._by_msg1: dict[bytes, int] = {}  # Noise message 1 -> pending index (retransmit/replay dedup)
        self.stats: dict[str, int] = dict.fromkeys(_RESPONDER_STATS, 0)

    @property
    def pending_count(self) -> int:
        """Half-open handshakes held right now."""
        return len(self._pending)

    def pending_indices(self) -> set[int]:
        """Receiver indices owned by half-open handshakes (for dispatch)."""
        return set(self._pending)

    def expire(self, now: float) -> None:
        """Drop half-open handshakes older than PENDING_HANDSHAKE_TIMEOUT and release their indices."""
        pending = self._pending
        while pending:
            index, entry = next(iter(pending.items()))
            if entry.deadline > now:
                break
            self._forget(index, entry)
            self.stats["pending_expired"] += 1

    def receive(
        self, header: Header, datagram: bytes, addr: tuple[str, int], now: float
    ) -> tuple[list[bytes], HandshakeResult | None]:
        """Handle HANDSHAKE_INIT (receiver 0) or HANDSHAKE_FINAL for a pending index.

        Returns (datagrams to send back to ``addr``, a completed HandshakeResult or None); raises the specific
        RemoteProtocolError for anything refused, having kept no state for it.
        """
        self.expire(now)
        ptype = header.ptype
        if ptype is PacketType.HANDSHAKE_INIT:
            return self._on_init(datagram, addr, now)
        if ptype is PacketType.HANDSHAKE_FINAL:
            return self._on_final(header, datagram, addr, now)
        raise self._reject(UnknownReceiver, "unknown_receiver", addr, f"{ptype.name} for index {header.receiver}")

    def _on_init(self, datagram: bytes, addr: tuple[str, int], now: float) -> tuple[list[bytes], None]:
        self.stats["inits"] += 1
        try:
            init = decode_handshake_init(datagram)
        except MalformedPacket as exc:
            raise self._reject(MalformedPacket, "malformed", addr, str(exc)) from None
        if len(init.noise) != NOISE_MSG1_MIN:
            raise self._reject(MalformedPacket, "malformed", addr, "handshake message 1 must carry no payload")
        if not self._limiter.allow(addr[0], now):
            raise self._reject(RateLimited, "rate_limited", addr, "handshake initiations over the per-source rate")
        if len(self._pending) >= COOKIE_LOAD_THRESHOLD and not self._cookies.is_valid(init.cookie, addr, now):
            # Under load: prove you receive at this address first. No state, one hash, a reply no bigger than the INIT.
            self.stats["cookie_replies"] += 1
            return [encode_cookie_reply(init.sender, self._cookies.make(addr, now))], None
        known = self._by_msg1.get(init.noise)
        if known is not None:
            entry = self._pending[known]
            if entry.initiator_index != init.sender:
                raise self._reject(ReplayedPacket, "replayed", addr, "handshake message 1 replayed with another index")
            self.stats["responses_resent"] += 1
            return [entry.resp], None
        noise = NoiseHandshake(self._static_private, initiator=False)
        try:
            noise.read(init.noise)
            msg2 = noise.write(self._payload)
        except NoiseFailure as exc:
            raise self._reject(MalformedPacket, "malformed", addr, f"unusable ephemeral key ({exc})") from None
        while len(self._pending) >= MAX_PENDING_HANDSHAKES:
            index, oldest = next(iter(self._pending.items()))
            self._forget(index, oldest)
            self.stats["pending_evicted"] += 1
        index = self._allocate_index()
        resp = encode_handshake_resp(init.sender, index, msg2)
        self._pending[index] = _Pending(
            noise, index, init.sender, init.noise, now + PENDING_HANDSHAKE_TIMEOUT, resp, now
        )
        self._by_msg1[init.noise] = index
        self.stats["responses_sent"] += 1
        return [resp], None

    def _on_final(
        self, header: Header, datagram: bytes, addr: tuple[str, int], now: float
    ) -> tuple[list[bytes], HandshakeResult]:
        entry = self._pending.get(header.receiver)
        if entry is None:
            raise self._reject(UnknownReceiver, "unknown_receiver", addr, f"no pending index {header.receiver}")
        try:
            msg3 = decode_handshake_final(datagram)
        except MalformedPacket as exc:
            raise self._reject(MalformedPacket, "malformed", addr, str(exc)) from None
        try:
            payload_bytes = entry.noise.read(msg3)
        except NoiseFailure as exc:
            # State restored and the entry kept: a forged FINAL cannot cancel the genuine one.
            raise self._reject(DecryptionFailed, "decryption_failed", addr, f"final rejected ({exc})") from None
        self._forget(entry.local_index, entry, release=False)
        try:
            payload = decode_handshake_payload(payload_bytes)
        except MalformedPacket as exc:
            self._release_index(entry.local_index)
            raise self._reject(MalformedPacket, "malformed", addr, f"handshake payload: {exc}") from None
        send_key, recv_key = entry.noise.transport_keys()
        self.stats["completed"] += 1
        result = HandshakeResult(
            remote_static=entry.noise.remote_static(),
            remote_payload=payload,
            local_index=entry.local_index,
            remote_index=entry.initiator_index,
            send_key=send_key,
            recv_key=recv_key,
            initiator=False,
            completed_at=now,
            started_at=entry.started,
        )
        return [], result

    def _forget(self, index: int, entry: _Pending, release: bool = True) -> None:
        del self._pending[index]
        if self._by_msg1.get(entry.msg1) == index:
            del self._by_msg1[entry.msg1]
        if release:
            self._release_index(index)

    def _reject(
        self, kind: type[RemoteProtocolError], stat: str, addr: tuple[str, int], message: str
    ) -> RemoteProtocolError:
        self.stats[stat] += 1
        return kind(f"{addr[0]}:{addr[1]}: {message}")
