"""The combined and JSON access log formats over real sockets, and what a log reader makes of them.

One mix of requests (fast-lane repeats on a keep-alive connection, HEAD, 404, 304, a range, a
gzip variant, hostile header values, an unparsable request) goes through a real server; the
combined log is then fed to GoAccess (Debian package `goaccess`, installed by tests/run), which
must read every line, and the JSON log must carry each request's fields.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    ResponseReader,
    ServerProcess,
    admin_address,
    connect,
    exchange,
    get,
    request_bytes,
    scrape_metrics,
)

REFERER = "https://example.test/from?q=1&x=2"
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# What a client can put in a header value past the parser: quotes, a backslash, a tab, UTF-8.
HOSTILE = 'evil" 200 0 "-" "x\\\tz ' + "é".encode().decode("latin-1")
HOSTILE_LOGGED = b'evil\\x22 200 0 \\x22-\\x22 \\x22x\\x5c\\x09z \\xc3\\xa9'
REPEATS = 6
COMBINED_LINE = re.compile(
    rb'(?P<addr>\S+) - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "(?P<request>[^"]*)" '
    rb'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"\n')


@pytest.fixture
def site(docroot: Path) -> Path:
    """The shared document root plus a precompressed sibling: style.css has a gzip variant."""
    css = docroot / "style.css"
    (docroot / "style.css.gz").write_bytes(gzip.compress(css.read_bytes(), mtime=0))
    return docroot


def _traffic(srv: ServerProcess) -> int:
    """Send the mix of requests; how many responses the log must show."""
    browser = {"Referer": REFERER, "User-Agent": AGENT}
    with connect(srv) as sock:  # the first GET prepares the response, the next ones reuse it
        reader = ResponseReader(sock)
        for _ in range(REPEATS):
            sock.sendall(request_bytes(srv, "/docs/page.txt", headers=browser))
            assert reader.read().status == 200
    assert get(srv, "/index.html", browser, method="HEAD").status == 200
    assert get(srv, "/missing.txt", browser).status == 404
    etag = get(srv, "/app.js").header("etag")
    assert etag and get(srv, "/app.js", {"If-None-Match": etag}).status == 304
    assert get(srv, "/blob.bin", {"Range": "bytes=0-9"}).status == 206
    zipped = get(srv, "/style.css", {"Accept-Encoding": "gzip", **browser})
    assert zipped.header("content-encoding") == "gzip"
    assert get(srv, "/data.json", {"Referer": HOSTILE, "User-Agent": HOSTILE}).status == 200
    assert exchange(srv, b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n").status == 400
    return REPEATS + 8


def _log_after(srv: ServerProcess, path: Path, expected: int) -> list[bytes]:
    """Stop the server (which writes the last lines) and read its log."""
    assert srv.stop() == 0
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == expected, b"".join(lines).decode("latin-1")
    return lines


def _served(serve: Callable[..., ServerProcess], site: Path, log: Path, fmt: str
            ) -> list[bytes]:
    srv = serve(site, "--access-log", str(log), "--access-log-format", fmt, "--admin-port", "0")
    admin = admin_address(srv)
    expected = _traffic(srv)
    # Every repeat logs the same line, so one taken by the fast lane is enough to check it.
    assert scrape_metrics(admin)["flashsrv_prepared_hits_total"] >= 1, "no fast-lane answer"
    return _log_after(srv, log, expected)


def test_combined_log_records_referer_and_user_agent_also_from_the_fast_lane(
        serve: Callable[..., ServerProcess], site: Path, tmp_path: Path):
    lines = _served(serve, site, tmp_path / "access.log", "combined")
    fields = [COMBINED_LINE.fullmatch(line) for line in lines]
    assert all(fields), lines
    by_request = [(m["request"], m["status"], m["bytes"], m["referer"], m["agent"])
                  for m in fields if m]
    browser = (REFERER.encode(), AGENT.encode())
    page = (b"GET /docs/page.txt HTTP/1.1", b"200", b"11", *browser)
    assert by_request[:REPEATS] == [page] * REPEATS
    assert (b"HEAD /index.html HTTP/1.1", b"200", b"0", *browser) in by_request
    missing = by_request[REPEATS + 1]
    assert missing[:2] == (b"GET /missing.txt HTTP/1.1", b"404") and missing[3:] == browser
    assert (b"GET /app.js HTTP/1.1", b"304", b"0", b"-", b"-") in by_request
    assert (b"GET /blob.bin HTTP/1.1", b"206", b"10", b"-", b"-") in by_request
    css = (site / "style.css.gz").stat().st_size
    assert (b"GET /style.css HTTP/1.1", b"200", str(css).encode(), *browser) in by_request
    assert (b"GET /data.json HTTP/1.1", b"200", b"9", HOSTILE_LOGGED, HOSTILE_LOGGED
            ) in by_request
    assert by_request[-1][:2] == (b"- - HTTP/1.1", b"400")


@pytest.mark.skipif(shutil.which("goaccess") is None,
                    reason="goaccess is not installed (tests/run installs the Debian package)")
def test_goaccess_reads_every_line_of_the_combined_log(
        serve: Callable[..., ServerProcess], site: Path, tmp_path: Path):
    log = tmp_path / "access.log"
    lines = _served(serve, site, log, "combined")
    report_path = tmp_path / "report.json"
    subprocess.run(["goaccess", str(log), "--no-global-config", "--log-format=COMBINED",
                    "--enable-panel=REFERRERS", "-o", str(report_path)],
                   check=True, capture_output=True, timeout=60)
    report = json.loads(report_path.read_text())
    general = report["general"]
    assert general["total_requests"] == general["valid_requests"] == len(lines), general
    assert general["failed_requests"] == 0, general

    def hits(panel: str) -> dict[str, int]:
        return {item["data"]: item["hits"]["count"] for item in report[panel]["data"]}

    browser_requests = REPEATS + 3  # the page, then the HEAD, the 404 and the gzip GET
    assert hits("referrers")[REFERER] == browser_requests
    assert hits("referring_sites")["example.test"] == browser_requests
    assert hits("browsers")["Firefox"] == browser_requests
    assert set(hits("status_codes")) >= {"2xx Success", "3xx Redirection",
                                         "4xx Client Errors"}


def test_json_log_carries_request_time_bytes_encoding_and_client_headers(
        serve: Callable[..., ServerProcess], site: Path, tmp_path: Path):
    lines = _served(serve, site, tmp_path / "access.json", "json")
    records = [json.loads(line) for line in lines]
    for record in records:
        assert record["remote_addr"] == "127.0.0.1"
        assert isinstance(record["request_time_us"], int) and record["request_time_us"] >= 0
    pages = records[:REPEATS]
    assert {(r["path"], r["status"], r["bytes"], r["encoding"], r["referer"], r["user_agent"])
            for r in pages} == {("/docs/page.txt", 200, 11, "identity", REFERER, AGENT)}
    # The first one waited for a helper to open the file: that took time.
    assert pages[0]["request_time_us"] > 0

    def find(path: str, status: int) -> dict:
        return next(r for r in records if (r["path"], r["status"]) == (path, status))

    css = find("/style.css", 200)
    assert (css["encoding"], css["bytes"]) == ("gzip", (site / "style.css.gz").stat().st_size)
    head = find("/index.html", 200)
    assert (head["method"], head["bytes"]) == ("HEAD", 0)
    assert find("/app.js", 304)["bytes"] == 0
    assert (find("/blob.bin", 206)["bytes"], find("/blob.bin", 206)["encoding"]) == (
        10, "identity")
    hostile = find("/data.json", 200)
    assert (hostile["referer"], hostile["user_agent"]) == (HOSTILE, HOSTILE)
    assert (records[-1]["method"], records[-1]["status"]) == ("-", 400)
