"""Locust users that behave like the visitors of a static site, for flashsrv (or any server).

Serve the demo site (`python loadtests/site.py /tmp/site`), then for example:

    locust -f loadtests/locustfile.py --headless -u 200 -r 50 -t 60s \
        -H http://127.0.0.1:8080 --csv /tmp/locust --exit-code-on-error 1

Every user checks the HTTP semantics it relies on, not only the status code: a revalidation
that is not a 304, a Range answer with the wrong Content-Range or the wrong bytes, or a missing
page that is not a 404 counts as a failure, so a load test is also a correctness test under
concurrency. Think times are short (LOCUST_THINK_SCALE scales them; 0 = none) because the point
is load, not a faithful human pace.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
from pathlib import Path
from types import ModuleType
from urllib.parse import urljoin

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser


def _load_site_module() -> ModuleType:
    """Load loadtests/site.py by path: `import site` would give the standard library module."""
    spec = importlib.util.spec_from_file_location(
        "flashsrv_loadtest_site", Path(__file__).with_name("site.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SITE = _load_site_module()
VIDEO: bytes = SITE.video_bytes()
THINK = float(os.environ.get("LOCUST_THINK_SCALE", "1"))

# What a browser fetches after the HTML: stylesheets, icons, preloads, scripts and images
# (not <a> links, and not the <video preload="none">).
_ASSET_RE = re.compile(r"<(?:link|script|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def assets_of(page: str, html: str) -> list[str]:
    """Absolute paths of the subresources a browser would load for `page`, in document order."""
    seen: dict[str, None] = {}
    for ref in _ASSET_RE.findall(html):
        seen.setdefault(urljoin(page, ref), None)
    return list(seen)


def _header(resp, name: str) -> str | None:
    """A response header, whatever the client library's header container looks like."""
    value = resp.headers.get(name)
    return value if value is not None else resp.headers.get(name.lower())


class Visitor(FastHttpUser):
    """A first-time visitor: a page, then every asset it references."""

    weight = 6
    wait_time = between(0.2 * THINK, 1.0 * THINK)

    @task
    def view_page(self) -> None:
        page = random.choice(SITE.PAGES)
        with self.client.get(page, name="page", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"{page}: status {resp.status_code}")
                return
            ctype = _header(resp, "Content-Type") or ""
            if not ctype.startswith("text/html"):
                resp.failure(f"{page}: Content-Type {ctype!r}")
                return
            html = resp.content.decode("utf-8", "replace")
        for asset in assets_of(page, html):
            with self.client.get(asset, name="asset", catch_response=True) as resp:
                if resp.status_code != 200:
                    resp.failure(f"{asset}: status {resp.status_code}")
                elif len(resp.content) != int(_header(resp, "Content-Length") or -1):
                    resp.failure(f"{asset}: body length differs from Content-Length")


