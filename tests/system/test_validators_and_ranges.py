"""Validators, conditional requests and byte ranges over real sockets (RFC 9110 §8.8, §13, §14).

One server per module serves files whose modification time is set far in the past, so that
Last-Modified is a strong validator and dates in the requests are exact. Every expectation is
computed from the file on disk (its bytes, size and mtime), never copied from a response.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from support import (
    Response,
    ResponseReader,
    ServerProcess,
    Servers,
    connect,
    get,
    on_all_schemes,
    on_both_schemes,
    on_one_connection,
    parse_byteranges,
    request_bytes,
    scheme_of,
)

OLD = 1_600_000_000  # Sun, 13 Sep 2020 12:26:40 GMT
DATA = bytes((i * 7 + i // 251) % 256 for i in range(10_000))
BIG_SIZE = 50 * 1024 * 1024
FIELDS_LIKE_200 = ("etag", "last-modified", "cache-control", "vary")


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validators")
    (root / "page.html").write_text("<!doctype html><title>p</title><p>validators</p>\n")
    (root / "data.bin").write_bytes(DATA)
    (root / "empty.txt").write_bytes(b"")
    for name in ("page.html", "data.bin", "empty.txt"):
        os.utime(root / name, (OLD, OLD))
    return root


@pytest.fixture(scope="module")
def big_data(docroot: Path) -> bytes:
    data = random.Random(20240607).randbytes(BIG_SIZE)
    (docroot / "big.bin").write_bytes(data)
    return data


@pytest.fixture(scope="module")
def servers(docroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with Servers(docroot, "--access-log", "off", tls_folder=tmp_path_factory.mktemp("tls")
                 ) as pool:
        yield pool


@pytest.fixture
def server(servers: Servers, request: pytest.FixtureRequest) -> ServerProcess:
    """The module's server over plain HTTP; over TLS too for the tests marked BOTH_SCHEMES, and
    over HTTP/2 as well for those marked ALL_SCHEMES."""
    return servers[scheme_of(request)]


BOTH_SCHEMES = on_both_schemes("server")
ALL_SCHEMES = on_all_schemes("server")  # HTTP semantics, not HTTP/1.1 framing: HTTP/2 too


def etag_of(path: Path) -> str:
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def last_modified_of(path: Path) -> str:
    return formatdate(int(path.stat().st_mtime), usegmt=True)


def exchange_then_probe(server: ServerProcess, path: str, headers: dict[str, str],
                        method: str = "GET") -> Response:
    """One request then a plain GET of /page.html on the same connection; returns the first.

    If the first response carried body bytes it should not have (304, HEAD), they are parsed as
    the second response's head and the probe fails, so this proves the framing too (over
    HTTP/2, the client's checks of each stream against its Content-Length).
    """
    first, probe = on_one_connection(server, (method, path, headers), ("GET", "/page.html", {}))
    assert probe.status == 200 and probe.body.endswith(b"validators</p>\n"), probe
    return first


# --- validators ------------------------------------------------------------------------------


def test_etag_is_strong_mtime_ns_and_size_in_hex(server: ServerProcess, docroot: Path) -> None:
    resp = get(server, "/data.bin")
    assert resp.status == 200
    assert resp.header("etag") == etag_of(docroot / "data.bin")
    assert not resp.header("etag").startswith("W/")


def test_last_modified_is_the_file_mtime(server: ServerProcess, docroot: Path) -> None:
    resp = get(server, "/data.bin")
    assert resp.header("last-modified") == "Sun, 13 Sep 2020 12:26:40 GMT"
    assert resp.header("last-modified") == last_modified_of(docroot / "data.bin")


@ALL_SCHEMES
def test_if_none_match_same_etag_gives_304_with_the_200_validators_and_no_body(
        server: ServerProcess, docroot: Path) -> None:
    full = get(server, "/page.html")
    resp = exchange_then_probe(server, "/page.html",
                               {"If-None-Match": etag_of(docroot / "page.html")})
    assert resp.status == 304
    assert resp.body == b""
    for name in FIELDS_LIKE_200:
        assert resp.header(name) == full.header(name), name
    assert resp.header("etag") and resp.header("last-modified") and resp.header("cache-control")


@pytest.mark.parametrize("value", [
    "W/{tag}",
    '"nope", {tag}',
    '"a", W/"b",{tag} , "c"',
    "*",
], ids=["weak-form", "list", "list-with-whitespace", "star"])
def test_if_none_match_matching_forms_give_304(server: ServerProcess, docroot: Path,
                                               value: str) -> None:
    resp = get(server, "/data.bin",
               {"If-None-Match": value.format(tag=etag_of(docroot / "data.bin"))})
    assert resp.status == 304
    assert resp.body == b""


def test_if_none_match_other_etag_gives_full_200(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"If-None-Match": '"0-0", W/"1-1"'})
    assert resp.status == 200
    assert resp.body == DATA


def test_if_none_match_wins_over_if_modified_since(server: ServerProcess,
                                                   docroot: Path) -> None:
    # A non-matching tag with a date that alone would give 304: the tag decides (200).
    resp = get(server, "/data.bin", {"If-None-Match": '"other"',
                                     "If-Modified-Since": formatdate(OLD + 3600, usegmt=True)})
    assert resp.status == 200
    assert resp.body == DATA
    # A matching tag with a date that alone would give 200: the tag decides (304).
    resp = get(server, "/data.bin", {"If-None-Match": etag_of(docroot / "data.bin"),
                                     "If-Modified-Since": formatdate(OLD - 3600, usegmt=True)})
    assert resp.status == 304


@pytest.mark.parametrize("offset", [0, 86400])
@ALL_SCHEMES
def test_if_modified_since_not_modified_gives_304(server: ServerProcess, offset: int) -> None:
    resp = exchange_then_probe(server, "/page.html",
                               {"If-Modified-Since": formatdate(OLD + offset, usegmt=True)})
    assert resp.status == 304
    assert resp.header("last-modified") == formatdate(OLD, usegmt=True)


def test_if_modified_since_before_last_modified_gives_200(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"If-Modified-Since": formatdate(OLD - 1, usegmt=True)})
    assert resp.status == 200
    assert resp.body == DATA


@pytest.mark.parametrize("value", ["yesterday", "", "0", "Sun, 99 Foo 2020 12:26:40 GMT",
                                   "13/09/2020"])
def test_unparseable_if_modified_since_is_ignored(server: ServerProcess, value: str) -> None:
    resp = get(server, "/data.bin", {"If-Modified-Since": value})
    assert resp.status == 200
    assert resp.body == DATA


@pytest.mark.parametrize("value", ["Sun, 13 Sep 2020 25:26:40 GMT",
                                   "Sun, 13 Sep 2020 12:26:99 GMT"])
def test_if_modified_since_with_out_of_range_time_fields_is_ignored(server: ServerProcess,
                                                                    value: str) -> None:
    """Hour 25 or second 99 is not a valid HTTP-date (RFC 9110 §5.6.7), so the field must be
    ignored (§13.1.3), not rolled over into a later instant that then yields 304."""
    resp = get(server, "/data.bin", {"If-Modified-Since": value})
    assert resp.status == 200
    assert resp.body == DATA


def test_if_modified_since_in_other_date_formats_is_understood(server: ServerProcess) -> None:
    for value in ("Sunday, 13-Sep-20 12:26:40 GMT", "Sun Sep 13 12:26:40 2020"):
        assert get(server, "/data.bin", {"If-Modified-Since": value}).status == 304, value


@ALL_SCHEMES
def test_if_match_other_etag_gives_412(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"If-Match": '"0-0"'})
    assert resp.status == 412
    assert DATA not in resp.body


def test_if_match_weak_etag_fails_strong_comparison_with_412(server: ServerProcess,
                                                               docroot: Path) -> None:
    resp = get(server, "/data.bin", {"If-Match": "W/" + etag_of(docroot / "data.bin")})
    assert resp.status == 412


@pytest.mark.parametrize("value", ["{tag}", '"x", {tag}', "*"])
def test_if_match_matching_proceeds_with_200(server: ServerProcess, docroot: Path,
                                             value: str) -> None:
    resp = get(server, "/data.bin",
               {"If-Match": value.format(tag=etag_of(docroot / "data.bin"))})
    assert resp.status == 200
    assert resp.body == DATA


def test_if_unmodified_since_before_last_modified_gives_412(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"If-Unmodified-Since": formatdate(OLD - 1, usegmt=True)})
    assert resp.status == 412


def test_if_unmodified_since_at_or_after_last_modified_proceeds(server: ServerProcess) -> None:
    for when in (OLD, OLD + 60):
        resp = get(server, "/data.bin", {"If-Unmodified-Since": formatdate(when, usegmt=True)})
        assert resp.status == 200
        assert resp.body == DATA


def test_failing_if_match_wins_over_matching_if_none_match(server: ServerProcess,
                                                           docroot: Path) -> None:
    resp = get(server, "/data.bin", {"If-Match": '"0-0"',
                                     "If-None-Match": etag_of(docroot / "data.bin")})
    assert resp.status == 412


def test_head_has_the_get_headers_and_no_body(server: ServerProcess) -> None:
    full = get(server, "/data.bin")
    head = exchange_then_probe(server, "/data.bin", {}, method="HEAD")
    assert head.status == 200
    strip = {"date", "connection"}
    assert ([h for h in head.headers if h[0].lower() not in strip]
            == [h for h in full.headers if h[0].lower() not in strip])
    assert head.header("content-length") == str(len(DATA))


@ALL_SCHEMES
def test_head_with_matching_if_none_match_gives_304(server: ServerProcess,
                                                    docroot: Path) -> None:
    resp = exchange_then_probe(server, "/data.bin",
                               {"If-None-Match": etag_of(docroot / "data.bin")}, method="HEAD")
    assert resp.status == 304


# --- single ranges ----------------------------------------------------------------------------


def test_files_advertise_accept_ranges_bytes(server: ServerProcess) -> None:
    for path in ("/data.bin", "/page.html"):
        assert get(server, path).header("accept-ranges") == "bytes", path


@pytest.mark.parametrize(("spec", "start", "end"), [
    ("bytes=0-99", 0, 99),
    ("bytes=-100", 9900, 9999),
    ("bytes=100-", 100, 9999),
    ("bytes=9000-20000", 9000, 9999),
    ("bytes=0-0", 0, 0),
    ("bytes=9999-9999", 9999, 9999),
    ("bytes=-20000", 0, 9999),
    ("BYTES = 10-19", 10, 19),
], ids=["first-100", "suffix-100", "open-ended", "end-past-eof-clamped", "first-byte",
        "last-byte", "suffix-longer-than-file", "case-and-whitespace"])
@ALL_SCHEMES
def test_single_range_gives_206_with_exact_bytes(server: ServerProcess, spec: str, start: int,
                                                 end: int) -> None:
    resp = get(server, "/data.bin", {"Range": spec})
    assert resp.status == 206
    assert resp.header("content-range") == f"bytes {start}-{end}/{len(DATA)}"
    assert resp.header("content-length") == str(end - start + 1)
    assert resp.body == DATA[start : end + 1]


def test_206_carries_the_validators_and_cache_control_of_the_200(server: ServerProcess) -> None:
    full = get(server, "/data.bin")
    part = get(server, "/data.bin", {"Range": "bytes=5-9"})
    for name in ("etag", "last-modified", "cache-control", "content-type"):
        assert part.header(name) == full.header(name), name


@ALL_SCHEMES
def test_range_response_keeps_the_connection_usable(server: ServerProcess) -> None:
    resp = exchange_then_probe(server, "/data.bin", {"Range": "bytes=10-19"})
    assert resp.status == 206 and resp.body == DATA[10:20]


@pytest.mark.parametrize("spec", ["bytes=10000-", "bytes=20000-30000", "bytes=-0",
                                  "bytes=10000-10000, 12000-"])
@ALL_SCHEMES
def test_unsatisfiable_range_gives_416_with_the_current_size(server: ServerProcess,
                                                             spec: str) -> None:
    resp = get(server, "/data.bin", {"Range": spec})
    assert resp.status == 416
    assert resp.header("content-range") == f"bytes */{len(DATA)}"
    assert DATA[:100] not in resp.body


def test_any_range_of_an_empty_file_is_unsatisfiable(server: ServerProcess) -> None:
    resp = get(server, "/empty.txt", {"Range": "bytes=0-"})
    assert resp.status == 416
    assert resp.header("content-range") == "bytes */0"


@pytest.mark.parametrize("spec", ["bytes=20-10", "bytes=abc", "items=0-10", "bytes 0-10",
                                  "bytes=", "bytes=1-2-3", "bytes=0-10,x"])
def test_invalid_range_is_ignored_with_a_full_200(server: ServerProcess, spec: str) -> None:
    resp = get(server, "/data.bin", {"Range": spec})
    assert resp.status == 200
    assert resp.body == DATA


def test_range_is_ignored_for_head(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=0-9"}, method="HEAD")
    assert resp.status == 200
    assert resp.header("content-length") == str(len(DATA))


# --- multiple ranges --------------------------------------------------------------------------


@ALL_SCHEMES
def test_multiple_ranges_give_multipart_byteranges_with_each_part_correct(
        server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=0-9, 100-199, -5"})
    assert resp.status == 206
    assert resp.header("content-range") is None
    assert resp.header("content-length") == str(len(resp.body))
    parts = parse_byteranges(resp)
    expected = [(0, 9), (100, 199), (9995, 9999)]
    assert len(parts) == len(expected)
    for (headers, data), (start, end) in zip(parts, expected, strict=True):
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
        assert data == DATA[start : end + 1]


@ALL_SCHEMES
def test_multipart_response_keeps_the_connection_usable(server: ServerProcess) -> None:
    resp = exchange_then_probe(server, "/data.bin", {"Range": "bytes=0-0,2-2"})
    assert [data for _, data in parse_byteranges(resp)] == [DATA[0:1], DATA[2:3]]


def test_overlapping_ranges_are_coalesced_into_one(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=0-50, 40-99"})
    assert resp.status == 206
    assert resp.header("content-range") == f"bytes 0-99/{len(DATA)}"
    assert resp.body == DATA[:100]


def test_adjacent_ranges_are_coalesced_into_one(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=0-9,10-19"})
    assert resp.status == 206
    assert resp.header("content-range") == f"bytes 0-19/{len(DATA)}"
    assert resp.body == DATA[:20]


def test_overlapping_ranges_never_repeat_bytes_in_multipart(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=500-600, 0-99, 50-149, 550-"})
    parts = parse_byteranges(resp)
    assert [h["content-range"] for h, _ in parts] == [
        f"bytes 0-149/{len(DATA)}", f"bytes 500-9999/{len(DATA)}"]
    assert sum(len(d) for _, d in parts) <= len(DATA)


def test_many_small_ranges_cannot_amplify_the_response(server: ServerProcess) -> None:
    spec = "bytes=" + ",".join(["0-9999"] * 16)
    resp = get(server, "/data.bin", {"Range": spec})
    assert resp.status == 206
    assert len(resp.body) == len(DATA)


def test_sixteen_ranges_are_served_as_sixteen_parts(server: ServerProcess) -> None:
    spans = [(i * 100, i * 100 + 9) for i in range(16)]
    resp = get(server, "/data.bin", {"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)})
    assert resp.status == 206
    assert [d for _, d in parse_byteranges(resp)] == [DATA[a : b + 1] for a, b in spans]


def test_more_than_sixteen_ranges_get_a_plain_200(server: ServerProcess) -> None:
    spec = "bytes=" + ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(17))
    resp = get(server, "/data.bin", {"Range": spec})
    assert resp.status == 200
    assert resp.body == DATA


# --- If-Range ---------------------------------------------------------------------------------


@ALL_SCHEMES
def test_if_range_with_matching_etag_gives_206(server: ServerProcess, docroot: Path) -> None:
    resp = get(server, "/data.bin",
               {"Range": "bytes=0-9", "If-Range": etag_of(docroot / "data.bin")})
    assert resp.status == 206
    assert resp.body == DATA[:10]


def test_if_range_with_exact_last_modified_gives_206(server: ServerProcess,
                                                     docroot: Path) -> None:
    resp = get(server, "/data.bin",
               {"Range": "bytes=0-9", "If-Range": last_modified_of(docroot / "data.bin")})
    assert resp.status == 206
    assert resp.body == DATA[:10]


@pytest.mark.parametrize("if_range", [
    '"0-0"',
    "W/{tag}",
    formatdate(OLD + 1, usegmt=True),
    formatdate(OLD - 1, usegmt=True),
    "garbage",
], ids=["other-etag", "weak-etag-never-matches", "later-date", "earlier-date", "garbage"])
def test_if_range_that_does_not_match_gives_the_full_200(server: ServerProcess, docroot: Path,
                                                         if_range: str) -> None:
    resp = get(server, "/data.bin", {
        "Range": "bytes=0-9", "If-Range": if_range.format(tag=etag_of(docroot / "data.bin"))})
    assert resp.status == 200
    assert resp.body == DATA


def test_if_range_mismatch_with_unsatisfiable_range_gives_200_not_416(
        server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=99999-", "If-Range": '"0-0"'})
    assert resp.status == 200
    assert resp.body == DATA


def test_matching_if_none_match_with_range_gives_304(server: ServerProcess,
                                                     docroot: Path) -> None:
    resp = get(server, "/data.bin",
               {"Range": "bytes=0-9", "If-None-Match": etag_of(docroot / "data.bin")})
    assert resp.status == 304


def test_failing_if_match_with_range_gives_412(server: ServerProcess) -> None:
    resp = get(server, "/data.bin", {"Range": "bytes=0-9", "If-Match": '"0-0"'})
    assert resp.status == 412


# --- large files (streamed, beyond the 1 MiB cache limit) ------------------------------------


@pytest.mark.parametrize(("spec", "start", "end"), [
    ("bytes=26214400-27262975", 26214400, 27262975),
    ("bytes=33333333-33333432", 33333333, 33333432),
    ("bytes=-1000", BIG_SIZE - 1000, BIG_SIZE - 1),
    ("bytes=52428000-", 52428000, BIG_SIZE - 1),
], ids=["1MiB-from-the-middle", "100-bytes-odd-offset", "suffix", "open-ended-tail"])
@ALL_SCHEMES
def test_range_of_a_large_file_returns_exactly_those_bytes(
        server: ServerProcess, big_data: bytes, spec: str, start: int, end: int) -> None:
    resp = get(server, "/big.bin", {"Range": spec})
    assert resp.status == 206
    assert resp.header("content-range") == f"bytes {start}-{end}/{BIG_SIZE}"
    assert resp.body == big_data[start : end + 1]


@ALL_SCHEMES
def test_multiple_ranges_of_a_large_file_return_exact_parts(server: ServerProcess,
                                                            big_data: bytes) -> None:
    spans = [(1_000_000, 1_000_099), (30_000_000, 30_065_535), (BIG_SIZE - 10, BIG_SIZE - 1)]
    resp = get(server, "/big.bin",
               {"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)})
    assert resp.status == 206
    parts = parse_byteranges(resp)
    assert [h["content-range"] for h, _ in parts] == [
        f"bytes {a}-{b}/{BIG_SIZE}" for a, b in spans]
    assert [d for _, d in parts] == [big_data[a : b + 1] for a, b in spans]


@BOTH_SCHEMES
def test_seeking_in_a_large_file_on_one_connection(server: ServerProcess,
                                                   big_data: bytes) -> None:
    """A video player seeks: several ranges of one big file on a keep-alive connection."""
    offsets = [40_000_000, 5_000_000, 49_000_000, 0]
    with connect(server, timeout=30) as sock:
        reader = ResponseReader(sock)
        for offset in offsets:
            sock.sendall(request_bytes(server, "/big.bin",
                                       headers={"Range": f"bytes={offset}-{offset + 262143}"}))
            resp = reader.read()
            assert resp.status == 206
            assert resp.body == big_data[offset : offset + 262144], offset


@ALL_SCHEMES
def test_etag_of_large_file_answers_if_none_match(server: ServerProcess, docroot: Path,
                                                  big_data: bytes) -> None:
    assert big_data
    resp = exchange_then_probe(server, "/big.bin",
                               {"If-None-Match": etag_of(docroot / "big.bin")})
    assert resp.status == 304
