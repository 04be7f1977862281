"""Logs that never make the event loop wait: a bounded buffer per log, written by its own thread.

A log is I/O like any other. write(2) on stdout or stderr waits when the pipe behind it is full
(a log collector that stopped reading, `docker logs` back-pressure), on a terminal held by ^S,
on a socket to journald; write(2), open(2) and close(2) on a file wait for a slow or network
filesystem. So the loop never makes these calls: it appends bytes to a `LogSink` (a list under
a lock held for microseconds) and the sink's thread does every write, open and close. A thread
rather than O_NONBLOCK because it is one mechanism for every kind of descriptor: O_NONBLOCK does
nothing for regular files, a socket cannot be reopened through /proc to get a flag of its own,
and setting it on an inherited pipe or terminal changes it for every process sharing it (the
helpers, the shell). The thread sets no flag and its blocking calls release the GIL.

At most `LIMIT` bytes (1 MiB) wait per log, besides the batch the thread is writing. Lines that
would go over are dropped and counted (`LOSSES`, /metrics: `flashsrv_log_dropped_total`), and
once the log takes writes again one summary line says how many went missing at that point. The
connection log's INFO and WARNING lines, whose number clients decide (404 probes, malformed
requests, timeouts), are also rate-limited (`RateLimit`). Nothing here may block its caller,
raise into it, or print a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Final

LIMIT = 1 << 20
ACCESS, ERROR = "access", "error"
# Client-driven INFO/WARNING lines of the connection log let through per second.
CONNECTION_LINES_PER_SECOND = 20


class _Marker(Enum):
    REOPEN = "reopen"  # queued in a sink: reopen its path at this point


_REOPEN: Final = _Marker.REOPEN


class LogLosses:
    """Lines of this process's logs that never got written, for /metrics: dropped per log (full
    or failing) and suppressed (over the rate limit). Process-wide like `logging` itself, so a
    count survives a reload that replaces the access log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Fixed keys: /metrics iterates the dict while writer threads update it.
        self.dropped: dict[str, int] = dict.fromkeys((ACCESS, ERROR), 0)
        self.suppressed = 0

    def drop(self, log: str, lines: int) -> None:
        with self._lock:
            self.dropped[log] += lines


LOSSES = LogLosses()


def open_log(path: str) -> int:
    """Open a log file for appending (this may block: never call it on the loop once it runs)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class LogSink:
    """A bounded queue of log bytes in front of one descriptor, written by a thread of its own.

    fd is closed by the sink when path is given (a file it may reopen); stdout and stderr are
    left open. summary(n) is the line reporting n dropped lines, in the log's own format.
    """

    def __init__(self, fd: int, log: str, summary: Callable[[int], bytes],
                 path: str | None = None) -> None:
        self.log = log
        self.path = path
        self._fd = fd
        self._summary = summary
        self._cond = threading.Condition(threading.Lock())
        # bytes to write, int: that many lines dropped here, _REOPEN: reopen path here.
        self._items: list[bytes | int | _Marker] = []
        self._waiting = 0
        self._closing = False
        self._unreported = 0  # dropped lines no summary line has reported yet (thread only)
        self._thread = threading.Thread(target=self._run, name=f"flashsrv-{log}-log",
                                         daemon=True)
        self._thread.start()

    def write(self, data: bytes, lines: int = 1) -> None:
        """Queue data (holding `lines` lines), or drop and count it when the queue is full."""
        with self._cond:
            items = self._items
            if self._closing or self._waiting + len(data) > LIMIT:
                LOSSES.drop(self.log, lines)
                if self._closing:
                    return
                if items and type(items[-1]) is int:
                    items[-1] += lines  # one summary line for a run of drops
                else:
                    items.append(lines)
            else:
                items.append(data)
                self._waiting += len(data)
            self._cond.notify()

    def reopen(self) -> None:
        """Open path again (logrotate moved the file): lines queued before this go to the old
        file, lines after to the new one."""
        if self.path is not None:
            with self._cond:
                self._items.append(_REOPEN)
                self._cond.notify()

    def close(self) -> None:
        """Write what is queued, close the file and end the thread; returns at once."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        """Wait (off the loop) up to timeout for close() to finish: a log nobody reads loses
        its last lines rather than holding up the process's exit."""
        self._thread.join(timeout)

    # -- the writer thread: everything below may block ----------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                items, self._items, self._waiting = self._items, [], 0
                closing = self._closing
            batch: list[bytes] = []
            for item in items:
                if isinstance(item, bytes):
                    batch.append(item)
                    continue
                self._put(batch)
                batch = []
                if item is _REOPEN:
                    self._reopen()
                else:
                    self._unreported += item
            self._put(batch)
            if closing:
                if self.path is not None:
                    with contextlib.suppress(OSError):
                        os.close(self._fd)
                return

    def _put(self, batch: list[bytes]) -> None:
        """Report earlier drops, then write batch in one call; what fails is dropped."""
        if self._unreported and not self._send(self._summary(self._unreported)):
            self._unreported = 0
        if batch:
            rest = self._send(b"".join(batch))
            if rest:
                lost = rest.count(b"\n")
                LOSSES.drop(self.log, lost)
                self._unreported += lost

    def _send(self, data: bytes) -> bytes:
        """Write all of data (this is where the thread waits for a full pipe); the unwritten
        rest if the descriptor fails (EPIPE, ENOSPC, EIO)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            return bytes(view)
        return b""

    def _reopen(self) -> None:
        path = self.path
        if path is None:  # never: reopen() queues _REOPEN only in a sink that has a path
            return
        try:
            fd = open_log(path)
        except OSError as exc:
            logging.getLogger("flashsrv").error("cannot reopen %s, still writing to the old "
                                                "file: %s", self.path, exc.strerror)
            return
        old, self._fd = self._fd, fd
        with contextlib.suppress(OSError):
            os.close(old)


class SinkHandler(logging.Handler):
    """A logging handler that queues each formatted record on a LogSink: it never waits for the
    log and never raises (a full stderr costs counted lines, not a traceback on that stderr)."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # arguments that do not fit the message: keep the message at least
            line = f"{record.levelname} {record.name}: unformattable log record {record.msg!r}"
        self.sink.write(line.encode("utf-8", "backslashreplace") + b"\n")


