"""flashsrv.logsink: logs written by their own thread, bounded, dropping and counting.

Real descriptors: pipes (one that nobody reads, to make the log fill) and files in a temporary
folder. Each test counts its losses on a fresh LogLosses, not the process-wide one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsrv import logsink
from flashsrv.logsink import (
    ACCESS,
    ERROR,
    LIMIT,
    ErrorLog,
    LogLosses,
    LogSink,
    RateLimit,
    SinkHandler,
    open_log,
)

JOIN = 5.0


def summary(lines: int) -> bytes:
    return b"DROPPED %d\n" % lines


@pytest.fixture(autouse=True)
def losses(monkeypatch: pytest.MonkeyPatch) -> LogLosses:
    fresh = LogLosses()
    monkeypatch.setattr(logsink, "LOSSES", fresh)
    return fresh


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_lines_reach_the_descriptor_in_order_and_close_writes_the_rest(
        pipe: tuple[int, int]):
    r, w = pipe
    sink = LogSink(w, ACCESS, summary)
    for i in range(100):
        sink.write(b"line %d\n" % i)
    sink.close()
    sink.join(JOIN)
    os.close(w)  # a sink without a path leaves its descriptor (stdout, stderr) open
    assert read_all(r) == b"".join(b"line %d\n" % i for i in range(100))


def test_a_log_nobody_reads_drops_and_counts_past_its_bound_without_blocking(
        pipe: tuple[int, int], losses: LogLosses):
    r, w = pipe
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe: it is full at once
    line = b"x" * 1023 + b"\n"
    total = 4 * LIMIT // len(line)
    sink = LogSink(w, ACCESS, summary)
    started = time.monotonic()
    for _ in range(total):
        sink.write(line)
    assert time.monotonic() - started < 5, "writes to a full log must not wait"
    dropped = losses.dropped[ACCESS]
    # At most LIMIT bytes wait, besides the pipe's content and the batch being written.
    assert dropped >= total - (2 * LIMIT + 4096) // len(line)

    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(read_all(r)))
    reader.start()  # the consumer comes back: everything kept is written, then a summary
    sink.close()
    sink.join(JOIN)
    os.close(w)
    reader.join(JOIN)
    lines = out[0].splitlines(keepends=True)
    summaries = [int(x.split()[1]) for x in lines if x.startswith(b"DROPPED")]
    assert sum(summaries) == dropped, "the summary lines report every dropped line"
    assert lines.count(line) + dropped == total, "every line is either written or counted"
    assert losses.dropped[ERROR] == 0


def test_writes_after_close_are_counted_as_dropped(pipe: tuple[int, int], losses: LogLosses):
    sink = LogSink(pipe[1], ERROR, summary)
    sink.close()
    sink.write(b"late\n", lines=3)
    sink.join(JOIN)
    assert losses.dropped[ERROR] == 3


def test_a_failing_descriptor_drops_and_counts_instead_of_raising(pipe: tuple[int, int],
                                                                   losses: LogLosses):
    r, w = pipe
    os.close(r)  # every write now fails with EPIPE
    sink = LogSink(w, ACCESS, summary)
    sink.write(b"one\ntwo\n", lines=2)
    sink.close()
    sink.join(JOIN)
    assert losses.dropped[ACCESS] == 2


def test_a_file_log_is_reopened_after_rotation_and_closed_at_the_end(tmp_path: Path):
    path = tmp_path / "access.log"
    sink = LogSink(open_log(str(path)), ACCESS, summary, path=str(path))
    sink.write(b"before\n")
    deadline = time.monotonic() + JOIN
    while path.read_bytes() != b"before\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    path.rename(tmp_path / "access.log.1")  # logrotate
    sink.reopen()
    sink.write(b"after\n")
    sink.close()
    sink.join(JOIN)
    assert (tmp_path / "access.log.1").read_bytes() == b"before\n"
    assert path.read_bytes() == b"after\n"


def test_open_log_appends(tmp_path: Path):
    path = tmp_path / "log"
    path.write_bytes(b"old\n")
    fd = open_log(str(path))
    try:
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"old\nnew\n"


# -- logging: the handler, the rate limit, the error log ---------------------------------------


def record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("flashsrv.connection", level, __file__, 1, msg, args, None)


def test_sink_handler_keeps_a_record_whose_arguments_do_not_fit(pipe: tuple[int, int]):
    r, w = pipe
    sink = LogSink(w, ERROR, summary)
    handler = SinkHandler(sink)
    handler.emit(record(logging.WARNING, "%d requests", "many"))
    handler.emit(record(logging.INFO, "caf\udce9"))  # a lone surrogate: not UTF-8
    sink.close()
    sink.join(JOIN)
    os.close(w)
    assert read_all(r) == (b"WARNING flashsrv.connection: unformattable log record "
                           b"'%d requests'\ncaf\\udce9\n")


def test_rate_limit_lets_through_its_share_then_reports_the_rest(
        losses: LogLosses, caplog: pytest.LogCaptureFixture):
    report = logging.getLogger("test_logsink.report")
    limit = RateLimit(3, report)
    passed = [limit.filter(record(logging.INFO, "probe")) for _ in range(5)]
    assert passed == [True, True, True, False, False]
    assert limit.filter(record(logging.ERROR, "a real error")), "errors are never suppressed"
    assert losses.suppressed == 2
    with caplog.at_level(logging.WARNING, logger=report.name):
        limit.roll(time.monotonic() + 0.5)  # the same window: nothing to say yet
        assert not caplog.records
        limit.roll(time.monotonic() + 1.5)
    assert caplog.records[0].getMessage().startswith("2 connection log lines suppressed")
    assert limit.filter(record(logging.INFO, "probe")), "a new window lets lines through"


def test_error_log_writes_through_its_sink_and_restores_the_handlers(
        capfd: pytest.CaptureFixture):
    root = logging.getLogger()
    before = root.handlers[:]
    error_log = ErrorLog("%(levelname)s %(message)s", per_second=1)
    try:
        assert [type(h) for h in root.handlers] == [SinkHandler]
        connections = logging.getLogger("flashsrv.connection")
        level = connections.level
        connections.setLevel(logging.INFO)
        try:
            connections.info("first")
            connections.info("second: over the rate limit")
        finally:
            connections.setLevel(level)
    finally:
        error_log.close()
    error_log.sink.join(JOIN)
    assert root.handlers == before
    assert error_log.limit not in logging.getLogger("flashsrv.connection").filters
    err = capfd.readouterr().err
    assert "INFO first\n" in err and "second" not in err
