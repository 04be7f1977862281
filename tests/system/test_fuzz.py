"""Property-based fuzzing of the request path with hypothesis, over a real socket.

Generated requests mix traversal-ish targets in many encodings, random methods and versions,
header names and values with odd bytes, bodies with and without framing headers, bare LFs, and
pipelined pairs. For every example:

- the server answers and/or closes within its timeouts (no connection hangs beyond them);
- every response is well framed: a status line, one Content-Length, exactly that many body bytes
  (none for HEAD and 304), and nothing left over that is not a response;
- no response contains a secret from outside the document root (or a dotfile's), nor "Traceback";
- the server still serves a normal request afterwards.

A bounded number of examples runs in CI (150); set FLASHSRV_FUZZ_EXAMPLES for a longer run,
for example `FLASHSRV_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ServerProcess, connect, get, start_server

EXAMPLES = int(os.environ.get("FLASHSRV_FUZZ_EXAMPLES", "150"))
HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 1.0
SECRET = b"FUZZ-SECRET-3b7e-outside-the-root"
DOT_SECRET = b"FUZZ-DOTFILE-SECRET-a91c"
INSIDE = b"inside file\n"
STATUS_RE = re.compile(rb"^HTTP/1\.[01] [1-5]\d\d(?: [^\r\n]*)?$")


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>fuzz home</h1>\n")
    (root / "sub").mkdir()
    (root / "sub" / "file.txt").write_bytes(INSIDE)
    (root / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB: the streaming path
    (root / ".env").write_bytes(DOT_SECRET)
    os.symlink("../outside/secret.txt", root / "link.txt")
    return root


@pytest.fixture(scope="module")
def srv(layout: Path):
    server = start_server(layout, "--access-log", "off", "--helpers", "2",
                          "--header-timeout", str(HEADER_TIMEOUT),
                          "--keepalive-timeout", str(KEEPALIVE_TIMEOUT))
    server.initial_helpers = sorted(server.helper_pids())  # type: ignore[attr-defined]
    yield server
    server.stop()


# --- strategies -----------------------------------------------------------------------------

SEGMENTS = [
    b"..", b".", b"", b"%2e%2e", b"%2E%2E", b".%2e", b"%2e.", b"%252e%252e", b"%c0%ae%c0%ae",
    b"..%2f", b"..%5c", b"..\\", b"%2f", b"%00", b"%", b"%zz", b"%2", b"outside",
    b"secret.txt", b"sub", b"file.txt", b"index.html", b"big.bin", b".env", b"link.txt",
    b"%2eenv", b"etc", b"passwd", b"~", b";", b"..;", b"\xff\xfe", b"%ff", b"%u002e",
]
TARGET_PREFIXES = [b"/", b"//", b"", b"*", b"http://x/", b"http://x", b"https://x:1/", b"\\"]
TARGET_SUFFIXES = [b"", b"", b"?", b"?q=1", b"#frag", b"?a=../../secret.txt", b"/"]
METHODS = [b"GET", b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE",
           b"CONNECT", b"PRI", b"get", b"PATCH", b"BREW", b"G\x00T", b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.12",
            b"http/1.1", b"HTTP/1", b"HTTP/1.1 ", b"", b"HTTP/\xff"]
HEADER_NAMES = [
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Range", b"If-None-Match",
    b"If-Modified-Since", b"If-Range", b"Accept-Encoding", b"Connection", b"Expect",
    b"Upgrade", b"Cookie", b"X-Forwarded-For", b"Host ", b" Host", b"Content-Length ",
    b"X\x00Y", b"\xff", b"",
]
HEADER_VALUES = [
    b"x", b"0", b"5", b"-1", b"+5", b"0x5", b"99999999999999999999", b"chunked", b" chunked",
    b"chunked, identity", b"close", b"keep-alive", b"Upgrade", b"100-continue",
    b"bytes=0-10", b"bytes=-5", b"bytes=0-0,1-1,2-2", b"bytes=5-1", b"bytes=0-", b"*",
    b"gzip, br", b"W/\"x\"", b"Thu, 01 Jan 1970 00:00:00 GMT", b"a\x00b", b"a\rb", b"\x7f",
    b"\xe2\x82\xac", b"\t",
]

segment = st.one_of(st.sampled_from(SEGMENTS),
                    st.binary(min_size=1, max_size=6),
                    st.text(alphabet="abc.%/\\2eEfF0", min_size=1, max_size=6)
                    .map(lambda t: t.encode()))
target = st.builds(lambda pre, segs, suf: pre + b"/".join(segs) + suf,
                   st.sampled_from(TARGET_PREFIXES), st.lists(segment, max_size=8),
                   st.sampled_from(TARGET_SUFFIXES))
header = st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), st.binary(max_size=8)),
                   st.one_of(st.sampled_from(HEADER_VALUES), st.binary(max_size=16)))
eol = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])


@st.composite
def request(draw) -> tuple[bytes, bytes]:
    """One raw request (not necessarily valid) and its method."""
    method = draw(st.one_of(st.sampled_from(METHODS), st.binary(min_size=1, max_size=8)))
    line_end = draw(eol)
    parts = [method + draw(st.sampled_from([b" ", b" ", b"  ", b"\t"])) + draw(target)
             + b" " + draw(st.sampled_from(VERSIONS))]
    if draw(st.booleans()):
        parts.append(b"Host: x")
    for name, value in draw(st.lists(header, max_size=5)):
        parts.append(name + draw(st.sampled_from([b": ", b":", b" : ", b":\t"])) + value)
    body = draw(st.sampled_from([b"", b"", b"hello", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"]))
    return line_end.join(parts) + line_end + line_end + body, method


@st.composite
def conversation(draw) -> tuple[bytes, list[bytes]]:
    """One request, or a pipelined pair (the second often a plain good request)."""
    first, method = draw(request())
    if not draw(st.booleans()):
        return first, [method]
    second, method2 = draw(st.one_of(
        request(),
        st.sampled_from([(b"GET /sub/file.txt HTTP/1.1\r\nHost: x\r\n\r\n", b"GET"),
                         (b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD")]),
    ))
    return first + second, [method, method2]


# --- checking what came back ----------------------------------------------------------------


def _could_be_a_status_line(data: bytes) -> bool:
    return data[:7] == b"HTTP/1."[: len(data[:7])]


def parse_stream(data: bytes, methods: list[bytes]) -> tuple[list[int], bool]:
    """Split data into well-framed responses; (statuses, complete) where complete means the
    data ends exactly at a response boundary. Raises AssertionError on misframing."""
    statuses: list[int] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            assert _could_be_a_status_line(data), f"bytes that are not a response: {data[:120]!r}"
            return statuses, False
        lines = head.split(b"\r\n")
        assert STATUS_RE.match(lines[0]), f"bad status line {lines[0][:120]!r}"
        status = int(lines[0][9:12])
        lengths = [v.strip() for k, _, v in (x.partition(b":") for x in lines[1:])
                   if k.lower() == b"content-length"]
        assert len(lengths) == 1 and lengths[0].isdigit(), f"Content-Length {lengths!r}"
        n = int(lengths[0])
        head_request = len(statuses) < len(methods) and methods[len(statuses)] == b"HEAD"
        if status == 304 or (head_request and status < 300) or status in (204,) or \
                (head_request and (rest == b"" or rest.startswith(b"HTTP/1."))):
            data = rest
        else:
            if len(rest) < n:
                return [*statuses, status], False
            data = rest[n:]
            assert _could_be_a_status_line(data), \
                f"{len(data)} bytes beyond the Content-Length of a {status}: {data[:80]!r}"
        statuses.append(status)
    return statuses, True


def converse(server: ServerProcess, raw: bytes, methods: list[bytes]) -> bytes:
    """Send raw; read until the server closes, or until the answers are complete and the line
    is quiet. Fails if the connection neither closes nor completes within the timeouts."""
    limit = HEADER_TIMEOUT + KEEPALIVE_TIMEOUT + 2.5
    with connect(server, timeout=5) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)
        data = b""
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            statuses, complete = parse_stream(data, methods)
            if data and complete and (len(statuses) >= len(methods)
                                      or statuses[-1] >= 400):
                wait = 0.15  # all answered (or refused): only a close may follow
            else:
                wait = limit - elapsed
            if wait <= 0:
                pytest.fail(f"no complete answer and no close {limit:.1f} s after {raw!r}; "
                            f"got {data[:200]!r}")
            s.settimeout(wait)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if complete and data:
                    return data
                continue
            except ConnectionResetError:
                return data
            if not chunk:
                parse_stream(data, methods)
                return data
            data += chunk


def assert_healthy(server: ServerProcess) -> None:
    assert server.proc.poll() is None, "server died"
    r = get(server, "/sub/file.txt")
    assert r.status == 200 and r.body == INSIDE, "server stopped serving a normal request"


# --- the properties -------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 150,
          suppress_health_check=list(HealthCheck))
@given(conv=conversation())
def test_any_request_bytes_get_framed_answers_without_leaks(srv: ServerProcess, conv):
    raw, methods = conv
    data = converse(srv, raw, methods)
    for secret in (SECRET, DOT_SECRET):
        assert secret not in data, f"leaked {secret!r} for {raw!r}"
    assert b"Traceback" not in data
    assert_healthy(srv)


@settings(max_examples=max(20, EXAMPLES // 5), deadline=None, derandomize=EXAMPLES <= 150,
          suppress_health_check=list(HealthCheck))
@given(noise=st.binary(min_size=1, max_size=2048), split=st.integers(0, 2048))
def test_raw_noise_split_across_two_packets_is_framed_or_closed(srv: ServerProcess, noise,
                                                                split: int):
    with connect(srv, timeout=5) as s:
        try:
            s.sendall(noise[:split])
            s.sendall(noise[split:])
        except OSError:
            pass
        s.settimeout(HEADER_TIMEOUT + KEEPALIVE_TIMEOUT + 2.5)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"connection open beyond the timeouts after {noise[:100]!r}")
    parse_stream(data, [b"GET"])
    assert b"Traceback" not in data
    assert srv.proc.poll() is None


def test_server_alive_with_the_same_helpers_and_no_traceback_after_fuzzing(srv: ServerProcess):
    assert_healthy(srv)
    assert sorted(srv.helper_pids()) == srv.initial_helpers, \
        "helpers were replaced during fuzzing: a request crashed or stalled a helper"
    assert "Traceback" not in srv.stderr_text()

