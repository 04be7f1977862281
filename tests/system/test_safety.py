"""Safety over real sockets: nothing outside the document root is ever served (traversal in any
encoding, symbolic links), dotfiles stay private, malformed requests get clean 400s and a closed
connection, and the limits answer 414/431/505 without harming the server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    connect,
    exchange,
    get,
    read_until_eof,
    request_bytes,
    start_server,
)

SECRET = b"TOP-SECRET-7f3a9c-outside-the-root"
SIBLING_SECRET = b"SIBLING-SECRET-e41b-next-to-the-root"
ENV_SECRET = b"ENV-SECRET-DB_PASSWORD=hunter2"
GIT_SECRET = b"GIT-SECRET-url=ssh://private"
INSIDE = b"inside the root\n"
REFUSED = (400, 403, 404)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("safety")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    sibling = base / "www-private"  # shares the root's name as a prefix: a startswith() trap
    sibling.mkdir()
    (sibling / "secret.txt").write_bytes(SIBLING_SECRET)
    root = base / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")
    sub = root / "sub"
    sub.mkdir()
    (sub / "file.txt").write_bytes(INSIDE)
    os.symlink("../outside/secret.txt", root / "escape.txt")
    os.symlink(str(outside / "secret.txt"), root / "escape_abs.txt")
    os.symlink("../outside", root / "outdir")
    os.symlink("../www-private", root / "sibling")
    os.symlink("../../outside/secret.txt", sub / "deep_escape.txt")
    os.symlink("sub/file.txt", root / "alias.txt")
    os.symlink("../index.html", sub / "up.html")
    (root / ".env").write_bytes(ENV_SECRET)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(GIT_SECRET)
    (root / ".git" / "HEAD").write_bytes(GIT_SECRET)
    (sub / ".hidden.txt").write_bytes(ENV_SECRET)
    (root / ".private").mkdir()
    (root / ".private" / "visible-name.txt").write_bytes(ENV_SECRET)
    return {"base": base, "root": root, "outside": outside}


@pytest.fixture(scope="module")
def srv(layout):
    server = start_server(layout["root"], "--access-log", "off")
    yield server
    server.stop()


def raw_get(server: ServerProcess, target: bytes) -> tuple[int | None, bytes]:
    """Send `GET <target> HTTP/1.1` verbatim; return (status or None if closed, whole reply)."""
    raw = (b"GET " + target + b" HTTP/1.1\r\nHost: " + f"{server.host}:{server.port}".encode()
           + b"\r\nConnection: close\r\n\r\n")
    with connect(server) as s:
        s.sendall(raw)
        data = read_until_eof(s, timeout=10)
    if not data:
        return None, data
    status = int(data.split(b" ", 2)[1])
    return status, data


def assert_still_serving(server: ServerProcess) -> None:
    r = get(server, "/sub/file.txt")
    assert r.status == 200 and r.body == INSIDE, "server stopped serving normal requests"
    assert server.proc.poll() is None, "server process died"


def assert_no_secret(data: bytes) -> None:
    for secret in (SECRET, SIBLING_SECRET, ENV_SECRET, GIT_SECRET):
        assert secret not in data, f"leaked {secret!r}"
    assert b"root:x:0:0" not in data, "leaked /etc/passwd"
    assert b"Traceback" not in data


# --- traversal in every encoding -----------------------------------------------------------

TRAVERSALS = [
    b"/../outside/secret.txt",
    b"/sub/../../outside/secret.txt",
    b"/./../outside/secret.txt",
    b"//../outside/secret.txt",
    b"/../www-private/secret.txt",
    b"/%2e%2e/outside/secret.txt",
    b"/%2E%2E/outside/secret.txt",
    b"/.%2e/outside/secret.txt",
    b"/%2e./outside/secret.txt",
    b"/%2e%2e%2foutside%2fsecret.txt",
    b"/..%2foutside%2fsecret.txt",
    b"/..%2Foutside/secret.txt",
    b"/sub/..%2f..%2foutside/secret.txt",
    b"/sub%2f..%2f..%2foutside%2fsecret.txt",
    b"/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/../../../../../../../../etc/passwd",
    b"/..\\outside\\secret.txt",
    b"/sub\\..\\..\\outside\\secret.txt",
    b"/..%5coutside%5csecret.txt",
    b"/..%5Coutside/secret.txt",
    b"/%252e%252e/outside/secret.txt",
    b"/%252e%252e%252foutside%252fsecret.txt",
    b"/..%252foutside%252fsecret.txt",
    b"/%c0%ae%c0%ae/outside/secret.txt",
    b"/%c0%ae%c0%ae%c0%afoutside%c0%afsecret.txt",
    b"/..%00/outside/secret.txt",
    b"/../outside/secret.txt%00.html",
    b"/sub/file.txt%00../../outside/secret.txt",
    b"/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/sub/%2e%2e/%2e%2e/outside/secret.txt",
    b"/..;/outside/secret.txt",
    b"/outside/../../outside/secret.txt",
    b"http://example.test/../outside/secret.txt",
    b"http://example.test/%2e%2e/outside/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
def test_traversal_outside_the_root_is_refused(srv: ServerProcess, target: bytes):
    status, data = raw_get(srv, target)
    assert_no_secret(data)
    assert status in REFUSED, f"{target!r} -> {status}: {data[:200]!r}"
    assert_still_serving(srv)


def test_absolute_filesystem_path_as_target_is_refused(srv: ServerProcess, layout):
    secret = str(layout["outside"] / "secret.txt").encode()
    for target in (b"/" + secret, b"/" + secret.replace(b"/", b"%2f"), b"/%2f" + secret[1:]):
        status, data = raw_get(srv, target)
        assert_no_secret(data)
        assert status in REFUSED, (target, status)


def test_raw_nul_byte_in_the_target_is_refused(srv: ServerProcess):
    status, data = raw_get(srv, b"/sub/file.txt\x00.html")
    assert status in (None, 400, 403, 404), status
    assert_no_secret(data)
    assert_still_serving(srv)


def test_dot_segments_that_stay_inside_the_root_do_not_leak(srv: ServerProcess):
    # Either normalised and served, or refused: never an error page with a traceback.
    status, data = raw_get(srv, b"/sub/../sub/file.txt")
    assert status in (200, 400, 403, 404)
    if status == 200:
        assert data.endswith(INSIDE)
    assert b"Traceback" not in data


# --- symbolic links ------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/escape.txt", "/escape_abs.txt", "/outdir/secret.txt",
                                    "/sibling/secret.txt", "/sub/deep_escape.txt",
                                    "/outdir/", "/outdir"])
def test_symlink_leading_outside_the_root_is_refused(srv: ServerProcess, target: str):
    r = get(srv, target)
    assert_no_secret(r.body)
    assert r.status in (403, 404), (target, r.status)


def test_symlink_to_a_file_inside_the_root_is_served(srv: ServerProcess):
    r = get(srv, "/alias.txt")
    assert r.status == 200 and r.body == INSIDE
    r = get(srv, "/sub/up.html")
    assert r.status == 200 and r.body == b"<h1>home</h1>\n"


def test_symlink_retargeted_outside_after_being_served_is_refused(layout, serve: Serve):
    root = layout["root"]
    link = root / "moving.txt"
    os.symlink("sub/file.txt", link)
    server = serve(root, "--access-log", "off")
    try:
        assert get(server, "/moving.txt").body == INSIDE
        tmp_link = root / "moving.tmp"
        os.symlink("../outside/secret.txt", tmp_link)
        os.replace(tmp_link, link)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            r = get(server, "/moving.txt")
            assert_no_secret(r.body)
            if r.status in (403, 404):
                break
            time.sleep(0.1)
        assert r.status in (403, 404), "retargeted symlink still served after 2.5 s"
    finally:
        link.unlink()


# --- dotfiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/.env", "/.git/config", "/.git/HEAD", "/.git/", "/.git",
                                    "/sub/.hidden.txt", "/.private/visible-name.txt",
                                    "/%2eenv", "/%2egit/config", "/sub/%2ehidden.txt",
                                    "/sub/../.env"])
def test_dotfiles_and_dot_directories_are_not_served(srv: ServerProcess, target: str):
    status, data = raw_get(srv, target.encode())
    assert_no_secret(data)
    assert status in REFUSED, (target, status)


# --- malformed requests: 400 and the connection closed -------------------------------------

MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no_target": b"GET\r\n\r\n",
    "extra_token_in_request_line": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "bad_protocol_name": b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
    "header_without_colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "space_in_header_name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "missing_host_http11": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "duplicate_content_length": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                 b"Content-Length: 3\r\n\r\nabc"),
    "conflicting_content_length": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   b"Content-Length: 4\r\n\r\nabcd"),
    "content_length_list": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "non_numeric_content_length": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative_content_length": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "content_length_with_transfer_encoding": (
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "transfer_encoding_with_content_length": (
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n"),
    "binary_noise": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_gets_400_and_the_connection_is_closed(srv: ServerProcess, name):
    with connect(srv) as s:
        s.sendall(MALFORMED[name])
        reader = ResponseReader(s)
        r = reader.read()
        assert r.status == 400, f"{name}: got {r.status}"
        assert b"Traceback" not in r.body
        assert int(r.header("content-length")) == len(r.body)
        assert reader.at_eof(timeout=3), f"{name}: connection left open after a 400"
    assert_still_serving(srv)


def test_400_after_a_good_request_on_the_same_connection(srv: ServerProcess):
    with connect(srv) as s:
        s.sendall(request_bytes(srv, "/sub/file.txt") + b"NONSENSE LINE\r\n\r\n")
        reader = ResponseReader(s)
        good = reader.read()
        bad = reader.read()
        assert good.status == 200 and good.body == INSIDE
        assert bad.status == 400
        assert reader.at_eof(timeout=3)


def test_request_smuggled_behind_a_rejected_request_is_not_answered(srv: ServerProcess):
    smuggle = (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 52\r\n\r\n"
               b"GET /sub/file.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    with connect(srv) as s:
        s.sendall(smuggle)
        data = read_until_eof(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 400"), data[:100]
    assert data.count(b"HTTP/1.") == 1, data
    assert INSIDE not in data


# --- limits: 414, 431, 505 -----------------------------------------------------------------


def test_url_over_the_limit_gets_414(srv: ServerProcess):
    target = "/" + "a" * 20_000
    r = exchange(srv, request_bytes(srv, target, close=True))
    assert r.status == 414
    assert b"Traceback" not in r.body and len(r.body) < 4096
    assert_still_serving(srv)


def test_long_but_ordinary_url_is_not_refused_as_too_long(srv: ServerProcess):
    r = get(srv, "/sub/file.txt?" + "q" * 1500)
    assert r.status == 200 and r.body == INSIDE


def test_one_huge_header_gets_431(srv: ServerProcess):
    r = exchange(srv, request_bytes(srv, "/", headers={"X-Huge": "h" * 40_000}, close=True))
    assert r.status == 431
    assert b"Traceback" not in r.body
    assert_still_serving(srv)


def test_too_many_small_headers_get_431(srv: ServerProcess):
    headers = {f"X-Filler-{i:03d}": "value-" + "v" * 20 for i in range(200)}
    r = exchange(srv, request_bytes(srv, "/", headers=headers, close=True))
    assert r.status == 431
    assert b"Traceback" not in r.body
    assert_still_serving(srv)


def test_header_limit_is_counted_across_many_packets(srv: ServerProcess):
    head = request_bytes(srv, "/", close=True)[:-2]  # without the final CRLF
    with connect(srv) as s:
        s.sendall(head)
        try:
            for i in range(60):
                s.sendall(f"X-Chunk-{i:03d}: {'c' * 1000}\r\n".encode())
            s.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before we finish: fine
        data = read_until_eof(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 431") or data.startswith(b"HTTP/1.0 431"), data[:80]
    assert_still_serving(srv)


def test_a_realistic_cookie_header_is_accepted(srv: ServerProcess):
    r = get(srv, "/sub/file.txt", headers={"Cookie": "session=" + "c" * 4000})
    assert r.status == 200 and r.body == INSIDE


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0"])
def test_unsupported_http_version_gets_505(srv: ServerProcess, version: bytes):
    r = exchange(srv, b"GET / " + version + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.status == 505
    assert b"Traceback" not in r.body
    assert_still_serving(srv)


def test_http2_prior_knowledge_preface_is_answered_as_http2(srv: ServerProcess):
    with connect(srv) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        s.settimeout(5)
        data = s.recv(9)  # h2c: the server's SETTINGS frame (tests/system/test_http2.py)
    assert len(data) == 9 and data[3] == 0x4, data
    assert_still_serving(srv)


# --- permissions ---------------------------------------------------------------------------


def _without_dac_override() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a
    server started by root obeys file permission bits after exec (it keeps uid 0 and so can
    still read everything root owns, such as the interpreter under /root)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_gets_403(tmp_path: Path, serve: Serve):
    root = tmp_path / "www"
    root.mkdir()
    (root / "ok.txt").write_text("readable\n")
    locked = root / "locked.txt"
    locked.write_bytes(SECRET)
    locked.chmod(0)
    preexec = None
    if os.geteuid() == 0:
        preexec = _without_dac_override
    try:
        server = serve(root, "--access-log", "off", preexec_fn=preexec)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE: {exc}")
    try:
        assert get(server, "/ok.txt").status == 200
        r = get(server, "/locked.txt")
        assert_no_secret(r.body)
        assert r.status == 403, r.status
        assert_still_serving_file(server, "/ok.txt", b"readable\n")
    finally:
        locked.chmod(0o644)


def assert_still_serving_file(server: ServerProcess, path: str, body: bytes) -> None:
    r = get(server, path)
    assert r.status == 200 and r.body == body


# --- random bytes never crash the server ---------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(noise=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_crash_the_server_or_leak_a_traceback(srv: ServerProcess, noise):
    with connect(srv, timeout=5) as s:
        try:
            s.sendall(noise + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = read_until_eof(s, timeout=3)
    if data:
        assert data.startswith(b"HTTP/1."), data[:80]
        assert b"Traceback" not in data
    assert srv.proc.poll() is None
