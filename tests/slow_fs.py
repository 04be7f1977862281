"""A read-only FUSE mirror of a folder on which every operation waits: a slow disk on demand.

Usage: python slow_fs.py [--delay SECONDS] [--delay-under PATH=SECONDS ...] BACKING MOUNTPOINT
(runs in the foreground until unmounted; the delay also comes from $SLOW_FS_DELAY).

The tests that prove the event loop never waits need a disk whose every answer takes long enough
that a single blocking call in the loop shows: a lookup, an open, a read, a directory listing.
A throttled block device needs cgroup set-up and root; FUSE is the cheapest real source of the
wait, since the kernel parks the calling thread until our answer comes back. Every operation the
kernel sends (lookup/getattr, access, open, opendir, read, readdir, readlink, statfs, xattrs)
sleeps the delay before it is answered, except those listed in NO_DELAY.

The daemon runs multithreaded (libfuse's thread per request in flight), so operations that
arrive together wait together, as on a disk with a queue, instead of one after another.
`--delay-under /many=0.001` gives a folder (and everything below it) its own delay: a listing of
thousands of entries costs one lookup per entry and would take minutes at the default.

Kernel caches, chosen so the slow path keeps being hit:
- attribute and entry timeouts are ATTR_TIMEOUT (0.5 s, libfuse's default is 1 s): that is how
  long the server trusts a cached path before it revalidates, so each revalidation reaches the
  daemon (and waits) instead of the kernel's dentry cache; negative entries are not cached at
  all (libfuse's default), so a missing path always waits;
- no `kernel_cache`: each open drops the file's cached pages, so a file opened again is cold.

Exits with status 77 when FUSE is unavailable (see fuse_mirror.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from fuse_mirror import Mirror, mount  # exits 77 when FUSE is unavailable

DEFAULT_DELAY = 0.3
ATTR_TIMEOUT = 0.5
# The kernel sends FLUSH synchronously on every close(2) of a file of this filesystem, and
# RELEASE/RELEASEDIR when the last reference goes: delaying them would make every close wait,
# also in the helpers and in the tests' own clean-up. A close by the event loop is caught by the
# syscall audit instead (no FUSE descriptor may be closed there at all). init and destroy run
# once, at mount and unmount.
NO_DELAY = frozenset({"flush", "release", "releasedir", "fsyncdir", "init", "destroy"})


class SlowMirror(Mirror):
    """Passthrough of BACKING where each operation first sleeps the delay of its path."""

    def __init__(self, backing: str, delay: float, under: dict[str, float]) -> None:
        super().__init__(backing)
        self.delay = delay
        # Longest prefix first, so a folder's delay wins over its parent's.
        self.under = sorted(((p.rstrip("/") or "/", d) for p, d in under.items()),
                            key=lambda item: -len(item[0]))

    def delay_for(self, path: str) -> float:
        for prefix, delay in self.under:
            if path == prefix or path.startswith(prefix + "/") or prefix == "/":
                return delay
        return self.delay

    def __call__(self, op: str, path: str, *args: Any) -> Any:
        """Every operation fusepy dispatches passes here: sleep, then mirror."""
        if op not in NO_DELAY:
            time.sleep(self.delay_for(path))
        return super().__call__(op, path, *args)


def _path_delay(text: str) -> tuple[str, float]:
    path, sep, seconds = text.partition("=")
    if not sep or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected /PATH=SECONDS, got {text!r}")
    return path, float(seconds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slow_fs.py", description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float,
                        default=float(os.environ.get("SLOW_FS_DELAY", DEFAULT_DELAY)),
                        help=f"seconds each operation waits (default {DEFAULT_DELAY}, or "
                             "$SLOW_FS_DELAY)")
    parser.add_argument("--delay-under", type=_path_delay, action="append", default=[],
                        metavar="PATH=SECONDS",
                        help="another delay for a mount path and everything below it")
    parser.add_argument("--attr-timeout", type=float, default=ATTR_TIMEOUT,
                        help=f"kernel attribute and entry cache seconds (default {ATTR_TIMEOUT})")
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    args = parser.parse_args(argv)
    ops = SlowMirror(args.backing, args.delay, dict(args.delay_under))
    mount(ops, args.mountpoint, nothreads=False, fsname="slow_fs",
          attr_timeout=args.attr_timeout, entry_timeout=args.attr_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
