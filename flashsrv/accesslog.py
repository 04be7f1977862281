"""The access log: one line per request, Common Log Format or JSON, handed over in batches.

Lines are built as bytes (no decoding on the hot path) and collect in memory; when 64 KiB have
gathered, on the server's periodic tick (at least once a second) and at shutdown they go to a
`LogSink`, whose thread writes them: the loop never waits for the log, and when the log does
not keep up lines are dropped and counted (see flashsrv.logsink). `reopen()` (SIGUSR1) reopens
a file that logrotate moved away, also in that thread. Only the constructor opens a file: it
runs at start-up, before the loop serves, or in an executor thread on reload.
"""

from __future__ import annotations

import json
import re
import sys
import time

from flashsrv.httpdate import MONTHS
from flashsrv.logsink import ACCESS, LogSink, open_log

FLUSH_BYTES = 64 * 1024
# httptools refuses control characters, spaces and non-ASCII bytes in a request-target, but lets
# `"` and `\` through: those would let a client forge fields in a log line, so they (and, to be
# safe, anything outside printable ASCII) are written as \xHH.
_UNSAFE = re.compile(rb'[^\x21-\x7e]|["\\]')


def clf_time(ts: float) -> str:
    t = time.gmtime(ts)
    return (f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def safe(text: bytes) -> bytes:
    """text with every byte that could break a log line written as \\xHH."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: b"\\x%02x" % m.group()[0], text)


class AccessLog:
    """Batches request lines for a LogSink on stdout or a file (target '-' or a path)."""

    def __init__(self, target: str, fmt: str = "clf") -> None:
        self.target = target
        self.json = fmt == "json"
        self._lines: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = b""
        if target == "-":
            self.sink = LogSink(sys.stdout.fileno(), ACCESS, self._summary)
        else:
            self.sink = LogSink(open_log(target), ACCESS, self._summary, path=target)

    def _summary(self, lines: int) -> bytes:
        """The line that stands for `lines` dropped lines (JSON in a JSON log)."""
        text = f"{lines} access log lines dropped: the log was full or failing"
        if self.json:
            return json.dumps({"time": clf_time(time.time()), "event": text}).encode() + b"\n"
        return f"flashsrv: {text}\n".encode()

    def reopen(self) -> None:
        self.flush()
        self.sink.reopen()

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
        if self._lines:
            self.sink.write(b"".join(self._lines), len(self._lines))
            self._lines.clear()
            self._size = 0

    def close(self) -> None:
        """Hand over the last lines; the sink's thread writes them and closes the file."""
        self.flush()
        self.sink.close()
