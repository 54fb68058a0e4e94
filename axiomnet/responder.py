"""The front door: answers HANDSHAKE_INIT and KEY_PROBE from senders that own no session yet, without I/O.

:class:`HandshakeResponder` runs WireGuard's checks in WireGuard's order (wireguard-go device/receive.go,
``RoutineHandshake``) before it spends any Diffie-Hellman: mac1 (the sender knows our public key), then, only
under load, mac2 (the sender receives at its address; else a sealed COOKIE_REPLY) and only then the per-source
rate limit. It holds the half-open handshakes (bounded, expiring), answers key probes when the node is
discoverable, refuses keys outside ``allowed_keys``, and turns a verified HANDSHAKE_FINAL into a
:class:`~axiomnet.session.HandshakeResult` that the caller installs into the peer's Session.

The source address ``addr`` is opaque here (a UDP endpoint today, an overlay address for end-to-end sessions):
it is only compared, hashed into cookies and bucketed (axiomnet/cookie.py).
"""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from axiomnet.constants import (
    COOKIE_LOAD_THRESHOLD,
    COOKIE_NONCE_SIZE,
    HANDSHAKE_INIT_SIZE,
    KEY_PROBE_BURST_PER_SOURCE,
    KEY_PROBE_RATE_PER_SOURCE,
    KEY_REPLY_BURST,
    KEY_REPLY_RATE,
    MAX_PENDING_HANDSHAKES,
    PENDING_HANDSHAKE_TIMEOUT,
    REFUSALS_BEFORE_LOAD,
    REFUSALS_FORGIVEN_PER_SECOND,
    REFUSED_SOURCE_HANDSHAKE_BURST,
    REFUSED_SOURCE_HANDSHAKE_RATE,
    RESP_RESEND_INTERVAL,
    UNDER_LOAD_AFTER_TIME,
)
from axiomnet.control import HandshakePayload, decode_handshake_payload
from axiomnet.cookie import (
    CookieChecker,
    SourceRateLimiter,
    TokenBucket,
    add_mac1,
    check_mac1,
    cookie_key,
    mac1_key,
    seal_cookie,
)
from axiomnet.errors import (
    DecryptionFailed,
    Ignored,
    InvalidMac,
    MalformedPacket,
    NotAllowed,
    RateLimited,
    RemoteProtocolError,
    ReplayedPacket,
    UnknownReceiver,
)
from axiomnet.indices import IndexCommand, LocalIndices, PooledRandom
from axiomnet.noise import NoiseFailure, NoiseHandshake
from axiomnet.session import HandshakeResult
from axiomnet.wire import (
    HEADER_SIZE,
    MAC_SIZE,
    NOISE_KEY_SIZE,
    NOISE_MSG1_MIN,
    NOISE_MSG2_MIN,
    Header,
    PacketType,
    decode_handshake_final,
    decode_handshake_init,
    decode_key_probe,
    encode_cookie_reply,
    encode_handshake_resp,
    encode_key_reply,
)


_Body = TypeVar("_Body")


class _Pending:
    """A half-open handshake: we answered HANDSHAKE_INIT and wait for HANDSHAKE_FINAL."""

    __slots__ = ("noise", "local_index", "initiator_index", "msg1", "deadline", "resp", "started", "answered")

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
        self.answered = started  # when resp was last sent


_RESPONDER_STATS = (
    "inits",
    "bad_mac1",
    "rate_limited",
    "cookie_replies",
    "responses_sent",
    "responses_resent",
    "responses_not_resent",
    "init_too_small",
    "completed",
    "not_allowed",
    "pending_evicted",
    "pending_expired",
    "index_collisions",
    "malformed",
    "decryption_failed",
    "replayed",
    "unknown_receiver",
    "key_probes",
    "key_replies",
    "key_probes_ignored",
    "key_probes_limited",
    "refusals",
    "cookie_replies_refused_source",
)


