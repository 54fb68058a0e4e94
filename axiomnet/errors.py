"""One exception hierarchy for the whole core.

Two branches, in the spirit of h11: ``LocalError`` means this node (its operator, its config, its disk)
is at fault; ``RemoteProtocolError`` means a peer sent something we refuse. Actors count the latter per
packet and never crash on it.
"""

from __future__ import annotations

from typing import ClassVar


class AxiomNetError(Exception):
    """Root of every error the core raises on purpose."""


# --- our side ---------------------------------------------------------------------------------
class LocalError(AxiomNetError):
    """This node is misconfigured or its environment failed (disk, permissions, limits)."""


class ConfigError(LocalError):
    """A configuration value is missing, of the wrong type or out of range; the message names the key."""


class IdentityError(LocalError):
    """The identity file cannot be read, written or trusted."""


class CorruptIdentity(IdentityError):
    """The identity file exists but its size, version, checksum or key are wrong."""


class InsecureIdentityPermissions(IdentityError):
    """The identity file (or its directory) is readable or writable by other users."""


class IdentityWriteError(IdentityError):
    """Creating the identity file failed (disk full, read-only, timeout); no partial file is left."""


class IOTimeout(LocalError):
    """A bounded filesystem or device operation did not finish in time."""


class SessionError(AxiomNetError):
    """A session cannot do what was asked (no keys yet, key exhausted, handshake given up)."""


class NoSessionKeys(SessionError):
    """There is no valid transport keypair to send with."""


class HandshakeFailed(SessionError):
    """A handshake was aborted: wrong expected key, schema violation, or gave up after retries."""


# --- their side -------------------------------------------------------------------------------
class RemoteProtocolError(AxiomNetError):
    """A peer (or anyone on the network) sent input we reject. Counted, never fatal.

    ``metric`` is the name actors count it under (``rx_<metric>``, ``announce_<metric>``; operators graph them as
    ``axiomnet_<role>_rx_<snake_case>_total``). Each class states its own, so renaming a class never renames a
    metric (tests/unit/test_errors.py pins them).
    """

    metric: ClassVar[str] = "RemoteProtocolError"


class MalformedPacket(RemoteProtocolError):
    """A datagram or control message is truncated, oversized, of unknown type/version or off-schema."""

    metric = "MalformedPacket"


class InvalidCoordinates(RemoteProtocolError):
    """Coordinates that are not a finite point strictly inside the Poincaré disk."""

    metric = "InvalidCoordinates"


class InvalidAnnouncement(InvalidCoordinates):
    """A tree announcement whose claims do not hold: a bad signature, a loop, a stale or dead root, a sender
    that is not the peer, a position deeper than MAX_TREE_DEPTH."""

    metric = "InvalidAnnouncement"


class ReplayedPacket(RemoteProtocolError):
    """A transport counter that was already seen or is too old for the replay window."""

    metric = "ReplayedPacket"


class DecryptionFailed(RemoteProtocolError):
    """An AEAD tag did not verify (forged, corrupted or under a key we no longer have)."""

    metric = "DecryptionFailed"


class UnknownReceiver(RemoteProtocolError):
    """A datagram names a receiver index that no session or pending handshake owns."""

    metric = "UnknownReceiver"


class RateLimited(RemoteProtocolError):
    """Too many handshake initiations from one source address."""

    metric = "RateLimited"


class UnsupportedIdentityVersion(CorruptIdentity):
    """The identity file was written, intact, by another format version; it is refused, never replaced."""


class InvalidMac(RemoteProtocolError):
    """A handshake message's mac1 does not verify: its sender does not know our public key (or it is forged)."""

    metric = "InvalidMac"


class NotAllowed(RemoteProtocolError):
    """A peer authenticated with a key that ``allowed_keys`` does not list; no session is created for it."""

    metric = "NotAllowed"


class Ignored(RemoteProtocolError):
    """A request this node deliberately leaves unanswered (a key probe while not discoverable, over its rate)."""

    metric = "Ignored"
