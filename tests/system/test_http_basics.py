"""HTTP behaviour of the daemon over real sockets: methods, versions, headers, MIME types,
keep-alive, pipelining, request bodies, redirects, percent-decoding, the access log, the demo
site and the command line.

Every test talks to a real `flashsrv serve` process; nothing is mocked.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    Servers,
    connect,
    exchange,
    get,
    on_all_schemes,
    on_both_schemes,
    on_one_connection,
    read_until_eof,
    request_bytes,
    scheme_of,
    serve_refused,
    wait_until,
)

STYLE_CSS = "body { color: #333; }\n"
INDEX_HTML = "<!doctype html><title>home</title><h1>home</h1>\n"

# extension -> (expected media type, charset required?)
MIME_CASES = {
    "page.html": ("text/html", True),
    "notes.txt": ("text/plain", True),
    "site.css": ("text/css", True),
    "app.js": ("text/javascript", False),
    "module.mjs": ("text/javascript", False),
    "data.json": ("application/json", False),
    "logo.svg": ("image/svg+xml", False),
    "prog.wasm": ("application/wasm", False),
    "font.woff2": ("font/woff2", False),
    "pic.png": ("image/png", False),
    "pic.jpg": ("image/jpeg", False),
    "pic.jpeg": ("image/jpeg", False),
    "pic.gif": ("image/gif", False),
    "pic.webp": ("image/webp", False),
    "pic.avif": ("image/avif", False),
    "clip.mp4": ("video/mp4", False),
    "clip.webm": ("video/webm", False),
    "thing.unknownext": ("application/octet-stream", False),
    "no_extension": ("application/octet-stream", False),
}

IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)

CLF_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-)( .*)?$'
)


def make_site(root: Path) -> Path:
    root.mkdir()
    (root / "index.html").write_text(INDEX_HTML)
    (root / "style.css").write_text(STYLE_CSS)
    (root / "blob.bin").write_bytes(bytes(range(256)) * 64)
    docs = root / "docs"
    docs.mkdir()
    (docs / "index.html").write_text("<h1>docs</h1>\n")
    (docs / "page.txt").write_text("plain text\n")
    (root / "hello world.txt").write_text("spaces are fine\n")
    (root / "café.txt").write_text("accented name\n")
    mime = root / "mime"
    mime.mkdir()
    for name in MIME_CASES:
        (mime / name).write_bytes(b"x" * 10)
    (mime / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return make_site(tmp_path_factory.mktemp("basics") / "www")


@pytest.fixture(scope="module")
def servers(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with Servers(site, "--access-log", "off", tls_folder=tmp_path_factory.mktemp("tls")) as pool:
        yield pool


@pytest.fixture
def srv(servers: Servers, request: pytest.FixtureRequest) -> ServerProcess:
    """The module's server over plain HTTP; over TLS too for the tests marked BOTH_SCHEMES, and
    over HTTP/2 as well for those marked ALL_SCHEMES."""
    return servers[scheme_of(request)]


BOTH_SCHEMES = on_both_schemes("srv")
ALL_SCHEMES = on_all_schemes("srv")  # HTTP semantics, not HTTP/1.1 framing: HTTP/2 too


def media_type(value: str | None) -> tuple[str, dict[str, str]]:
    assert value is not None, "no Content-Type header"
    main, *params = [p.strip() for p in value.split(";")]
    parsed = {}
    for p in params:
        k, _, v = p.partition("=")
        parsed[k.strip().lower()] = v.strip().strip('"').lower()
    return main.lower(), parsed


# --- headers every response carries ---------------------------------------------------------


@ALL_SCHEMES
def test_get_serves_the_file_bytes_with_every_required_header(srv: ServerProcess, site: Path):
    r = get(srv, "/style.css")
    assert r.status == 200
    assert r.version == srv.http_version
    assert r.body == STYLE_CSS.encode()
    assert r.header("content-length") == str(len(STYLE_CSS))
    assert media_type(r.header("content-type")) == ("text/css", {"charset": "utf-8"})
    assert r.header("server"), "Server header missing or empty"
    assert IMF_FIXDATE.match(r.header("date") or ""), r.header("date")
    mtime = int((site / "style.css").stat().st_mtime)
    assert r.header("last-modified") == formatdate(mtime, usegmt=True)
    etag = r.header("etag")
    assert etag and re.fullmatch(r'"[^"\s]+"', etag), f"not a strong quoted ETag: {etag!r}"


def test_each_required_header_appears_exactly_once(srv: ServerProcess):
    r = get(srv, "/blob.bin")
    for name in ("date", "server", "content-length", "content-type", "last-modified", "etag"):
        assert len(r.header_all(name)) == 1, (name, r.headers)


def test_etag_is_stable_across_requests_for_an_unchanged_file(srv: ServerProcess):
    first = get(srv, "/blob.bin").header("etag")
    second = get(srv, "/blob.bin").header("etag")
    assert first == second


@ALL_SCHEMES
def test_binary_file_is_served_byte_for_byte(srv: ServerProcess):
    r = get(srv, "/blob.bin")
    assert r.status == 200
    assert r.body == bytes(range(256)) * 64


@pytest.mark.parametrize("name", sorted(MIME_CASES))
def test_content_type_matches_the_file_extension(srv: ServerProcess, name: str):
    expected, needs_charset = MIME_CASES[name]
    r = get(srv, f"/mime/{name}")
    assert r.status == 200
    mtype, params = media_type(r.header("content-type"))
    assert mtype == expected, r.header("content-type")
    if needs_charset or expected.startswith("text/"):
        assert params.get("charset") == "utf-8", r.header("content-type")


def test_icon_has_an_image_content_type(srv: ServerProcess):
    r = get(srv, "/mime/favicon.ico")
    assert r.status == 200
    mtype, _ = media_type(r.header("content-type"))
    assert mtype in ("image/x-icon", "image/vnd.microsoft.icon"), mtype


@ALL_SCHEMES
def test_not_found_is_a_small_html_page_with_full_framing(srv: ServerProcess):
    r = get(srv, "/no/such/file.txt")
    assert r.status == 404
    assert media_type(r.header("content-type"))[0] == "text/html"
    assert r.header("date") and r.header("server")
    assert int(r.header("content-length")) == len(r.body)
    assert b"Traceback" not in r.body
    assert len(r.body) < 4096


# --- methods -------------------------------------------------------------------------------


@ALL_SCHEMES
def test_head_has_the_get_headers_and_no_body(srv: ServerProcess):
    # HEAD then GET on one connection: a body after the HEAD would corrupt the GET.
    head, nxt = on_one_connection(srv, ("HEAD", "/style.css", {}), ("GET", "/docs/page.txt", {}))
    full = get(srv, "/style.css")
    assert head.status == 200
    assert head.header("content-length") == str(len(STYLE_CSS))
    for name in ("content-type", "etag", "last-modified"):
        assert head.header(name) == full.header(name), name
    assert nxt.status == 200 and nxt.body == b"plain text\n", (nxt.status, nxt.body[:80])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE"])
def test_other_methods_get_405_with_an_allow_header(srv: ServerProcess, method: str):
    body = b"abc" if method in ("POST", "PUT", "PATCH") else b""
    headers = {"Content-Length": str(len(body))} if body else {}
    r = exchange(srv, request_bytes(srv, "/style.css", method, headers=headers, close=True,
                                    body=body))
    assert r.status == 405
    allowed = {m.strip().upper() for m in (r.header("allow") or "").split(",")}
    assert {"GET", "HEAD"} <= allowed, r.header("allow")
    assert b"Traceback" not in r.body


@ALL_SCHEMES
def test_connection_survives_a_405(srv: ServerProcess):
    refused, r = on_one_connection(srv, ("DELETE", "/style.css", {}), ("GET", "/style.css", {}))
    assert refused.status == 405
    assert r.status == 200 and r.body == STYLE_CSS.encode()


# --- versions and persistent connections ---------------------------------------------------


@BOTH_SCHEMES
def test_http11_keeps_the_connection_open_by_default(srv: ServerProcess):
    with connect(srv) as s:
        reader = ResponseReader(s)
        for _ in range(3):
            s.sendall(request_bytes(srv, "/style.css"))
            r = reader.read()
            assert r.status == 200 and r.body == STYLE_CSS.encode()
            assert (r.header("connection") or "").lower() != "close"


@BOTH_SCHEMES
def test_http11_connection_close_is_honoured(srv: ServerProcess):
    with connect(srv) as s:
        s.sendall(request_bytes(srv, "/style.css", close=True))
        reader = ResponseReader(s)
        r = reader.read()
        assert r.status == 200
        assert reader.at_eof(timeout=3), "server kept the connection after Connection: close"


@BOTH_SCHEMES
def test_http10_closes_after_the_response_by_default(srv: ServerProcess):
    with connect(srv) as s:
        s.sendall(b"GET /style.css HTTP/1.0\r\n\r\n")
        reader = ResponseReader(s)
        r = reader.read()
        assert r.status == 200 and r.body == STYLE_CSS.encode()
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert reader.at_eof(timeout=3), "HTTP/1.0 connection without keep-alive left open"


@BOTH_SCHEMES
def test_http10_keep_alive_is_honoured(srv: ServerProcess):
    req = b"GET /style.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with connect(srv) as s:
        reader = ResponseReader(s)
        s.sendall(req)
        first = reader.read()
        assert first.status == 200
        assert (first.header("connection") or "").lower() == "keep-alive", first.headers
        s.sendall(req)
        second = reader.read()
    assert second.status == 200 and second.body == STYLE_CSS.encode()


def test_http10_request_without_host_is_served(srv: ServerProcess):
    r = exchange(srv, b"GET /docs/page.txt HTTP/1.0\r\n\r\n")
    assert r.status == 200 and r.body == b"plain text\n"


@BOTH_SCHEMES
def test_pipelined_requests_are_answered_in_order(srv: ServerProcess):
    paths = ["/blob.bin", "/style.css", "/missing.txt", "/docs/page.txt", "/", "/style.css",
             "/hello%20world.txt"]
    expected = [(200, bytes(range(256)) * 64), (200, STYLE_CSS.encode()), (404, None),
                (200, b"plain text\n"), (200, INDEX_HTML.encode()), (200, STYLE_CSS.encode()),
                (200, b"spaces are fine\n")]
    raw = b"".join(request_bytes(srv, p) for p in paths[:-1])
    raw += request_bytes(srv, paths[-1], close=True)
    with connect(srv) as s:
        s.sendall(raw)
        reader = ResponseReader(s)
        got = [reader.read() for _ in paths]
    for path, (status, body), r in zip(paths, expected, got, strict=True):
        assert r.status == status, path
        if body is not None:
            assert r.body == body, path


@BOTH_SCHEMES
def test_pipelined_hot_request_waits_behind_a_cold_one(srv: ServerProcess, site: Path):
    """A cached file must not overtake an earlier request that needs the disk helpers."""
    get(srv, "/style.css")
    get(srv, "/style.css")  # hot now
    cold_a = bytes(range(256)) * 1200  # ~300 KB, never requested before
    cold_b = b"second cold file\n"
    (site / "cold_a.bin").write_bytes(cold_a)
    (site / "cold_b.txt").write_bytes(cold_b)
    paths = ["/cold_a.bin", "/style.css", "/cold_b.txt", "/style.css"]
    with connect(srv) as s:
        s.sendall(b"".join(request_bytes(srv, p) for p in paths))
        reader = ResponseReader(s)
        bodies = [reader.read().body for _ in paths]
    assert bodies == [cold_a, STYLE_CSS.encode(), cold_b, STYLE_CSS.encode()]


def test_ipv6_loopback_is_served(site: Path, serve: Serve):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    server = serve(site, "--access-log", "off", host="::1")
    with socket.create_connection(("::1", server.port), timeout=5) as s:
        s.sendall(b"GET /style.css HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        r = ResponseReader(s).read()
    assert r.status == 200 and r.body == STYLE_CSS.encode()


def test_pipelined_head_and_get_mix_keeps_framing(srv: ServerProcess):
    raw = (request_bytes(srv, "/blob.bin", "HEAD") + request_bytes(srv, "/style.css")
           + request_bytes(srv, "/blob.bin", "HEAD") + request_bytes(srv, "/docs/page.txt"))
    with connect(srv) as s:
        s.sendall(raw)
        reader = ResponseReader(s)
        a = reader.read(head_request=True)
        b = reader.read()
        c = reader.read(head_request=True)
        d = reader.read()
    assert (a.status, c.status) == (200, 200)
    assert b.body == STYLE_CSS.encode()
    assert d.body == b"plain text\n"


@BOTH_SCHEMES
def test_request_split_into_single_bytes_is_parsed(srv: ServerProcess):
    import time

    raw = request_bytes(srv, "/style.css", close=True)
    with connect(srv) as s:
        for i in range(len(raw)):
            s.sendall(raw[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        r = ResponseReader(s).read()
    assert r.status == 200 and r.body == STYLE_CSS.encode()


# --- request bodies ------------------------------------------------------------------------


@BOTH_SCHEMES
def test_get_with_a_body_is_read_and_discarded(srv: ServerProcess):
    body = b"0123456789" * 100
    raw = request_bytes(srv, "/style.css", headers={"Content-Length": str(len(body))}, body=body)
    raw += request_bytes(srv, "/docs/page.txt")
    with connect(srv) as s:
        s.sendall(raw)
        reader = ResponseReader(s)
        first = reader.read()
        second = reader.read()
    assert first.status == 200 and first.body == STYLE_CSS.encode()
    assert second.status == 200 and second.body == b"plain text\n"


@BOTH_SCHEMES
def test_get_body_arriving_after_the_headers_is_discarded(srv: ServerProcess):
    import time

    body = b"GET /evil HTTP/1.1\r\n\r\n"  # looks like a request: must be treated as body bytes
    with connect(srv) as s:
        s.sendall(request_bytes(srv, "/style.css", headers={"Content-Length": str(len(body))}))
        time.sleep(0.05)
        s.sendall(body[:7])
        time.sleep(0.05)
        s.sendall(body[7:] + request_bytes(srv, "/docs/page.txt"))
        reader = ResponseReader(s)
        first = reader.read()
        second = reader.read()
    assert first.status == 200
    assert second.status == 200 and second.body == b"plain text\n"


# --- targets: index files, redirects, decoding ---------------------------------------------


def test_root_serves_index_html(srv: ServerProcess):
    r = get(srv, "/")
    assert r.status == 200
    assert r.body == INDEX_HTML.encode()
    assert media_type(r.header("content-type"))[0] == "text/html"


def test_directory_with_trailing_slash_serves_its_index(srv: ServerProcess):
    r = get(srv, "/docs/")
    assert r.status == 200 and r.body == b"<h1>docs</h1>\n"


@ALL_SCHEMES
def test_directory_without_trailing_slash_redirects_permanently(srv: ServerProcess):
    r = get(srv, "/docs")
    assert r.status == 301
    location = r.header("location")
    assert location and urlsplit(location).path == "/docs/", location
    assert int(r.header("content-length")) == len(r.body)


def test_percent_encoded_space_is_decoded(srv: ServerProcess):
    r = get(srv, "/hello%20world.txt")
    assert r.status == 200 and r.body == b"spaces are fine\n"


@ALL_SCHEMES
def test_percent_encoded_utf8_name_is_decoded(srv: ServerProcess):
    r = get(srv, "/caf%C3%A9.txt")
    assert r.status == 200 and r.body == b"accented name\n"
    assert get(srv, "/caf%c3%a9.txt").status == 200  # hex digits are case-insensitive


def test_percent_encoded_ordinary_letters_are_decoded(srv: ServerProcess):
    r = get(srv, "/%73tyle.css")
    assert r.status == 200 and r.body == STYLE_CSS.encode()


def test_query_string_is_ignored(srv: ServerProcess):
    r = get(srv, "/style.css?v=123&x=%2e%2e")
    assert r.status == 200 and r.body == STYLE_CSS.encode()
    r = get(srv, "/docs/?page=2")
    assert r.status == 200 and r.body == b"<h1>docs</h1>\n"


def test_fragment_like_suffix_does_not_break_lookup(srv: ServerProcess):
    r = get(srv, "/style.css?#top")
    assert r.status == 200


def test_absolute_form_target_is_served(srv: ServerProcess):
    raw = (f"GET http://{srv.host}:{srv.port}/style.css HTTP/1.1\r\n"
           f"Host: {srv.host}:{srv.port}\r\nConnection: close\r\n\r\n").encode()
    r = exchange(srv, raw)
    assert r.status == 200 and r.body == STYLE_CSS.encode()


def test_absolute_form_root_target_serves_the_index(srv: ServerProcess):
    raw = b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
    r = exchange(srv, raw)
    assert r.status == 200 and r.body == INDEX_HTML.encode()


# --- access log ----------------------------------------------------------------------------


def _log_lines(text: str, needle: str) -> list[str]:
    return [ln for ln in text.splitlines() if needle in ln]


def test_access_log_writes_one_common_log_format_line_per_request(site: Path, serve: Serve):
    server = serve(site, "--access-log", "-")
    get(server, "/style.css")
    get(server, "/nope-404.txt")
    get(server, "/docs/page.txt", method="HEAD")
    wait_until(lambda: len(_log_lines(server.stdout_text(), "HTTP/1.")) >= 3, timeout=5)
    lines = [ln for ln in server.stdout_text().splitlines() if ln.strip()]
    css = [ln for ln in lines if "/style.css" in ln]
    assert len(css) == 1, lines
    m = CLF_LINE.match(css[0])
    assert m, f"not Common Log Format: {css[0]!r}"
    assert m["request"] == "GET /style.css HTTP/1.1"
    assert m["status"] == "200" and m["size"] == str(len(STYLE_CSS))
    missing = [ln for ln in lines if "/nope-404.txt" in ln]
    assert len(missing) == 1 and CLF_LINE.match(missing[0])["status"] == "404", missing
    head = [ln for ln in lines if "/docs/page.txt" in ln]
    assert len(head) == 1 and CLF_LINE.match(head[0])["request"].startswith("HEAD "), head
    assert len(lines) == 3, f"expected exactly three log lines on stdout, got {lines}"


def test_access_log_lines_are_flushed_while_the_server_runs(site: Path, serve: Serve):
    server = serve(site, "--access-log", "-")
    get(server, "/docs/page.txt")
    seen = wait_until(lambda: _log_lines(server.stdout_text(), "/docs/page.txt"), timeout=3)
    assert seen, "access log not flushed within 3 s"


def test_access_log_off_writes_nothing_to_stdout(site: Path, serve: Serve):
    server = serve(site, "--access-log", "off")
    get(server, "/style.css")
    get(server, "/missing")
    assert server.stop() == 0
    assert server.stdout_text().strip() == ""


def test_access_log_to_a_file(site: Path, tmp_path: Path, serve: Serve):
    log = tmp_path / "access.log"
    server = serve(site, "--access-log", str(log))
    get(server, "/style.css")
    found = wait_until(lambda: log.exists() and "/style.css" in log.read_text(), timeout=3)
    assert found, "access log file not written within 3 s"
    server.stop()
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    assert len(lines) == 1 and CLF_LINE.match(lines[0]), lines
    assert "/style.css" not in server.stdout_text()


def test_access_log_is_flushed_on_shutdown(site: Path, serve: Serve):
    server = serve(site, "--access-log", "-")
    for i in range(5):
        get(server, f"/style.css?n={i}")
    assert server.stop() == 0
    server.proc.wait(5)
    lines = wait_until(lambda: _log_lines(server.stdout_text(), "/style.css"), timeout=2)
    assert len(lines) == 5, lines


# --- demo site and command line ------------------------------------------------------------


def test_serve_without_root_serves_the_demo_site(serve: Serve):
    server = serve(None)
    r = get(server, "/")
    assert r.status == 200
    assert media_type(r.header("content-type"))[0] == "text/html"
    assert len(r.body) > 0


SERVE_OPTIONS = ["--host", "--port", "--helpers", "--cache-bytes", "--access-log",
                 "--header-timeout", "--keepalive-timeout", "--max-connections"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_module_help_exits_zero_and_names_the_serve_command():
    out = _run([sys.executable, "-m", "flashsrv", "--help"])
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout
    assert "Traceback" not in out.stderr


def test_console_script_help_exits_zero():
    exe = shutil.which("flashsrv") or os.path.join(os.path.dirname(sys.executable), "flashsrv")
    if not os.path.exists(exe):
        pytest.fail("no flashsrv console script installed next to the test interpreter")
    out = _run([exe, "--help"])
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout


def test_serve_help_mentions_every_option():
    out = _run([sys.executable, "-m", "flashsrv", "serve", "--help"])
    assert out.returncode == 0, out.stderr
    missing = [opt for opt in SERVE_OPTIONS if opt not in out.stdout]
    assert not missing, f"serve --help does not mention {missing}"


@pytest.mark.parametrize("size", ["1048576", "64M", "1G", "512K"])
def test_cache_bytes_accepts_plain_numbers_and_suffixes(site: Path, size: str, serve: Serve):
    server = serve(site, "--cache-bytes", size, "--access-log", "off")
    assert get(server, "/style.css").status == 200
    assert server.stop() == 0


@pytest.mark.parametrize("args", [["--cache-bytes", "lots"], ["--port", "notaport"],
                                  ["--helpers", "-1"]])
def test_invalid_options_are_rejected_with_a_message(site: Path, args: list[str]):
    code, err = serve_refused(site, *args,
                              failure=f"server started despite invalid option {args}")
    assert code != 0
    assert err.strip(), "no error message"
    assert "Traceback" not in err


def test_missing_root_folder_is_reported_not_served(tmp_path: Path):
    code, err = serve_refused(tmp_path / "absent",
                              failure="server started on a folder that does not exist")
    assert code != 0
    assert "Traceback" not in err


@BOTH_SCHEMES
def test_connection_close_response_has_no_trailing_bytes(srv: ServerProcess):
    with connect(srv) as s:
        s.sendall(request_bytes(srv, "/style.css", close=True))
        data = read_until_eof(s, timeout=5)
    _head, _, body = data.partition(b"\r\n\r\n")
    assert body == STYLE_CSS.encode(), data[-200:]


def test_an_error_after_a_streamed_file_on_the_same_connection_is_answered(docroot: Path,
                                                                           serve: Serve):
    """A 405 (or any error) that follows a large, streamed response on a keep-alive connection
    is a normal response, not the abort reserved for errors in the middle of a body."""
    large = bytes(range(256)) * 1024  # 256 KiB: past the data cache, sent with sendfile
    (docroot / "large.bin").write_bytes(large)
    server = serve(docroot, "--access-log", "off")
    with connect(server) as s:
        reader = ResponseReader(s)
        host = f"Host: {server.host}\r\n"
        s.sendall(f"GET /large.bin HTTP/1.1\r\n{host}\r\n".encode())
        first = reader.read()
        s.sendall(f"DELETE /large.bin HTTP/1.1\r\n{host}\r\n".encode())
        second = reader.read()
        s.sendall(f"GET /style.css HTTP/1.1\r\n{host}\r\n".encode())
        third = reader.read()
    assert first.status == 200 and first.body == large
    assert second.status == 405
    assert third.status == 200 and third.body == (docroot / "style.css").read_bytes()
