"""Compression over real sockets: precompressed siblings (.br/.zst/.gz) and on-the-fly gzip,
br and zstd (--compress, --compress-encodings), and their settings.

Precompressed siblings are served as opaque bytes, so the `.br` file here is a marker payload
rather than real Brotli: the test checks the server sends that file, byte for byte, with the
right headers. Bodies compressed on the fly are decompressed with the coding's library and
compared with the original file.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    Servers,
    connect,
    decompress,
    get,
    on_all_schemes,
    on_both_schemes,
    parse_byteranges,
    request_bytes,
    scheme_of,
    serve_refused,
    wait_until,
)

JS_TYPE = "text/javascript; charset=utf-8"
APP_JS = "".join(f"export function f{i}(x) {{ return x * {i} + {i * i}; }}\n"
                 for i in range(60)).encode()
APP_JS_GZ = gzip.compress(APP_JS, mtime=0)
APP_JS_BR = b"\xce\xb2\x00BROTLI-MARKER " + bytes(range(200)) * 2
APP_JS_ZST = zstandard.ZstdCompressor(level=19).compress(APP_JS)
SIBLINGS = {"br": ("app.js.br", APP_JS_BR), "zstd": ("app.js.zst", APP_JS_ZST),
            "gzip": ("app.js.gz", APP_JS_GZ), "identity": ("app.js", APP_JS)}

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
    (root / "app.js.zst").write_bytes(APP_JS_ZST)
    (root / "gzonly.js").write_bytes(APP_JS)
    (root / "gzonly.js.gz").write_bytes(APP_JS_GZ)
    for name, data in {**COMPRESSIBLE, **INCOMPRESSIBLE}.items():
        (root / name).write_bytes(data)
    (root / "tiny.css").write_bytes(TINY_CSS)
    (root / "huge.css").write_bytes(HUGE_CSS)
    return root


@pytest.fixture(scope="module")
def servers(docroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with Servers(docroot, "--access-log", "off", tls_folder=tmp_path_factory.mktemp("tls")
                 ) as pool:
        yield pool


@pytest.fixture(scope="module")
def compressing_servers(docroot: Path, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[Servers]:
    with Servers(docroot, "--access-log", "off", "--compress",
                 tls_folder=tmp_path_factory.mktemp("tls")) as pool:
        yield pool


@pytest.fixture
def server(servers: Servers, request: pytest.FixtureRequest) -> ServerProcess:
    """The module's server over plain HTTP; over TLS and HTTP/2 too for the tests marked
    ALL_SCHEMES."""
    return servers[scheme_of(request)]


@pytest.fixture
def compressing(compressing_servers: Servers, request: pytest.FixtureRequest) -> ServerProcess:
    """The same with --compress; over TLS too for the tests marked COMPRESSING_BOTH_SCHEMES,
    over TLS and HTTP/2 for those marked COMPRESSING_ALL_SCHEMES."""
    return compressing_servers[scheme_of(request)]


# HTTP semantics, not HTTP/1.1 framing: over HTTP/2 too.
ALL_SCHEMES = on_all_schemes("server")
COMPRESSING_ALL_SCHEMES = on_all_schemes("compressing")
COMPRESSING_BOTH_SCHEMES = on_both_schemes("compressing")  # keep-alive: HTTP/1.1 only


def etag_of(path: Path, coding: str = "") -> str:
    st = path.stat()
    suffix = f"-{coding}" if coding else ""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}{suffix}"'


# --- precompressed siblings --------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "coding"), [
    ("br", "br"),
    ("gzip", "gzip"),
    ("zstd", "zstd"),
    ("gzip, deflate, br", "br"),
    ("gzip, deflate, br, zstd", "br"),
    ("gzip, br", "br"),
    ("gzip, zstd", "zstd"),
    ("br;q=0.5, gzip;q=0.5", "br"),
    ("br;q=0.5, gzip;q=0.9", "gzip"),
    ("gzip;q=1, br;q=0.5", "gzip"),
    ("gzip;q=0.5, zstd;q=0.6, br;q=0.4", "zstd"),
    ("br;q=0, gzip", "gzip"),
    ("br;q=0, *", "zstd"),
    ("br;q=0, zstd;q=0, *", "gzip"),
    ("br;q=0", "identity"),
    ("gzip;q=0, br;q=0, zstd;q=0", "identity"),
    ("deflate", "identity"),
    ("*", "br"),
    ("*;q=0.1, gzip", "gzip"),
    ("*;q=0", "identity"),
    ("*;q=0, identity", "identity"),
    ("identity;q=0, zstd;q=0.1", "zstd"),
    ("identity", "identity"),
    ("GZIP", "gzip"),
    ("ZStd", "zstd"),
    ("x-gzip", "gzip"),
], ids=lambda v: v.replace(" ", ""))
@ALL_SCHEMES
def test_accept_encoding_chooses_the_precompressed_sibling(
        server: ServerProcess, docroot: Path, accept: str, coding: str) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": accept})
    assert resp.status == 200
    assert resp.header("content-type") == JS_TYPE
    assert resp.header("vary") == "Accept-Encoding"
    name, body = SIBLINGS[coding]
    assert resp.body == body
    assert resp.header("content-length") == str(len(body))
    if coding == "identity":
        assert resp.header("content-encoding") is None
        assert resp.header("etag") == etag_of(docroot / name)
    else:
        assert resp.header("content-encoding") == coding
        assert resp.header("etag") == etag_of(docroot / name, coding)


def test_zst_sibling_is_real_zstd_of_the_file(server: ServerProcess) -> None:
    resp = get(server, "/app.js", {"Accept-Encoding": "zstd"})
    assert resp.header("content-encoding") == "zstd"
    assert decompress("zstd", resp.body) == APP_JS


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
            for ae in ("br", "zstd", "gzip", "identity")}
    assert len(tags) == 4
    assert all(t and t.startswith('"') and t.endswith('"') for t in tags)


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
@ALL_SCHEMES
def test_if_none_match_of_an_encoding_gives_304_with_vary(server: ServerProcess,
                                                          docroot: Path, coding: str) -> None:
    full = get(server, "/app.js", {"Accept-Encoding": coding})
    resp = get(server, "/app.js", {"Accept-Encoding": coding,
                                   "If-None-Match": etag_of(docroot / SIBLINGS[coding][0],
                                                            coding)})
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


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
@ALL_SCHEMES
def test_range_applies_to_the_encoded_bytes(server: ServerProcess, coding: str) -> None:
    body = SIBLINGS[coding][1]
    resp = get(server, "/app.js", {"Accept-Encoding": coding, "Range": "bytes=10-49"})
    assert resp.status == 206
    assert resp.header("content-encoding") == coding
    assert resp.header("content-range") == f"bytes 10-49/{len(body)}"
    assert resp.body == body[10:50]
    assert resp.header("vary") == "Accept-Encoding"


@ALL_SCHEMES
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


@pytest.mark.parametrize(("coding", "ctype"), [("gzip", "application/gzip"),
                                               ("zstd", "application/zstd")])
def test_sibling_requested_directly_is_an_archive_without_content_encoding(
        server: ServerProcess, coding: str, ctype: str) -> None:
    name, body = SIBLINGS[coding]
    resp = get(server, f"/{name}", {"Accept-Encoding": coding})
    assert resp.status == 200
    assert resp.header("content-type") == ctype
    assert resp.header("content-encoding") is None
    assert resp.body == body


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_head_of_a_precompressed_variant_matches_its_get(server: ServerProcess,
                                                         coding: str) -> None:
    full = get(server, "/app.js", {"Accept-Encoding": coding})
    head = get(server, "/app.js", {"Accept-Encoding": coding}, method="HEAD")
    assert head.body == b""
    for name in ("content-length", "content-encoding", "etag", "vary", "content-type"):
        assert head.header(name) == full.header(name), name


# --- on-the-fly compression (--compress) -------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("name", sorted(COMPRESSIBLE))
@COMPRESSING_ALL_SCHEMES
def test_compress_makes_each_coding_of_compressible_types_from_the_original_bytes(
        compressing: ServerProcess, name: str, coding: str) -> None:
    resp = get(compressing, f"/{name}", {"Accept-Encoding": f"{coding}, deflate"})
    assert resp.status == 200
    assert resp.header("content-encoding") == coding
    assert resp.header("vary") == "Accept-Encoding"
    assert resp.header("content-length") == str(len(resp.body))
    assert len(resp.body) < len(COMPRESSIBLE[name])
    assert decompress(coding, resp.body) == COMPRESSIBLE[name]
    etag = resp.header("etag")
    assert etag and etag.endswith(f'-{coding}"')
    assert etag != get(compressing, f"/{name}").header("etag")


@pytest.mark.parametrize(("accept", "coding"), [
    ("gzip, deflate, br, zstd", "br"),
    ("gzip, zstd", "zstd"),
    ("gzip;q=1, br;q=0.5", "gzip"),
    ("br;q=0.2, zstd;q=0.3, gzip;q=0.1", "zstd"),
    ("br;q=0, *", "zstd"),
    ("*;q=0, gzip;q=0.1", "gzip"),
], ids=lambda v: v.replace(" ", ""))
def test_compress_chooses_among_the_codings_it_made_by_q_value(
        compressing: ServerProcess, accept: str, coding: str) -> None:
    resp = get(compressing, "/style.css", {"Accept-Encoding": accept})
    assert resp.header("content-encoding") == coding
    assert decompress(coding, resp.body) == COMPRESSIBLE["style.css"]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_head_of_a_compressed_variant_matches_its_get(compressing: ServerProcess,
                                                      coding: str) -> None:
    full = get(compressing, "/page.html", {"Accept-Encoding": coding})
    head = get(compressing, "/page.html", {"Accept-Encoding": coding}, method="HEAD")
    assert head.status == 200 and head.body == b""
    for name in ("content-length", "content-encoding", "etag", "vary", "content-type"):
        assert head.header(name) == full.header(name), name


def test_compress_keeps_the_content_type_of_the_original(compressing: ServerProcess) -> None:
    resp = get(compressing, "/style.css", {"Accept-Encoding": "gzip"})
    assert resp.header("content-type") == "text/css; charset=utf-8"


def test_compressed_variant_is_stable_across_requests(compressing: ServerProcess) -> None:
    seen = {(r.header("etag"), r.body)
            for r in (get(compressing, "/notes.txt", {"Accept-Encoding": "gzip"})
                      for _ in range(5))}
    assert len(seen) == 1


@COMPRESSING_BOTH_SCHEMES
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


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@COMPRESSING_ALL_SCHEMES
def test_compressed_variant_answers_if_none_match_with_304(compressing: ServerProcess,
                                                           coding: str) -> None:
    full = get(compressing, "/style.css", {"Accept-Encoding": coding})
    resp = get(compressing, "/style.css",
               {"Accept-Encoding": coding, "If-None-Match": full.header("etag")})
    assert resp.status == 304
    assert resp.header("vary") == "Accept-Encoding"
    assert resp.header("etag") == full.header("etag")


def test_etag_of_one_compressed_variant_does_not_validate_another(
        compressing: ServerProcess) -> None:
    zstd = get(compressing, "/style.css", {"Accept-Encoding": "zstd"})
    resp = get(compressing, "/style.css",
               {"Accept-Encoding": "br", "If-None-Match": zstd.header("etag")})
    assert resp.status == 200
    assert resp.header("content-encoding") == "br"


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


@COMPRESSING_ALL_SCHEMES
def test_compress_skips_files_over_one_mebibyte(compressing: ServerProcess) -> None:
    resp = get(compressing, "/huge.css", {"Accept-Encoding": "gzip"})
    assert resp.header("content-encoding") is None
    assert resp.body == HUGE_CSS


@pytest.mark.parametrize("headers", [{}, {"Accept-Encoding": "deflate"},
                                     {"Accept-Encoding": "gzip;q=0, br;q=0, zstd;q=0"},
                                     {"Accept-Encoding": "*;q=0, identity"},
                                     {"Accept-Encoding": "identity"}],
                         ids=["none", "deflate-only", "all-q0", "star-q0", "identity"])
def test_compress_sends_identity_to_clients_that_accept_no_coding_it_made(
        compressing: ServerProcess, headers: dict[str, str]) -> None:
    resp = get(compressing, "/style.css", headers)
    assert resp.status == 200
    assert resp.header("content-encoding") is None
    assert resp.body == COMPRESSIBLE["style.css"]
    assert resp.header("vary") == "Accept-Encoding"


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_compress_prefers_an_existing_sibling(compressing: ServerProcess, coding: str) -> None:
    resp = get(compressing, "/app.js", {"Accept-Encoding": coding})
    assert resp.body == SIBLINGS[coding][1]


def test_compress_makes_the_codings_a_file_has_no_sibling_for(
        compressing: ServerProcess) -> None:
    assert get(compressing, "/gzonly.js", {"Accept-Encoding": "gzip"}).body == APP_JS_GZ
    for coding in ("br", "zstd"):
        resp = get(compressing, "/gzonly.js", {"Accept-Encoding": coding})
        assert resp.header("content-encoding") == coding
        assert decompress(coding, resp.body) == APP_JS


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@COMPRESSING_ALL_SCHEMES
def test_range_of_a_compressed_variant_applies_to_its_bytes(compressing: ServerProcess,
                                                            coding: str) -> None:
    whole = get(compressing, "/style.css", {"Accept-Encoding": coding}).body
    resp = get(compressing, "/style.css", {"Accept-Encoding": coding, "Range": "bytes=5-24"})
    assert resp.status == 206
    assert resp.header("content-encoding") == coding
    assert resp.header("content-range") == f"bytes 5-24/{len(whole)}"
    assert resp.body == whole[5:25]


@COMPRESSING_ALL_SCHEMES
def test_multiple_ranges_of_the_gzip_variant_give_correct_parts(
        compressing: ServerProcess) -> None:
    whole = get(compressing, "/style.css", {"Accept-Encoding": "gzip"}).body
    resp = get(compressing, "/style.css", {"Accept-Encoding": "gzip", "Range": "bytes=0-9,20-29"})
    assert resp.status == 206
    parts = parse_byteranges(resp)
    assert [d for _, d in parts] == [whole[0:10], whole[20:30]]
    assert [h["content-range"] for h, _ in parts] == [
        f"bytes 0-9/{len(whole)}", f"bytes 20-29/{len(whole)}"]


def test_changed_file_gets_a_new_gzip_within_one_and_a_half_seconds(tmp_path: Path,
                                                                    serve: Serve) -> None:
    root = tmp_path / "www"
    root.mkdir()
    target = root / "live.css"
    old = b".old { color: red; }\n" * 40
    new = b".new { color: green; padding: 1px; }\n" * 40
    target.write_bytes(old)
    srv = serve(root, "--access-log", "off", "--compress")
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


def test_compress_encodings_limits_the_codings_made(docroot: Path, serve: Serve) -> None:
    srv = serve(docroot, "--access-log", "off", "--compress", "--compress-encodings", "zstd")
    resp = get(srv, "/style.css", {"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert resp.header("content-encoding") == "zstd"
    assert decompress("zstd", resp.body) == COMPRESSIBLE["style.css"]
    for accept in ("gzip", "br"):
        resp = get(srv, "/style.css", {"Accept-Encoding": accept})
        assert resp.header("content-encoding") is None
        assert resp.body == COMPRESSIBLE["style.css"]


# --- the settings ------------------------------------------------------------------------------

# Runs the command line with the compression libraries hidden, as if the extra was not installed.
WITHOUT_EXTRA = ("import sys; sys.modules['brotli'] = sys.modules['zstandard'] = None; "
                 "from flashsrv.cli import main; main()")


def flashsrv(*args: str, without_extra: bool = False) -> subprocess.CompletedProcess[str]:
    code = ["-c", WITHOUT_EXTRA] if without_extra else ["-m", "flashsrv"]
    return subprocess.run([sys.executable, *code, *args], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize(("value", "problem"), [
    ('"gzip,lz4"', "'lz4' is not a coding flashsrv can make (known: gzip, br, zstd)"),
    ('["deflate"]', "'deflate' is not a coding flashsrv can make"),
    ('""', "expected a list of codings such as 'gzip,br,zstd'"),
    ('"gzip,,br"', "expected a list of codings"),
    ("6", "expected a list of codings"),
    ("[1, 2]", "expected a list of codings"),
])
def test_check_config_reports_bad_compress_encodings(tmp_path: Path, value: str,
                                                     problem: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"compress = true\ncompress-encodings = {value}\n")
    result = flashsrv("check-config", str(path))
    assert result.returncode == 1
    assert f"{path}: compress-encodings: {problem}" in result.stderr


def test_check_config_accepts_a_list_in_either_form(tmp_path: Path) -> None:
    for value in ('"gzip, BR,zstd"', '["zstd", "gzip"]'):
        path = tmp_path / "site.toml"
        path.write_text(f"compress = true\ncompress-encodings = {value}\n")
        result = flashsrv("check-config", str(path))
        assert result.returncode == 0, result.stderr


def test_check_config_names_the_extra_when_a_library_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('compress-encodings = "gzip,zstd"\n')
    result = flashsrv("check-config", str(path), without_extra=True)
    assert result.returncode == 1
    assert ("compress-encodings: zstd needs the Python package zstandard, which is not "
            "installed: pip install 'flashsrv[compress]'") in result.stderr
    path.write_text('compress-encodings = "gzip"\n')
    assert flashsrv("check-config", str(path), without_extra=True).returncode == 0


def test_without_the_extra_the_default_is_gzip_alone() -> None:
    result = flashsrv("serve", "--help", without_extra=True)
    assert "(default: gzip;" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args", [("--compress-encodings", "gzip,lz4"),
                                  ("--compress-encodings", "")])
def test_serve_refuses_bad_compress_encodings_with_the_reason(docroot: Path,
                                                              args: tuple[str, ...]) -> None:
    status, err = serve_refused(docroot, "--compress", *args,
                                failure="the server started with a bad --compress-encodings")
    assert status == 2
    assert "argument --compress-encodings: " in err
    assert "coding" in err.splitlines()[-1]


def test_environment_setting_is_checked_too(docroot: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flashsrv", "serve", str(docroot), "--port", "0"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "FLASHSRV_COMPRESS_ENCODINGS": "gzip,lzma"})
    assert result.returncode == 1
    assert "FLASHSRV_COMPRESS_ENCODINGS: 'lzma' is not a coding" in result.stderr


def test_reload_keeps_the_codings_until_a_restart(docroot: Path, tmp_path: Path,
                                                  serve: Serve) -> None:
    config = tmp_path / "site.toml"
    config.write_text('compress = true\ncompress-encodings = "gzip"\n')
    srv = serve(docroot, "--config", str(config), "--access-log", "off")
    config.write_text('compress = true\ncompress-encodings = "gzip,zstd"\n')
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "compress_encodings changed" in srv.stderr_text(), timeout=5), \
        srv.stderr_text()
    resp = get(srv, "/notes.txt", {"Accept-Encoding": "zstd, gzip"})
    assert resp.header("content-encoding") == "gzip"
