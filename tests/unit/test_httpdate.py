"""flashsrv.httpdate: formatting and parsing HTTP dates, and the cached Date line."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.httpdate import DateHeader, format_http_date, parse_http_date

RFC_EXAMPLE = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example


def test_format_is_imf_fixdate():
    assert format_http_date(RFC_EXAMPLE) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_fractional_seconds_are_dropped():
    assert format_http_date(RFC_EXAMPLE + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"


@given(st.integers(min_value=0, max_value=253402300799))  # up to 9999-12-31T23:59:59
def test_format_then_parse_round_trips(ts: int):
    assert parse_http_date(format_http_date(ts)) == ts


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
    "Sun Nov  6 08:49:37 1994",  # ANSI C asctime()
])
def test_all_three_rfc_9110_forms_are_accepted(value: str):
    assert parse_http_date(value) == RFC_EXAMPLE


def test_bytes_and_surrounding_whitespace_are_accepted():
    assert parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == RFC_EXAMPLE
    assert parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT \t") == RFC_EXAMPLE


@pytest.mark.parametrize("value", [
    None, "", "yesterday", "Sun, 06 Nov 1994", "Sun, 32 Nov 1994 08:49:37 GMT",
    "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:99 GMT", b"\xff\xfe", "1994-11-06T08:49:37Z",
])
def test_invalid_dates_give_none(value):
    assert parse_http_date(value) is None


def test_date_header_is_one_crlf_terminated_line():
    header = DateHeader()
    assert re.fullmatch(
        rb"Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n", header.line)
    value = header.line[len(b"Date: "):-2]
    assert parse_http_date(value) is not None


def test_date_header_refresh_in_the_same_second_keeps_the_line(monkeypatch):
    import flashsrv.httpdate as httpdate

    now = [float(RFC_EXAMPLE)]
    monkeypatch.setattr(httpdate.time, "time", lambda: now[0])
    header = DateHeader()
    assert header.line == b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
    line = header.line
    now[0] += 0.5
    header.refresh()
    assert header.line is line
    now[0] += 1
    header.refresh()
    assert header.line == b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n"
