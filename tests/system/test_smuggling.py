"""Request smuggling and desync cases from the public catalogues (PortSwigger's HTTP request
smuggling research, RFC 9112 section 6 and 11.2, the llhttp/Node.js and nginx advisories), each
with the one outcome flashsrv must produce.

Every case is sent on one fresh connection, the server's whole answer is read until it closes,
and the byte stream is split into responses by their own framing (status line, headers,
Content-Length bytes, nothing left over). Each case then states exactly what must come back:

- REJECT: one 400 and the connection closed, and nothing else: the request behind it (the
  "smuggled" one, which asks for SMUGGLED.txt) is never answered;
- a list of (status, body) pairs: the bytes were framed in the one way RFC 9112 allows, every
  request was answered exactly once and in order, and the marker appears only where a request
  really asked for it.

A second response that the client did not frame as a request is the signature of a desync; the
parser must never produce one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import ServerProcess, connect, get, request_bytes, start_server

FIRST = b"first-A-0e1d\n"
MARKER = b"SMUGGLED-MARKER-91c4\n"
COLD_PREFIX = b"cold-file-"
HEADER_TIMEOUT = 2.0  # seconds; cases that leave the server waiting end by this timeout

# The request a desync would make the server answer: it is never framed as a request by a
# correct parser in the REJECT cases, and framed exactly once in the others.
SMUGGLED = b"GET /SMUGGLED.txt HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED_CLOSE = b"GET /SMUGGLED.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
START = b"GET /a.txt HTTP/1.1\r\nHost: x\r\n"

REJECT = "reject"
# A transfer coding we do not implement (anything but exactly "chunked"): 501 and close, as nginx.
UNKNOWN_CODING = "unknown coding"

OK_A = (200, FIRST)
OK_MARK = (200, MARKER)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smuggling") / "www"
    root.mkdir()
    (root / "a.txt").write_bytes(FIRST)
    (root / "SMUGGLED.txt").write_bytes(MARKER)
    for i in range(40):
        (root / f"cold{i}.txt").write_bytes(COLD_PREFIX + str(i).encode() + b"\n")
    return root


@pytest.fixture(scope="module")
def srv(site: Path):
    server = start_server(site, "--access-log", "off", "--header-timeout", str(HEADER_TIMEOUT),
                          "--keepalive-timeout", "2")
    yield server
    server.stop()


class Misframed(AssertionError):
    pass


def split_responses(data: bytes, head_only: tuple[bool, ...] = ()) -> list[tuple[int, dict, bytes]]:
    """Split a byte stream into (status, headers, body) by each response's own framing.
    Raises Misframed if the stream is not exactly a sequence of well-framed responses."""
    out = []
    index = 0
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise Misframed(f"trailing bytes that are not a response: {data[:200]!r}")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Misframed(f"bad status line {lines[0][:100]!r}")
        status = int(parts[1])
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise Misframed(f"bad header line {line[:100]!r}")
            headers.setdefault(name.lower(), []).append(value.strip())
        if b"transfer-encoding" in headers:
            raise Misframed("a static server's response should not be chunked")
        lengths = headers.get(b"content-length", [])
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise Misframed(f"response without one valid Content-Length: {head[:300]!r}")
        n = int(lengths[0])
        bodiless = status in (204, 304) or (index < len(head_only) and head_only[index])
        if bodiless:
            body, data = b"", rest
        else:
            if len(rest) < n:
                raise Misframed(f"body cut short: {len(rest)} of {n} bytes")
            body, data = rest[:n], rest[n:]
        out.append((status, headers, body))
        index += 1
    return out


def converse(server: ServerProcess, raw: bytes, limit: float = HEADER_TIMEOUT + 4,
             pause_after: int | None = None) -> tuple[bytes, float]:
    """Send raw bytes (optionally in two parts, split at pause_after); read until the server
    closes. Returns (everything received, seconds until close). Fails if it never closes."""
    with connect(server, timeout=5) as s:
        start = time.monotonic()
        try:
            if pause_after is None:
                s.sendall(raw)
            else:
                s.sendall(raw[:pause_after])
                time.sleep(0.3)
                s.sendall(raw[pause_after:])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early and closed: what it sent is still readable
        chunks = []
        deadline = start + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"connection still open {limit:.0f} s later; got "
                            f"{b''.join(chunks)[:300]!r}")
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - start


def check(server: ServerProcess, raw: bytes, expected, pause_after: int | None = None):
    data, elapsed = converse(server, raw, pause_after=pause_after)
    assert b"Traceback" not in data
    responses = split_responses(data)
    got = [(status, body) for status, _, body in responses]
    if expected in (REJECT, UNKNOWN_CODING):
        status = 400 if expected == REJECT else 501
        assert [s for s, _ in got] == [status], \
            f"expected one {status} and a close, got {got!r}"
        assert MARKER not in data, "the request behind a rejected one was answered"
        assert b"close" in b" ".join(responses[0][1].get(b"connection", [])).lower(), \
            "a refusal that ends the connection should say Connection: close"
    else:
        assert got == expected, f"expected {expected!r}, got {got!r}"
        assert data.count(MARKER) == sum(1 for _, body in expected if body == MARKER)
    assert server.proc.poll() is None, "server died"
    return responses, elapsed


# --- Content-Length variants ----------------------------------------------------------------

CL_CASES = {
    # Not 1*DIGIT: a front end that reads these as 5 and a back end that reads them as 0 (or
    # the other way round) disagree about where the next request starts. Refuse them.
    "plus_sign": (b"Content-Length: +5\r\n\r\nhello" + SMUGGLED, REJECT),
    "hex": (b"Content-Length: 0x5\r\n\r\nhello" + SMUGGLED, REJECT),
    "underscore": (b"Content-Length: 5_0\r\n\r\nhello" + SMUGGLED, REJECT),
    "empty": (b"Content-Length: \r\n\r\n" + SMUGGLED, REJECT),
    "only_whitespace": (b"Content-Length:    \r\n\r\n" + SMUGGLED, REJECT),
    "two_numbers": (b"Content-Length: 5 5\r\n\r\nhello" + SMUGGLED, REJECT),
    "same_value_listed_twice": (b"Content-Length: 5, 5\r\n\r\nhello" + SMUGGLED, REJECT),
    "different_values_in_two_lines": (
        b"Content-Length: 0\r\nContent-Length: 41\r\n\r\n" + SMUGGLED, REJECT),
    "overflowing_2_pow_64": (
        b"Content-Length: 18446744073709551621\r\n\r\nhello" + SMUGGLED, REJECT),
    "space_before_colon": (b"Content-Length : 5\r\n\r\nhello" + SMUGGLED, REJECT),
    "vertical_tab_before_value": (b"Content-Length: \x0b5\r\n\r\nhello" + SMUGGLED, REJECT),
    "nul_in_value": (b"Content-Length: 5\x00\r\n\r\nhello" + SMUGGLED, REJECT),
    # Optional whitespace around a valid value is part of the grammar (RFC 9110 5.5): the body
    # is exactly 5 bytes and the next request is framed exactly once.
    "leading_spaces": (b"Content-Length:   5\r\n\r\nhello" + SMUGGLED_CLOSE, [OK_A, OK_MARK]),
    "leading_tab": (b"Content-Length:\t5\r\n\r\nhello" + SMUGGLED_CLOSE, [OK_A, OK_MARK]),
    "trailing_space": (b"Content-Length: 5 \r\n\r\nhello" + SMUGGLED_CLOSE, [OK_A, OK_MARK]),
    "leading_zeros": (b"Content-Length: 005\r\n\r\nhello" + SMUGGLED_CLOSE, [OK_A, OK_MARK]),
    "zero": (b"Content-Length: 0\r\n\r\n" + SMUGGLED_CLOSE, [OK_A, OK_MARK]),
}


@pytest.mark.parametrize("name", list(CL_CASES))
def test_content_length_variant_is_framed_one_way_only(srv: ServerProcess, name: str):
    extra, expected = CL_CASES[name]
    check(srv, START + extra, expected)


# --- Transfer-Encoding variants -------------------------------------------------------------

CHUNKED_EMPTY = b"\r\n0\r\n\r\n"  # ends the head, then an empty chunked body

TE_CASES = {
    # chunked is not the final coding, or is hidden from one parser but not another: the
    # length cannot be determined reliably, so RFC 9112 6.3 says 400 and close.
    "chunked_then_identity": (b"Transfer-Encoding: chunked, identity\r\n" + CHUNKED_EMPTY
                              + SMUGGLED, REJECT),
    "identity_only": (b"Transfer-Encoding: identity\r\n" + CHUNKED_EMPTY + SMUGGLED,
                      UNKNOWN_CODING),
    "xchunked": (b"Transfer-Encoding: xchunked\r\n" + CHUNKED_EMPTY + SMUGGLED, UNKNOWN_CODING),
    "chunkedx": (b"Transfer-Encoding: chunkedx\r\n" + CHUNKED_EMPTY + SMUGGLED, UNKNOWN_CODING),
    "quoted": (b'Transfer-Encoding: "chunked"\r\n' + CHUNKED_EMPTY + SMUGGLED, UNKNOWN_CODING),
    "space_before_colon": (b"Transfer-Encoding : chunked\r\n" + CHUNKED_EMPTY + SMUGGLED,
                           REJECT),
    "vertical_tab": (b"Transfer-Encoding: \x0bchunked\r\n" + CHUNKED_EMPTY + SMUGGLED, REJECT),
    "form_feed": (b"Transfer-Encoding:\x0cchunked\r\n" + CHUNKED_EMPTY + SMUGGLED, REJECT),
    "two_header_lines": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
                         + CHUNKED_EMPTY + SMUGGLED, REJECT),
    "two_chunked_lines": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
                          + CHUNKED_EMPTY + SMUGGLED, REJECT),
    "obs_fold_of_the_value": (b"Transfer-Encoding:\r\n chunked\r\n" + CHUNKED_EMPTY + SMUGGLED,
                              REJECT),
    "with_content_length_and_a_payload": (
        b"Content-Length: 41\r\nTransfer-Encoding: chunked\r\n" + CHUNKED_EMPTY + SMUGGLED,
        REJECT),
    "nul_in_value": (b"Transfer-Encoding: chunked\x00\r\n" + CHUNKED_EMPTY + SMUGGLED, REJECT),
    # Lists are refused even where the grammar (RFC 9110 5.6.1) would read them as plain
    # "chunked": empty elements and other codings are where hops disagree, so only exactly
    # "chunked" frames a request, as in nginx.
    "leading_comma": (b"Transfer-Encoding: ,chunked\r\n" + CHUNKED_EMPTY + SMUGGLED,
                      UNKNOWN_CODING),
    "trailing_comma": (b"Transfer-Encoding: chunked,\r\n" + CHUNKED_EMPTY + SMUGGLED,
                       REJECT),  # refused by llhttp itself
    "gzip_then_chunked": (b"Transfer-Encoding: gzip, chunked\r\n" + CHUNKED_EMPTY + SMUGGLED,
                          UNKNOWN_CODING),
    # Optional whitespace and case are not lists: these are exactly "chunked".
    "trailing_space": (b"Transfer-Encoding: chunked \r\n" + CHUNKED_EMPTY + SMUGGLED_CLOSE,
                       [OK_A, OK_MARK]),
    "leading_tab": (b"Transfer-Encoding:\tchunked\r\n" + CHUNKED_EMPTY + SMUGGLED_CLOSE,
                    [OK_A, OK_MARK]),
    # Whitespace that mixes a tab and spaces after the value: llhttp refuses it (stricter than
    # the grammar needs, and safe: a refusal cannot desync anything).
    "trailing_tab_and_spaces": (b"Transfer-Encoding: chunked\t  \r\n" + CHUNKED_EMPTY
                                + SMUGGLED_CLOSE, REJECT),
    "upper_case": (b"Transfer-Encoding: CHUNKED\r\n" + CHUNKED_EMPTY + SMUGGLED_CLOSE,
                   [OK_A, OK_MARK]),
}


@pytest.mark.parametrize("name", list(TE_CASES))
def test_transfer_encoding_variant_is_framed_one_way_only(srv: ServerProcess, name: str):
    extra, expected = TE_CASES[name]
    check(srv, START + extra, expected)


# --- line endings, folding, control bytes ---------------------------------------------------

LINE_CASES = {
    "obs_fold_of_an_ordinary_header": (
        START + b"X-Folded: a\r\n b\r\n\r\n" + SMUGGLED, REJECT),
    "obs_fold_with_a_tab": (START + b"X-Folded: a\r\n\tb\r\n\r\n" + SMUGGLED, REJECT),
    "bare_lf_everywhere": (b"GET /a.txt HTTP/1.1\nHost: x\n\n" + SMUGGLED, REJECT),
    "bare_lf_after_request_line": (b"GET /a.txt HTTP/1.1\nHost: x\r\n\r\n" + SMUGGLED, REJECT),
    "bare_lf_after_one_header": (START + b"X-A: 1\nX-B: 2\r\n\r\n" + SMUGGLED, REJECT),
    "bare_lf_hiding_a_content_length": (
        START + b"X-A: 1\nContent-Length: 41\r\n\r\n" + SMUGGLED, REJECT),
    "bare_cr_in_a_header": (START + b"X-A: 1\rContent-Length: 41\r\n\r\n" + SMUGGLED, REJECT),
    "nul_in_header_value": (START + b"X-A: a\x00b\r\n\r\n" + SMUGGLED, REJECT),
    "nul_in_header_name": (START + b"X-\x00A: ab\r\n\r\n" + SMUGGLED, REJECT),
    "del_in_header_name": (START + b"X-\x7fA: ab\r\n\r\n" + SMUGGLED, REJECT),
    "escape_byte_in_header_value": (START + b"X-A: a\x1bb\r\n\r\n" + SMUGGLED, REJECT),
    "header_name_with_trailing_space": (START + b"Host : y\r\n\r\n" + SMUGGLED, REJECT),
    "header_line_starting_with_space_first": (
        b"GET /a.txt HTTP/1.1\r\n Host: x\r\n\r\n" + SMUGGLED, REJECT),
    # One empty line before a request is tolerated (RFC 9112 2.2), and changes nothing.
    "empty_line_before_the_request": (b"\r\n" + START + b"\r\n" + SMUGGLED_CLOSE,
                                      [OK_A, OK_MARK]),
}


@pytest.mark.parametrize("name", list(LINE_CASES))
def test_malformed_line_structure_is_refused_without_answering_what_follows(srv, name):
    raw, expected = LINE_CASES[name]
    check(srv, raw, expected)


# --- chunked bodies on GET, and absurd chunk sizes ------------------------------------------

CHUNK_CASES = {
    "chunked_body_then_pipelined_request": (
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED_CLOSE,
        [OK_A, OK_MARK]),
    "body_that_looks_like_a_request": (
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED) + SMUGGLED
        + b"\r\n0\r\n\r\n" + b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        [OK_A, OK_A]),
    "chunk_extension": (
        b"Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n"
        + SMUGGLED_CLOSE, [OK_A, OK_MARK]),
    "trailer_section": (
        b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n" + SMUGGLED_CLOSE,
        [OK_A, OK_MARK]),
    "overflowing_chunk_size": (
        b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"
        + SMUGGLED, REJECT),
    "chunk_size_with_0x": (b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
                           + SMUGGLED, REJECT),
    "negative_chunk_size": (b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"
                            + SMUGGLED, REJECT),
    "chunk_size_with_trailing_space": (
        b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n" + SMUGGLED, REJECT),
    "chunk_size_with_bare_lf": (b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
                                + SMUGGLED, REJECT),
    "chunk_data_longer_than_its_size": (
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" + SMUGGLED, REJECT),
    "chunk_data_without_crlf": (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
                                + SMUGGLED, REJECT),
}


@pytest.mark.parametrize("name", list(CHUNK_CASES))
def test_chunked_get_body_is_framed_one_way_only(srv: ServerProcess, name: str):
    extra, expected = CHUNK_CASES[name]
    check(srv, START + extra, expected)


def test_chunk_size_of_2_pow_64_minus_1_swallows_what_follows_until_the_timeout(srv):
    """A 16-digit chunk size is representable: the server waits for that much body, so the
    request behind it is body, never a request, and the connection ends by the timeout."""
    raw = (START + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nhello"
           + SMUGGLED_CLOSE)
    data, elapsed = converse(srv, raw)
    assert data == b"" or split_responses(data)[0][0] in (400, 408, 413), data[:200]
    assert MARKER not in data and FIRST not in data
    assert elapsed < HEADER_TIMEOUT + 2


def test_chunked_body_split_across_packets_frames_the_next_request_once(srv: ServerProcess):
    raw = START + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED_CLOSE
    check(srv, raw, [OK_A, OK_MARK], pause_after=raw.index(b"llo"))


def test_content_length_body_split_across_packets_frames_the_next_request_once(srv):
    raw = START + b"Content-Length: 5\r\n\r\nhello" + SMUGGLED_CLOSE
    check(srv, raw, [OK_A, OK_MARK], pause_after=raw.index(b"llo"))


# --- what happens after the last request of a connection ------------------------------------


@pytest.mark.parametrize("first", [b"/a.txt", b"/cold1.txt"], ids=["cached", "cold"])
def test_request_after_connection_close_is_not_answered(srv: ServerProcess, first: bytes):
    """RFC 9112 9.6: after a request with `Connection: close` the server answers it and
    processes nothing further on the connection."""
    if first == b"/a.txt":
        assert get(srv, "/a.txt").status == 200  # make it a hot-path answer
    raw = (b"GET " + first + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + SMUGGLED)
    data, _ = converse(srv, raw)
    responses = split_responses(data)
    assert [s for s, _, _ in responses] == [200], [(s, b) for s, _, b in responses]
    assert MARKER not in data


def test_connection_close_among_other_options_still_ends_the_connection(srv: ServerProcess):
    raw = START + b"Connection: keep-alive, close\r\n\r\n" + SMUGGLED
    data, _ = converse(srv, raw)
    assert [(s, b) for s, _, b in split_responses(data)] == [OK_A]


def test_http10_request_without_keep_alive_ends_the_connection(srv: ServerProcess):
    data, _ = converse(srv, b"GET /a.txt HTTP/1.0\r\n\r\n" + SMUGGLED)
    assert [(s, b) for s, _, b in split_responses(data)] == [OK_A]


# Regression test for defect D2 (found by this file, fixed by the lead).
def test_http10_request_with_transfer_encoding_closes_after_its_response(srv: ServerProcess):
    raw = (b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
           b"\r\n0\r\n\r\n" + SMUGGLED)
    data, _ = converse(srv, raw)
    responses = split_responses(data)
    assert len(responses) <= 1 and MARKER not in data, [(s, b) for s, _, b in responses]


def test_upgrade_request_is_answered_plainly_and_nothing_after_it(srv: ServerProcess):
    raw = START + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + SMUGGLED
    data, _ = converse(srv, raw)
    assert [(s, b) for s, _, b in split_responses(data)] == [OK_A]
    assert b"101 " not in data


# Regression test for defect D3 (found by this file, fixed by the lead).
def test_upgrade_request_answer_announces_the_close(srv: ServerProcess):
    raw = START + b"Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQ\r\n\r\n"
    data, _ = converse(srv, raw)
    (_, headers, _), = split_responses(data)
    assert headers.get(b"connection") == [b"close"], headers


# Regression test for defect D4 (a parse error cancelled the valid request before it).
@pytest.mark.parametrize("n_good", [1, 3])
def test_good_requests_before_a_bad_one_are_answered_before_the_400(srv, n_good: int):
    """Pipelined good requests (cold: answered by helpers) followed by garbage in the same
    packet: each good request gets its own answer, then one 400, then the close. A parser error
    must not cancel responses to requests that were complete and valid."""
    base = 10 + n_good * 5
    paths = [b"/cold%d.txt" % (base + i) for i in range(n_good)]
    raw = b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n" for p in paths)
    data, _ = converse(srv, raw + b"GARBAGE\r\n\r\n" + SMUGGLED)
    responses = split_responses(data)
    want = [(200, COLD_PREFIX + p[5:-4] + b"\n") for p in paths] + [(400, None)]
    got = [(s, b if s == 200 else None) for s, _, b in responses]
    assert got == want, got


# Regression test for defect D5 (found by this file, fixed by the lead).
def test_expect_100_continue_without_a_body_gets_an_answer_without_waiting(srv):
    """RFC 9110 10.1.1: a server that receives `Expect: 100-continue` must answer at once, with
    100 (Continue) or a final status, rather than wait for a body the client is holding back."""
    with connect(srv, timeout=5) as s:
        s.sendall(b"POST /a.txt HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        s.settimeout(HEADER_TIMEOUT - 0.5)
        try:
            first = s.recv(4096)
        except TimeoutError:
            first = b""
        assert first.startswith((b"HTTP/1.1 100", b"HTTP/1.1 405")), \
            f"no interim or final response while the client waits: {first[:80]!r}"


def test_server_still_serves_after_all_desync_cases(srv: ServerProcess):
    r = get(srv, "/a.txt")
    assert r.status == 200 and r.body == FIRST
    with connect(srv) as s:
        s.sendall(request_bytes(srv, "/a.txt") + request_bytes(srv, "/SMUGGLED.txt", close=True))
        data = s.makefile("rb").read()
    assert [(st, b) for st, _, b in split_responses(data)] == [OK_A, OK_MARK]
    assert srv.proc.poll() is None

