"""Compression over real sockets: precompressed siblings (.br/.gz) and on-the-fly gzip.

Precompressed siblings are served as opaque bytes, so the `.br` file here is a marker payload
rather than real Brotli: the test checks the server sends that file, byte for byte, with the
right headers. Gzip bodies are decompressed and compared with the original file.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    ResponseReader,
    ServerProcess,
    connect,
    get,
    parse_byteranges,
    request_bytes,
    start_server,
    wait_until,
)

JS_TYPE = "text/javascript; charset=utf-8"
APP_JS = "".join(f"export function f{i}(x) {{ return x * {i} + {i * i}; }}\n"
                 for i in range(60)).encode()
APP_JS_GZ = gzip.compress(APP_JS, mtime=0)
APP_JS_BR = b"\xce\xb2\x00BROTLI-MARKER " + bytes(range(200)) * 2

# Compressible bodies between 256 bytes and 1 MiB, by file name.
COMPRESSIBLE = {
    "style.css": b"".join(b".c%d { color: #%06x; margin: %dpx; }\n" % (i, i * 997, i)
                          for i in range(200)),
    "page.html": b"<!doctype html><title>t</title>\n" + b"<p>paragraph of text</p>\n" * 100,
    "data.json": b'{"items": [' + b",".join(b'{"id": %d, "ok": true}' % i
                                            for i in range(100)) + b"]}\n",
    "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg">'
                + b'<rect x="1" y="1" width="10" height="10"/>' * 40 + b"</svg>\n",
    "notes.txt": b"a line of plain text that repeats\n" * 60,
    "bundle.js": APP_JS,
}
# Compressible-looking bytes in types that are already compressed: must not be gzipped.
INCOMPRESSIBLE = {"photo.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 4000,
                  "archive.zip": b"PK\x03\x04" + b"\x00" * 4000,
                  "movie.mp4": b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000}
TINY_CSS = b"a { color: red; }\n" * 10  # 180 bytes, under the 256-byte floor
HUGE_CSS = b".x { color: blue; }\n" * 60_000  # 1.2 MB, over the 1 MiB limit


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compression")
    (root / "app.js").write_bytes(APP_JS)
    (root / "app.js.gz").write_bytes(APP_JS_GZ)
    (root / "app.js.br").write_bytes(APP_JS_BR)
    (root / "gzonly.js").write_bytes(APP_JS)
    (root / "gzonly.js.gz").write_bytes(APP_JS_GZ)
    for name, data in {**COMPRESSIBLE, **INCOMPRESSIBLE}.items():
        (root / name).write_bytes(data)
    (root / "tiny.css").write_bytes(TINY_CSS)
    (root / "huge.css").write_bytes(HUGE_CSS)
    return root


@pytest.fixture(scope="module")
def server(docroot: Path) -> Iterator[ServerProcess]:
    srv = start_server(docroot, "--access-log", "off")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def compressing(docroot: Path) -> Iterator[ServerProcess]:
    srv = start_server(docroot, "--access-log", "off", "--compress")
    yield srv
    srv.stop()


def etag_of(path: Path, coding: str = "") -> str:
    st = path.stat()
    suffix = f"-{coding}" if coding else ""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}{suffix}"'


# --- precompressed siblings --------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "coding"), [
    ("br", "br"),
    ("gzip", "gzip"),
    ("gzip, deflate, br", "br"),
    ("gzip, br", "br"),
    ("br;q=0.5, gzip;q=0.5", "br"),
    ("br;q=0.5, gzip;q=0.9", "gzip"),
    ("br;q=0, gzip", "gzip"),
    ("br;q=0", "identity"),
    ("gzip;q=0, br;q=0", "identity"),
    ("deflate", "identity"),
    ("*", "br"),
    ("*;q=0.1, gzip", "gzip"),
    ("identity", "identity"),
    ("GZIP", "gzip"),
    ("x-gzip", "gzip"),
], ids=lambda v: v.replace(" ", ""))
def test_accept_encoding_chooses_the_precompressed_sibling(
        server: ServerProcess, docroot: Path, accept: str, coding: str) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": accept})
    assert resp.status == 200
    assert resp.header("content-type") == JS_TYPE
    assert resp.header("vary") == "Accept-Encoding"
    body = {"br": APP_JS_BR, "gzip": APP_JS_GZ, "identity": APP_JS}[coding]
    assert resp.body == body
    assert resp.header("content-length") == str(len(body))
    if coding == "identity":
        assert resp.header("content-encoding") is None
        assert resp.header("etag") == etag_of(docroot / "app.js")
    else:
        assert resp.header("content-encoding") == coding
        sibling = "app.js.br" if coding == "br" else "app.js.gz"
        assert resp.header("etag") == etag_of(docroot / sibling, coding)


def test_without_accept_encoding_the_identity_file_is_served_with_vary(
        server: ServerProcess) -> None:
    resp = get(server, "/app.js")
    assert resp.status == 200
    assert resp.body == APP_JS
    assert resp.header("content-encoding") is None
    assert resp.header("vary") == "Accept-Encoding"


def test_gz_sibling_alone_is_used_and_br_request_falls_back_to_identity(
        server: ServerProcess) -> None:
    assert get(server, "/gzonly.js", {"Accept-Encoding": "gzip, br"}).body == APP_JS_GZ
    resp = get(server, "/gzonly.js", {"Accept-Encoding": "br"})
    assert resp.body == APP_JS
    assert resp.header("content-encoding") is None


def test_each_encoding_has_its_own_etag(server: ServerProcess) -> None:
    tags = {get(server, "/app.js", {"Accept-Encoding": ae}).header("etag")
            for ae in ("br", "gzip", "identity")}
    assert len(tags) == 3
    assert all(t and t.startswith('"') and t.endswith('"') for t in tags)


def test_if_none_match_of_an_encoding_gives_304_with_vary(server: ServerProcess,
                                                          docroot: Path) -> None:
    full = get(server, "/app.js", {"Accept-Encoding": "gzip"})
    resp = get(server, "/app.js", {"Accept-Encoding": "gzip",
                                   "If-None-Match": etag_of(docroot / "app.js.gz", "gzip")})
    assert resp.status == 304
    assert resp.body == b""
    for name in ("etag", "last-modified", "cache-control", "vary"):
        assert resp.header(name) == full.header(name), name


def test_etag_of_one_encoding_does_not_validate_another(server: ServerProcess,
                                                        docroot: Path) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": "br",
                                   "If-None-Match": etag_of(docroot / "app.js.gz", "gzip")})
    assert resp.status == 200
    assert resp.body == APP_JS_BR


def test_range_applies_to_the_encoded_bytes(server: ServerProcess) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": "gzip", "Range": "bytes=10-49"})
    assert resp.status == 206
    assert resp.header("content-encoding") == "gzip"
    assert resp.header("content-range") == f"bytes 10-49/{len(APP_JS_GZ)}"
    assert resp.body == APP_JS_GZ[10:50]
    assert resp.header("vary") == "Accept-Encoding"


def test_multiple_ranges_apply_to_the_encoded_bytes(server: ServerProcess) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": "br", "Range": "bytes=0-9,100-119"})
    assert resp.status == 206
    parts = parse_byteranges(resp)
    assert [d for _, d in parts] == [APP_JS_BR[0:10], APP_JS_BR[100:120]]
    assert all(h["content-type"] == JS_TYPE for h, _ in parts)
    assert all(h["content-range"].endswith(f"/{len(APP_JS_BR)}") for h, _ in parts)


def test_unsatisfiable_range_reports_the_encoded_size(server: ServerProcess) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": "gzip", "Range": f"bytes={len(APP_JS)}-"})
    assert resp.status == 416
    assert resp.header("content-range") == f"bytes */{len(APP_JS_GZ)}"


def test_gz_file_requested_directly_is_application_gzip_without_content_encoding(
        server: ServerProcess) -> None:
    resp = get(server, "/app.js.gz", {"Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.header("content-type") == "application/gzip"
    assert resp.header("content-encoding") is None
    assert resp.body == APP_JS_GZ


def test_head_of_a_precompressed_variant_matches_its_get(server: ServerProcess) -> None:
    full = get(server, "/app.js", {"Accept-Encoding": "br"})
    head = get(server, "/app.js", {"Accept-Encoding": "br"}, method="HEAD")
    for name in ("content-length", "content-encoding", "etag", "vary", "content-type"):
        assert head.header(name) == full.header(name), name


# --- on-the-fly gzip (--compress) --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMPRESSIBLE))
def test_compress_gzips_compressible_types_to_the_original_bytes(compressing: ServerProcess,
                                                                 name: str) -> None:
    resp = get(compressing, f"/{name}", {"Accept-Encoding": "gzip, deflate"})
    assert resp.status == 200
    assert resp.header("content-encoding") == "gzip"
    assert resp.header("vary") == "Accept-Encoding"
    assert resp.header("content-length") == str(len(resp.body))
    assert len(resp.body) < len(COMPRESSIBLE[name])
    assert gzip.decompress(resp.body) == COMPRESSIBLE[name]
    etag = resp.header("etag")
    assert etag and etag.endswith('-gzip"')
    assert etag != get(compressing, f"/{name}").header("etag")


def test_compress_keeps_the_content_type_of_the_original(compressing: ServerProcess) -> None:
    resp = get(compressing, "/style.css", {"Accept-Encoding": "gzip"})
    assert resp.header("content-type") == "text/css; charset=utf-8"


def test_compressed_variant_is_stable_across_requests(compressing: ServerProcess) -> None:
    seen = {(r.header("etag"), r.body)
            for r in (get(compressing, "/notes.txt", {"Accept-Encoding": "gzip"})
                      for _ in range(5))}
    assert len(seen) == 1


def test_compressed_variant_is_stable_on_one_keep_alive_connection(
        compressing: ServerProcess) -> None:
    with connect(compressing) as sock:
        reader = ResponseReader(sock)
        bodies = set()
        for _ in range(3):
            sock.sendall(request_bytes(compressing, "/data.json",
                                       headers={"Accept-Encoding": "gzip"}))
            resp = reader.read()
            bodies.add((resp.header("etag"), resp.body))
    assert len(bodies) == 1


def test_compressed_variant_answers_if_none_match_with_304(compressing: ServerProcess) -> None:
    full = get(compressing, "/style.css", {"Accept-Encoding": "gzip"})
    resp = get(compressing, "/style.css",
               {"Accept-Encoding": "gzip", "If-None-Match": full.header("etag")})
    assert resp.status == 304
    assert resp.header("vary") == "Accept-Encoding"
    assert resp.header("etag") == full.header("etag")


@pytest.mark.parametrize("name", sorted(INCOMPRESSIBLE))
def test_compress_leaves_images_video_and_archives_alone(compressing: ServerProcess,
                                                         name: str) -> None:
    resp = get(compressing, f"/{name}", {"Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.header("content-encoding") is None
    assert resp.body == INCOMPRESSIBLE[name]


def test_compress_skips_tiny_files(compressing: ServerProcess) -> None:
    resp = get(compressing, "/tiny.css", {"Accept-Encoding": "gzip"})
    assert resp.header("content-encoding") is None
    assert resp.body == TINY_CSS


def test_compress_skips_files_over_one_mebibyte(compressing: ServerProcess) -> None:
    resp = get(compressing, "/huge.css", {"Accept-Encoding": "gzip"})
    assert resp.header("content-encoding") is None
    assert resp.body == HUGE_CSS


@pytest.mark.parametrize("headers", [{}, {"Accept-Encoding": "br"},
                                     {"Accept-Encoding": "gzip;q=0"},
                                     {"Accept-Encoding": "identity"}],
                         ids=["none", "br-only", "gzip-q0", "identity"])
def test_compress_sends_identity_to_clients_without_gzip(compressing: ServerProcess,
                                                         headers: dict[str, str]) -> None:
    resp = get(compressing, "/style.css", headers)
    assert resp.status == 200
    assert resp.header("content-encoding") is None
    assert resp.body == COMPRESSIBLE["style.css"]
    assert resp.header("vary") == "Accept-Encoding"


def test_compress_prefers_an_existing_gz_sibling(compressing: ServerProcess) -> None:
    resp = get(compressing, "/app.js", {"Accept-Encoding": "gzip"})
    assert resp.body == APP_JS_GZ


def test_range_of_the_gzip_variant_applies_to_the_gzip_bytes(compressing: ServerProcess) -> None:
    whole = get(compressing, "/style.css", {"Accept-Encoding": "gzip"}).body
    resp = get(compressing, "/style.css", {"Accept-Encoding": "gzip", "Range": "bytes=5-24"})
    assert resp.status == 206
    assert resp.header("content-encoding") == "gzip"
    assert resp.header("content-range") == f"bytes 5-24/{len(whole)}"
    assert resp.body == whole[5:25]


def test_multiple_ranges_of_the_gzip_variant_give_correct_parts(
        compressing: ServerProcess) -> None:
    whole = get(compressing, "/style.css", {"Accept-Encoding": "gzip"}).body
    resp = get(compressing, "/style.css", {"Accept-Encoding": "gzip", "Range": "bytes=0-9,20-29"})
    assert resp.status == 206
    parts = parse_byteranges(resp)
    assert [d for _, d in parts] == [whole[0:10], whole[20:30]]
    assert [h["content-range"] for h, _ in parts] == [
        f"bytes 0-9/{len(whole)}", f"bytes 20-29/{len(whole)}"]


def test_changed_file_gets_a_new_gzip_within_one_and_a_half_seconds(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    target = root / "live.css"
    old = b".old { color: red; }\n" * 40
    new = b".new { color: green; padding: 1px; }\n" * 40
    target.write_bytes(old)
    srv = start_server(root, "--access-log", "off", "--compress")
    try:
        first = get(srv, "/live.css", {"Accept-Encoding": "gzip"})
        assert gzip.decompress(first.body) == old
        tmp = root / "live.css.tmp"
        tmp.write_bytes(new)
        os.replace(tmp, target)
        changed_at = time.monotonic()

        def fresh_gzip():
            resp = get(srv, "/live.css", {"Accept-Encoding": "gzip"})
            ok = (resp.header("content-encoding") == "gzip"
                  and gzip.decompress(resp.body) == new)
            return resp if ok else None

        resp = wait_until(fresh_gzip, timeout=1.5, interval=0.05)
        assert resp is not None, "the old gzip was still served 1.5 s after the change"
        assert time.monotonic() - changed_at < 2.0
        assert resp.header("etag") != first.header("etag")
        assert resp.header("etag").endswith('-gzip"')
    finally:
        srv.stop()
