"""Locust users for any static site: they learn its pages by crawling it, not from a list.

    flashsrv serve ./public --port 8080
    locust -f loadtests/anysite.py --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 1m

The first user to start in each locust process crawls the site from ANYSITE_START (default
`/`), breadth-first over same-origin links, following at most ANYSITE_MAX_PAGES links (default
500) and keeping at most ANYSITE_MAX_ASSETS subresources (default 2000); the other users wait
for its map rather than crawl again. Then first-time visitors load a page and its assets over
6 connections as a browser does, returning visitors revalidate what they loaded before
(304, or 200 only for a file whose validators changed), and range readers seek in the media
and large files found. Every answer is checked (status, length, Content-Range); a broken link
found while crawling is a failure too.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin

from browser import (
    HTML_TYPES,
    THINK_SCALE,
    Response,
    body_problem,
    header,
    local_url,
    not_modified_problem,
    page_problem,
    page_refs,
    range_problem,
)
from gevent.lock import Semaphore
from gevent.pool import Pool
from locust import between, task
from locust.contrib.fasthttp import FastHttpSession, FastHttpUser, ResponseContextManager
from locust.exception import StopTest

START = os.environ.get("ANYSITE_START", "/")
MAX_PAGES = int(os.environ.get("ANYSITE_MAX_PAGES", "500"))
MAX_ASSETS = int(os.environ.get("ANYSITE_MAX_ASSETS", "2000"))
CONNECTIONS = 6  # what browsers open to one host over HTTP/1.1
LARGE_FILE = 1 << 20  # linked (non-HTML) files from this size on are read in ranges, like media

log = logging.getLogger("anysite")
T = TypeVar("T")
R = TypeVar("R")


def concurrently(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """fn over items with CONNECTIONS in flight. The greenlets die with the caller: a user
    stopped mid-page leaves no request running."""
    pool = Pool(CONNECTIONS)
    try:
        return pool.map(fn, items)
    finally:
        pool.kill()


@dataclass
class SiteMap:
    """Pages (each with its asset groups) and files to read in ranges (with their sizes)."""

    pages: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


class _Crawler:
    """Breadth-first, a level at a time: every request is recorded (names "discover ...")."""

    def __init__(self, client: FastHttpSession, site_url: str) -> None:
        self.client, self.site_url = client, site_url
        self.map = SiteMap()
        self.assets: set[str] = set()
        self.media: dict[str, None] = {}

    def crawl(self, start: str) -> SiteMap:
        """The map; no redirect is followed while it is made. locust's FastHttpSession turns
        redirects off for one request (`allow_redirects=False`) by emptying the redirect codes
        of its shared client and restoring them afterwards, so with several requests of one
        session in flight, one finishing turns them back on under another: a HEAD of a folder
        was seen following its 301 and reporting 200. They stay off for the whole crawl."""
        client = self.client.client
        follow = client.redirect_response_codes
        client.redirect_response_codes = frozenset()
        try:
            return self._crawl(start)
        finally:
            client.redirect_response_codes = follow

    def _crawl(self, start: str) -> SiteMap:
        level = self._local([start])  # nothing to crawl if ANYSITE_START names another site
        seen = set(level)
        while level:
            found = [url for urls in concurrently(self._visit, level) for url in urls]
            level = []
            for url in found:
                if url not in seen and len(seen) < MAX_PAGES:
                    seen.add(url)
                    level.append(url)
        for url, size in zip(self.media, concurrently(self._size, self.media), strict=True):
            if size:
                self.map.sizes[url] = size
        return self.map

    def _local(self, urls: Iterable[str]) -> list[str]:
        return [u for u in (local_url(self.site_url, url) for url in urls) if u is not None]

    def _head(self, url: str) -> Response:
        """The HEAD answer for `url`, a failure unless a 200 or a redirect (a broken link)."""
        with self.client.head(url, name="discover HEAD", allow_redirects=False,
                              catch_response=True) as resp:
            ok = resp.status_code == 200 or 300 <= resp.status_code < 400
            _judged(resp, url, None if ok else f"status {resp.status_code}")
            return resp

    def _size(self, url: str) -> int:
        resp = self._head(url)
        return int(header(resp, "Content-Length") or 0) if resp.status_code == 200 else 0

    def _visit(self, url: str) -> list[str]:
        """Maps what is at `url`; returns the links to follow."""
        resp = self._head(url)
        if 300 <= resp.status_code < 400:
            return self._local([urljoin(url, header(resp, "Location") or "")])
        if resp.status_code != 200:
            return []
        if not (header(resp, "Content-Type") or "").startswith(HTML_TYPES):
            size = int(header(resp, "Content-Length") or 0)
            if size >= LARGE_FILE:
                self.map.sizes[url] = size
            return []
        with self.client.get(url, name="discover page", allow_redirects=False,
                             catch_response=True) as resp:
            if _judged(resp, url, page_problem(resp)):
                return []
            refs = page_refs(url, resp.content.decode("utf-8", "replace"))
        self.map.pages[url] = [group for group in map(self._keep, refs.assets) if group]
        for media in self._local(refs.media):
            if len(self.media) < MAX_ASSETS:
                self.media.setdefault(media)
        return self._local(refs.links)

    def _keep(self, group: tuple[str, ...]) -> tuple[str, ...]:
        """The group's same-origin URLs within the asset budget."""
        kept = tuple(u for u in self._local(group)
                     if u in self.assets or len(self.assets) < MAX_ASSETS)
        self.assets.update(kept)
        return kept


_maps: dict[str, SiteMap] = {}
_crawling = Semaphore()


