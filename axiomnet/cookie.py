"""The front door's cheap checks, as WireGuard's (wireguard-go device/cookie.go): mac1, mac2, cookies, rate limits.

Everything here costs a hash or two and no Diffie-Hellman, and keeps no state per attacker beyond bounded LRU
tables; :class:`axiomnet.responder.HandshakeResponder` runs these before it spends any X25519 operation, and
:class:`axiomnet.session.Session` runs the initiator's half (adding macs, opening cookie replies).

* **mac1** = ``BLAKE2s-128(key = BLAKE2s-256("mac1----" || receiver's static public key), message up to mac1)``:
  only a sender that knows the receiver's public key can produce it, so a scan or a probe from someone who does
  not know our key gets no reply and costs us no DH.
* **cookie** = ``BLAKE2s-128(key = rotating secret, source address)``: only a sender that receives datagrams at
  that address can learn it. **mac2** = ``BLAKE2s-128(key = cookie, message up to mac2)``, demanded only under load.
* **COOKIE_REPLY** carries the cookie sealed with XChaCha20-Poly1305 under
  ``BLAKE2s-256("cookie--" || responder's static public key)``, a random 24-byte nonce, and the mac1 of the
  message it answers as associated data: the cookie is bound to that message, and a reply forged by someone
  who did not see the message (or does not know the responder's key) does not open.

Addresses are opaque to the core: a ``(host, port)`` tuple is a UDP endpoint; an overlay address (``bytes``)
or any other hashable value is keyed by itself (see :func:`address_bytes` and :func:`source_key`).
"""

from __future__ import annotations

import hashlib
import functools
import hmac
import ipaddress
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as _xaead_decrypt
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as _xaead_encrypt
from nacl.exceptions import CryptoError

from axiomnet.constants import (
    COOKIE_SECRET_LIFETIME,
    COOKIE_SIZE,
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKE_RATE_PER_SOURCE,
    MAC_SIZE,
    MAX_RATE_LIMITED_SOURCES,
)

COOKIE_SECRET_SIZE = 32  # BLAKE2s key length
LABEL_MAC1 = b"mac1----"  # wireguard-go WGLabelMAC1
LABEL_COOKIE = b"cookie--"  # wireguard-go WGLabelCookie
NO_MAC = bytes(MAC_SIZE)  # a mac2 field when the sender holds no cookie


# --- keys and macs -----------------------------------------------------------------------------------
def mac1_key(static_public: bytes) -> bytes:
    """The mac1 key of the node whose static public key is ``static_public``: BLAKE2s-256("mac1----" || key)."""
    return hashlib.blake2s(LABEL_MAC1 + static_public).digest()


