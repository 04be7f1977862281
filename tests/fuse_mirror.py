"""The read-only passthrough that the FUSE test filesystems (eio_fs.py, slow_fs.py) build on.

Each of them mirrors a BACKING folder at a mount point and changes one thing (reads that fail,
operations that wait); the mirroring itself lives here once. Importing this module exits with
status 77 (and a reason on stderr) when fusepy or libfuse is missing, so a test can tell "FUSE
unavailable here" from a broken filesystem.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

UNAVAILABLE = 77

try:
    from fuse import FUSE, FuseOSError, Operations
except (ImportError, OSError) as exc:  # fusepy raises OSError when libfuse.so.2 is missing
    print(f"{os.path.basename(sys.argv[0])}: FUSE unavailable: {exc}", file=sys.stderr)
    sys.exit(UNAVAILABLE)

__all__ = ["UNAVAILABLE", "FuseOSError", "Mirror", "mount"]

# Times go to the kernel in nanoseconds (use_ns), so the mount shows the backing files' exact
# mtimes: a test that rewrites a file sees the server notice the same change it would on disk.
_STAT_FIELDS = {"st_mode": "st_mode", "st_nlink": "st_nlink", "st_uid": "st_uid",
                "st_gid": "st_gid", "st_size": "st_size", "st_blocks": "st_blocks",
                "st_blksize": "st_blksize", "st_atime": "st_atime_ns",
                "st_mtime": "st_mtime_ns", "st_ctime": "st_ctime_ns"}
_STATVFS_FIELDS = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                   "f_ffree", "f_namemax")


class Mirror(Operations):
    """Passthrough of BACKING, read-only: what both test filesystems share."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)

    def _real(self, path: str) -> str:
        """The backing path of a mount path (the kernel hands us absolute, normalised paths)."""
        return os.path.join(self.backing, path.lstrip("/"))

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        return {name: getattr(st, field) for name, field in _STAT_FIELDS.items()}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise FuseOSError(errno.EROFS)
        return os.open(self._real(path), os.O_RDONLY | os.O_CLOEXEC)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {name: getattr(st, name) for name in _STATVFS_FIELDS}


def mount(operations: Mirror, mountpoint: str, **options: Any) -> None:
    """Serve operations at mountpoint, read-only, in the foreground until it is unmounted;
    options are fusepy's (`nothreads`, `fsname`, mount options such as `attr_timeout`)."""
    FUSE(operations, mountpoint, foreground=True, ro=True, **options)
