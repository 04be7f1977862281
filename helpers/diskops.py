"""The blocking disk operations: everything in flashsrv that may wait for a disk lives here.

Helpers run these in their own processes (the AMPED model); the `sped` model calls them inline
on the event loop and the `threads` model from a thread pool, so every model runs the same code.

The caller hands in a path already normalised by the main process (no `..` segments, no NUL, no
leading slash); these functions still refuse anything whose real path leaves the document root,
because symbolic links are only visible here. Results are plain tuples (they cross a pipe):

- ("file", variants)      variants: [(suffix, size, mtime_ns, ino, dev, data|None), ...]; the
                          i-th descriptor returned beside the result belongs to the i-th variant
- ("dir", variants)       the directory's index.html as file variants, or [] when there is none
- ("missing",) / ("forbidden",) / ("error", errno, message)
"""

from __future__ import annotations

import errno
import gzip
import os
import stat

INDEX_NAME = "index.html"
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW

Result = tuple
Variant = tuple[str, int, int, int, int, bytes | None]


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root + os.sep)


def _failure(exc: OSError) -> Result:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return ("missing",)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
        return ("forbidden",)
    return ("error", exc.errno or 0, exc.strerror or str(exc))


def _regular(root: str, path: str, prefetch: int, open_file: bool
             ) -> tuple[Variant, int] | Result:
    """One regular file below root: its facts and, with open_file, a descriptor (else -1);
    or a failure tuple.

    Opening resolves symbolic links first and refuses a real path outside the root. A stat
    without opening (revalidation) skips that: it only tells whether the path still leads to
    the same inode as an earlier, checked lookup, and anything else makes the caller look up
    afresh, with the check.
    """
    real = path
    if open_file:
        real = os.path.realpath(path)
        if not _inside(root, real):
            return ("forbidden",)
    fd = -1
    try:
        if open_file:
            fd = os.open(real, _OPEN_FLAGS)
            st = os.fstat(fd)
        else:
            st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            result: Result = ("dir", [])
        elif not stat.S_ISREG(st.st_mode):
            result = ("forbidden",)
        else:
            data = os.pread(fd, st.st_size, 0) if open_file and st.st_size <= prefetch else None
            size = st.st_size if data is None else len(data)
            return ("", size, st.st_mtime_ns, st.st_ino, st.st_dev, data), fd
    except OSError as exc:
        result = _failure(exc)
    if fd >= 0:
        os.close(fd)
    return result


def _variants(
    root: str, path: str, suffixes: tuple[str, ...], prefetch: int, open_file: bool
) -> tuple[Result, list[int]]:
    """The file at path and its precompressed siblings (path + suffix) that exist."""
    first = _regular(root, path, prefetch, open_file)
    if not isinstance(first[0], tuple):
        return first, []
    variants: list[Variant] = [first[0]]
    fds = [first[1]]
    for suffix in suffixes:
        sibling = _regular(root, path + suffix, prefetch, open_file)
        if isinstance(sibling[0], tuple):
            variant, fd = sibling
            variants.append((suffix, *variant[1:]))
            fds.append(fd)
    return ("file", variants), fds if open_file else []


def lookup(
    root: str, relpath: str, suffixes: tuple[str, ...] = (), prefetch: int = 0,
    open_file: bool = True,
) -> tuple[Result, list[int]]:
    """Translate a normalised relative path into open files (pathname translation); without
    open_file, only the facts (for revalidating what is already open)."""
    path = os.path.join(root, relpath) if relpath else root
    result, fds = _variants(root, path, suffixes, prefetch, open_file)
    if result[0] != "dir":
        return result, fds
    index, fds = _variants(root, os.path.join(path, INDEX_NAME), suffixes, prefetch, open_file)
    return ("dir", index[1] if index[0] == "file" else []), fds


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


def gzip_file(fd: int, size: int, level: int = 6) -> bytes:
    """The file's bytes gzip-compressed; deterministic (mtime 0) so its length and ETag are
    the same every time the same version is compressed."""
    return gzip.compress(read(fd, 0, size), compresslevel=level, mtime=0)


def listdir(root: str, relpath: str) -> Result:
    """Entries of a directory below root: ("listing", [(name, is_dir, size, mtime), ...])."""
    path = os.path.join(root, relpath) if relpath else root
    real = os.path.realpath(path)
    if not _inside(root, real):
        return ("forbidden",)
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
    return ("listing", entries)
