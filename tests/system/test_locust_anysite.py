"""loadtests/anysite.py against a site it has never seen: it must find every page and asset by
crawling (and nothing off-site), and its users must see 304s, 206s and no failure.

The site is generated with the traps real pages have: <base href>, a directory redirect,
srcset candidates (one with a comma in its URL), <picture>, links to other hosts, mailto:,
javascript: and data: URLs, an alternate stylesheet that does not exist. Any of those
requested would be a 404, so a failure.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ServerProcess

REPO = Path(__file__).resolve().parents[2]
ANYSITE = REPO / "loadtests" / "anysite.py"
PAGES = 300
MEDIA = {"media/clip.mp4": 2 * 1024 * 1024 + 123, "media/theme.mp3": 700_000,
         "files/archive.zip": 1_500_000}  # the zip is linked, not embedded: a large file
DISCOVERED_RE = re.compile(r"anysite: discovered (\d+) pages, (\d+) assets, (\d+) files")
LOG_RE = re.compile(r'"[A-Z]+ (\S+) HTTP/1\.[01]" (\d{3}) ')

# Looked up, not imported: importing locust monkey-patches sockets and threads (gevent) for the
# whole pytest process, after which other tests' threads and timeouts stop working.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (it is in the 'test' extra)", allow_module_level=True)


def _page(i: int, rng: random.Random) -> str:
    others = rng.sample(range(PAGES), 3)
    k = i % 10
    media = ('<video src="../media/clip.mp4" poster="../img/poster.jpg" preload="none"></video>'
             '<audio controls><source src="../media/theme.mp3" type="audio/mpeg"></audio>'
             '<a href="../files/archive.zip" download>zip</a>') if i % 5 == 0 else ""
    return f"""<!doctype html><html><head><title>Page {i}</title>
<link rel="stylesheet" href="../css/site.css?v=2"><link rel="icon" href="/favicon.svg">
<link rel="alternate stylesheet" href="../css/missing.css"><link rel="canonical" href="{i:03}.html">
<script src="../js/app.js" defer></script><script src="//cdn.example.com/lib.js"></script>
</head><body><h1 id="top">Page {i}</h1>
<a href="{(i + 1) % PAGES:03}.html">next</a> <a href="/p/{others[0]:03}.html">a</a>
<a href="./{others[1]:03}.html#top">b</a> <a href="../p/{others[2]:03}.html">c</a>
<a href="#top">top</a> <a href="../">home</a> <a href="/section">section</a>
<a href="mailto:web@example.com">mail</a> <a href="javascript:void(0)">js</a>
<a href="https://example.org/p/000.html">elsewhere</a> <a href="tel:+100">call</a>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="">
<img src="../img/photo-{k}-400.jpg" alt=""
     srcset="../img/photo-{k}-400.jpg 400w, ../img/photo-{k}-800.jpg 800w" sizes="50vw">
<picture><source srcset="../img/wide,v2.webp 1x,../img/wide,v2@2x.webp 2x" type="image/webp">
<img src="../img/wide.jpg" alt=""></picture>{media}
</body></html>
"""


def write_site(root: Path) -> tuple[set[str], int, int]:
    """Writes the site; returns the paths a client may request (its files' and the redirect's)
    and how many pages and assets there are to discover."""
    rng = random.Random(12)
    pages = {f"p/{i:03}.html": _page(i, rng) for i in range(PAGES)}
    pages["index.html"] = ('<!doctype html><base href="/p/"><link rel=stylesheet href=../css/'
                           'site.css?v=2><a href="000.html">start</a>')
    pages["section/index.html"] = '<!doctype html><a href="../p/150.html">back</a>'
    assets = {"css/site.css": b"body{margin:0}\n", "js/app.js": b"'use strict';\n",
              "favicon.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
              **{f"img/{name}": rng.randbytes(3000) for name in (
                  "poster.jpg", "wide.jpg", "wide,v2.webp", "wide,v2@2x.webp",
                  *(f"photo-{k}-{w}.jpg" for k in range(10) for w in (400, 800)))}}
    media = {name: rng.randbytes(size) for name, size in MEDIA.items()}
    for rel, data in {**{p: t.encode() for p, t in pages.items()}, **assets, **media}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    paths = {"/" + rel.removesuffix("index.html") for rel in {**pages, **assets, **media}}
    return paths | {"/section"}, len(pages), len(assets)


def test_anysite_crawls_then_revalidates_and_reads_ranges(
        tmp_path: Path, serve: Callable[..., ServerProcess]) -> None:
    root = tmp_path / "site"
    expected_paths, pages, assets = write_site(root)
    access_log = tmp_path / "access.log"
    srv = serve(root, "--access-log", str(access_log))
    prefix = tmp_path / "locust"
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ANYSITE), "--headless",
         "-u", "8", "-r", "8", "-t", "10s", "-H", srv.url, "--csv", str(prefix),
         "--exit-code-on-error", "1", "--only-summary", "--loglevel", "INFO"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
        env={**os.environ, "LOCUST_THINK_SCALE": "0.2"},
    )
    assert srv.stop() == 0, srv.stderr_text()[-3000:]  # also writes out the access log
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = [f"{r['Name']}: {r['Error']} (x{r['Occurrences']})" for r in csv.DictReader(f)]
    assert failures == [], "\n".join(failures) + "\n" + run.stderr[-3000:]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]  # errors outside the stats

    found = DISCOVERED_RE.findall(run.stderr)
    assert found == [(str(pages), str(assets), str(len(MEDIA)))], run.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f)}
    for name in ("page", "asset", "page revalidated", "asset revalidated", "range seek"):
        assert rows.get(name, 0) > 0, f"no '{name}' requests: {rows}"

    answers = [m.groups() for m in map(LOG_RE.search, access_log.read_text().splitlines()) if m]
    statuses = Counter(status for _, status in answers)
    assert statuses["304"] > 0 and statuses["206"] > 0, statuses
    assert {s for s in statuses if s >= "400"} == set(), statuses
    # Nothing off the site was asked for; every page was (by the crawl).
    paths = {path.split("?")[0] for path, _ in answers}
    assert paths <= expected_paths, paths - expected_paths
    assert {p for p in expected_paths if p.startswith("/p/")} <= paths


def test_srcset_candidates_are_parsed_as_the_html_standard_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = "flashsrv_loadtest_browser"  # browser.py imports no locust: safe to load here
    spec = importlib.util.spec_from_file_location(name, ANYSITE.with_name("browser.py"))
    assert spec is not None and spec.loader is not None
    browser = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, browser)  # its dataclasses look their module up
    spec.loader.exec_module(browser)
    assert browser.srcset_urls("a.jpg 1x, b.jpg 2x") == ["a.jpg", "b.jpg"]
    assert browser.srcset_urls("a,v2.jpg 1x,b.jpg") == ["a,v2.jpg", "b.jpg"]
    assert browser.srcset_urls("a.jpg,b.jpg 2x") == ["a.jpg,b.jpg"]  # one URL: no space
    assert browser.srcset_urls(" a.jpg,, b.jpg 100w (x, y), c.jpg") == ["a.jpg", "b.jpg", "c.jpg"]
    assert browser.srcset_urls("") == []
