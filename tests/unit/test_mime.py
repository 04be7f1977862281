"""flashsrv.mime: Content-Type by extension and whether a type is worth compressing."""

from __future__ import annotations

import pytest

from flashsrv.mime import DEFAULT_TYPE, TYPES, content_type, is_compressible


@pytest.mark.parametrize(("path", "ctype"), [
    ("index.html", "text/html; charset=utf-8"),
    ("a/b/style.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("data.json", "application/json"),
    ("logo.png", "image/png"),
    ("photo.jpeg", "image/jpeg"),
    ("icon.svg", "image/svg+xml"),
    ("font.woff2", "font/woff2"),
    ("clip.mp4", "video/mp4"),
    ("doc.pdf", "application/pdf"),
    ("mod.wasm", "application/wasm"),
])
def test_common_types(path: str, ctype: str):
    assert content_type(path) == ctype


def test_extension_match_is_case_insensitive():
    assert content_type("INDEX.HTML") == content_type("index.html")
    assert content_type("Photo.JPG") == "image/jpeg"


def test_every_text_type_carries_utf8_charset():
    for ext, ctype in TYPES.items():
        if ctype.startswith("text/"):
            assert ctype.endswith("; charset=utf-8"), ext


@pytest.mark.parametrize("path", [
    "archive.unknownext", "Makefile", "README", ".env", "dir.d/file", "a.html.bak",
])
def test_unknown_or_missing_extension_is_octet_stream(path: str):
    assert content_type(path) == DEFAULT_TYPE == "application/octet-stream"


def test_only_the_last_extension_counts():
    assert content_type("bundle.js.gz") == "application/gzip"
    assert content_type("page.txt.html") == "text/html; charset=utf-8"


@pytest.mark.parametrize("ctype", [
    "text/html; charset=utf-8", "text/css", "application/json", "image/svg+xml",
    "application/wasm", "application/xml", "font/ttf", "font/otf",
])
def test_text_like_types_are_compressible(ctype: str):
    assert is_compressible(ctype)


@pytest.mark.parametrize("ctype", [
    "image/png", "image/jpeg", "video/mp4", "audio/mpeg", "font/woff", "font/woff2",
    "application/zip", "application/gzip", "application/pdf", "application/octet-stream",
    "application/x-xz",
])
def test_already_compressed_types_are_not(ctype: str):
    assert not is_compressible(ctype)
