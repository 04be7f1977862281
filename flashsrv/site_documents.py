"""Documents served in place of the one asked for: custom error pages, the single-page-app
fallback, and directory listings.

Like nginx's `error_page` and `try_files ... /index.html`, these are separate from the static
handler: the handler decides 404/403, and this step may swap in a configured page. Every page is
fetched through the content layer (so it is cached and revalidated like any file).
"""

from __future__ import annotations

import asyncio
import posixpath
import zlib
from urllib.parse import unquote

from flashsrv_helpers.wire import LISTING

from flashsrv.content import Content
from flashsrv.entries import DIRECTORY, FILE, FORBIDDEN, MISSING, Entry
from flashsrv.listing import listing_page, listing_rows
from flashsrv.negotiation import q_weight
from flashsrv.responder import Plan, Request, Responder
from flashsrv.responses import HTML_TYPE, build_head

# Rows of a directory listing rendered per turn of the loop (a few milliseconds of work).
LISTING_SLICE = 256
# Paths with these extensions are assets: a missing one is a real 404, never the app shell.
_PAGE_EXTENSIONS = frozenset({"", ".html", ".htm"})


def accepts_html(accept: str) -> bool:
    """Whether an Accept field explicitly asks for text/html with a non-zero q-value: what a
    browser navigating to a page sends (a script's `*/*` does not count)."""
    for member in accept.split(","):
        media, *params = member.split(";")
        if media.strip().lower() == "text/html":
            return q_weight(params) > 0
    return False


class SiteDocuments:
    def __init__(self, content: Content, responder: Responder, error_pages: dict[int, str],
                 fallback: str | None, listing: bool) -> None:
        self.content = content
        self.responder = responder
        self.error_pages = error_pages
        self.fallback_page = fallback
        self.listing = listing

    async def _document(self, kind: bytes, relpath: str) -> Entry:
        key = b"\x00" + kind + b":" + relpath.encode()
        return self.content.fresh(key) or await self.content.resolve(key, relpath)

    async def fallback(self, request: Request) -> Entry | None:
        """The SPA fallback entry for a missing page that a browser navigates to, else None.

        Its responses say `Vary: Accept`: the same URL is a 404 for a client that does not
        ask for HTML.
        """
        if self.fallback_page is None or not accepts_html(request.headers.get("accept", "")):
            return None
        name = posixpath.basename(unquote(request.path.decode("latin-1")))
        if posixpath.splitext(name)[1].lower() not in _PAGE_EXTENSIONS:
            return None
        entry = await self._document(b"fallback", self.fallback_page)
        if entry.kind != FILE:
            return None
        entry.vary = ("Accept",)
        return entry

    async def replace(self, request: Request, plan: Plan, entry: Entry | None) -> Plan:
        """A listing for an index-less directory, or the configured page for an error status."""
        if (self.listing and plan.status == 403 and entry is not None
                and entry.kind == DIRECTORY and not entry.variants):
            return await self._listing(request, entry)
        page = self.error_pages.get(plan.status)
        if page is None:
            return plan
        document = await self._document(b"error-page", page)
        if document.kind != FILE:
            return plan
        file = document.variants["identity"].file
        body = await self.content.whole(file)
        headers = [("Content-Type", document.content_type), ("Content-Length", str(len(body))),
                   *plan.keep, *self.responder.rules.headers_for(request.path)[1]]
        return Plan(plan.status, build_head(plan.status, headers), len(body), body,
                    keep=plan.keep, close=plan.close)

    async def _listing(self, request: Request, entry: Entry) -> Plan:
        listing = await self.content.listdir(entry.relpath)
        if listing.kind != LISTING:
            return self.responder.error({MISSING: 404, FORBIDDEN: 403}.get(listing.kind, 500))
        url_path = unquote(request.path.decode("latin-1"))
        rows: list[str] = []
        for row in listing_rows(url_path, listing.entries):
            rows.append(row)
            if len(rows) % LISTING_SLICE == 0:
                await asyncio.sleep(0)  # a large directory must not hold the loop: let others run
        body = listing_page(url_path, rows)
        # A listing has no file behind it: its validator is a checksum of the page itself.
        etag = f'"l{zlib.crc32(body):08x}-{len(body):x}"'
        extra = self.responder.rules.headers_for(request.path)[1]
        if etag in request.headers.get("if-none-match", ""):
            headers = [("ETag", etag), ("Cache-Control", "no-cache"), *extra]
            return Plan(304, build_head(304, headers))
        headers = [("Content-Type", HTML_TYPE), ("Content-Length", str(len(body))),
                   ("ETag", etag), ("Cache-Control", "no-cache"), *extra]
        return Plan(200, build_head(200, headers), len(body), body)
