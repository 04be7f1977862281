"""The access log: one line per request, Common Log Format or JSON, written in batches.

Lines collect in memory and are written when 64 KiB have gathered, on the server's periodic
tick (at least once a second) and at shutdown: one write per batch instead of one per request.
`reopen()` (SIGUSR1) reopens a file that logrotate moved away.
"""

from __future__ import annotations

import json
import os
import sys
import time

FLUSH_BYTES = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Quotes, backslashes and control characters in a request line would let a client forge log
# lines or break parsers: they are written as \xHH.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x22, 0x5C, 0x7F)}


def clf_time(ts: float) -> str:
    t = time.gmtime(ts)
    return (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def safe(text: str) -> str:
    return text.translate(_ESCAPES)


class AccessLog:
    """Buffered writer of request lines to stdout or a file (target '-' or a path)."""

    def __init__(self, target: str, fmt: str = "clf") -> None:
        self.target = target
        self.json = fmt == "json"
        self._lines: list[str] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
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

    def write(self, peer: str, method: str, target: str, version: str, status: int,
              length: int) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = clf_time(second)
        if self.json:
            line = json.dumps({
                "time": self._stamp, "remote_addr": peer, "method": method, "path": target,
                "protocol": f"HTTP/{version}", "status": status, "bytes": length,
            }) + "\n"
        else:
            line = (f'{peer} - - [{self._stamp}] "{safe(method)} {safe(target)} '
                    f'HTTP/{version}" {status} {length}\n')
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines or self._fd < 0:
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
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
