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

from fuse_mirror import FuseOSError, Mirror, mount  # exits 77 when FUSE is unavailable

LATE_OK = 2 << 20


class EioMirror(Mirror):
    """Passthrough of BACKING, read-only; reads of `eio-` files fail as the module says."""

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        name = os.path.basename(path)
        if name.startswith("eio-late-"):
            if offset + size > LATE_OK:
                raise FuseOSError(errno.EIO)
        elif name.startswith("eio-"):
            raise FuseOSError(errno.EIO)
        return super().read(path, size, offset, fh)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: eio_fs.py BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    backing, mountpoint = argv
    mount(EioMirror(backing), mountpoint, nothreads=True, fsname="eio_fs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
