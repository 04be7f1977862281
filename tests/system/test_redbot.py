"""REDbot, the HTTP linter, run against the server on loopback: no note marked BAD.

REDbot (`pip install redbot`; command `redbot`, module `redbot.cli`) fetches a URL and then
makes its own follow-up requests (conditional, ranged, gzip-negotiated) to the same server,
so these checks cover validators, ranges and compression as a third party reads them. Its HAR
output carries every note with its level; this test fails on any BAD and shows the WARNs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, start_server

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("redbot") is None,
    reason="REDbot is not installed (pip install 'redbot>=2.7'); it is part of the test extras")

PATHS = ["/index.html", "/style.css", "/app.js", "/logo.png", "/big.bin", "/"]


def tiny_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    rows = b"".join(b"\x00" + b"".join(bytes((x * 9 % 256, y * 5 % 256, 128))
                                        for x in range(width))
                    for y in range(height))
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("redbot")
    (root / "index.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>lint</title>'
        '<link rel="stylesheet" href="style.css"><script src="app.js"></script></head>'
        '<body><h1>REDbot</h1><img src="logo.png" alt="logo">'
        + "<p>Some paragraph text for a body of reasonable size.</p>" * 20
        + "</body></html>\n")
    (root / "style.css").write_text("body { margin: 0 auto; color: #222; }\n" * 40)
    app_js = "document.title = 'linted ' + Date.now();\n" * 40
    (root / "app.js").write_text(app_js)
    (root / "app.js.gz").write_bytes(gzip.compress(app_js.encode(), mtime=0))
    (root / "logo.png").write_bytes(tiny_png(24, 24))
    (root / "big.bin").write_bytes(random.Random(5).randbytes(5 * 1024 * 1024))
    return root


@pytest.fixture(scope="module", params=["plain", "compress"])
def server(request: pytest.FixtureRequest, docroot: Path) -> Iterator[ServerProcess]:
    extra = ("--compress",) if request.param == "compress" else ()
    srv = start_server(docroot, "--access-log", "off", *extra)
    yield srv
    srv.stop()


def redbot_notes(url: str) -> list[dict]:
    """Every note REDbot reports for url (including those from its own follow-up requests)."""
    result = subprocess.run([sys.executable, "-m", "redbot.cli", "-o", "har", url],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_PROXY": "*", "no_proxy": "*"})
    assert result.returncode == 0, result.stderr[-2000:]
    har = json.loads(result.stdout)
    entries = har["log"]["entries"]
    assert entries, result.stdout[:500]
    assert entries[0]["response"]["status"] == 200, entries[0]["response"]
    return [note for entry in entries for note in entry.get("_red_messages", [])]


@pytest.mark.parametrize("path", PATHS)
def test_redbot_finds_nothing_bad(server: ServerProcess, path: str) -> None:
    notes = redbot_notes(server.url + path)
    bad = [f"{n['note_id']}: {n['summary']}" for n in notes if n["level"] == "BAD"]
    warnings = [f"{n['note_id']}: {n['summary']}" for n in notes if n["level"] == "WARN"]
    assert not bad, f"REDbot BAD on {path}: {bad} (warnings: {warnings})"
    ids = {n["note_id"] for n in notes}
    # REDbot really exercised the validators and ranges (otherwise "nothing bad" means little).
    assert {"INM_304", "IMS_304", "RANGE_CORRECT"} <= ids, sorted(ids)
