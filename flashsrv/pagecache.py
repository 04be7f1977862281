"""Page-cache residency of a file range: which bytes can be sent now without waiting.

The main process may hand a range to `sendfile` only if no page of it has to come from the disk.
The question is answered the way Flash answered it: `mincore(2)` on a read-only shared mapping of
the file that is never touched (touching a page that is not resident would be a page fault, a
disk read the loop cannot see coming). mincore reports a page only when its data is up to date;
`cachestat(2)` also counts pages whose read is still in flight (readahead a helper started), and
a `sendfile` it approved was measured waiting up to 2 s for the disk. No reads and no page faults
here: map, ask, unmap.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os

PAGE = os.sysconf("SC_PAGE_SIZE")
# Residency is asked about at most this many bytes at a time (the caller's per-call bound).
MAX_QUERY = 1 << 20
_MAP_FAILED = ctypes.c_void_p(-1).value


class Residency:
    """`map(fd, size)` once per open file, then `resident(addr, offset, length)`: how many
    bytes from offset are resident and up to date (a prefix of the range)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap = libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long)
        self._munmap = libc.munmap
        self._munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self._mincore = libc.mincore
        self._mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        self._vec = (ctypes.c_ubyte * (MAX_QUERY // PAGE + 2))()

    def map(self, fd: int, size: int) -> int:
        """A read-only mapping of the file's first size bytes, never to be touched; 0 when the
        kernel refuses (then the caller keeps to reads that cannot block)."""
        if size <= 0:
            return 0
        addr = self._mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        return 0 if addr in (None, _MAP_FAILED) else addr

    def unmap(self, addr: int, size: int) -> None:
        self._munmap(addr, size)

    def resident(self, addr: int, offset: int, length: int) -> int:
        """Bytes of [offset, offset + length) resident from offset on, length at most
        MAX_QUERY; 0 if the first page is not (or the kernel cannot tell)."""
        length = min(length, MAX_QUERY)
        first = offset - offset % PAGE
        pages = (offset + length - first + PAGE - 1) // PAGE
        if self._mincore(addr + first, pages * PAGE, self._vec) != 0:
            return 0
        missing = ctypes.string_at(self._vec, pages).find(b"\x00")
        if missing < 0:
            return length
        return max(0, min(length, first + missing * PAGE - offset))


# One per process: open files unmap themselves through it when they are dropped.
residency = Residency()


def release(fd: int, mapping: int, size: int) -> None:
    """Give back what an open file held: its never-touched mapping and its descriptor (-1 and
    0 for none). Called when the last response using that version of the file is done."""
    if mapping > 0:
        residency.unmap(mapping, size)
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
