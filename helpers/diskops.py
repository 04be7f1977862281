"""The blocking disk operations: everything in flashsrv that may wait for a disk lives here.

Helpers run these in their own processes (the AMPED model); the `sped` model calls them inline
on the event loop and the `threads` model from a thread pool, so every model runs the same code.

The caller hands in a path already normalised by the main process (no `..` segments, no NUL, no
leading slash); these functions still refuse anything whose real path leaves the document root,
because symbolic links are only visible here. Results are plain tuples (they cross a pipe):

- ("file", variants)      variants: [(suffix, size, mtime_ns, ino, dev, data|None, passed,
                          direct), ...] (direct: reached with no symbolic link on the way);
                          the descriptors returned beside the result belong, in order, to the
                          variants whose `passed` is true
- ("dir", variants)       the directory's index.html as file variants, or [] when there is none
- ("missing",) / ("forbidden",) / ("error", errno, message)
"""

from __future__ import annotations

import ctypes
import errno
import functools
import gzip
import os
import stat
from collections import OrderedDict
from typing import TypeGuard

from flashsrv_helpers.wire import (
    DIRECTORY,
    ERROR,
    FILE,
    FORBIDDEN,
    LISTING,
    MISSING,
    WATCH_MASK,
    WATCHING,
)

INDEX_NAME = "index.html"
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW
# Bytes a warm job reads at a time into one reused buffer.
WARM_BUFFER = 1 << 20
# Descriptors a helper keeps open for files whose descriptors never go to the main process.
KEPT_FILES = 64

Result = tuple
Variant = tuple[str, int, int, int, int, bytes | None, bool, bool]
Identity = tuple[int, int, int, int]  # (dev, ino, size, mtime_ns): one version of one file
Found = tuple[Variant, int]  # a regular file's facts and its descriptor (-1: none)

# Per device: can a read of a page-cached file return at once instead of waiting (RWF_NOWAIT)?
_nowait_devices: dict[int, bool] = {}


def nowait_capable(fd: int, dev: int) -> bool:
    """Whether the main process may hold this file's descriptor: its filesystem answers
    `preadv(RWF_NOWAIT)`, so the main process can read it without waiting, and neither an
    fstat nor a close of it waits for a server. FUSE and network filesystems answer
    EOPNOTSUPP: their files stay in the helpers, and the main process asks for their bytes."""
    known = _nowait_devices.get(dev)
    if known is None:
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
            known = True
        except BlockingIOError:
            known = True
        except (OSError, AttributeError):
            known = False
        _nowait_devices[dev] = known
    return known


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root + os.sep)


def _failure(exc: OSError) -> Result:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return (MISSING,)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
        return (FORBIDDEN,)
    return (ERROR, exc.errno or 0, exc.strerror or str(exc))


def _regular(root: str, path: str, prefetch: int, open_file: bool, local_only: bool
             ) -> Found | Result:
    """One regular file below root: its facts and, with open_file, a descriptor (else -1;
    also -1 with local_only for a file the main process must not hold); or a failure tuple.

    Opening resolves symbolic links first and refuses a real path outside the root. A stat
    without opening (revalidation) skips that: it only tells whether the path still leads to
    the same inode as an earlier, checked lookup, and anything else makes the caller look up
    afresh, with the check.
    """
    real = path
    if open_file:
        real = os.path.realpath(path)
        if not _inside(root, real):
            return (FORBIDDEN,)
    fd = -1
    try:
        if open_file:
            fd = os.open(real, _OPEN_FLAGS)
            st = os.fstat(fd)
        else:
            st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            result: Result = (DIRECTORY, [])
        elif not stat.S_ISREG(st.st_mode):
            result = (FORBIDDEN,)
        else:
            data = os.pread(fd, st.st_size, 0) if open_file and st.st_size <= prefetch else None
            size = st.st_size if data is None else len(data)
            if fd >= 0 and local_only and not nowait_capable(fd, st.st_dev):
                os.close(fd)
                fd = -1
            return ("", size, st.st_mtime_ns, st.st_ino, st.st_dev, data, fd >= 0,
                    open_file and real == path), fd
    except OSError as exc:
        result = _failure(exc)
    if fd >= 0:
        os.close(fd)
    return result


