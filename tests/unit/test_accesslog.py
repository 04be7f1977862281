"""flashsrv.accesslog: log lines a client cannot forge fields in, and their format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.accesslog import AccessLog, clf_time, safe

_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def unescape(text: bytes) -> bytes:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text)


def test_clean_target_is_returned_as_it_is():
    text = b"/docs/page.txt?v=1&x=%20"
    assert safe(text) is text


@pytest.mark.parametrize(("text", "logged"), [
    (b'/a"b', b"/a\\x22b"),
    (b"/a\\b", b"/a\\x5cb"),
    (b"/a b", b"/a\\x20b"),
    (b"/a\nb\rc", b"/a\\x0ab\\x0dc"),
    (b"/\x00\x1b[31m", b"/\\x00\\x1b[31m"),
    (b"/\x7f\x80\xff", b"/\\x7f\\x80\\xff"),
    (b'" 200 0\n1.2.3.4 - - [x] "GET /forged', None),
])
def test_quotes_backslashes_and_control_bytes_are_escaped(text, logged):
    out = safe(text)
    if logged is not None:
        assert out == logged
    assert b'"' not in out and b"\n" not in out


@given(st.binary(max_size=200))
def test_any_target_logs_as_printable_ascii_without_quotes_and_can_be_read_back(text):
    out = safe(text)
    assert all(0x21 <= byte <= 0x7E for byte in out)
    assert b'"' not in out
    # Every backslash starts an escape, so the original can be recovered: nothing is ambiguous.
    assert re.fullmatch(rb"(?:[^\\]|\\x[0-9a-f]{2})*", out)
    assert unescape(out) == text


def test_clf_time_is_day_month_year_time_and_utc_offset():
    assert clf_time(0) == "01/Jan/1970:00:00:00 +0000"
    assert clf_time(1_700_000_000.9) == "14/Nov/2023:22:13:20 +0000"


def _written(log: AccessLog, path: Path) -> bytes:
    log.close()
    log.sink.join(5)
    return path.read_bytes()


def test_common_log_format_line_has_an_escaped_target(tmp_path: Path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.write(b"192.0.2.7 - - [", b"GET", b'/a"b', "1.1", 200, 6)
    line = _written(log, path)
    assert re.fullmatch(
        rb'192\.0\.2\.7 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
        rb'"GET /a\\x22b HTTP/1\.1" 200 6\n', line), line


def test_json_line_carries_the_fields_as_json(tmp_path: Path):
    path = tmp_path / "access.json"
    log = AccessLog(str(path), "json")
    log.write(b"192.0.2.7 - - [", b"HEAD", b'/a"b', "1.0", 304, 0)
    record = json.loads(_written(log, path))
    assert record["remote_addr"] == "192.0.2.7"
    assert (record["method"], record["path"], record["protocol"]) == ("HEAD", '/a"b', "HTTP/1.0")
    assert (record["status"], record["bytes"]) == (304, 0)
