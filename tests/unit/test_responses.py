"""flashsrv.responses: response heads, error pages and per-status headers."""

from __future__ import annotations

from flashsrv import SERVER_NAME
from flashsrv.responses import (
    ALLOWED_METHODS,
    REASONS,
    STATUS_HEADERS,
    build_head,
    error_page,
)


def test_head_is_status_line_then_server_then_headers_in_order():
    head = build_head(200, [("Content-Type", "text/plain"), ("Content-Length", "5"),
                            ("ETag", '"1-5"')])
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        + f"Server: {SERVER_NAME}\r\n".encode()
        + b'Content-Type: text/plain\r\nContent-Length: 5\r\nETag: "1-5"\r\n'
    )


def test_head_ends_after_last_header_without_blank_line():
    head = build_head(404, [])
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert head.endswith(b"\r\n") and not head.endswith(b"\r\n\r\n")
    assert b"Date:" not in head and b"Connection:" not in head


def test_every_known_status_gets_its_reason():
    for status, reason in REASONS.items():
        assert build_head(status, []).split(b"\r\n", 1)[0] == (
            f"HTTP/1.1 {status} {reason}".encode())


def test_unknown_status_gets_a_placeholder_reason():
    assert build_head(299, []).startswith(b"HTTP/1.1 299 Unknown\r\n")


def test_repeated_header_names_are_kept():
    head = build_head(200, [("Vary", "Accept-Encoding"), ("Vary", "Accept")])
    assert head.count(b"Vary: ") == 2


def test_head_is_latin1_encoded():
    assert b"X-Name: caf\xe9\r\n" in build_head(200, [("X-Name", "caf\u00e9")])


def test_error_page_names_status_and_server():
    page = error_page(404)
    assert page.startswith(b"<!doctype html>") and page.endswith(b"</html>\n")
    assert b"<title>404 Not Found</title>" in page and b"<h1>404 Not Found</h1>" in page
    assert SERVER_NAME.encode() in page
    assert b"<p></p>" not in page


def test_error_page_escapes_its_detail():
    page = error_page(400, '<script>alert("x")</script> & more')
    assert b"<script>" not in page
    assert b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page


def test_error_page_for_unknown_status():
    assert b"<title>599 Error</title>" in error_page(599)


def test_status_headers():
    assert STATUS_HEADERS[405] == [("Allow", ALLOWED_METHODS)]
    assert ALLOWED_METHODS == "GET, HEAD"
    assert STATUS_HEADERS[503] == [("Retry-After", "1")]
    assert 200 not in STATUS_HEADERS and 404 not in STATUS_HEADERS
