"""A read-only FUSE mirror of a folder whose `eio-*` files fail to read with EIO.

Usage: python eio_fs.py BACKING MOUNTPOINT  (runs in the foreground until unmounted).

The fault tests need a disk that answers EIO, and there is no device-mapper here (no dm-error,
no dm-flakey); a FUSE filesystem is the cheapest real source of the error, since the kernel
hands our errno straight back to the server's read(2). Behaviour by file name:

- `eio-late-*`: stat and open work, the first LATE_OK bytes read fine, any read that reaches
  beyond them fails: a large file whose head the server has already sent when the disk fails;
- any other `eio-*`: stat and open work, every read fails;
- everything else: mirrored as it is.

Exits with status 77 (and a reason on stderr) when fusepy or libfuse is missing, so a test can
tell "FUSE unavailable here" from a broken filesystem.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

LATE_OK = 2 << 20
UNAVAILABLE = 77

try:
    from fuse import FUSE, FuseOSError, Operations
except (ImportError, OSError) as exc:  # fusepy raises OSError when libfuse.so.2 is missing
    print(f"eio_fs: FUSE unavailable: {exc}", file=sys.stderr)
    sys.exit(UNAVAILABLE)

_STAT_FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime",
                "st_ctime", "st_blocks", "st_blksize")


class EioMirror(Operations):
    """Passthrough of BACKING, read-only; reads of `eio-` files fail as the module says."""

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)

    def _real(self, path: str) -> str:
        """The backing path of a mount path (the kernel hands us absolute, normalised paths)."""
        return os.path.join(self.backing, path.lstrip("/"))

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        return {name: getattr(st, name) for name in _STAT_FIELDS}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise FuseOSError(errno.EROFS)
        return os.open(self._real(path), os.O_RDONLY | os.O_CLOEXEC)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        name = os.path.basename(path)
        if name.startswith("eio-late-"):
            if offset + size > LATE_OK:
                raise FuseOSError(errno.EIO)
        elif name.startswith("eio-"):
            raise FuseOSError(errno.EIO)
        return os.pread(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {name: getattr(st, name) for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                                     "f_bavail", "f_files", "f_ffree",
                                                     "f_namemax")}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: eio_fs.py BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    backing, mountpoint = argv
    FUSE(EioMirror(backing), mountpoint, foreground=True, nothreads=True, ro=True,
         fsname="eio_fs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