class ReturningVisitor(FastHttpUser):
    """A visitor with a warm browser cache: every request is conditional and must be a 304."""

    weight = 4
    wait_time = between(0.2 * THINK, 1.0 * THINK)

    def on_start(self) -> None:
        # The first visit fills this user's "browser cache" with validators.
        self.validators: dict[str, tuple[str | None, str | None]] = {}
        for page in SITE.PAGES:
            html = self._remember(page)
            for asset in assets_of(page, html):
                if asset not in self.validators:
                    self._remember(asset)

    def _remember(self, path: str) -> str:
        with self.client.get(path, name="first visit", catch_response=True) as resp:
            etag, last_modified = _header(resp, "ETag"), _header(resp, "Last-Modified")
            self.validators[path] = (etag, last_modified)
            if resp.status_code != 200:
                resp.failure(f"{path}: status {resp.status_code}")
            elif etag is None or last_modified is None:
                resp.failure(f"{path}: no ETag or Last-Modified to revalidate with")
            return resp.content.decode("utf-8", "replace")

    def _revalidate(self, path: str, headers: dict[str, str], name: str) -> None:
        with self.client.get(path, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code != 304:
                resp.failure(f"{path} with {headers}: expected 304, got {resp.status_code}")
            elif resp.content:
                resp.failure(f"{path}: a 304 must not have a body")
            else:
                resp.success()

    @task(4)
    def revalidate_etag(self) -> None:
        path, (etag, _) = random.choice(list(self.validators.items()))
        if etag is not None:
            self._revalidate(path, {"If-None-Match": etag}, "304 If-None-Match")

    @task(1)
    def revalidate_date(self) -> None:
        path, (_, last_modified) = random.choice(list(self.validators.items()))
        if last_modified is not None:
            self._revalidate(path, {"If-Modified-Since": last_modified}, "304 If-Modified-Since")


class VideoViewer(FastHttpUser):
    """A video player: it seeks, resumes and reads the tail (index) of a large file."""

    weight = 2
    wait_time = between(0.1 * THINK, 0.5 * THINK)

    def on_start(self) -> None:
        with self.client.head(SITE.VIDEO_PATH, name="video HEAD", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HEAD video: status {resp.status_code}")
            elif int(_header(resp, "Content-Length") or -1) != len(VIDEO):
                resp.failure(f"HEAD video: Content-Length {_header(resp, 'Content-Length')}")

    def _range(self, spec: str, first: int, last: int, name: str) -> None:
        size = len(VIDEO)
        headers = {"Range": f"bytes={spec}"}
        with self.client.get(SITE.VIDEO_PATH, headers=headers, name=name,
                             catch_response=True) as resp:
            if resp.status_code != 206:
                resp.failure(f"Range {spec}: expected 206, got {resp.status_code}")
                return
            content_range = _header(resp, "Content-Range") or ""
            m = _CONTENT_RANGE_RE.fullmatch(content_range)
            if not m or tuple(map(int, m.groups())) != (first, last, size):
                resp.failure(f"Range {spec}: Content-Range {content_range!r}, "
                             f"expected 'bytes {first}-{last}/{size}'")
            elif resp.content != VIDEO[first:last + 1]:
                resp.failure(f"Range {spec}: wrong bytes ({len(resp.content)} received)")

    @task(6)
    def seek(self) -> None:
        size = len(VIDEO)
        first = random.randrange(0, size - 1)
        last = min(size - 1, first + random.choice([65_536, 262_144, 1_048_576]) - 1)
        self._range(f"{first}-{last}", first, last, "206 seek")

    @task(2)
    def resume_to_end(self) -> None:
        size = len(VIDEO)
        first = random.randrange(size - 512 * 1024, size)
        self._range(f"{first}-", first, size - 1, "206 open-ended")

    @task(1)
    def read_tail(self) -> None:
        size = len(VIDEO)
        n = random.randint(1, 64 * 1024)
        self._range(f"-{n}", size - n, size - 1, "206 suffix")

    @task(1)
    def seek_past_end(self) -> None:
        size = len(VIDEO)
        headers = {"Range": f"bytes={size + 10}-{size + 20}"}
        with self.client.get(SITE.VIDEO_PATH, headers=headers, name="416 past end",
                             catch_response=True) as resp:
            if resp.status_code != 416:
                resp.failure(f"Range past the end: expected 416, got {resp.status_code}")
            elif (_header(resp, "Content-Range") or "") != f"bytes */{size}":
                resp.failure(f"416 Content-Range {_header(resp, 'Content-Range')!r}")
            else:
                resp.success()


class LostVisitor(FastHttpUser):
    """Old links and scanners: requests for things that do not exist must be clean 404s."""

    weight = 1
    wait_time = between(0.5 * THINK, 2.0 * THINK)

    @task
    def missing(self) -> None:
        path = random.choice(SITE.MISSING)
        with self.client.get(path, name="404 expected", catch_response=True) as resp:
            if resp.status_code == 404:
                resp.success()
            else:
                resp.failure(f"{path}: expected 404, got {resp.status_code}")
