"""Our side of a handshake in flight: the KEY_PROBE and HANDSHAKE_INIT datagrams it sends, and the checks of the
answers that come before any Diffie-Hellman (no I/O).

An :class:`Initiation` belongs to a :class:`~axiomnet.session.Session`, which owns its timers and decides what
to do with the answers. Its HANDSHAKE_INIT carries mac1 keyed by the responder's public key and, when the
session holds a cookie, mac2 (axiomnet/cookie.py). Without the responder's key (a peer configured without
one: trust on first use) it first sends a KEY_PROBE and takes the key of the KEY_REPLY that echoes its
challenge as a *hint*: the Noise handshake must then authenticate that very key.
"""

from __future__ import annotations

import hmac

from axiomnet.constants import KEY_PROBE_CHALLENGE_SIZE
from axiomnet.cookie import add_macs, check_mac1, cookie_key, mac1_key, open_cookie
from axiomnet.noise import NoiseHandshake
from axiomnet.wire import CookieReply, KeyReply, encode_handshake_init, encode_key_probe


class Initiation:
    """Our handshake in flight: waiting for KEY_REPLY or HANDSHAKE_RESP, retransmitting KEY_PROBE or INIT."""

    __slots__ = (
        "noise",
        "local_index",
        "msg1",
        "started",
        "next_at",
        "attempts",
        "cookie_resend_at",
        "responder_key",
        "key_is_hint",
        "challenge",
        "mac1",
        "_static_private",
        "_mac1_key",
        "_cookie_key",
    )

    def __init__(
        self,
        static_private: bytes,
        local_index: int,
        responder_key: bytes | None,
        challenge: bytes,
        started: float,
    ) -> None:
        if len(challenge) != KEY_PROBE_CHALLENGE_SIZE:
            raise ValueError("challenge must be KEY_PROBE_CHALLENGE_SIZE bytes")
        self._static_private = static_private
        self.noise = NoiseHandshake(static_private, initiator=True)
        self.msg1 = self.noise.write(b"")  # message 1 is plaintext: it carries no payload
        self.local_index = local_index
        self.started = started
        self.next_at = started
        self.attempts = 0  # retransmissions so far
        self.cookie_resend_at = float("-inf")
        self.challenge = challenge
        self.responder_key: bytes | None = None
        self.key_is_hint = False  # the key came from a KEY_REPLY, not from configuration or a past handshake
        self.mac1 = b""
        self._mac1_key = b""
        self._cookie_key = b""
        if responder_key is not None:
            self._set_key(responder_key, hint=False)

    @property
    def probing(self) -> bool:
        """True while the responder's key is unknown (we send KEY_PROBE, not HANDSHAKE_INIT)."""
        return self.responder_key is None

    def _set_key(self, key: bytes, hint: bool) -> None:
        self.responder_key = key
        self.key_is_hint = hint
        self._mac1_key = mac1_key(key)
        self._cookie_key = cookie_key(key)

    def restart(self, local_index: int, forget_hint: bool) -> None:
        """A fresh Noise handshake under a fresh index (the previous one was aborted); a hint may be dropped."""
        self.noise = NoiseHandshake(self._static_private, initiator=True)
        self.msg1 = self.noise.write(b"")
        self.local_index = local_index
        if forget_hint and self.key_is_hint:
            self.responder_key = None
            self.key_is_hint = False

    def learn_key(self, reply: KeyReply) -> bool:
        """Take the key of a KEY_REPLY that echoes our challenge (as a hint); False if it does not."""
        if not self.probing or not hmac.compare_digest(reply.challenge, self.challenge):
            return False
        self._set_key(reply.public_key, hint=True)
        return True

    def datagram(self, cookie: bytes | None) -> bytes:
        """The datagram to (re)send now: KEY_PROBE while probing, else HANDSHAKE_INIT with mac1 (and mac2 under
        ``cookie``). mac1 depends only on the index and message 1, so a retransmission repeats it."""
        if self.responder_key is None:
            return encode_key_probe(self.local_index, self.challenge)
        datagram, self.mac1 = add_macs(encode_handshake_init(self.local_index, self.msg1), self._mac1_key, cookie)
        return datagram

    def response_mac_ok(self, datagram: bytes) -> bool:
        """True if a HANDSHAKE_RESP's mac1 verifies under the responder's key (checked before any DH)."""
        return self.responder_key is not None and check_mac1(datagram, self._mac1_key, 1)

    def open_cookie_reply(self, reply: CookieReply) -> bytes | None:
        """The cookie of a COOKIE_REPLY that answers our last INIT (sealed to its mac1), or None if forged."""
        if self.responder_key is None or not self.mac1:
            return None
        return open_cookie(self._cookie_key, reply.nonce, reply.sealed, self.mac1)
