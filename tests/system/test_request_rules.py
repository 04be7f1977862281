"""Methods, Host and framing rules over a real socket: the status a client gets and whether the
connection survives (RFC 9110 §9.1, §7.2; RFC 9112 §6.1; nginx as the reference)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import ResponseReader, ServerProcess, connect, exchange, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("rules")
    (root / "index.html").write_text("<h1>home</h1>\n")
    srv = start_server(root, "--access-log", "off")
    yield srv
    srv.stop()


def ask(server: ServerProcess, raw: bytes) -> tuple[int, str | None, bool]:
    """Send raw bytes; returns (status, Allow, whether the connection is closed after it):
    a connection still open must answer a second request."""
    with connect(server) as s:
        s.sendall(raw)
        reader = ResponseReader(s)
        resp = reader.read()
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            closed = reader.at_eof(timeout=3)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        return resp.status, resp.header("allow"), closed


@pytest.mark.parametrize("method", [b"ABC", b"BREW", b"FOO-BAR"])
def test_unknown_method_token_is_501_and_closes(server: ServerProcess, method: bytes):
    status, _, closed = ask(server, method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, closed) == (501, True)


def test_method_the_parser_knows_but_we_do_not_implement_is_501(server: ServerProcess):
    status, _, closed = ask(server, b"PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, closed) == (501, False)


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])
def test_known_method_not_allowed_is_405_with_allow(server: ServerProcess, method: bytes):
    status, allow, _ = ask(server, method + b" / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert (status, allow) == (405, "GET, HEAD")


def test_method_that_is_not_a_token_is_400(server: ServerProcess):
    status, _, closed = ask(server, b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, closed) == (400, True)


@pytest.mark.parametrize("host", [b"###", b"a b", b"example.com:80:80", b"[::1", b"a/b"])
def test_host_that_is_not_a_uri_host_is_400_and_closes(server: ServerProcess, host: bytes):
    status, _, closed = ask(server, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert (status, closed) == (400, True)


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"127.0.0.1", b"[::1]:80"])
def test_valid_hosts_are_served(server: ServerProcess, host: bytes):
    resp = exchange(server, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert resp.status == 200


def test_host_checked_again_when_a_keep_alive_client_changes_it(server: ServerProcess):
    with connect(server) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        reader = ResponseReader(s)
        assert reader.read().status == 200
        s.sendall(b"GET / HTTP/1.1\r\nHost: ###\r\n\r\n")
        assert reader.read().status == 400
        assert reader.at_eof(timeout=3)