def cookie_key(static_public: bytes) -> bytes:
    """The COOKIE_REPLY sealing key of that node: BLAKE2s-256("cookie--" || key)."""
    return hashlib.blake2s(LABEL_COOKIE + static_public).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest (WireGuard's MAC)."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_SIZE).digest()


def add_macs(message: bytes, key1: bytes, cookie: bytes | None) -> tuple[bytes, bytes]:
    """Fill the two trailing mac fields of ``message`` (their bytes are ignored): mac1 under ``key1``, mac2 under
    ``cookie`` (zeros without one). Returns (datagram, mac1); the initiator keeps mac1 to open a cookie reply."""
    smac1 = len(message) - 2 * MAC_SIZE
    head = message[:smac1]
    mac1 = mac(key1, head)
    mac2 = mac(cookie, head + mac1) if cookie is not None else NO_MAC
    return head + mac1 + mac2, mac1


def add_mac1(message: bytes, key1: bytes) -> bytes:
    """Fill the one trailing mac field of ``message`` (a HANDSHAKE_RESP) with mac1 under ``key1``."""
    head = message[:-MAC_SIZE]
    return head + mac(key1, head)


def check_mac1(datagram: bytes, key1: bytes, trailing_macs: int) -> bool:
    """True if the mac1 of ``datagram`` (followed by ``trailing_macs - 1`` more mac fields) verifies under ``key1``."""
    smac1 = len(datagram) - trailing_macs * MAC_SIZE
    if smac1 < 0:
        return False
    return hmac.compare_digest(mac(key1, datagram[:smac1]), datagram[smac1 : smac1 + MAC_SIZE])


def seal_cookie(key: bytes, nonce: bytes, cookie: bytes, mac1: bytes) -> bytes:
    """The sealed cookie of a COOKIE_REPLY (cookie + 16-byte tag), bound to the mac1 of the message answered."""
    return bytes(_xaead_encrypt(cookie, mac1, nonce, key))


def open_cookie(key: bytes, nonce: bytes, sealed: bytes, mac1: bytes) -> bytes | None:
    """The cookie inside a COOKIE_REPLY, or None if it does not open (forged, or answers another message)."""
    try:
        cookie = bytes(_xaead_decrypt(sealed, mac1, nonce, key))
    except CryptoError:
        return None
    return cookie if len(cookie) == COOKIE_SIZE else None


# --- addresses -----------------------------------------------------------------------------------------
def address_bytes(addr: Hashable) -> bytes:
    """The bytes a cookie is computed over: ``"<ip>|<port>"`` for a UDP endpoint, the bytes themselves for an
    overlay address, ``repr`` otherwise (cookies are only ever checked by the node that minted them)."""
    if isinstance(addr, tuple) and len(addr) == 2:
        return f"{addr[0]}|{addr[1]}".encode()
    if isinstance(addr, bytes):
        return addr
    return repr(addr).encode()


@functools.lru_cache(maxsize=4096)
def source_key(addr: Hashable) -> bytes:
    """Rate-limit and admission bucket of a source: for a UDP endpoint ``(host, port)`` or a bare host string,
    the IPv4 address or the /64 of an IPv6 address; an overlay address (``bytes``) or anything else is itself.

    An IPv6 host usually controls a whole /64, so per-address buckets would be free to multiply. IPv4-mapped
    IPv6 addresses (a dual-stack socket reports IPv4 peers that way) are keyed as the IPv4 address they carry.
    """
    if isinstance(addr, bytes):
        return addr
    host = addr[0] if isinstance(addr, tuple) and len(addr) == 2 else addr
    if not isinstance(host, str):
        return repr(addr).encode()
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host.encode()  # not an IP literal (test transports): the text itself is the key
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped.packed
        return address.packed[:8]
    return address.packed


# --- cookies ---------------------------------------------------------------------------------------------
class CookieChecker:
    """Mints address cookies under a rotating secret and checks mac2 with them (current + previous secret)."""

    __slots__ = ("_secret_source", "_current", "_previous", "_rotated_at")

    def __init__(self, secret_source: Callable[[int], bytes] = os.urandom) -> None:
        self._secret_source = secret_source
        self._current: bytes | None = None
        self._previous: bytes | None = None
        self._rotated_at = 0.0

    def _rotate_if_due(self, now: float) -> None:
        if self._current is None:
            self._current = self._secret_source(COOKIE_SECRET_SIZE)
            self._rotated_at = now
            return
        age = now - self._rotated_at
        if age < COOKIE_SECRET_LIFETIME:
            return
        # After two lifetimes without traffic the old "current" is itself past its validity: forget it too.
        self._previous = self._current if age < 2 * COOKIE_SECRET_LIFETIME else None
        self._current = self._secret_source(COOKIE_SECRET_SIZE)
        self._rotated_at = now

    @staticmethod
    def _cookie(secret: bytes, addr: Hashable) -> bytes:
        return hashlib.blake2s(address_bytes(addr), key=secret, digest_size=COOKIE_SIZE).digest()

    def _valid_cookies(self, addr: Hashable, now: float) -> list[bytes]:
        self._rotate_if_due(now)
        assert self._current is not None  # set by _rotate_if_due
        cookies = [self._cookie(self._current, addr)]
        if self._previous is not None:
            cookies.append(self._cookie(self._previous, addr))
        return cookies

    def make(self, addr: Hashable, now: float) -> bytes:
        """The cookie a sender at ``addr`` must use for mac2."""
        return self._valid_cookies(addr, now)[0]

    def is_valid(self, cookie: bytes, addr: Hashable, now: float) -> bool:
        """True if ``cookie`` was minted for ``addr`` under the current or the previous secret."""
        return any(hmac.compare_digest(cookie, valid) for valid in self._valid_cookies(addr, now))

    def mac2_valid(self, datagram: bytes, addr: Hashable, now: float) -> bool:
        """True if the trailing mac2 of ``datagram`` verifies under a cookie minted for ``addr``."""
        smac2 = len(datagram) - MAC_SIZE
        head, mac2 = datagram[:smac2], datagram[smac2:]
        if hmac.compare_digest(mac2, NO_MAC):
            return False
        return any(hmac.compare_digest(mac(cookie, head), mac2) for cookie in self._valid_cookies(addr, now))


# --- rate limits -----------------------------------------------------------------------------------------
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full. A clock that steps back refills nothing."""

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = -math.inf

    def level(self, now: float) -> float:
        """Tokens available at ``now``."""
        if now > self._at:
            if self._at != -math.inf:
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        return self._tokens

    def ready_at(self, now: float) -> float:
        """When the bucket next holds a whole token (``now`` if it does)."""
        missing = 1.0 - self.level(now)
        return now if missing <= 0.0 else now + missing / self.rate

    def take(self, now: float) -> bool:
        """Take one token; False (nothing taken) if fewer than one is available."""
        if self.level(now) < 1.0:
            return False
        self._tokens -= 1.0
        return True


class SourceRateLimiter:
    """Token bucket per source (:func:`source_key`), LRU-bounded (default: HANDSHAKE_RATE_PER_SOURCE per second,
    depth HANDSHAKE_BURST_PER_SOURCE, MAX_RATE_LIMITED_SOURCES buckets).

    Forgetting the least recently used bucket only ever gives a forgotten source a fresh (full) bucket.
    """

    __slots__ = ("_buckets", "_rate", "_burst", "_max_sources")

    def __init__(
        self,
        rate: float = HANDSHAKE_RATE_PER_SOURCE,
        burst: float = HANDSHAKE_BURST_PER_SOURCE,
        max_sources: int = MAX_RATE_LIMITED_SOURCES,
    ) -> None:
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._rate = rate
        self._burst = burst
        self._max_sources = max_sources

    def __len__(self) -> int:
        return len(self._buckets)

    def level(self, addr: Hashable, now: float) -> float:
        """Tokens in the bucket of ``addr``'s source at ``now`` (a full bucket for a source never seen)."""
        bucket = self._buckets.get(source_key(addr))
        return self._burst if bucket is None else bucket.level(now)

    def ready_at(self, addr: Hashable, now: float) -> float:
        """When the bucket of ``addr``'s source next holds a whole token (``now`` for a source never seen)."""
        bucket = self._buckets.get(source_key(addr))
        return now if bucket is None else bucket.ready_at(now)

    def allow(self, addr: Hashable, now: float) -> bool:
        """Take one token from the bucket of ``addr``'s source; False if it is empty (the request is dropped)."""
        key = source_key(addr)
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max_sources:
                buckets.popitem(last=False)
            bucket = buckets[key] = TokenBucket(self._rate, self._burst)
        else:
            buckets.move_to_end(key)
        return bucket.take(now)


# --- the penalty box ---------------------------------------------------------------------------------------
# A source whose HANDSHAKE_INITs met its rate limit after proving its address (mac2 under a cookie) would only be
# refused again until its bucket holds a token: the socket's reader drops its INITs until then, before they cost a
# message to the peer manager, a mac1, a cookie and a mac2 each (docs/SECURITY.md, the fresh-key flood). Only such
# a source is boxed, so a spoofer cannot box its victim; only INITs are dropped, so its sessions run on.
PENALTY_BOX_MAX_SOURCES = 1024
_INIT_TYPE = 1  # PacketType.HANDSHAKE_INIT (wire.py), the type nibble of byte 4


def penalised(box: dict[bytes, float], datagram: bytes, addr: Hashable, now: float) -> bool:
    """True for a HANDSHAKE_INIT from a source ``box`` holds until after ``now``: drop it, counted."""
    return len(datagram) > 4 and datagram[4] & 0x0F == _INIT_TYPE and box.get(source_key(addr), 0.0) > now


def boxed(box: dict[bytes, float], source: bytes, until: float, now: float,
          bound: int = PENALTY_BOX_MAX_SOURCES) -> dict[bytes, float]:
    """A new box (the reader keeps reading the old one): ``box`` less its expired entries, ``source`` held until
    ``until``; past ``bound`` sources the ones released soonest go first."""
    new = {key: at for key, at in box.items() if at > now}
    new[source] = max(until, new.get(source, 0.0))
    if len(new) > bound:
        new = dict(sorted(new.items(), key=lambda item: item[1])[len(new) - bound:])
    return new
