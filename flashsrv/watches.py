"""Kernel change events for the path cache: inotify watches on the directories of served files.

An entry whose directories are watched needs no periodic revalidation: it is trusted until the
kernel reports a change in one of them. The main process owns one inotify instance and reads
its events as one more readiness event in the loop (reading an inotify descriptor never touches
a disk). Adding a watch takes a path, so the main process never does it: a helper adds the
watch to this same instance, through the descriptor passed to it (`Disk.watch`).

Only what inotify can see is trusted this way: files whose descriptors the main process holds
(local filesystems, see `diskops.nowait_capable`; a FUSE or network filesystem changed behind
the kernel's back reports nothing) and that were reached with no symbolic link on the way. The
rest keeps the stat revalidation of `content`. A watch counts for an entry only if it existed
before the lookup that made the entry began, so no change can fall between the two.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
from collections.abc import Callable
from time import monotonic

from flashsrv_helpers.wire import IN_DELETE_SELF, IN_IGNORED, IN_MOVE_SELF, IN_Q_OVERFLOW

from flashsrv.disk import Disk

log = logging.getLogger("flashsrv.content")

IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000  # inotify_init1 flags
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
READ_BYTES = 64 * 1024


def ancestors(relpath: str) -> list[str]:
    """The directories a served file depends on, root ("") first: a rename of any of them
    changes what the path leads to."""
    parts = relpath.split("/")[:-1]
    return ["", *("/".join(parts[: i + 1]) for i in range(len(parts)))]


class ChangeWatches:
    """Watched directories (relpath -> since when) and what to do when one changes."""

    def __init__(self, disk: Disk,
                 on_change: Callable[[list[tuple[str, str | None]] | None], None]) -> None:
        self.disk = disk
        # Called with the changes as (directory, name or None for the directory itself), or
        # with None when events were lost and nothing watched can be trusted.
        self.on_change = on_change
        self.fd = -1
        self._since: dict[str, float] = {}  # watched directory -> when its watch existed
        self._dirs: dict[int, str] = {}  # wd -> directory
        self._adding: set[str] = set()
        self.events = 0

    def start(self) -> bool:
        """Create the inotify instance and read it from the loop; False where there is none."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.warning("no inotify: cached files are revalidated by stat")
            return False
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._read)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1

    def __len__(self) -> int:
        return len(self._since)

    def covers(self, served_path: str, since: float) -> bool:
        """Whether every directory of served_path was watched by `since`; asks for watches
        on the ones that are not (a later revalidation can then rely on them)."""
        if self.fd < 0:
            return False
        covered = True
        for directory in ancestors(served_path):
            at = self._since.get(directory)
            if at is None or at > since:
                covered = False
                if at is None and directory not in self._adding:
                    self._adding.add(directory)
                    asyncio.get_running_loop().create_task(self._add(directory))
        return covered

    async def _add(self, directory: str) -> None:
        try:
            wd = await self.disk.watch(directory, self.fd)
        except Exception as exc:  # a watch is an optimisation: stat revalidation stays
            log.warning("cannot watch %r: %s", directory, exc)
            wd = -1
        finally:
            self._adding.discard(directory)
        if wd >= 0 and self.fd >= 0:
            self._dirs[wd] = directory
            self._since[directory] = monotonic()

    def _read(self) -> None:
        try:
            data = os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return
        offset = 0
        changes: list[tuple[str, str | None]] = []
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            self.events += 1
            if mask & IN_Q_OVERFLOW:  # events were lost: nothing watched can be trusted
                self._since.clear()
                self._dirs.clear()
                self.on_change(None)
                return
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                self._dirs.pop(wd, None)
                self._since.pop(directory, None)
            changes.append((directory, os.fsdecode(name) if name else None))
        if changes:
            self.on_change(changes)
