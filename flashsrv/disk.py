"""The disk layer: one interface for every operation that may block, three ways to run it.

The concurrency models of the Flash paper differ only here:
- `amped` (HelperPool, in helper_pool.py): helper processes over socket pairs;
- `sped` (InlineDisk): the event loop calls the disk itself and stalls while it waits;
- `threads` (ThreadDisk): a thread pool, the hybrid many servers use.
All three run the same functions from `flashsrv_helpers.diskops`, so a benchmark compares the
models and nothing else.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from flashsrv_helpers import diskops


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


class Disk(ABC):
    """Asynchronous access to the blocking operations of `diskops`."""

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
    async def lookup(
        self, relpath: str, suffixes: tuple[str, ...], prefetch: int
    ) -> tuple[tuple, list[int]]:
        """diskops.lookup; the caller owns the returned descriptors."""

    @abstractmethod
    async def read(self, file: FileRef, offset: int, length: int) -> bytes:
        """diskops.read of that version of the file; FileChanged if it is gone."""

    @abstractmethod
    async def warm(self, file: FileRef, offset: int, length: int) -> int:
        """diskops.warm: bring the range into the page cache; returns the bytes read."""

    @abstractmethod
    async def listdir(self, relpath: str) -> tuple:
        """diskops.listdir."""

    @abstractmethod
    async def stat_many(self, relpaths: list[str], suffixes: tuple[str, ...]) -> list[tuple]:
        """diskops.stat_many: revalidation of many cached entries in one job."""

    @abstractmethod
    async def gzip(self, file: FileRef) -> bytes:
        """diskops.gzip_file: CPU-heavy, so it runs wherever the blocking work runs."""


# The sped and threads models run diskops in the main process, which holds every descriptor
# (lookups there pass them all): their data jobs always have file.fd.
_WARM_BUFFER = bytearray(diskops.WARM_BUFFER)


class InlineDisk(Disk):
    """SPED: the loop does the blocking call itself (the baseline AMPED exists to beat)."""

    async def lookup(self, relpath, suffixes, prefetch):
        return diskops.lookup(self.root, relpath, suffixes, prefetch)

    async def read(self, file, offset, length):
        return diskops.read(file.fd, offset, length)

    async def warm(self, file, offset, length):
        return diskops.warm(file.fd, offset, length, _WARM_BUFFER)

    async def listdir(self, relpath):
        return diskops.listdir(self.root, relpath)

    async def gzip(self, file):
        return diskops.gzip_file(file.fd, file.size)

    async def stat_many(self, relpaths, suffixes):
        return diskops.stat_many(self.root, relpaths, suffixes)


class ThreadDisk(Disk):
    """Threads: the loop hands each blocking call to a pool and awaits its future."""

    def __init__(self, root: str, threads: int) -> None:
        super().__init__(root)
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="flashsrv-disk")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def lookup(self, relpath, suffixes, prefetch):
        return await self._run(diskops.lookup, self.root, relpath, suffixes, prefetch)

    async def read(self, file, offset, length):
        return await self._run(diskops.read, file.fd, offset, length)

    async def warm(self, file, offset, length):
        # The pool's threads share the buffer: its bytes are thrown away anyway.
        return await self._run(diskops.warm, file.fd, offset, length, _WARM_BUFFER)

    async def listdir(self, relpath):
        return await self._run(diskops.listdir, self.root, relpath)

    async def gzip(self, file):
        return await self._run(diskops.gzip_file, file.fd, file.size)

    async def stat_many(self, relpaths, suffixes):
        return await self._run(diskops.stat_many, self.root, relpaths, suffixes)


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
