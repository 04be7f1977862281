"""flashsrv.fields: methods, Host syntax and Transfer-Encoding, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsrv.fields import (
    method_status,
    only_chunked,
    unparsed_method_status,
    valid_host,
)


@pytest.mark.parametrize(("method", "status"), [
    (b"GET", 0), (b"HEAD", 0), (b"POST", 405), (b"DELETE", 405), (b"OPTIONS", 405),
    (b"PATCH", 405), (b"PROPFIND", 501), (b"MKCOL", 501),
])
def test_served_known_and_unknown_methods(method: bytes, status: int):
    assert method_status(method) == status


@pytest.mark.parametrize(("data", "status"), [
    (b"ABC / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"BREW /pot HTTP/1.1\r\n", 501),
    (b"G@T / HTTP/1.1\r\n\r\n", 400),  # not a token
    (b"\x00\x01 / HTTP/1.1\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),  # no request line at all
    # Good requests before the refused bytes do not make garbage an unknown method.
    (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nFOO /b HTTP/1.1\r\n\r\n", 501),
])
def test_refused_method_is_501_only_for_a_valid_token(data: bytes, status: int):
    assert unparsed_method_status(data) == status


@pytest.mark.parametrize("host", [
    b"example.com", b"example.com:8080", b"EXAMPLE.com", b"127.0.0.1", b"127.0.0.1:80",
    b"[::1]", b"[::1]:8443", b"[v1.fe]", b"xn--bcher-kva.example", b"a_b.example", b"",
    b"host:", b"%41.example", b" example.com ",
])
def test_valid_hosts(host: bytes):
    assert valid_host(host)


@pytest.mark.parametrize("host", [
    b"###", b"exa mple.com", b"example.com:80:80", b"[::1", b"::1", b"a/b", b"a@b", b"a?b",
    b"example.com:http", b"%4.example", b"[::1]x", b"\x00",
])
def test_invalid_hosts(host: bytes):
    assert not valid_host(host)


@pytest.mark.parametrize(("value", "ok"), [
    (b"chunked", True), (b"CHUNKED", True), (b" chunked\t", True), (b",chunked", False),
    (b"chunked,", False), (b"gzip, chunked", False), (b"identity", False), (b'"chunked"', False),
    (b"", False),
])
def test_only_exactly_chunked_frames_a_body(value: bytes, ok: bool):
    assert only_chunked(value) is ok


@given(st.binary(max_size=300))
def test_rules_never_raise_on_client_bytes(data: bytes):
    assert unparsed_method_status(data) in (400, 501)
    assert valid_host(data) in (True, False)
    assert only_chunked(data) in (True, False)
