"""The C heap of the main process, set so that streaming does not make the kernel zero pages.

Bodies that pass through memory (TLS streams, files that cannot go zero-copy) are read in
chunks of up to 256 KiB, each a new buffer freed soon after. With glibc's defaults the top of
the heap is given back with `brk` whenever more than twice the largest such chunk is free, and
taken again for the next one, so every chunk costs fresh pages: page faults and zeroing in the
kernel. Measured on a 1 MiB file over TLS (`loadtests/`): 3,354 `brk` calls in 3 s and
1.4-1.7 ms of system CPU per response, against 0.5-0.7 ms once the heap is kept. So the main
process keeps up to TRIM_THRESHOLD of free heap, and chunks up to MMAP_THRESHOLD come from
the heap rather than from a mapping of their own (mmap and munmap per chunk cost the same
page faults). Only glibc has these knobs; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("flashsrv")

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 32 << 20  # free heap kept before any is given back
TOP_PAD = 4 << 20  # extra heap taken with each brk, so growing is rare too
MMAP_THRESHOLD = 1 << 20  # larger blocks still get a mapping of their own, given back at free


def keep_heap() -> bool:
    """Set glibc's heap to be kept across chunks; whether it could be set (glibc only)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD)))
    if not ok:
        log.info("mallopt refused a setting: the C heap keeps its defaults")
    return ok