class HandshakeResponder:
    """The node's front door: answers HANDSHAKE_INIT and KEY_PROBE, completes on HANDSHAKE_FINAL; no I/O.

    Denial-of-service bounds (docs/PROTOCOL.md §3.5): mac1 before anything else; under load (COOKIE_LOAD_THRESHOLD
    half-open, and UNDER_LOAD_AFTER_TIME after) mac2 or a cookie reply, then a per-source token bucket; at most
    MAX_PENDING_HANDSHAKES half-open (oldest evicted), each dropped after PENDING_HANDSHAKE_TIMEOUT. A retransmitted
    INIT gets the stored response, no new state. ``rng`` picks receiver indices; ``secret_source`` gives the
    cookie secret and cookie-reply nonces. ``allowed_keys`` (None: anyone) is checked when message 3 reveals the
    initiator's key, before any result (and so any session) exists. Without ``discoverable`` key probes go
    unanswered.
    """

    def __init__(
        self,
        static_private: bytes,
        static_public: bytes,
        *,
        local_payload: HandshakePayload,
        rng: random.Random | None = None,
        secret_source: Callable[[int], bytes] = os.urandom,
        allowed_keys: frozenset[bytes] | None = None,
        discoverable: bool = True,
    ) -> None:
        if len(static_private) != NOISE_KEY_SIZE or len(static_public) != NOISE_KEY_SIZE:
            raise ValueError("static keys must be 32-byte X25519 keys")
        self._static_private = bytes(static_private)
        self._static_public = bytes(static_public)
        self._payload = local_payload.encode()
        # Our HANDSHAKE_RESP's size: an INIT smaller than this is not answered (it would draw more than it cost).
        self.resp_size = HEADER_SIZE + 4 + NOISE_MSG2_MIN + len(self._payload) + MAC_SIZE
        if self.resp_size > HANDSHAKE_INIT_SIZE:
            raise ValueError(f"a handshake payload of {len(self._payload)} bytes makes the HANDSHAKE_RESP "
                             f"{self.resp_size} bytes, larger than the {HANDSHAKE_INIT_SIZE}-byte INIT it answers")
        self._indices = LocalIndices(rng if rng is not None else PooledRandom())
        self._secret_source = secret_source
        self._mac1_key = mac1_key(self._static_public)
        self._cookie_key = cookie_key(self._static_public)
        self._cookies = CookieChecker(secret_source)
        self._limiter = SourceRateLimiter()
        self._probe_bucket = TokenBucket(KEY_REPLY_RATE, KEY_REPLY_BURST)
        self._probe_limiter = SourceRateLimiter(KEY_PROBE_RATE_PER_SOURCE, KEY_PROBE_BURST_PER_SOURCE)
        # Refused handshakes per source (a bucket each refusal takes from): an empty bucket puts that source
        # under load on its own (cookies, then its rate limit), whatever the node-wide load.
        self._refusals = SourceRateLimiter(REFUSALS_FORGIVEN_PER_SECOND, REFUSALS_BEFORE_LOAD)
        self._refused_limiter = SourceRateLimiter(REFUSED_SOURCE_HANDSHAKE_RATE, REFUSED_SOURCE_HANDSHAKE_BURST)
        self._under_load_until = -math.inf
        self.allowed_keys = allowed_keys
        self.discoverable = discoverable
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

    def index_commands(self) -> list[IndexCommand]:
        """Indices issued and retired since the last call, in order (axiomnet/indices.py)."""
        return self._indices.take_commands()

    def index_refused(self, index: int) -> None:
        """The dispatcher gave ``index`` to another owner: drop the half-open handshake built on it.

        Its HANDSHAKE_RESP was never sent (the actors send it only once the index is bound), so the initiator
        retransmits its INIT and gets a fresh half-open handshake under a fresh index.
        """
        entry = self._pending.get(index)
        if entry is None or not self._indices.forget(index):
            return
        self.stats["index_collisions"] += 1
        self._forget(index, entry, release=False)

    def under_load(self, now: float) -> bool:
        """True with COOKIE_LOAD_THRESHOLD handshakes half-open, and for UNDER_LOAD_AFTER_TIME after."""
        if len(self._pending) >= COOKIE_LOAD_THRESHOLD:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
            return True
        return now < self._under_load_until

    def refused(self, addr: Hashable, now: float) -> None:
        """A handshake from ``addr`` completed and was refused (admission, a key that does not own the address...):
        past REFUSALS_BEFORE_LOAD of them its source is under load (:meth:`source_under_load`)."""
        self.stats["refusals"] += 1
        self._refusals.allow(addr, now)

    def source_under_load(self, addr: Hashable, now: float) -> bool:
        """True while ``addr``'s source has used up its refusals: its INITs need a cookie and meet its rate limit."""
        return self._refusals.level(addr, now) < 1.0

    def penalty_until(self, addr: Hashable, now: float) -> float:
        """After a RateLimited INIT from ``addr`` (which proved its address with mac2): until when every INIT of
        its source would be refused again, the time its buckets next hold a token (``now`` if they do)."""
        until = self._limiter.ready_at(addr, now)
        if self.source_under_load(addr, now):
            until = max(until, self._refused_limiter.ready_at(addr, now))
        return until

    def next_deadline(self) -> float | None:
        """When the oldest half-open handshake expires (the next time :meth:`expire` has work), or None."""
        for entry in self._pending.values():  # creation order is deadline order: the first one
            return entry.deadline
        return None

    def expire(self, now: float) -> None:
        """Drop half-open handshakes older than PENDING_HANDSHAKE_TIMEOUT and release their indices."""
        pending = self._pending
        self.under_load(now)  # a load that ends here still counts for UNDER_LOAD_AFTER_TIME
        while pending:
            index, entry = next(iter(pending.items()))
            if entry.deadline > now:
                break
            self._forget(index, entry)
            self.stats["pending_expired"] += 1

    def receive(
        self, header: Header, datagram: bytes, addr: Hashable, now: float
    ) -> tuple[list[bytes], HandshakeResult | None]:
        """Handle HANDSHAKE_INIT or KEY_PROBE (receiver 0), or HANDSHAKE_FINAL for a pending index.

        Returns (datagrams to send back to ``addr``, a completed HandshakeResult or None); raises the specific
        RemoteProtocolError for anything refused, having kept no state for it. Ownership of the result's
        ``local_index`` passes to the caller (see :meth:`Session.install`).
        """
        self.expire(now)
        ptype = header.ptype
        if ptype is PacketType.HANDSHAKE_INIT:
            return self._on_init(datagram, addr, now)
        if ptype is PacketType.HANDSHAKE_FINAL:
            return self._on_final(header, datagram, addr, now)
        if ptype is PacketType.KEY_PROBE:
            return self._on_probe(datagram, addr, now)
        raise self._reject(UnknownReceiver, "unknown_receiver", addr, f"{ptype.name} for index {header.receiver}")

    # --- HANDSHAKE_INIT ------------------------------------------------------------------------------
    def _on_init(self, datagram: bytes, addr: Hashable, now: float) -> tuple[list[bytes], None]:
        self.stats["inits"] += 1
        init = self._decoded(decode_handshake_init, datagram, addr)
        if len(init.noise) != NOISE_MSG1_MIN:
            raise self._reject(MalformedPacket, "malformed", addr, "handshake message 1 must carry no payload")
        if len(datagram) < self.resp_size:
            # Unpadded: our answer would be larger than the datagram, from a source nobody has verified.
            raise self._reject(MalformedPacket, "init_too_small", addr,
                               f"handshake initiation of {len(datagram)} bytes, smaller than our {self.resp_size}-byte answer")
        if not check_mac1(datagram, self._mac1_key, 2):
            # A scan, or a sender that does not know our key: no answer, no Diffie-Hellman.
            raise self._reject(InvalidMac, "bad_mac1", addr, "handshake initiation with an invalid mac1")
        refused_source = self.source_under_load(addr, now)
        if refused_source or self.under_load(now):
            if not self._cookies.mac2_valid(datagram, addr, now):
                # Prove you receive at this address first: no state, one hash, a reply smaller than the INIT,
                # sealed and bound to this INIT's mac1.
                self.stats["cookie_replies"] += 1
                if not self.under_load(now):
                    self.stats["cookie_replies_refused_source"] += 1
                nonce = self._secret_source(COOKIE_NONCE_SIZE)
                sealed = seal_cookie(self._cookie_key, nonce, self._cookies.make(addr, now), init.mac1)
                return [encode_cookie_reply(init.sender, nonce, sealed)], None
            # After the cookie check: only a source that proved its address can drain its own bucket.
            if not self._limiter.allow(addr, now):
                raise self._reject(RateLimited, "rate_limited", addr, "handshake initiations over the per-source rate")
            if refused_source and not self._refused_limiter.allow(addr, now):
                raise self._reject(RateLimited, "rate_limited", addr, "handshake initiations from a refused source")
        known = self._by_msg1.get(init.noise)
        if known is not None:
            entry = self._pending[known]
            if entry.initiator_index != init.sender:
                raise self._reject(ReplayedPacket, "replayed", addr, "handshake message 1 replayed with another index")
            if now - entry.answered < RESP_RESEND_INTERVAL:
                # A burst of copies (a captured INIT replayed) draws one answer, not one per copy.
                raise self._reject(Ignored, "responses_not_resent", addr, "handshake initiation answered just now")
            entry.answered = now
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
        index = self._indices.pick()
        resp = add_mac1(encode_handshake_resp(init.sender, index, msg2), self._mac1_key)
        self._pending[index] = _Pending(
            noise, index, init.sender, init.noise, now + PENDING_HANDSHAKE_TIMEOUT, resp, now
        )
        self._by_msg1[init.noise] = index
        self.stats["responses_sent"] += 1
        return [resp], None

    # --- HANDSHAKE_FINAL -----------------------------------------------------------------------------
    def _on_final(
        self, header: Header, datagram: bytes, addr: Hashable, now: float
    ) -> tuple[list[bytes], HandshakeResult]:
        entry = self._pending.get(header.receiver)
        if entry is None:
            raise self._reject(UnknownReceiver, "unknown_receiver", addr, f"no pending index {header.receiver}")
        msg3 = self._decoded(decode_handshake_final, datagram, addr)
        try:
            payload_bytes = entry.noise.read(msg3)
        except NoiseFailure as exc:
            # State restored and the entry kept: a forged FINAL cannot cancel the genuine one.
            raise self._reject(DecryptionFailed, "decryption_failed", addr, f"final rejected ({exc})") from None
        remote = entry.noise.remote_static()
        if self.allowed_keys is not None and remote not in self.allowed_keys:
            self._forget(entry.local_index, entry)
            self.refused(addr, now)
            raise self._reject(NotAllowed, "not_allowed", addr, f"key {remote.hex()[:16]}... is not in allowed_keys")
        try:
            payload = decode_handshake_payload(payload_bytes)
        except MalformedPacket as exc:
            self._forget(entry.local_index, entry)
            raise self._reject(MalformedPacket, "malformed", addr, f"handshake payload: {exc}") from None
        self._forget(entry.local_index, entry, release=False)
        self._indices.hand_over(entry.local_index)
        send_key, recv_key = entry.noise.transport_keys()
        self.stats["completed"] += 1
        result = HandshakeResult(
            remote_static=remote,
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

    # --- KEY_PROBE -----------------------------------------------------------------------------------
    def _on_probe(self, datagram: bytes, addr: Hashable, now: float) -> tuple[list[bytes], None]:
        self.stats["key_probes"] += 1
        probe = self._decoded(decode_key_probe, datagram, addr)
        if not self.discoverable:
            raise self._reject(Ignored, "key_probes_ignored", addr, "key probe: this node is not discoverable")
        bucket = self._probe_bucket
        # Per-source limits only while the node-wide bucket runs low: a spoofer cannot starve a victim's probes.
        if bucket.level(now) < bucket.burst / 2 and not self._probe_limiter.allow(addr, now):
            raise self._reject(Ignored, "key_probes_limited", addr, "key probes over the per-source rate")
        if not bucket.take(now):
            raise self._reject(Ignored, "key_probes_limited", addr, "key probes over the node-wide rate")
        self.stats["key_replies"] += 1
        return [encode_key_reply(probe.sender, self._static_public, probe.challenge)], None

    # --- helpers -------------------------------------------------------------------------------------
    def _forget(self, index: int, entry: _Pending, release: bool = True) -> None:
        del self._pending[index]
        if self._by_msg1.get(entry.msg1) == index:
            del self._by_msg1[entry.msg1]
        if release:
            self._indices.release(index)

    def _decoded(self, decode: Callable[[bytes], _Body], datagram: bytes, addr: Hashable) -> _Body:
        """``decode(datagram)``, a MalformedPacket counted and re-raised with the sender's address."""
        try:
            return decode(datagram)
        except MalformedPacket as exc:
            raise self._reject(MalformedPacket, "malformed", addr, str(exc)) from None

    def _reject(
        self, kind: type[RemoteProtocolError], stat: str, addr: Hashable, message: str
    ) -> RemoteProtocolError:
        self.stats[stat] += 1
        return kind(f"{_show(addr)}: {message}")


def _show(addr: Hashable) -> str:
    if isinstance(addr, tuple) and len(addr) == 2:
        return f"{addr[0]}:{addr[1]}"
    if isinstance(addr, bytes):
        return addr.hex()
    return str(addr)
