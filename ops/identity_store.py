"""The identity file's crash-safe store: read, create, back up and recover ``identity.key``.

The format (102 bytes, keys, address) is :mod:`axiomnet.identity`; this module does the file I/O around it.
A file is only ever put in place whole: it is written to a uniquely named temporary file in the same
directory (mode 0600, fsync), renamed over the final name (``os.replace``, atomic) and the directory is
fsynced. ``identity.key.bak`` is a second copy written the same way. A file that fails any check on load is
never overwritten: it is renamed aside to ``<name>.corrupt-<UTC timestamp>`` and the backup is used, or,
failing that, a new identity is generated with a loud error (the overlay address changes).

Every filesystem operation of :func:`load_or_create_identity` runs in one short-lived helper thread that
the caller waits on for at most ``timeout`` seconds (a hung disk or NFS mount cannot hang startup, seed
failure #2; a thread blocked in a system call cannot be interrupted, so on timeout it is abandoned as a
daemon thread and told to stop before its next write), and the wall clock names the files moved aside.
This is why it lives in the operator layer and not in the pure core.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import math
import os
import secrets
import stat
import threading
from pathlib import Path
from types import TracebackType

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
from axiomnet.identity import (
    IDENTITY_FILE_SIZE,
    Identity,
    LegacyIdentity,
    decode_identity,
    encode_identity,
    legacy_address,
)

IDENTITY_FILENAME = "identity.key"
IDENTITY_BACKUP_FILENAME = IDENTITY_FILENAME + ".bak"
IDENTITY_LOCK_FILENAME = ".identity.lock"  # flock()ed while creating/recovering; empty
TEMP_MARKER = ".tmp-"  # temporary files are ".<final name>.tmp-<pid>-<random hex>"

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_INSECURE_FILE_BITS = 0o077  # any group/other bit, like ssh
_INSECURE_DIR_BITS = 0o022  # group/other may write: they could swap the key


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
        return str(legacy_address(data))
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
