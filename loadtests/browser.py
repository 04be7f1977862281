"""What a browser finds in a page and checks in an answer, shared by the locust profiles.

No locust or gevent here: the pytest process can load this module to test the parsing
(importing locust would monkey-patch it), and any HTTP client's response fits `Response`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Protocol
from urllib.parse import quote, urldefrag, urljoin, urlsplit

# Scales the users' think times (0 = none): the point of these profiles is load, not a human pace.
THINK_SCALE = float(os.environ.get("LOCUST_THINK_SCALE", "1"))

# <link rel> values a browser fetches with the page; "alternate stylesheet" it does not.
_LINK_ASSET_RELS = frozenset({"stylesheet", "icon", "apple-touch-icon", "preload", "modulepreload"})
HTML_TYPES = ("text/html", "application/xhtml+xml")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_CANDIDATE_URL_RE = re.compile(r"[\s,]*(\S+)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are when a URL from a page is made into a request-target: the URL
# syntax ones and `%`, so that what is already percent-encoded is not encoded twice.
_URL_SAFE = "/:@!$&'()*+,;=-._~%"


class _Headers(Protocol):
    def get(self, field: str, /) -> str | list[str] | None: ...


class Response(Protocol):
    """The part of an HTTP response (locust's FastResponse) that the checks below read."""

    @property
    def status_code(self) -> int: ...
    @property
    def content(self) -> bytes: ...
    @property
    def headers(self) -> _Headers | None: ...


def header(resp: Response, name: str) -> str | None:
    """A response header (case-insensitive), its repeated fields joined as HTTP allows."""
    value = resp.headers.get(name) if resp.headers is not None else None
    return ", ".join(value) if isinstance(value, list) else value


def length_problem(resp: Response) -> str | None:
    """Why the body does not match Content-Length (only checkable when it was not encoded)."""
    if header(resp, "Content-Encoding") is not None:
        return None
    expected = header(resp, "Content-Length")
    if expected is None or len(resp.content) != int(expected):
        return f"{len(resp.content)} body bytes, Content-Length {expected}"
    return None


def body_problem(resp: Response) -> str | None:
    """Why `resp` is not a complete 200."""
    if resp.status_code != 200:
        return f"status {resp.status_code}"
    return length_problem(resp)


def page_problem(resp: Response) -> str | None:
    """Why `resp` is not a complete 200 with an HTML page."""
    content_type = header(resp, "Content-Type") or ""
    if content_type.startswith(HTML_TYPES):
        return body_problem(resp)
    return body_problem(resp) or f"Content-Type {content_type!r}, not HTML"


def range_problem(resp: Response, first: int, last: int, size: int) -> str | None:
    """Why `resp` is not the 206 for bytes first..last of a `size`-byte file."""
    if resp.status_code != 206:
        return f"expected 206, got {resp.status_code}"
    content_range = header(resp, "Content-Range") or ""
    m = _CONTENT_RANGE_RE.fullmatch(content_range)
    if not m or tuple(map(int, m.groups())) != (first, last, size):
        return f"Content-Range {content_range!r}, expected 'bytes {first}-{last}/{size}'"
    if len(resp.content) != last - first + 1:
        return f"{len(resp.content)} bytes for a {last - first + 1}-byte range"
    return length_problem(resp)


def not_modified_problem(resp: Response) -> str | None:
    """Why `resp` is not a 304 (which, like every 304, must have no body)."""
    if resp.status_code != 304:
        return f"expected 304, got {resp.status_code}"
    if resp.content:
        return "a 304 must not have a body"
    return None


def srcset_urls(srcset: str) -> list[str]:
    """The URLs of a srcset's candidates, as the HTML standard parses them: a URL runs to the
    next whitespace and may contain commas, unless they end it ("a.jpg,b.jpg 2x" is one URL);
    descriptors run to the next comma outside parentheses."""
    urls: list[str] = []
    pos = 0
    while m := _CANDIDATE_URL_RE.match(srcset, pos):
        url, pos = m.group(1), m.end()
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            depth = 0
            while pos < len(srcset) and (srcset[pos] != "," or depth):
                depth += (srcset[pos] == "(") - (srcset[pos] == ")")
                pos += 1
        urls.append(url)
    return urls


@dataclass
class PageRefs:
    """What a page references, as absolute URLs without fragments, each listed once."""

    links: list[str] = field(default_factory=list)
    # A browser fetches one URL of each group: a srcset's candidates and a <picture>'s sources
    # are alternatives (for other screens); a stylesheet or a script is a group of one.
    assets: list[tuple[str, ...]] = field(default_factory=list)
    # <video>/<audio> sources: fetched later, with Range requests, not with the page.
    media: list[str] = field(default_factory=list)


class _RefParser(HTMLParser):
    """Collects raw references; they are resolved at the end, against <base href> if any."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[str] = []
        self.assets: list[list[str]] = []
        self.media: list[str] = []
        self._picture: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v.strip() for k, v in attrs if v is not None and v.strip()}
        rel = set(a.get("rel", "").lower().split())
        if tag == "base" and self.base is None:
            self.base = a.get("href")
        elif tag in ("a", "area") and "href" in a:
            self.links.append(a["href"])
        elif tag == "link" and "href" in a and rel & _LINK_ASSET_RELS and "alternate" not in rel:
            self.assets.append([a["href"]])
        elif tag == "script" and "src" in a:
            self.assets.append([a["src"]])
        elif tag == "picture":
            self._picture = []
        elif tag in ("img", "source") and ("srcset" in a or tag == "img"):
            choices = srcset_urls(a.get("srcset", "")) + ([a["src"]] if "src" in a else [])
            if self._picture is not None:
                self._picture += choices
            elif choices:
                self.assets.append(choices)
        elif tag in ("video", "audio", "source") and "src" in a:
            self.media.append(a["src"])
        if tag == "video" and "poster" in a:
            self.assets.append([a["poster"]])

    def handle_endtag(self, tag: str) -> None:
        if tag == "picture" and self._picture is not None:
            if self._picture:
                self.assets.append(self._picture)
            self._picture = None


def page_refs(url: str, html: str) -> PageRefs:
    """Links, subresources and media of the page at `url` (an absolute URL or a path)."""
    parser = _RefParser()
    parser.feed(html)
    parser.close()
    base = urljoin(url, parser.base) if parser.base else url

    def resolve(ref: str) -> str:
        return urldefrag(urljoin(base, ref)).url

    return PageRefs(
        links=list(dict.fromkeys(map(resolve, parser.links))),
        assets=list(dict.fromkeys(tuple(dict.fromkeys(map(resolve, g))) for g in parser.assets)),
        media=list(dict.fromkeys(map(resolve, parser.media))),
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin it could share
        return ("", "", None)
    scheme = parts.scheme.lower()
    return (scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme))


def local_url(site_url: str, url: str) -> str | None:
    """`url` in one canonical spelling if it is on the site at `site_url`, else None: other
    hosts, ports and schemes (mailto:, javascript:, data:) are not the site under test."""
    if _origin(url) != _origin(site_url):
        return None
    site, parts = urlsplit(site_url), urlsplit(url)
    path = quote(parts.path or "/", safe=_URL_SAFE)
    query = f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query else ""
    return f"{site.scheme}://{site.netloc}{path}{query}"
