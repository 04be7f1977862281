"""flashsrv.accesslog: log lines a client cannot forge fields in, and their format."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.accesslog import AccessLog, clf_time, content_coding, quoted_field, safe
from flashsrv.request_reader import RequestReader
from flashsrv.responder import Request

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


_STAMP = rb"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]"
# A referer that tries to end its field, forge a status and size, and start a second line.
_FORGING_REFERER = 'https://evil.test/" 200 999 "-" "x"\n203.0.113.9 - - [01/Jan/2020] "GET /'
# A user agent with a tab, a terminal escape, a backslash and UTF-8 (kept as latin-1 text).
_HOSTILE_AGENT = "Mozilla/5.0 (X11)\t\x1b[31m C:\\evil " + "é".encode().decode("latin-1")


def _logged(tmp_path: Path, fmt: str, *writes: tuple) -> bytes:
    """What an AccessLog in fmt writes for these argument tuples of its write()."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path), fmt)
    for args in writes:
        log.write(*args)
    log.close()
    log.sink.join(5)
    return path.read_bytes()


def test_common_log_format_line_has_an_escaped_target(tmp_path: Path):
    line = _logged(tmp_path, "clf",
                   (b"192.0.2.7", b"GET", b'/a"b', "1.1", 200, 6, {"referer": "https://r.test/"}))
    assert re.fullmatch(rb'192\.0\.2\.7 - - ' + _STAMP + rb' "GET /a\\x22b HTTP/1\.1" 200 6\n',
                        line), line


def test_combined_line_is_clf_then_quoted_referer_and_user_agent(tmp_path: Path):
    line = _logged(tmp_path, "combined", (
        b"2001:db8::7", b"GET", b"/docs/page.txt?v=1", "1.1", 200, 11,
        {"referer": "https://example.test/from?q=1", "user-agent": "curl/8.5.0 (x) y"}))
    assert re.fullmatch(rb'2001:db8::7 - - ' + _STAMP + rb' "GET /docs/page\.txt\?v=1 HTTP/1\.1" '
                        rb'200 11 "https://example\.test/from\?q=1" "curl/8\.5\.0 \(x\) y"\n',
                        line), line


def test_combined_line_writes_a_dash_for_a_missing_header_and_keeps_an_empty_one(
        tmp_path: Path):
    first, second = _logged(tmp_path, "combined", (b"192.0.2.7", b"HEAD", b"/", "1.0", 304, 0),
                            (b"192.0.2.7", b"GET", b"/", "1.1", 404, 9, {"referer": ""})
                            ).splitlines()
    assert first.endswith(b'"HEAD / HTTP/1.0" 304 0 "-" "-"'), first
    assert second.endswith(b'"GET / HTTP/1.1" 404 9 "" "-"'), second


def test_combined_line_escapes_hostile_referer_and_user_agent(tmp_path: Path):
    line = _logged(tmp_path, "combined", (b"192.0.2.7", b"GET", b"/", "1.1", 200, 1,
                                          {"referer": _FORGING_REFERER,
                                           "user-agent": _HOSTILE_AGENT}))
    assert line.count(b"\n") == 1 and line.count(b'"') == 6, line
    assert line.endswith(
        b'"https://evil.test/\\x22 200 999 \\x22-\\x22 \\x22x\\x22\\x0a203.0.113.9 - - '
        b'[01/Jan/2020] \\x22GET /" '
        b'"Mozilla/5.0 (X11)\\x09\\x1b[31m C:\\x5cevil \\xc3\\xa9"\n'), line


@given(st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=200))
def test_any_header_value_logs_as_printable_ascii_without_quotes_and_can_be_read_back(text):
    out = quoted_field(text)
    assert all(0x20 <= byte <= 0x7E for byte in out)
    assert b'"' not in out
    assert unescape(out) == text.encode("latin-1")


def test_content_coding_is_read_from_the_head_and_identity_without_one():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Encoding: br\r\nVary: x\r\n"
    assert content_coding(head) == "br"
    assert content_coding(b"HTTP/1.1 304 Not Modified\r\nETag: \"1-gzip\"\r\n") == "identity"
    assert content_coding(b"") == "identity"


def test_json_line_carries_the_fields_as_json(tmp_path: Path):
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n"
    record = json.loads(_logged(tmp_path, "json", (
        b"192.0.2.7", b"GET", b'/a"b?x=1', "1.0", 206, 9, {"user-agent": "ua/1"}, head,
        time.monotonic() - 0.0025)))
    assert record["remote_addr"] == "192.0.2.7"
    assert (record["method"], record["path"], record["protocol"]) == (
        "GET", '/a"b?x=1', "HTTP/1.0")
    assert (record["status"], record["bytes"], record["encoding"]) == (206, 9, "gzip")
    assert 2500 <= record["request_time_us"] < 5_000_000
    assert (record["referer"], record["user_agent"]) == (None, "ua/1")
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000", record["time"])


def test_json_line_keeps_hostile_values_exact_on_one_line(tmp_path: Path):
    data = _logged(tmp_path, "json", (b"192.0.2.7", b"HEAD", b"/", "1.1", 304, 0,
                                      {"referer": _FORGING_REFERER,
                                       "user-agent": _HOSTILE_AGENT}))
    assert data.count(b"\n") == 1 and data.isascii()
    record = json.loads(data)
    assert (record["referer"], record["user_agent"]) == (_FORGING_REFERER, _HOSTILE_AGENT)
    assert (record["encoding"], record["request_time_us"]) == ("identity", None)


class _Reader(RequestReader):
    """Just enough of a connection to see which headers a request keeps."""

    def __init__(self, log_headers: bool) -> None:
        super().__init__(log_headers)
        self.kept: list[dict[str, str]] = []

    def answer_prepared(self, target: bytes, host: bytes, headers: dict[str, str]) -> bool:
        self.kept.append(dict(headers))
        return True

    def request_received(self, request: Request) -> None:
        self.kept.append(request.headers)


@pytest.mark.parametrize("log_headers", [False, True])
def test_referer_and_user_agent_are_kept_only_for_a_log_that_reads_them(log_headers: bool):
    reader = _Reader(log_headers)
    reader.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\nReferer: https://r.test/\r\n"
                         b"User-Agent: ua/1\r\nCookie: c=1\r\n\r\n")
    reader.data_received(b"GET /b HTTP/1.1\r\nHost: h\r\nUser-Agent: ua/2\r\nRange: bytes=0-1\r\n"
                         b"\r\n")
    plain, ranged = reader.kept
    logged = {"referer": "https://r.test/", "user-agent": "ua/1"}
    assert {k: plain[k] for k in logged if k in plain} == (logged if log_headers else {})
    assert "cookie" not in plain
    assert ranged.get("user-agent") == ("ua/2" if log_headers else None)
    assert ranged["range"] == "bytes=0-1"