def _found(result: Found | Result) -> TypeGuard[Found]:
    """Whether `_regular` found a regular file (else result is a failure tuple)."""
    return isinstance(result[0], tuple)


def _variants(
    root: str, path: str, suffixes: tuple[str, ...], prefetch: int, open_file: bool,
    local_only: bool,
) -> tuple[Result, list[int]]:
    """The file at path and its precompressed siblings (path + suffix) that exist."""
    first = _regular(root, path, prefetch, open_file, local_only)
    if not _found(first):
        return first, []
    variants: list[Variant] = [first[0]]
    fds = [first[1]]
    for suffix in suffixes:
        sibling = _regular(root, path + suffix, prefetch, open_file, local_only)
        if _found(sibling):
            variant, fd = sibling
            variants.append((suffix, *variant[1:]))
            fds.append(fd)
    return (FILE, variants), [fd for fd in fds if fd >= 0]


def lookup(
    root: str, relpath: str, suffixes: tuple[str, ...] = (), prefetch: int = 0,
    open_file: bool = True, local_only: bool = False,
) -> tuple[Result, list[int]]:
    """Translate a normalised relative path into open files (pathname translation); without
    open_file, only the facts (for revalidating what is already open). With local_only (a
    helper answering the main process), descriptors of files on filesystems where holding
    them could make the main process wait are not passed (see nowait_capable)."""
    path = os.path.join(root, relpath) if relpath else root
    result, fds = _variants(root, path, suffixes, prefetch, open_file, local_only)
    if result[0] != DIRECTORY:
        return result, fds
    index, fds = _variants(root, os.path.join(path, INDEX_NAME), suffixes, prefetch, open_file,
                           local_only)
    return (DIRECTORY, index[1] if index[0] == FILE else []), fds


def stat_many(root: str, relpaths: list[str], suffixes: tuple[str, ...]) -> list[Result]:
    """The facts lookup would find for each path, opening nothing: one job revalidates many
    cached entries (their identities are compared by the main process)."""
    return [lookup(root, relpath, suffixes, 0, open_file=False)[0] for relpath in relpaths]


def read(fd: int, offset: int, length: int) -> bytes:
    """Read up to length bytes at offset; fewer only at end of file."""
    chunks = []
    while length > 0:
        data = os.pread(fd, length, offset)
        if not data:
            break
        chunks.append(data)
        offset += len(data)
        length -= len(data)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def warm(fd: int, offset: int, length: int, buffer: bytearray) -> int:
    """Read [offset, offset + length) into buffer and drop it: afterwards the range is in the
    page cache and up to date, so the main process can send it without waiting. Returns the
    bytes read (fewer only at end of file). Sequential windows of one stream keep the
    kernel's readahead working for it."""
    view = memoryview(buffer)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[: min(len(view), length - done)]], offset + done)
        if n == 0:
            break
        done += n
    return done


