"""A FUSE passthrough file system whose every file open (and create) sleeps, for the slow-disk test.

Usage: python slow_fuse.py ROOT MOUNTPOINT DELAY_SECONDS. Mirrors ROOT at MOUNTPOINT (fusepy over libfuse2,
in the foreground, multithreaded); directories, stat and the rest answer at once, like a disk whose data
path has stalled (an NFS server gone away, a dying drive). Prints nothing; the caller waits for the mount.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from fuse import FUSE, FuseOSError, Operations  # fusepy


class SlowOpen(Operations):
    """Passthrough to ``root``; open() and create() first sleep ``delay`` seconds."""

    def __init__(self, root: str, delay: float) -> None:
        self.root = root
        self.delay = delay

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def __call__(self, op: str, path: str, *args: object) -> object:
        try:
            return super().__call__(op, path, *args)
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from exc

    # --- the slow part ---------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        time.sleep(self.delay)
        return os.open(self._full(path), flags)

    def create(self, path: str, mode: int, fi: object = None) -> int:
        time.sleep(self.delay)
        return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    # --- the rest, at once ------------------------------------------------------------------------
    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode):
            raise FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def getattr(self, path: str, fh: object = None) -> dict[str, object]:
        st = os.lstat(self._full(path))
        return {key: getattr(st, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                  "st_nlink", "st_size", "st_uid")}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._full(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._full(old), self._full(new))
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._full(path))
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                  "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: object = None) -> int:
        os.truncate(self._full(path), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        os.fsync(fh)
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def utimens(self, path: str, times: object = None) -> int:
        os.utime(self._full(path), times)  # type: ignore[arg-type]
        return 0


if __name__ == "__main__":
    root, mountpoint, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    FUSE(SlowOpen(root, delay), mountpoint, foreground=True, nothreads=False)
