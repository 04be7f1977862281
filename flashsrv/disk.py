"""The disk layer: one interface for every operation that may block, three ways to run it.

The concurrency models of the Flash paper differ only here:
- `amped` (HelperPool, in helper_pool.py): helper processes over socket pairs;
- `sped` (InlineDisk): the event loop calls the disk itself and stalls while it waits;
- `threads` (ThreadDisk): a thread pool, the hybrid many servers use.
All three run the same jobs (`flashsrv_helpers.jobs`), so a benchmark compares the models and
nothing else; they differ only in `_call`. Results arrive as the tuples that cross the helpers'
pipes and are decoded here, once, into the typed values below.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from flashsrv_helpers.jobs import Jobs
from flashsrv_helpers.wire import (
    CHANGED,
    COMPRESS,
    DATA,
    DIRECTORY,
    ERROR,
    FACTS,
    FILE,
    LISTDIR,
    LISTING,
    LOOKUP,
    MISSING,
    READ,
    STAT_MANY,
    WARM,
    WATCH,
    WATCHING,
)

# Precompressed siblings looked up beside every file: suffix -> content-coding.
SIBLING_CODINGS = {".br": "br", ".gz": "gzip", ".zst": "zstd"}


class DiskUnavailable(Exception):
    """The disk work could not be done now (helper died, timed out, queue full): answer 503."""


class FileChanged(Exception):
    """A file's bytes changed under a descriptor we hold (rewritten in place, truncated):
    what was read may mix two versions, so it must not be sent as either."""


class FileRef(Protocol):
    """One version of an open file, as the disk layer needs it: the descriptor the main
    process holds (-1 when a helper keeps it, see diskops.nowait_capable), the path it was
    found at and its identity (dev, ino, size, mtime_ns)."""

    fd: int
    path: str
    size: int
    identity: tuple


@dataclass(frozen=True, slots=True)
class FileFacts:
    """One file a lookup found: the file asked for (suffix "") or a precompressed sibling."""

    suffix: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    data: bytes | None  # the whole file, when it was small enough to read with the lookup
    passed: bool  # its descriptor came with the result
    direct: bool = False  # reached with no symbolic link on the way (inotify can watch it)

    @property
    def identity(self) -> tuple[int, int, int, int]:
        return (self.dev, self.ino, self.size, self.mtime_ns)

    @property
    def encoding(self) -> str:
        return SIBLING_CODINGS.get(self.suffix, "identity")


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a path translates to: a file, a directory (files: its index.html, if any),
    missing, forbidden, or an error."""

    kind: str
    files: tuple[FileFacts, ...] = ()
    errno: int = 0
    message: str = ""

    def facts(self, directory: bool) -> tuple[str, dict[str, tuple]]:
        """The kind and each file's identity by encoding: what revalidation compares. A
        path that ends in a slash names nothing when it finds a regular file (nginx)."""
        if directory and self.kind == FILE:
            return MISSING, {}
        return self.kind, {f.encoding: f.identity for f in self.files}


@dataclass(frozen=True, slots=True)
class Listing:
    """A directory's entries (name, is_dir, size, mtime), or why there are none (kind)."""

    kind: str
    entries: tuple[tuple[str, bool, int, int], ...] = ()


def decode_lookup(result: tuple) -> Lookup:
    kind = result[0]
    if kind in (FILE, DIRECTORY):
        return Lookup(kind, tuple(FileFacts(*facts) for facts in result[1]))
    if kind == ERROR:
        return Lookup(ERROR, (), result[1], result[2])
    return Lookup(kind)


