"""Documents served in place of the one asked for: custom error pages, the single-page-app
fallback, and directory listings.

Like nginx's `error_page` and `try_files ... /index.html`, these are separate from the static
handler: the handler decides 404/403, and this step may swap in a configured page. Every page is
fetched through the content layer (so it is cached and revalidated like any file).
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from flashsrv.content import DIRECTORY, FILE, Content, Entry
from flashsrv.listing import render_listing
from flashsrv.responder import Plan, Request, error_plan
from flashsrv.responses import HTML_TYPE, build_head

# Paths with these extensions are assets: a missing one is a real 404, never the app shell.
_PAGE_EXTENSIONS = frozenset({"", ".html", ".htm"})


class SiteDocuments:
    def __init__(self, content: Content, error_pages: dict[int, str], fallback: str | None,
                 listing: bool) -> None:
        self.content = content
        self.error_pages = error_pages
        self.fallback_page = fallback
        self.listing = listing

    async def _document(self, relpath: str) -> Entry:
        key = b"\x00document:" + relpath.encode()
        return self.content.fresh(key) or await self.content.resolve(key, relpath)

    async def fallback(self, request: Request) -> Entry | None:
        """The SPA fallback entry for a missing page that a browser navigates to, else None."""
        if self.fallback_page is None:
            return None
        accept = request.headers.get("accept", "")
        if "text/html" not in accept and "*/*" not in accept:
            return None
        name = posixpath.basename(unquote(request.path.decode("latin-1")))
        if posixpath.splitext(name)[1].lower() not in _PAGE_EXTENSIONS:
            return None
        entry = await self._document(self.fallback_page)
        return entry if entry.kind == FILE else None

    async def replace(self, request: Request, plan: Plan, entry: Entry) -> Plan:
        """A listing for an index-less directory, or the configured page for an error status."""
        if (self.listing and plan.status == 403 and entry.kind == DIRECTORY
                and not entry.variants):
            return await self._listing(request, entry)
        page = self.error_pages.get(plan.status)
        if page is None:
            return plan
        document = await self._document(page)
        if document.kind != FILE:
            return plan
        file = document.variants["identity"].file
        body = self.content.cached_body(file) or await self.content.body(file)
        headers = [("Content-Type", document.content_type), ("Content-Length", str(len(body)))]
        return Plan(plan.status, build_head(plan.status, headers), len(body), body,
                    close=plan.close)

    async def _listing(self, request: Request, entry: Entry) -> Plan:
        result = await self.content.listdir(entry.relpath)
        if result[0] != "listing":
            return error_plan({"missing": 404, "forbidden": 403}.get(result[0], 500))
        body = render_listing(unquote(request.path.decode("latin-1")), result[1])
        headers = [("Content-Type", HTML_TYPE), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-cache")]
        return Plan(200, build_head(200, headers), len(body), body)
