"""The access log: one line per request, in the Common Log Format, nginx's `combined` format or
JSON, handed over in batches.

Lines are built as bytes (no decoding on the hot path) and collect in memory; when 64 KiB have
gathered, on the server's periodic tick (at least once a second) and at shutdown they go to a
`LogSink`, whose thread writes them: the loop never waits for the log, and when the log does
not keep up lines are dropped and counted (see flashsrv.logsink). `reopen()` (SIGUSR1) reopens
a file that logrotate moved away, also in that thread. Only the constructor opens a file: it
runs at start-up, before the loop serves, or in an executor thread on reload.

Every field a client controls is escaped so that it cannot forge another field or line.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType

from flashsrv.httpdate import MONTHS
from flashsrv.logsink import ACCESS, LogSink, open_log

FLUSH_BYTES = 64 * 1024
# httptools refuses control characters, spaces and non-ASCII bytes in a request-target, but lets
# `"` (0x22) and `\` (0x5c) through: those would let a client forge fields in a log line, so they
# (and, to be safe, anything outside printable ASCII) are written as \xHH. One character class,
# not an alternation: the regex engine then scans instead of trying branches (3x faster).
_UNSAFE = re.compile(rb"[^\x21\x23-\x5b\x5d-\x7e]")
# A quoted header value (Referer, User-Agent) keeps its spaces, as nginx writes it: log readers
# such as GoAccess take the browser and system from a user agent's words.
_UNSAFE_QUOTED = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")
NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_CONTENT_ENCODING = b"\r\nContent-Encoding: "


def clf_time(ts: float) -> str:
    t = time.gmtime(ts)
    return (f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def _hex(match: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % match.group()[0]


def safe(text: bytes, unsafe: re.Pattern[bytes] = _UNSAFE) -> bytes:
    """text with every byte `unsafe` matches (by default: what could break a request-target's
    field of a log line) written as \\xHH."""
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(_hex, text)


def quoted_field(value: str | None) -> bytes:
    """A request header's value (latin-1 text, as the reader keeps it) for a quoted field of a
    combined line: `-` when the request had none, as nginx writes it."""
    if value is None:
        return b"-"
    return safe(value.encode("latin-1"), _UNSAFE_QUOTED)


def content_coding(head: bytes) -> str:
    """The coding a response head declares (nginx's $sent_http_content_encoding), identity
    when it declares none."""
    start = head.find(_CONTENT_ENCODING)
    if start < 0:
        return "identity"
    start += len(_CONTENT_ENCODING)
    return head[start : head.find(b"\r\n", start)].decode("latin-1")


class AccessLog:
    """Batches request lines for a LogSink on stdout or a file (target '-' or a path); fmt is
    one of config.LOG_FORMATS."""

    def __init__(self, target: str, fmt: str = "clf") -> None:
        self.target = target
        self._clf = fmt == "clf"
        self.json = fmt == "json"
        # The combined and JSON formats record the request's Referer and User-Agent: only then
        # does a connection keep them (flashsrv.request_reader).
        self.reads_headers = not self._clf
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

    def write(self, addr: bytes, method: bytes, target: bytes, version: str, status: int,
              length: int, headers: Mapping[str, str] = NO_HEADERS, head: bytes = b"",
              began: float | None = None) -> None:
        """Log one response to a client at addr. headers: the request's (Referer and
        User-Agent, when the format records them); head: the response head (its
        Content-Encoding); began: the time.monotonic() at which the server took the request
        up (JSON's request_time_us; null when unknown)."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = clf_time(second).encode()
        if self._clf:
            line = b'%s - - [%s] "%s %s HTTP/%s" %d %d\n' % (
                addr, self._stamp, method, safe(target), version.encode(), status, length)
        elif self.json:
            line = self._json_line(addr, method, target, version, status, length, headers,
                                   head, began)
        else:
            line = b'%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s"\n' % (
                addr, self._stamp, method, safe(target), version.encode(), status, length,
                quoted_field(headers.get("referer")), quoted_field(headers.get("user-agent")))
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def _json_line(self, addr: bytes, method: bytes, target: bytes, version: str, status: int,
                   length: int, headers: Mapping[str, str], head: bytes, began: float | None
                   ) -> bytes:
        elapsed = None if began is None else round((time.monotonic() - began) * 1e6)
        return json.dumps({
            "time": self._stamp.decode(), "remote_addr": addr.decode(),
            "method": method.decode(), "path": target.decode("latin-1"),
            "protocol": f"HTTP/{version}", "status": status, "bytes": length,
            "request_time_us": elapsed, "encoding": content_coding(head),
            "referer": headers.get("referer"), "user_agent": headers.get("user-agent"),
        }).encode() + b"\n"

    def flush(self) -> None:
        if self._lines:
            self.sink.write(b"".join(self._lines), len(self._lines))
            self._lines.clear()
            self._size = 0

    def close(self) -> None:
        """Hand over the last lines; the sink's thread writes them and closes the file."""
        self.flush()
        self.sink.close()
