"""From a parsed request and a translated path to a response plan, nginx-style.

The handler step maps the entry to a representation (the file or a precompressed sibling) and
its 200 head; then small independent steps may turn that into another response: preconditions
(304/412, `flashsrv.conditional`), then byte ranges (206/416, `flashsrv.ranges`). None of them
knows the others. No sockets and no disk here: the plan says which bytes to send, the connection
fetches and sends them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flashsrv import ranges
from flashsrv.conditional import evaluate_preconditions, if_range_allows_partial
from flashsrv.entries import (
    DIRECTORY,
    FILE,
    FORBIDDEN,
    MISSING,
    Entry,
    GeneratedFile,
    OpenFile,
    Variant,
)
from flashsrv.fields import host_name
from flashsrv.httpdate import format_http_date
from flashsrv.negotiation import choose_encoding
from flashsrv.responses import HTML_TYPE, STATUS_HEADERS, build_head, error_page
from flashsrv.site_rules import Headers, Route, SiteRules

# The server's order among codings a client accepts with equal q (RFC 9110 §12.5.3 leaves the
# tie to us): smallest body first. Brotli's built-in dictionary of web text makes it smaller
# than zstd at a like cost (br 5 against zstd 6, br 11 against zstd 19), most on small files: a
# 1 KB page is 20% smaller at br 5 than at zstd 6. zstd 6 is as small as gzip 6 or smaller
# (4-8% on 1 MiB bundles) and decodes faster; gzip is the fallback every client has.
ENCODING_PREFERENCE = ("br", "zstd", "gzip")


class Request:
    """What the connection parsed; header names are lower-case, values latin-1 text."""

    __slots__ = ("conditional", "headers", "keep_alive", "method", "path", "query", "version")

    def __init__(self, method: bytes, path: bytes, query: bytes, version: str,
                 headers: dict[str, str], keep_alive: bool, conditional: bool) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.conditional = conditional  # a precondition or Range header is present

    @property
    def target(self) -> bytes:
        """The request-target as sent, path and query (for the access log and the fast lane)."""
        return self.path + b"?" + self.query if self.query else self.path

    @property
    def target_text(self) -> str:
        """The request path for log lines: quoted, with any odd character escaped."""
        return repr(self.path.decode("latin-1"))


@dataclass(slots=True)
class Plan:
    """A response decided but not yet sent.

    Exactly one body source is set: `body` (bytes in memory), or `file` with `spans` (inclusive
    byte ranges of the file, each preceded by its part head in `part_heads` for multipart), or
    neither for bodiless responses. `length` is the Content-Length the head promised.
    """

    status: int
    head: bytes
    length: int = 0
    body: bytes | bytearray | None = None
    file: OpenFile | GeneratedFile | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    part_heads: list[bytes] = field(default_factory=list)
    trailer: bytes = b""
    close: bool = False
    keep: list[tuple[str, str]] = field(default_factory=list)  # kept if a page replaces the body


def error_plan(status: int, detail: str = "", close: bool = False,
               keep: list[tuple[str, str]] | None = None,
               extra: list[tuple[str, str]] | None = None) -> Plan:
    """A small generated page for status; keep: headers that belong to the status itself
    (Location, Content-Range, Allow) and survive a custom error page; extra: site headers."""
    body = error_page(status, detail)
    keep = [*(keep or []), *STATUS_HEADERS.get(status, [])]
    headers = [("Content-Type", HTML_TYPE), ("Content-Length", str(len(body))), *keep,
               *(extra or [])]
    return Plan(status, build_head(status, headers), len(body), body, keep=keep, close=close)


def https_location(request: Request, port: int, fallback_host: str) -> str:
    """The https URL of what a plain-HTTP request asked for (--redirect-http): its Host
    without the port (fallback_host when it sent none), the TLS port unless 443, and the
    request-target as sent."""
    host = host_name(request.headers.get("host", "")) or fallback_host
    authority = host if port == 443 else f"{host}:{port}"
    return f"https://{authority}{request.target.decode('latin-1')}"


def body_of(plan: Plan, data: bytes | bytearray) -> bytes | bytearray:
    """The body a plan promises, cut from the whole representation's bytes."""
    if plan.part_heads:
        pieces = []
        for head, (start, end) in zip(plan.part_heads, plan.spans, strict=True):
            pieces += (head, data[start : end + 1])
        pieces.append(plan.trailer)
        return b"".join(pieces)
    if plan.length != len(data):
        start, end = plan.spans[0]
        return data[start : end + 1]
    return data