def _raise_error(result: tuple) -> None:
    """An (ERROR, errno, message) result as the OSError it was in the helper."""
    if result[0] == ERROR:
        raise OSError(result[1], result[2])


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class Disk(ABC):
    """Asynchronous access to the blocking jobs; subclasses say only how a job runs."""

    def __init__(self, root: str) -> None:
        self.root = root

    def start(self) -> None:
        """Start whatever runs the work (called inside the running loop)."""
        return None

    async def close(self) -> None:
        """Stop it; pending work is abandoned."""
        return None

    def reap(self) -> None:
        """Collect finished worker processes (periodic; only helper processes have any)."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters for the admin endpoint."""
        return {}

    @abstractmethod
    async def _call(self, op: str, args: tuple, fd: int | None = None,
                    urgent: bool = False) -> tuple[tuple, list[int]]:
        """Run one job: (result tuple, descriptors the caller now owns). urgent: revalidation
        of what is already served, which must not wait behind cold work."""

    async def lookup(self, relpath: str, suffixes: tuple[str, ...], prefetch: int
                     ) -> tuple[Lookup, list[int]]:
        """Pathname translation; the caller owns the returned descriptors (one for each file
        whose `passed` is true, in order)."""
        result, fds = await self._call(LOOKUP, (relpath, suffixes, prefetch))
        return decode_lookup(result), fds

    async def stat_many(self, relpaths: list[str], suffixes: tuple[str, ...]) -> list[Lookup]:
        """What lookup would find for each path, opening nothing (revalidation in one job)."""
        result, fds = await self._call(STAT_MANY, (relpaths, suffixes), urgent=True)
        close_fds(fds)
        _raise_error(result)
        if result[0] != FACTS or len(result[1]) != len(relpaths):
            raise OSError(0, f"unexpected revalidation result {result[0]!r}")
        return [decode_lookup(item) for item in result[1]]

    async def listdir(self, relpath: str) -> Listing:
        result, fds = await self._call(LISTDIR, (relpath,))
        close_fds(fds)
        if result[0] == LISTING:
            return Listing(LISTING, tuple(tuple(entry) for entry in result[1]))
        return Listing(result[0])

    async def watch(self, relpath: str, inotify_fd: int) -> int:
        """Add a watch for a directory to the main process's inotify instance; its watch
        descriptor, or -1 when it cannot be watched (a link on the way, no watches left)."""
        result, fds = await self._call(WATCH, (relpath,), inotify_fd)
        close_fds(fds)
        return result[1] if result[0] == WATCHING else -1

    async def _file_job(self, op: str, file: FileRef, offset: int, length: int, *more: str):
        """A data job on one version of a file; its descriptor goes along when we hold one."""
        result, fds = await self._call(op, (file.path, file.identity, offset, length, *more),
                                       file.fd if file.fd >= 0 else None)
        close_fds(fds)
        if result == CHANGED:
            raise FileChanged
        _raise_error(result)
        if result[0] != DATA:
            raise OSError(0, f"unexpected data result {result[0]!r}")
        return result[1]

    async def read(self, file: FileRef, offset: int, length: int) -> bytes:
        """Bytes of that version of the file (fewer only at its end); FileChanged if gone."""
        return await self._file_job(READ, file, offset, length)

    async def warm(self, file: FileRef, offset: int, length: int) -> int:
        """Bring the range into the page cache; returns the bytes read."""
        return await self._file_job(WARM, file, offset, length)

    async def compress(self, file: FileRef, coding: str) -> bytes:
        """The file in a content-coding (a key of wire.COMPRESSORS): CPU-heavy, so it runs
        wherever the blocking work runs."""
        return await self._file_job(COMPRESS, file, 0, file.size, coding)


class InlineDisk(Disk):
    """SPED: the loop does the blocking call itself (the baseline AMPED exists to beat). It
    holds every descriptor itself, whatever the filesystem."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._jobs = Jobs(root, local_only=False)

    async def _call(self, op, args, fd=None, urgent=False):
        return self._jobs.run(op, args, fd)


class ThreadDisk(Disk):
    """Threads: the loop hands each job to a pool and awaits its future (the threads share
    one Jobs: its warm buffer's bytes are thrown away anyway)."""

    def __init__(self, root: str, threads: int) -> None:
        super().__init__(root)
        self._threads = threads
        self._jobs = Jobs(root, local_only=False)
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="flashsrv-disk")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, op, args, fd=None, urgent=False):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._jobs.run, op, args, fd)
