"""The access log: one line per request, Common Log Format or JSON, written in batches.

Lines are built as bytes (no decoding on the hot path) and collect in memory; they are written
when 64 KiB have gathered, on the server's periodic tick (at least once a second) and at
shutdown: one write per batch instead of one per request. `reopen()` (SIGUSR1) reopens a file
that logrotate moved away.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

FLUSH_BYTES = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# httptools refuses control characters, spaces and non-ASCII bytes in a request-target, but lets
# `"` and `\` through: those would let a client forge fields in a log line, so they (and, to be
# safe, anything outside printable ASCII) are written as \xHH.
_UNSAFE = re.compile(rb'[^\x21-\x7e]|["\\]')


def clf_time(ts: float) -> str:
    t = time.gmtime(ts)
    return (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def safe(text: bytes) -> bytes:
    """text with every byte that could break a log line written as \\xHH."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: b"\\x%02x" % m.group()[0], text)


class AccessLog:
    """Buffered writer of request lines to stdout or a file (target '-' or a path)."""

    def __init__(self, target: str, fmt: str = "clf") -> None:
        self.target = target
        self.json = fmt == "json"
        self._lines: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = b""
        self._fd = -1
        self.reopen()

    def reopen(self) -> None:
        self.flush()
        if self.target == "-":
            self._fd = sys.stdout.fileno()
            return
        new = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = new

    def write(self, prefix: bytes, method: bytes, target: bytes, version: str, status: int,
              length: int) -> None:
        """Log one response; prefix is `HOST - - [` (computed once per connection)."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = clf_time(second).encode()
        if self.json:
            line = json.dumps({
                "time": self._stamp.decode(), "remote_addr": prefix[:-6].decode(),
                "method": method.decode(), "path": target.decode("latin-1"),
                "protocol": f"HTTP/{version}", "status": status, "bytes": length,
            }).encode() + b"\n"
        else:
            line = b'%s%s] "%s %s HTTP/%s" %d %d\n' % (
                prefix, self._stamp, method, safe(target), version.encode(), status, length)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines or self._fd < 0:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except BlockingIOError:
            pass  # a non-blocking stdout that is full: drop the rest rather than stall
        except OSError as exc:
            print(f"flashsrv: access log write failed: {exc}", file=sys.stderr)

    def close(self) -> None:
        self.flush()
        if self.target != "-" and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
