"""The node's identity: an Ed25519 signing key, the X25519 key derived from it, the file, the address.

The Ed25519 key signs the node's routing announcements and lookup replies; the X25519 key derived from it
(libsodium's ``crypto_sign_ed25519_sk_to_curve25519``) is the Noise static key; the overlay address is the
hash of that X25519 public key, so anyone holding the Ed25519 public key can check which address it owns.
The identity file ``identity.key`` (format version 2, 102 bytes, all offsets in bytes)::

    0       5   6                      38                     70                     102
    | magic | v | Ed25519 seed          | Ed25519 public key   | checksum             |
     b"AXNID" 02        32 bytes              32 bytes          blake2b-256 of [0:70]
                                                                 person=b"axn-identity"

Format version 1 (an X25519 private and public key, no signing key) cannot sign; such a file is upgraded
loudly: it is kept aside as ``identity.key.v1-<UTC timestamp>`` and a version 2 identity replaces it, with
an error log naming the old and the new address (the address changes; docs/CONFIG.md §1.1).

The crash-safe store that reads and writes this file (atomic writes, backups, a bounded helper thread) is
``axiomnet.ops.identity_store``; this module is pure: keys, the address, the 102 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.utils

from axiomnet.errors import (
    CorruptIdentity,
    UnsupportedIdentityVersion,
)


class LegacyIdentity(CorruptIdentity):
    """An intact format-1 identity file: it has no signing key and is upgraded (a new key and address)."""

IDENTITY_MAGIC = b"AXNID"
IDENTITY_VERSION = 2
LEGACY_IDENTITY_VERSION = 1  # X25519 only, no signing key: upgraded (new key, new address) on load
KEY_SIZE = 32
CHECKSUM_SIZE = 32
CHECKSUM_PERSON = b"axn-identity"
_SEED_OFFSET = len(IDENTITY_MAGIC) + 1
_PUBLIC_OFFSET = _SEED_OFFSET + KEY_SIZE
_CHECKSUM_OFFSET = _PUBLIC_OFFSET + KEY_SIZE
IDENTITY_FILE_SIZE = _CHECKSUM_OFFSET + CHECKSUM_SIZE  # 102

ADDRESS_PERSON = b"axn-addr"
ADDRESS_PREFIX = 0xFC  # fc00::/8 (cjdns' range); fd00::/8 belongs to real LANs' ULAs


@dataclass(frozen=True)
class Identity:
    """An Ed25519 signing keypair and the X25519 (Noise static) keypair derived from it.

    ``private_key``/``public_key`` are the X25519 keys (the Noise ``s`` key, which derives the address);
    ``signing_seed``/``signing_key`` are the Ed25519 seed and public key that sign announcements.
    """

    private_key: bytes = field(repr=False)
    public_key: bytes
    signing_seed: bytes = field(repr=False)
    signing_key: bytes

    def __post_init__(self) -> None:
        for name in ("private_key", "public_key", "signing_seed", "signing_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise ValueError(f"Identity.{name} must be {KEY_SIZE} bytes")

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (libsodium's CSPRNG)."""
        return cls.from_seed(nacl.utils.random(KEY_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity whose Ed25519 key is made from ``seed`` and whose X25519 key is derived from that."""
        if not isinstance(seed, bytes) or len(seed) != KEY_SIZE:
            raise ValueError(f"an Ed25519 seed is {KEY_SIZE} bytes")
        signing_key, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        private_key = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret)
        public_key = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(signing_key)
        return cls(private_key=private_key, public_key=public_key, signing_seed=seed, signing_key=signing_key)

    @property
    def signing_secret(self) -> bytes:
        """The 64-byte libsodium Ed25519 secret key (seed || public key) for ``crypto_sign``."""
        return self.signing_seed + self.signing_key

    @property
    def address(self) -> ipaddress.IPv6Address:
        """The overlay IPv6 address (fc00::/8) derived from the X25519 public key."""
        return derive_address(self.public_key)

    @property
    def public_hex(self) -> str:
        """The X25519 (Noise) public key as 64 lowercase hex characters: what peers pin."""
        return self.public_key.hex()


def noise_key_of(signing_key: bytes) -> bytes:
    """The X25519 (Noise static) public key that belongs to an Ed25519 public key; ValueError if invalid."""
    if not isinstance(signing_key, bytes) or len(signing_key) != KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {KEY_SIZE} bytes")
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(signing_key)
    except nacl.exceptions.CryptoError as exc:  # not a point on the curve, or a small-order point
        raise ValueError(f"not a usable Ed25519 public key: {exc}") from None


def derive_address(public_key: bytes) -> ipaddress.IPv6Address:
    """0xfc followed by the first 15 bytes of blake2s(public_key, digest_size=32, person=b"axn-addr")."""
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise ValueError(f"a public key is {KEY_SIZE} bytes")
    digest = hashlib.blake2s(public_key, digest_size=32, person=ADDRESS_PERSON).digest()
    return ipaddress.IPv6Address(bytes([ADDRESS_PREFIX]) + digest[:15])


def legacy_address(data: bytes) -> ipaddress.IPv6Address:
    """The address a format-1 file's content gave its node (its X25519 public key sits where version 2 keeps
    the Ed25519 one); ValueError if the content is too short."""
    return derive_address(data[_PUBLIC_OFFSET:_CHECKSUM_OFFSET])


# --- the file format ------------------------------------------------------------------------------
def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=CHECKSUM_SIZE, person=CHECKSUM_PERSON).digest()


def encode_identity(identity: Identity) -> bytes:
    """The 102-byte identity file content for ``identity`` (layout in the module docstring)."""
    body = IDENTITY_MAGIC + bytes([IDENTITY_VERSION]) + identity.signing_seed + identity.signing_key
    return body + _checksum(body)


def decode_identity(data: bytes, path: Path | str = "<memory>") -> Identity:
    """Parse and verify identity file content; CorruptIdentity (or UnsupportedIdentityVersion) says why."""
    where = f"identity file {path}"
    if not data:
        raise CorruptIdentity(f"{where} is corrupt: it is empty")
    if len(data) <= len(IDENTITY_MAGIC):
        raise CorruptIdentity(f"{where} is corrupt: it is {len(data)} bytes, expected {IDENTITY_FILE_SIZE}")
    if data[: len(IDENTITY_MAGIC)] != IDENTITY_MAGIC:
        raise CorruptIdentity(f"{where} is corrupt: it does not start with the {IDENTITY_MAGIC!r} magic bytes")
    version = data[len(IDENTITY_MAGIC)]
    size_ok = len(data) == IDENTITY_FILE_SIZE
    checksum_ok = size_ok and hmac.compare_digest(_checksum(data[:_CHECKSUM_OFFSET]), data[_CHECKSUM_OFFSET:])
    if version == LEGACY_IDENTITY_VERSION and checksum_ok:
        raise LegacyIdentity(f"{where} has format version 1 (no signing key)")
    if version != IDENTITY_VERSION:
        # An intact file (or one of another size) from a newer format is refused, never replaced: a
        # downgrade must not cost the node its address. A bit flip in the version byte fails the checksum.
        if version > IDENTITY_VERSION and (checksum_ok or not size_ok):
            raise UnsupportedIdentityVersion(
                f"{where} has format version {version}, this AxiomNet reads version {IDENTITY_VERSION}; "
                "refusing to replace it: upgrade AxiomNet or move the file away"
            )
        raise CorruptIdentity(f"{where} is corrupt: unknown format version {version}")
    if not size_ok:
        size = f"more than {IDENTITY_FILE_SIZE}" if len(data) > IDENTITY_FILE_SIZE else str(len(data))
        raise CorruptIdentity(f"{where} is corrupt: it is {size} bytes, expected {IDENTITY_FILE_SIZE}")
    if not checksum_ok:
        raise CorruptIdentity(f"{where} is corrupt: checksum mismatch (the file was damaged)")
    seed = data[_SEED_OFFSET:_PUBLIC_OFFSET]
    signing_key = data[_PUBLIC_OFFSET:_CHECKSUM_OFFSET]
    try:
        derived = Identity.from_seed(seed)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise CorruptIdentity(f"{where} is corrupt: the seed is unusable ({exc})") from exc
    if not hmac.compare_digest(derived.signing_key, signing_key):
        raise CorruptIdentity(f"{where} is corrupt: the stored public key does not match the seed")
    return derived
