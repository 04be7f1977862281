"""flashsrv.allocator: the main process keeps its C heap instead of trading pages with the
kernel for every chunk of a streamed body. Checked by counting `brk` calls under strace."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from flashsrv.allocator import keep_heap

# What a TLS stream does: a 256 KiB chunk is read, cut into records that are encrypted into
# new buffers, those are joined for the socket, and all of it is freed.
CHURN = """
import sys
from flashsrv.allocator import keep_heap
if sys.argv[1] == "keep":
    assert keep_heap()
for _ in range(300):
    chunk = bytearray(256 * 1024)
    records = [bytes(chunk[i:i + 16384]) for i in range(0, len(chunk), 16384)]
    del chunk
    out = b"".join(records)
    del records, out
"""


def _brk_calls(mode: str) -> int:
    out = subprocess.run(["strace", "-f", "-c", "-e", "trace=brk", "-o", "/dev/stdout",
                          sys.executable, "-c", CHURN, mode],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[-1] == "brk":
            return int(fields[3])
    return 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_kept_heap_stops_the_brk_round_trips_of_streamed_chunks():
    churned, kept = _brk_calls("default"), _brk_calls("keep")
    assert churned >= 300, f"the default heap should give back and take again: {churned}"
    assert kept < 50, f"kept heap still called brk {kept} times"


def test_keep_heap_is_available_on_glibc():
    assert keep_heap() is (sys.platform == "linux" and "glibc" in " ".join(
        __import__("platform").libc_ver()))