class KeptFiles:
    """Descriptors a helper keeps for files whose descriptors the main process must not hold
    (see nowait_capable), keyed by path and version, least recently used closed first.

    Opening checks that the path still leads to the version the main process translated (a
    replaced file answers None, and the main process looks it up again); a kept descriptor is
    reused for that version, so a response in flight keeps reading the file it started with
    after the path is replaced, as OpenFile does. A rewrite in place shows in the check made
    after each use (`unchanged`).
    """

    def __init__(self, root: str, limit: int = KEPT_FILES) -> None:
        self.root = root
        self.limit = limit
        # Keyed by tuple(identity): a plain tuple, whatever sequence the identity arrived as.
        self._fds: OrderedDict[tuple[str, tuple[int, ...]], int] = OrderedDict()

    def open(self, relpath: str, identity: Identity) -> int | None:
        key = (relpath, tuple(identity))
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd
        real = os.path.realpath(os.path.join(self.root, relpath))
        if not _inside(self.root, real):
            return None
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError:
            return None
        if not self.unchanged(fd, identity, check_inode=True):
            os.close(fd)
            return None
        self._fds[key] = fd
        if len(self._fds) > self.limit:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    @staticmethod
    def unchanged(fd: int, identity: Identity, check_inode: bool = False) -> bool:
        """Whether the open file is still that version (after a read: the read saw only it,
        since a write changes the mtime before any byte)."""
        st = os.fstat(fd)
        dev, ino, size, mtime_ns = identity
        return (st.st_size == size and st.st_mtime_ns == mtime_ns
                and (not check_inode or (st.st_dev, st.st_ino) == (dev, ino)))

    def forget(self, relpath: str, identity: Identity) -> None:
        fd = self._fds.pop((relpath, tuple(identity)), None)
        if fd is not None:
            os.close(fd)


# Levels for on-the-fly compression. Each result is computed once per file version (at most
# 1 MiB) and cached, but the first request for the file waits for it, so each level is the
# point past which more CPU buys little. Measured on this project's text (README, demo site,
# two 1 MiB JS bundles): gzip 6 is zlib's default (9 gains under 1% for 15% more time);
# brotli 5 is 6% smaller than 4 at 23 MB/s, and 6 gains 1% more at 60% of the speed; zstd 6
# is as small as gzip 6 on small files and 4-8% smaller on the bundles at twice its speed,
# while zstd 3 is larger than gzip 6 on 3 of the 5 files.
GZIP_LEVEL = 6
BROTLI_QUALITY = 5
ZSTD_LEVEL = 6


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)  # mtime 0: deterministic


def _brotli(data: bytes) -> bytes:
    import brotli  # the optional `compress` extra: loaded only by a helper asked for br

    return brotli.compress(data, quality=BROTLI_QUALITY)


def _zstd(data: bytes) -> bytes:
    import zstandard  # the optional `compress` extra: loaded only by a helper asked for zstd

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


_COMPRESSORS = {"gzip": _gzip, "br": _brotli, "zstd": _zstd}


def compress(fd: int, size: int, coding: str) -> bytes:
    """The file's bytes in a content-coding (a key of wire.COMPRESSORS); deterministic, so
    its length and ETag are the same every time the same version is compressed."""
    return _COMPRESSORS[coding](read(fd, 0, size))


def listdir(root: str, relpath: str) -> Result:
    """Entries of a directory below root: ("listing", [(name, is_dir, size, mtime), ...])."""
    path = os.path.join(root, relpath) if relpath else root
    real = os.path.realpath(path)
    if not _inside(root, real):
        return (FORBIDDEN,)
    entries = []
    try:
        with os.scandir(real) as it:
            for entry in it:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode) and _inside(root, os.path.realpath(entry.path)):
                    entries.append((entry.name, True, 0, int(st.st_mtime)))
                elif stat.S_ISREG(st.st_mode):
                    entries.append((entry.name, False, st.st_size, int(st.st_mtime)))
    except OSError as exc:
        return _failure(exc)
    return (LISTING, entries)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def add_watch(inotify_fd: int, root: str, relpath: str) -> Result:
    """Watch a directory below root on the caller's inotify instance (the descriptor the main
    process passed): ("watching", wd). Only a directory reached with no symbolic link on the
    way: a change behind a link would not be reported where the main process looks."""
    path = os.path.join(root, relpath) if relpath else root
    if os.path.realpath(path) != path or not _inside(root, path):
        return (FORBIDDEN,)
    wd = _libc().inotify_add_watch(inotify_fd, os.fsencode(path), WATCH_MASK)
    if wd < 0:
        err = ctypes.get_errno()
        return (ERROR, err, os.strerror(err))
    return (WATCHING, wd)
