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

A file is only ever put in place whole: it is written to a uniquely named temporary file in the same
directory (mode 0600, fsync), renamed over the final name (``os.replace``, atomic) and the directory is
fsynced. ``identity.key.bak`` is a second copy written the same way. A file that fails any check on load
(size, magic, version, checksum, public key not derived from the private key) is never overwritten: it is
renamed aside to ``<name>.corrupt-<UTC timestamp>`` and the backup is used, or, failing that, a new
identity is generated with a loud error (the overlay address changes).

Two deliberate exceptions to the core's "no threads, no clock" rule live here, both confined to
:func:`load_or_create_identity`: every filesystem operation runs in one short-lived helper thread that the
caller waits on for at most ``timeout`` seconds (a hung disk or NFS mount cannot hang startup, seed failure
#2; a thread blocked in a system call cannot be interrupted, so on timeout it is abandoned as a daemon
thread and told to stop before its next write), and the wall clock names the files moved aside.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import nacl.bindings
import nacl.exceptions
import nacl.utils
from loguru import logger

from axiomnet.constants import FILE_IO_TIMEOUT
from axiomnet.errors import (
    CorruptIdentity,
    IdentityError,
    IdentityWriteError,
    InsecureIdentityPermissions,
    IOTimeout,
    UnsupportedIdentityVersion,
)


class LegacyIdentity(CorruptIdentity):
    """An intact format-1 identity file: it has no signing key and is upgraded (a new key and address)."""

IDENTITY_FILENAME = "identity.key"
IDENTITY_BACKUP_FILENAME = IDENTITY_FILENAME + ".bak"
IDENTITY_LOCK_FILENAME = ".identity.lock"  # flock()ed while creating/recovering; empty
TEMP_MARKER = ".tmp-"  # temporary files are ".<final name>.tmp-<pid>-<random hex>"

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

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_INSECURE_FILE_BITS = 0o077  # any group/other bit, like ssh
_INSECURE_DIR_BITS = 0o022  # group/other may write: they could swap the key


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


# --- reading ----------------------------------------------------------------------------------------
def _check_file_permissions(path: Path, st: os.stat_result) -> None:
    euid = os.geteuid()
    if st.st_uid != euid:
        raise InsecureIdentityPermissions(
            f"identity file {path} is owned by uid {st.st_uid}, not by the current user (uid {euid}); "
            f"refusing a key another user controls. Fix: chown {euid} {path} (or run as its owner)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & _INSECURE_FILE_BITS:
        raise InsecureIdentityPermissions(
            f"identity file {path} has mode {mode:04o}: group or others can access the private key. "
            f"Fix: chmod 600 {path}"
        )


def _read_identity_file(path: Path) -> Identity | None:
    """The verified identity in ``path``, or None when there is no such file."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not block the open; it fails the S_ISREG check.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise IdentityError(
            f"cannot read identity file {path}: permission denied (run as the user that owns it)"
        ) from exc
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"identity file {path} is not a regular file")
        _check_file_permissions(path, st)
        chunks: list[bytes] = []
        remaining = IDENTITY_FILE_SIZE + 1  # one byte more tells "too long" from "just right"
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return decode_identity(b"".join(chunks), path)


def load_identity(path: Path) -> Identity:
    """Load and verify one identity file (no timeout, no recovery; see load_or_create_identity)."""
    path = Path(path)
    identity = _read_identity_file(path)
    if identity is None:
        raise IdentityError(f"identity file {path} does not exist")
    return identity


# --- writing ----------------------------------------------------------------------------------------
_WRITE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "I/O error",
}


def _reason(exc: OSError) -> str:
    if exc.errno in _WRITE_REASONS:
        return f"{_WRITE_REASONS[exc.errno]} ({errno.errorcode[exc.errno]})"
    return exc.strerror or str(exc)


class _Cancelled(Exception):
    """The caller stopped waiting (IOTimeout); the helper thread must not write anything more."""


def _checkpoint(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise _Cancelled


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory; the rename is still atomic there.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, cancel: threading.Event) -> None:
    """Put ``data`` at ``path`` whole or not at all: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")
    fd: int | None = None
    try:
        _checkpoint(cancel)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
        os.fchmod(fd, _FILE_MODE)  # the umask may only have narrowed it; make it exactly 0600
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "write made no progress")
            view = view[written:]
        os.fsync(fd)
        closing, fd = fd, None  # never close a descriptor number twice: another thread may reuse it
        os.close(closing)
        _checkpoint(cancel)
        os.replace(tmp, path)
    except BaseException as exc:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise IdentityWriteError(
                f"cannot write identity file {path}: {_reason(exc)}; no partial file was left "
                "(free some space or make the data directory writable, then start again)"
            ) from exc
        raise
    try:
        _fsync_dir(path.parent)
    except OSError as exc:
        raise IdentityWriteError(f"cannot make identity file {path} durable (fsync of its directory): "
                                 f"{_reason(exc)}") from exc


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _move_aside(path: Path, label: str) -> Path:
    """Rename ``path`` to ``<name>.<label>-<UTC timestamp>[-n]``, never replacing an existing file."""
    stamp = _utc_stamp()
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    counter = 1
    while os.path.lexists(target):
        target = path.with_name(f"{path.name}.{label}-{stamp}-{counter}")
        counter += 1
    try:
        os.rename(path, target)  # under the identity lock, so the existence check above holds
        _fsync_dir(path.parent)
    except OSError as exc:
        raise IdentityWriteError(f"cannot move {path} aside to {target.name}: {_reason(exc)}") from exc
    return target