def _encoding_header(variant: Variant) -> list[tuple[str, str]]:
    return [] if variant.encoding == "identity" else [("Content-Encoding", variant.encoding)]


# Heads kept by the response-header cache; past this many it starts again (a reload of the site
# rules starts a new Responder, and so a new cache, anyway).
MAX_HEADS = 4096


class Responder:
    """Turns (request, entry) into a Plan; holds the site rules and the response-header cache.

    The cache maps what a head depends on (the file version's identity, the served path, the
    other variants' existence, the status) to the head's bytes, so it belongs to the rules
    that built it: a reload replaces the Responder, and the path cache keeps its open files.
    """

    def __init__(self, rules: SiteRules) -> None:
        self.rules = rules
        self._heads: dict[tuple, bytes] = {}

    def _cached_head(self, status: int, entry: Entry, variant: Variant, headers_number: int,
                     build: Callable[[], list[tuple[str, str]]]) -> bytes:
        key = (status, variant.file.identity, entry.served_path, len(entry.variants) > 1,
               entry.vary, headers_number)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= MAX_HEADS:
                self._heads.clear()
            head = self._heads[key] = build_head(status, build())
        return head

    def error(self, status: int, detail: str = "", close: bool = False,
              keep: list[tuple[str, str]] | None = None, path: bytes | None = None) -> Plan:
        """An error (or redirect) response carrying the site's extra headers (those for the
        request path when it is known)."""
        extra = self.rules.extra_headers if path is None else self.rules.headers_for(path)[1]
        return error_plan(status, detail, close, keep, list(extra))

    def redirect(self, request: Request, route: Route) -> Plan:
        """A site rule's redirect, with the request's query kept."""
        return self.error(route.status, keep=[("Location", route.location(request.query))],
                          path=request.path)

    # -- the handler: which representation, and its full 200 head -----------------------------

    def select(self, request: Request, entry: Entry) -> Variant:
        """The representation Accept-Encoding prefers among the entry's several variants."""
        variants = entry.variants
        available = tuple(e for e in ENCODING_PREFERENCE if e in variants)
        return variants[choose_encoding(request.headers.get("accept-encoding"), available)]

    def _validator_headers(self, entry: Entry, variant: Variant, extra: Headers
                           ) -> list[tuple[str, str]]:
        """Validators, Cache-Control and Vary. A Cache-Control among the site's headers for
        the path replaces the one of the cache-control rules: one field, never two."""
        headers = [("Last-Modified", format_http_date(variant.mtime)),
                   ("ETag", variant.etag)]
        cache_control = self.rules.cache_control(entry.served_path)
        if cache_control and not any(name.lower() == "cache-control" for name, _ in extra):
            headers.append(("Cache-Control", cache_control))
        vary = [*(["Accept-Encoding"] if len(entry.variants) > 1 else []), *entry.vary]
        if vary:
            headers.append(("Vary", ", ".join(vary)))
        return headers

    def _representation_headers(self, entry: Entry, variant: Variant) -> list[tuple[str, str]]:
        return [("Content-Type", entry.content_type), *_encoding_header(variant)]

    def head_200(self, entry: Entry, variant: Variant, extra: tuple[int, Headers]) -> bytes:
        return self._cached_head(200, entry, variant, extra[0], lambda: [
            *self._representation_headers(entry, variant),
            ("Content-Length", str(variant.file.size)), ("Accept-Ranges", "bytes"),
            *self._validator_headers(entry, variant, extra[1]), *extra[1]])

    def head_304(self, entry: Entry, variant: Variant, extra: tuple[int, Headers]) -> bytes:
        return self._cached_head(304, entry, variant, extra[0], lambda: [
            *self._validator_headers(entry, variant, extra[1]), *extra[1]])

    # -- the whole decision ----------------------------------------------------------------------

    def respond(self, request: Request, entry: Entry) -> Plan:
        """The plan for a GET or HEAD of an existing entry, or the error that replaces it."""
        kind = entry.kind
        if kind == DIRECTORY:
            if not request.path.endswith(b"/") and (self.rules.trailing_slash == "add"
                                                    or not entry.variants):
                return self.directory_redirect(request)
            if not entry.variants:
                return self.error(403, "directory listing is not enabled", path=request.path)
        elif kind != FILE:
            return self.error({MISSING: 404, FORBIDDEN: 403}.get(kind, 500), path=request.path)
        extra = self.rules.headers_for(request.path)
        variants = entry.variants
        variant = variants["identity"] if len(variants) == 1 else self.select(request, entry)
        if request.conditional:
            plan = self._conditional(request, entry, variant, extra)
            if plan is not None:
                return plan
        size = variant.file.size
        return Plan(200, self.head_200(entry, variant, extra), size, file=variant.file,
                    spans=[(0, size - 1)] if size else [])

    def directory_redirect(self, request: Request) -> Plan:
        # "//host" would name another host: one leading slash, however many were sent.
        location = "/" + request.path.decode("latin-1").lstrip("/") + "/"
        if request.query:
            location += "?" + request.query.decode("latin-1")
        return self.error(301, keep=[("Location", location)], path=request.path)

    def _conditional(self, request: Request, entry: Entry, variant: Variant,
                     extra: tuple[int, Headers]) -> Plan | None:
        """The precondition and range steps; None when the plain 200 stands."""
        headers = request.headers
        status = evaluate_preconditions(
            request.method.decode("ascii"), variant.etag, variant.mtime,
            headers.get("if-match"), headers.get("if-none-match"),
            headers.get("if-modified-since"), headers.get("if-unmodified-since"))
        if status == 304:
            return Plan(304, self.head_304(entry, variant, extra))
        if status == 412:
            return self.error(412, path=request.path)
        range_value = headers.get("range")
        if range_value is None or request.method != b"GET":
            return None
        if not if_range_allows_partial(headers.get("if-range"), variant.etag, variant.mtime):
            return None
        size = variant.file.size
        spans = ranges.parse_range(range_value, size)
        if isinstance(spans, ranges.Unsatisfiable):  # the singleton UNSATISFIABLE
            return self.error(416, keep=[("Content-Range", ranges.unsatisfied_range(size))],
                              path=request.path)
        if spans is None:
            return None
        return self._partial(entry, variant, spans, extra[1])

    def _partial(self, entry: Entry, variant: Variant, spans: list[tuple[int, int]],
                 extra: Headers) -> Plan:
        size = variant.file.size
        common = [*_encoding_header(variant), *self._validator_headers(entry, variant, extra),
                  *extra]
        if len(spans) == 1:
            start, end = spans[0]
            headers = [("Content-Type", entry.content_type),
                       ("Content-Range", ranges.content_range(start, end, size)),
                       ("Content-Length", str(end - start + 1)), *common]
            return Plan(206, build_head(206, headers), end - start + 1, file=variant.file,
                        spans=spans)
        boundary = ranges.new_boundary()
        parts, trailer, length = ranges.multipart_plan(spans, size, entry.content_type, boundary)
        headers = [("Content-Type", ranges.multipart_content_type(boundary)),
                   ("Content-Length", str(length)), *common]
        return Plan(206, build_head(206, headers), length, file=variant.file,
                    spans=[(a, b) for _, a, b in parts],
                    part_heads=[head for head, _, _ in parts], trailer=trailer)