class RateLimit(logging.Filter):
    """Lets at most per_second records below ERROR through in each one-second window and counts
    the rest: clients decide how many 404 probes, malformed requests and timeouts there are, so
    they must not decide how much is logged. A window that suppressed lines ends with one line
    saying how many; `roll` is also called by the server's tick, for when the flood stops."""

    def __init__(self, per_second: int, report: logging.Logger) -> None:
        super().__init__()
        self.per_second = per_second
        self.report = report
        self._window = 0.0
        self._passed = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        self.roll(time.monotonic())
        if self._passed < self.per_second:
            self._passed += 1
            return True
        self._suppressed += 1
        LOSSES.suppressed += 1
        return False

    def roll(self, now: float) -> None:
        """Start a new window if the current one is a second old."""
        if now - self._window < 1.0:
            return
        if self._suppressed:
            self.report.warning("%d connection log lines suppressed in %.1f s (at most %d a "
                                "second are logged)", self._suppressed, now - self._window,
                                self.per_second)
        self._window, self._passed, self._suppressed = now, 0, 0


class ErrorLog:
    """Python logging on stderr through a LogSink while the event loop runs, with the rate limit
    on the connection logger. close() puts the previous (blocking) handlers back: after the loop
    there is nothing left to stall."""

    def __init__(self, fmt: str, connection_logger: str = "flashsrv.connection",
                 per_second: int = CONNECTION_LINES_PER_SECOND) -> None:
        self._formatter = logging.Formatter(fmt)
        self.sink = LogSink(sys.stderr.fileno(), ERROR, self._summary)
        handler = SinkHandler(self.sink)
        handler.setFormatter(self._formatter)
        self.limit = RateLimit(per_second, logging.getLogger("flashsrv"))
        self._connections = logging.getLogger(connection_logger)
        self._connections.addFilter(self.limit)
        root = logging.getLogger()
        self._saved = root.handlers[:]
        root.handlers = [handler]

    def _summary(self, lines: int) -> bytes:
        record = logging.LogRecord("flashsrv", logging.WARNING, __file__, 0,
                                   "%d error log lines dropped: stderr was full or failing",
                                   (lines,), None)
        return self._formatter.format(record).encode() + b"\n"

    def close(self) -> None:
        self._connections.removeFilter(self.limit)
        logging.getLogger().handlers = self._saved
        self.sink.close()