# --- the data directory ------------------------------------------------------------------------------
def _ensure_data_dir(data_dir: Path) -> None:
    try:
        try:
            st = os.stat(data_dir)
        except FileNotFoundError:
            os.makedirs(data_dir.parent, exist_ok=True)
            try:
                os.mkdir(data_dir, _DIR_MODE)
            except FileExistsError:
                pass
            else:
                os.chmod(data_dir, _DIR_MODE)  # the umask may have narrowed it (0500 would be unusable)
                try:
                    _fsync_dir(data_dir.parent)
                except OSError as exc:  # only durability of the new, still empty, directory is at stake
                    logger.warning("cannot fsync {} after creating {}: {}", data_dir.parent, data_dir.name,
                                   _reason(exc))
                logger.info("created data directory {} (mode 0700)", data_dir)
            st = os.stat(data_dir)
    except OSError as exc:
        raise IdentityWriteError(f"cannot create data directory {data_dir}: {_reason(exc)}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise IdentityError(f"data directory {data_dir} exists but is not a directory")
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise InsecureIdentityPermissions(
            f"data directory {data_dir} is owned by uid {st.st_uid}, not by the current user (uid {euid}) "
            f"or root; its owner could replace the identity. Fix: chown {euid} {data_dir}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & _INSECURE_DIR_BITS:
        raise InsecureIdentityPermissions(
            f"data directory {data_dir} has mode {mode:04o}: group or others can replace the identity file. "
            f"Fix: chmod 700 {data_dir}"
        )


class _DirectoryLock:
    """flock() on the lock file so concurrent starts on one data directory never mint two identities."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / IDENTITY_LOCK_FILENAME
        self._fd: int | None = None

    def __enter__(self) -> _DirectoryLock:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                # A read-only data directory can still hold a valid identity; nobody can write there to race us.
                logger.debug("identity lock {} unavailable ({}); continuing unlocked", self._path, _reason(exc))
                return self
            raise IdentityWriteError(f"cannot create identity lock file {self._path}: {_reason(exc)}") from exc
        self._fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                self._release()
                raise IdentityError(f"cannot lock {self._path}: {_reason(exc)}") from exc
            logger.warning("file system of {} does not support locks ({}); continuing unlocked",
                           self._path, _reason(exc))
        return self

    def _release(self) -> None:
        if self._fd is not None:
            closing, self._fd = self._fd, None
            os.close(closing)  # closing the descriptor releases the flock

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release()


def _remove_stale_temps(data_dir: Path) -> None:
    """Delete temporary files left by a writer that died (we hold the lock: none is in flight)."""
    prefix = "." + IDENTITY_FILENAME
    try:
        names = [e.name for e in os.scandir(data_dir) if e.name.startswith(prefix) and TEMP_MARKER in e.name]
    except OSError as exc:
        logger.warning("cannot list {} to remove stale temporary files: {}", data_dir, _reason(exc))
        return
    for name in names:
        try:
            os.unlink(data_dir / name)
            logger.info("removed stale temporary identity file {}", data_dir / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove stale temporary file {}: {}", data_dir / name, _reason(exc))


# --- load or create -------------------------------------------------------------------------------------
def _load_backup(backup: Path) -> Identity | None:
    """The backup identity if it is valid; a corrupt backup is moved aside (never deleted)."""
    try:
        return _read_identity_file(backup)
    except UnsupportedIdentityVersion:
        raise
    except LegacyIdentity:
        aside = _move_aside(backup, "v1")
        logger.warning("backup {} has format version 1 (no signing key); kept it as {}", backup, aside)
        return None
    except CorruptIdentity as exc:
        aside = _move_aside(backup, "corrupt")
        logger.error("{}; moved it aside to {}", exc, aside)
        return None


def _refresh_backup(identity: Identity, backup: Path, cancel: threading.Event) -> None:
    """Make the backup a copy of the (valid) primary; failures here only cost redundancy, so they warn."""
    try:
        try:
            current = _read_identity_file(backup)
        except UnsupportedIdentityVersion as exc:
            logger.warning("{}; leaving the backup alone", exc)
            return
        except LegacyIdentity:
            aside = _move_aside(backup, "v1")
            logger.warning("backup {} had format version 1; kept it as {}", backup, aside)
            current = None
        except CorruptIdentity as exc:
            aside = _move_aside(backup, "corrupt")
            logger.warning("{}; moved it aside to {} and writing a fresh backup", exc, aside)
            current = None
        if current == identity:
            return
        if current is not None:
            aside = _move_aside(backup, "superseded")
            logger.warning("backup {} held another key ({}); moved it aside to {}",
                           backup, current.public_hex, aside)
        _write_atomic(backup, encode_identity(identity), cancel)
    except InsecureIdentityPermissions:
        raise
    except IdentityError as exc:
        logger.warning("cannot refresh identity backup {}: {}", backup, exc)


def _create(primary: Path, backup: Path, cancel: threading.Event) -> Identity:
    """A new identity in both files, or in neither: nobody has used a key that failed to be backed up."""
    identity = Identity.generate()
    data = encode_identity(identity)
    _write_atomic(primary, data, cancel)
    try:
        _write_atomic(backup, data, cancel)
    except BaseException:
        try:
            os.unlink(primary)
            _fsync_dir(primary.parent)
        except OSError as exc:
            logger.warning("cannot remove {} after its backup failed: {}", primary, _reason(exc))
        raise
    return identity


def _legacy_address(path: Path) -> str:
    """The address a format-1 file at ``path`` gave its node (for the upgrade log line), or "unknown"."""
    try:
        with open(path, "rb") as f:
            data = f.read(IDENTITY_FILE_SIZE)
        return str(derive_address(data[_PUBLIC_OFFSET:_CHECKSUM_OFFSET]))
    except (OSError, ValueError):
        return "unknown"


def _upgrade_legacy(primary: Path, backup: Path, cancel: threading.Event) -> tuple[Identity, bool]:
    """Replace an intact format-1 identity (no signing key) by a new format-2 one, loudly; the old file stays."""
    _checkpoint(cancel)
    old_address = _legacy_address(primary)
    aside = _move_aside(primary, "v1")
    if os.path.lexists(backup):
        try:
            _read_identity_file(backup)
        except LegacyIdentity:
            _move_aside(backup, "v1")
        except CorruptIdentity:
            _move_aside(backup, "corrupt")
    identity = _create(primary, backup, cancel)
    logger.error(
        "IDENTITY UPGRADED: {} had format version 1, which has no signing key (routing announcements must be "
        "signed). Generated a format 2 identity: this node's overlay address CHANGED from {} to {} (public key "
        "{}); peers that pinned the old key must be updated. The old file is kept at {}",
        primary, old_address, identity.address, identity.public_hex, aside,
    )
    return identity, True


def _load_or_create_now(data_dir: Path, cancel: threading.Event) -> tuple[Identity, bool]:
    _ensure_data_dir(data_dir)
    primary = data_dir / IDENTITY_FILENAME
    backup = data_dir / IDENTITY_BACKUP_FILENAME
    with _DirectoryLock(data_dir):
        _checkpoint(cancel)
        _remove_stale_temps(data_dir)
        try:
            identity = _read_identity_file(primary)
        except UnsupportedIdentityVersion:
            raise
        except LegacyIdentity:
            return _upgrade_legacy(primary, backup, cancel)
        except CorruptIdentity as exc:
            _checkpoint(cancel)
            aside = _move_aside(primary, "corrupt")
            logger.warning("{}; kept it as {}", exc, aside)
            restored = _load_backup(backup)
            if restored is not None:
                _write_atomic(primary, encode_identity(restored), cancel)
                logger.warning("restored identity {} from backup {}; address {} unchanged",
                               primary, backup, restored.address)
                return restored, False
            identity = _create(primary, backup, cancel)
            logger.error(
                "IDENTITY LOST: {} was corrupt and no valid backup exists; generated a NEW identity. "
                "This node's overlay address CHANGED to {} (public key {}); peers that pinned the old key "
                "must be updated. The damaged file is kept at {}",
                primary, identity.address, identity.public_hex, aside,
            )
            return identity, True
        if identity is not None:
            _refresh_backup(identity, backup, cancel)
            return identity, False
        _checkpoint(cancel)
        restored = _load_backup(backup)
        if restored is not None:
            _write_atomic(primary, encode_identity(restored), cancel)
            logger.warning("{} was missing; restored it from backup {} (address {}). To start with a new "
                           "identity, remove both files", primary, backup, restored.address)
            return restored, False
        identity = _create(primary, backup, cancel)
        logger.info("created identity {}: address {}", primary, identity.address)
        return identity, True


class _Job:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.cancel = threading.Event()
        self.result: tuple[Identity, bool] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = _load_or_create_now(self.data_dir, self.cancel)
        except _Cancelled:
            logger.debug("identity helper thread for {} stopped after the caller's timeout", self.data_dir)
        except OSError as exc:  # anything the helpers did not name more precisely
            self.error = IdentityError(f"identity file operation in {self.data_dir} failed: {_reason(exc)}")
        except BaseException as exc:
            self.error = exc


def load_or_create_identity(data_dir: Path, *, timeout: float = FILE_IO_TIMEOUT) -> tuple[Identity, bool]:
    """The node identity in ``data_dir`` and whether it was created now; never blocks past ``timeout``.

    Creates the directory (0700) and the identity (0600, plus a backup) when missing, recovers from a
    corrupt file as the module docstring says, and raises IOTimeout if the file system does not answer.
    """
    data_dir = Path(data_dir).absolute()
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a finite number of seconds > 0")
    job = _Job(data_dir)
    worker = threading.Thread(target=job.run, name="axiomnet-identity-io", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        job.cancel.set()
        raise IOTimeout(
            f"identity file operations on {data_dir / IDENTITY_FILENAME} did not finish within {timeout:g} s: "
            "the disk or file system is hung or very slow (the helper thread will not write anything more)"
        )
    if job.error is not None:
        raise job.error
    assert job.result is not None
    return job.result
