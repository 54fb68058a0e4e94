"""Handshake denial-of-service defences: return-routability cookies and per-source token buckets.

Both are consulted by :class:`axiomnet.responder.HandshakeResponder` before it spends a Diffie-Hellman on a
HANDSHAKE_INIT. Neither allocates state per attacker beyond a bounded LRU table.

Cookie: ``BLAKE2s(key=secret, digest_size=COOKIE_SIZE)`` over ``"<ip>|<port>"`` of the datagram's source.
Only a sender that receives datagrams at that address can echo it, so under load a spoofed flood costs us a
hash and a 32-byte reply, no state. The secret rotates every ``COOKIE_SECRET_LIFETIME`` seconds (driven by the
``now`` passed in) and the previous secret stays valid for one more lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections import OrderedDict
from collections.abc import Callable

from axiomnet.constants import (
    COOKIE_SECRET_LIFETIME,
    COOKIE_SIZE,
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKE_RATE_PER_SOURCE,
    MAX_RATE_LIMITED_SOURCES,
)

COOKIE_SECRET_SIZE = 32  # BLAKE2s key length


def _address_bytes(addr: tuple[str, int]) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class CookieChecker:
    """Mints and verifies address cookies under a rotating secret (current + previous)."""

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
    def _mac(secret: bytes, addr: tuple[str, int]) -> bytes:
        return hashlib.blake2s(_address_bytes(addr), key=secret, digest_size=COOKIE_SIZE).digest()

    def make(self, addr: tuple[str, int], now: float) -> bytes:
        """The cookie a sender at ``addr`` must echo in its next HANDSHAKE_INIT."""
        self._rotate_if_due(now)
        assert self._current is not None  # set by _rotate_if_due
        return self._mac(self._current, addr)

    def is_valid(self, cookie: bytes, addr: tuple[str, int], now: float) -> bool:
        """True if ``cookie`` was minted for ``addr`` under the current or the previous secret."""
        self._rotate_if_due(now)
        assert self._current is not None
        if hmac.compare_digest(cookie, self._mac(self._current, addr)):
            return True
        return self._previous is not None and hmac.compare_digest(cookie, self._mac(self._previous, addr))


def source_key(ip: str) -> bytes:
    """Rate-limit bucket key of a source IP: the IPv4 address, or the /64 of an IPv6 address.

    An IPv6 host usually controls a whole /64, so per-address buckets would be free to multiply. IPv4-mapped
    IPv6 addresses (a dual-stack socket reports IPv4 peers that way) are keyed as the IPv4 address they carry.
    """
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return ip.encode()  # not an IP literal (test transports): the text itself is the key
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped.packed
        return address.packed[:8]
    return address.packed


class SourceRateLimiter:
    """Token bucket per source (HANDSHAKE_RATE_PER_SOURCE/s, depth HANDSHAKE_BURST_PER_SOURCE), LRU-bounded.

    The table holds at most MAX_RATE_LIMITED_SOURCES buckets; the least recently used one is forgotten, which
    only ever gives a forgotten source a fresh (full) bucket, never more than that.
    """

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        # key -> [tokens, last refill time]; a list so one lookup can update in place
        self._buckets: OrderedDict[bytes, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, ip: str, now: float) -> bool:
        """Take one token from the bucket of ``ip``; False if it is empty (the initiation is dropped)."""
        key = source_key(ip)
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= MAX_RATE_LIMITED_SOURCES:
                buckets.popitem(last=False)
            buckets[key] = [HANDSHAKE_BURST_PER_SOURCE - 1.0, now]
            return True
        buckets.move_to_end(key)
        elapsed = now - bucket[1]
        tokens = bucket[0]
        if elapsed > 0:  # a clock that steps back refills nothing
            tokens = min(HANDSHAKE_BURST_PER_SOURCE, tokens + elapsed * HANDSHAKE_RATE_PER_SOURCE)
            bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
