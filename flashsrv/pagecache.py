"""Page-cache residency of a file range, by the cachestat(2) system call (Linux 6.5+).

The main process may hand a range to `sendfile` only if no page of it has to come from the
disk: cachestat counts the resident pages of a range through the descriptor, with no mmap and
no copy (Flash used mincore() on a mapping for the same question). Where the call does not
exist, `resident` answers None and the caller keeps to reads that cannot block.
"""

from __future__ import annotations

import ctypes
import os
import platform

PAGE = os.sysconf("SC_PAGE_SIZE")
# cachestat's number in the generic syscall table, shared by x86_64 and aarch64.
SYS_CACHESTAT = 451 if platform.machine() in ("x86_64", "aarch64") else None


class _Range(ctypes.Structure):
    _fields_ = (("off", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _Stat(ctypes.Structure):
    _fields_ = (("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64),
                ("nr_writeback", ctypes.c_uint64), ("nr_evicted", ctypes.c_uint64),
                ("nr_recently_evicted", ctypes.c_uint64))


class PageCache:
    """`resident(fd, offset, length)`: True, False, or None when the kernel cannot tell."""

    def __init__(self) -> None:
        self._syscall = None
        if SYS_CACHESTAT is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            self._syscall = libc.syscall
            self._range = _Range()
            self._stat = _Stat()
            self._args = (ctypes.byref(self._range), ctypes.byref(self._stat))
            probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if self.resident(probe, 0, 1) is None:
                    self._syscall = None
            finally:
                os.close(probe)

    @classmethod
    def unavailable(cls) -> PageCache:
        """One that always answers None (after sendfile refused a descriptor type)."""
        cache = cls.__new__(cls)
        cache._syscall = None
        return cache

    def resident(self, fd: int, offset: int, length: int) -> bool | None:
        if self._syscall is None:
            return None
        first = offset // PAGE
        pages = (offset + length + PAGE - 1) // PAGE - first
        self._range.off = first * PAGE
        self._range.len = pages * PAGE
        if self._syscall(SYS_CACHESTAT, fd, *self._args, 0) != 0:
            return None
        return self._stat.nr_cache >= pages
