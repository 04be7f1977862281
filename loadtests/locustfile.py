"""Locust users that behave like the visitors of a static site, for flashsrv (or any server).

Serve the demo site (`python loadtests/site.py /tmp/site`), then for example:

    locust -f loadtests/locustfile.py --headless -u 200 -r 50 -t 60s \
        -H http://127.0.0.1:8080 --csv /tmp/locust --exit-code-on-error 1

Every user checks the HTTP semantics it relies on, not only the status code: a revalidation
that is not a 304, a Range answer with the wrong Content-Range or the wrong bytes, or a missing
page that is not a 404 counts as a failure, so a load test is also a correctness test under
concurrency. Think times are short (LOCUST_THINK_SCALE scales them; 0 = none) because the point
is load, not a faithful human pace.

Over HTTPS (`-H https://...`) the users check the server's certificate, as browsers do, against
the system's CAs or the bundle SSL_CERT_FILE names (a test CA, for example); set
LOCUST_INSECURE_TLS=1 to accept any certificate (a self-signed one).
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from types import ModuleType

from browser import (
    THINK_SCALE,
    body_problem,
    header,
    not_modified_problem,
    page_problem,
    page_refs,
    range_problem,
)
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


# FastHttpUser accepts any certificate unless told otherwise.
INSECURE_TLS = os.environ.get("LOCUST_INSECURE_TLS", "") == "1"


class SiteUser(FastHttpUser):
    """What every user here shares: certificates checked over HTTPS."""

    abstract = True
    insecure = INSECURE_TLS


def assets_of(page: str, html: str) -> list[str]:
    """Absolute paths of the subresources a browser would load for `page`, in document order
    (stylesheets, icons, preloads, scripts, images; not links, not the <video preload="none">).
    The demo site offers no alternatives (srcset), so each group has one URL."""
    return [group[0] for group in page_refs(page, html).assets]


class Visitor(SiteUser):
    """A first-time visitor: a page, then every asset it references."""

    weight = 6
    wait_time = between(0.2 * THINK_SCALE, 1.0 * THINK_SCALE)

    @task
    def view_page(self) -> None:
        page = random.choice(SITE.PAGES)
        with self.client.get(page, name="page", catch_response=True) as resp:
            if problem := page_problem(resp):
                resp.failure(f"{page}: {problem}")
                return
            html = resp.content.decode("utf-8", "replace")
        for asset in assets_of(page, html):
            with self.client.get(asset, name="asset", catch_response=True) as resp:
                if problem := body_problem(resp):
                    resp.failure(f"{asset}: {problem}")


class ReturningVisitor(SiteUser):
    """A visitor with a warm browser cache: every request is conditional and must be a 304."""

    weight = 4
    wait_time = between(0.2 * THINK_SCALE, 1.0 * THINK_SCALE)

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
            etag, last_modified = header(resp, "ETag"), header(resp, "Last-Modified")
            self.validators[path] = (etag, last_modified)
            if resp.status_code != 200:
                resp.failure(f"{path}: status {resp.status_code}")
            elif etag is None or last_modified is None:
                resp.failure(f"{path}: no ETag or Last-Modified to revalidate with")
            return resp.content.decode("utf-8", "replace")

    def _revalidate(self, path: str, headers: dict[str, str], name: str) -> None:
        with self.client.get(path, headers=headers, name=name, catch_response=True) as resp:
            if problem := not_modified_problem(resp):
                resp.failure(f"{path} with {headers}: {problem}")
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


class VideoViewer(SiteUser):
    """A video player: it seeks, resumes and reads the tail (index) of a large file."""

    weight = 2
    wait_time = between(0.1 * THINK_SCALE, 0.5 * THINK_SCALE)

    def on_start(self) -> None:
        with self.client.head(SITE.VIDEO_PATH, name="video HEAD", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HEAD video: status {resp.status_code}")
            elif int(header(resp, "Content-Length") or -1) != len(VIDEO):
                resp.failure(f"HEAD video: Content-Length {header(resp, 'Content-Length')}")

    def _range(self, spec: str, first: int, last: int, name: str) -> None:
        size = len(VIDEO)
        headers = {"Range": f"bytes={spec}"}
        with self.client.get(SITE.VIDEO_PATH, headers=headers, name=name,
                             catch_response=True) as resp:
            if problem := range_problem(resp, first, last, size):
                resp.failure(f"Range {spec}: {problem}")
            elif resp.content != VIDEO[first:last + 1]:
                resp.failure(f"Range {spec}: wrong bytes")

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
            elif (header(resp, "Content-Range") or "") != f"bytes */{size}":
                resp.failure(f"416 Content-Range {header(resp, 'Content-Range')!r}")
            else:
                resp.success()


class LostVisitor(SiteUser):
    """Old links and scanners: requests for things that do not exist must be clean 404s."""

    weight = 1
    wait_time = between(0.5 * THINK_SCALE, 2.0 * THINK_SCALE)

    @task
    def missing(self) -> None:
        path = random.choice(SITE.MISSING)
        with self.client.get(path, name="404 expected", catch_response=True) as resp:
            if resp.status_code == 404:
                resp.success()
            else:
                resp.failure(f"{path}: expected 404, got {resp.status_code}")