def site_map(user: FastHttpUser) -> SiteMap:
    """The map of the user's site, crawled once per locust process by the first user to ask."""
    assert user.host is not None  # FastHttpUser refuses to start without one
    with _crawling:
        if user.host not in _maps:
            crawler = _Crawler(user.client, user.host)
            _maps[user.host] = crawler.crawl(urljoin(user.host, START))
            log.info("discovered %d pages, %d assets, %d files to read in ranges at %s",
                     len(crawler.map.pages), len(crawler.assets), len(crawler.map.sizes),
                     user.host)
    return _maps[user.host]


def _judged(resp: ResponseContextManager, url: str, problem: str | None) -> str | None:
    """Records the request as a failure (with the URL) or a success; returns the problem."""
    if problem is None:
        resp.success()
    else:
        resp.failure(f"{url}: {problem}")
    return problem


@dataclass(frozen=True)
class Validators:
    """What a browser cache keeps to revalidate a response."""

    etag: str | None
    last_modified: str | None

    @classmethod
    def of(cls, resp: Response) -> Validators | None:
        found = cls(header(resp, "ETag"), header(resp, "Last-Modified"))
        return found if found.etag or found.last_modified else None

    def conditions(self, by_date: bool) -> dict[str, str]:
        """A browser sends both; a cache that ignores ETags sends only the date."""
        headers = {}
        if self.etag and not (by_date and self.last_modified):
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class _SiteUser(FastHttpUser):
    """A user of the crawled site, loading pages as a browser does (page, then its assets)."""

    abstract = True
    concurrency = CONNECTIONS
    wait_time = between(0.5 * THINK_SCALE, 2.0 * THINK_SCALE)

    def on_start(self) -> None:
        self.site = site_map(self)
        self.pages = list(self.site.pages)
        if not self.pages:
            raise StopTest(f"anysite: no HTML page found from {START} at {self.host}")

    def visit(self, page: str) -> None:
        """The page, then one URL of each asset group, CONNECTIONS at a time."""
        if self.fetch(page, "page"):
            concurrently(lambda group: self.fetch(random.choice(group), "asset"),
                         self.site.pages[page])

    def fetch(self, url: str, kind: str) -> bool:
        """GET with an empty cache: a complete 200 (with HTML for a page)."""
        with self.client.get(url, name=kind, catch_response=True) as resp:
            return _judged(resp, url, _full_problem(resp, kind)) is None


def _full_problem(resp: Response, kind: str) -> str | None:
    return page_problem(resp) if kind == "page" else body_problem(resp)


class FirstTimeVisitor(_SiteUser):
    """A visitor with an empty browser cache, landing on any page."""

    weight = 6

    @task
    def arrive(self) -> None:
        self.visit(random.choice(self.pages))


class ReturningVisitor(_SiteUser):
    """A visitor with a warm browser cache, back on a few favourite pages: everything it loaded
    before is revalidated, and must be a 304, or a 200 only if its validators changed."""

    weight = 3

    def on_start(self) -> None:
        super().on_start()
        self.cache: dict[str, Validators] = {}
        self.favourites = random.sample(self.pages, min(5, len(self.pages)))
        # Some caches revalidate by date only: the server's If-Modified-Since path gets load too.
        self.by_date = random.random() < 0.25

    @task
    def come_back(self) -> None:
        self.visit(random.choice(self.favourites))

    def fetch(self, url: str, kind: str) -> bool:
        known = self.cache.get(url)
        headers = known.conditions(self.by_date) if known else {}
        name = f"{kind} revalidated" if known else kind
        with self.client.get(url, headers=headers, name=name, catch_response=True) as resp:
            if known and resp.status_code == 304:
                problem = not_modified_problem(resp)
            else:
                fresh = Validators.of(resp)
                problem = _full_problem(resp, kind)
                if problem is None and known and fresh == known:
                    problem = "200 although its validators are unchanged (expected 304)"
                if problem is None and fresh:
                    self.cache[url] = fresh
            return _judged(resp, url, problem) is None


class RangeReader(_SiteUser):
    """A media player on the media and large files found: it seeks, resumes near the end and
    reads the tail (where an MP4 keeps its index). Idle on a site with none."""

    weight = 2
    wait_time = between(0.1 * THINK_SCALE, 0.5 * THINK_SCALE)

    def _read(self, name: str, pick: Callable[[int], tuple[int, int, str]]) -> None:
        """Reads the range `pick` chooses (first, last, Range spec) in a file of a given size."""
        if not self.site.sizes:
            return
        url, size = random.choice(list(self.site.sizes.items()))
        first, last, spec = pick(size)
        # Players ask for the identity encoding: byte offsets are offsets into the file.
        headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity"}
        with self.client.get(url, headers=headers, name=name, catch_response=True) as resp:
            _judged(resp, f"{url} bytes={spec}", range_problem(resp, first, last, size))

    @task(6)
    def seek(self) -> None:
        def span(size: int) -> tuple[int, int, str]:
            first = random.randrange(size)
            last = min(size - 1, first + random.choice([65_536, 262_144, 1_048_576]) - 1)
            return first, last, f"{first}-{last}"
        self._read("range seek", span)

    @task(2)
    def resume(self) -> None:
        def to_end(size: int) -> tuple[int, int, str]:
            first = random.randrange(max(0, size - 512 * 1024), size)
            return first, size - 1, f"{first}-"
        self._read("range resume", to_end)

    @task(1)
    def read_tail(self) -> None:
        def suffix(size: int) -> tuple[int, int, str]:
            n = random.randint(1, min(size, 64 * 1024))
            return size - n, size - 1, f"-{n}"
        self._read("range tail", suffix)
