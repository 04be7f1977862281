"""flashsrv.site_documents: the SPA fallback, custom error pages and directory listings.

The documents come through a real content layer over a temporary folder (the inline disk: no
helper process), as they do in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flashsrv.content import Content
from flashsrv.disk import InlineDisk
from flashsrv.entries import DIRECTORY, FILE, Entry
from flashsrv.responder import Plan, Request, Responder
from flashsrv.site_documents import SiteDocuments, accepts_html
from flashsrv.site_rules import SiteRules

T = TypeVar("T")
SHELL = b"<!doctype html><title>app</title>\n"
NOT_FOUND = b"<h1>nothing here</h1>\n"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(("accept", "html"), [
    (BROWSER, True),
    ("text/html", True),
    ("TEXT/HTML ; q=0.5", True),
    ("application/json, text/html;level=1;q=0.001", True),
    ("text/html;q=0", False),
    ("text/html;q=0.000", False),
    ("text/html;q=abc", False),  # a malformed weight selects nothing
    ("*/*", False),  # what fetch() and curl send: not a page navigation
    ("text/*", False),
    ("application/json", False),
    ("", False),
])
def test_accepts_html_needs_text_html_with_a_non_zero_weight(accept: str, html: bool):
    assert accepts_html(accept) is html


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_bytes(SHELL)
    (tmp_path / "404.html").write_bytes(NOT_FOUND)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.txt").write_text("read me\n")
    (docs / "sub").mkdir()
    return tmp_path


def run(scenario: Callable[[SiteDocuments], Coroutine[Any, Any, T]], root: Path,
        error_pages: dict[int, str] | None = None, fallback: str | None = "index.html",
        listing: bool = True) -> T:
    """Run scenario with the documents of a site over root."""
    async def main() -> T:
        content = Content(InlineDisk(str(root)), 1 << 20, 64 << 10, max_entries=64)
        responder = Responder(SiteRules(extra_headers=[("X-Site", "yes")]))
        pages = {404: "404.html"} if error_pages is None else error_pages
        return await scenario(SiteDocuments(content, responder, pages, fallback, listing))

    return asyncio.run(main())


def get(path: str, **headers: str) -> Request:
    return Request(b"GET", path.encode(), b"", "1.1", headers, True, False)


def head_fields(plan: Plan) -> dict[str, str]:
    lines = plan.head.decode("latin-1").split("\r\n")[1:-1]
    return {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}


# -- the single-page-app fallback --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/app/settings", "/app/page.html", "/old/PAGE.HTM", "/"])
def test_a_browser_navigating_to_a_missing_page_gets_the_app_shell(root: Path, path: str):
    entry = run(lambda docs: docs.fallback(get(path, accept=BROWSER)), root)
    assert entry is not None and entry.kind == FILE and entry.relpath == "index.html"
    assert entry.vary == ("Accept",), "the same URL is a 404 for clients not asking for HTML"


@pytest.mark.parametrize("path", ["/app/main.js", "/logo.png", "/app/a%2Ejs"])
def test_a_missing_asset_is_never_answered_with_the_shell(root: Path, path: str):
    assert run(lambda docs: docs.fallback(get(path, accept=BROWSER)), root) is None


@pytest.mark.parametrize("headers", [{}, {"accept": "*/*"}, {"accept": "application/json"}])
def test_a_script_gets_no_fallback(root: Path, headers: dict[str, str]):
    assert run(lambda docs: docs.fallback(get("/app/settings", **headers)), root) is None


def test_no_fallback_without_the_setting_or_without_the_file(root: Path):
    request = get("/app/settings", accept=BROWSER)
    assert run(lambda docs: docs.fallback(request), root, fallback=None) is None
    assert run(lambda docs: docs.fallback(request), root, fallback="gone.html") is None


# -- custom error pages ------------------------------------------------------------------------


def test_a_configured_page_replaces_the_generated_error_body(root: Path):
    async def scenario(docs: SiteDocuments) -> Plan:
        return await docs.replace(get("/nothing"), docs.responder.error(404), None)

    plan = run(scenario, root)
    fields = head_fields(plan)
    assert (plan.status, plan.body, plan.length) == (404, NOT_FOUND, len(NOT_FOUND))
    assert fields["content-type"].startswith("text/html")
    assert fields["content-length"] == str(len(NOT_FOUND)) and fields["x-site"] == "yes"


def test_a_custom_page_keeps_the_headers_of_the_status_and_the_close(root: Path):
    (root / "errors").mkdir()
    (root / "errors" / "405.html").write_text("no\n")

    async def scenario(docs: SiteDocuments) -> Plan:
        plan = docs.responder.error(405, close=True, keep=[("Allow", "GET, HEAD")])
        return await docs.replace(get("/"), plan, None)

    plan = run(scenario, root, error_pages={405: "errors/405.html"})
    assert plan.body == b"no\n" and plan.close
    assert head_fields(plan)["allow"] == "GET, HEAD"


@pytest.mark.parametrize("pages", [{}, {404: "missing.html"}])
def test_without_a_usable_page_the_plan_stands(root: Path, pages: dict[int, str]):
    async def scenario(docs: SiteDocuments) -> tuple[Plan, Plan]:
        plan = docs.responder.error(404)
        return plan, await docs.replace(get("/nothing"), plan, None)

    before, after = run(scenario, root, error_pages=pages)
    assert after is before


# -- directory listings ------------------------------------------------------------------------


async def listing_of(docs: SiteDocuments, path: str, **headers: str) -> Plan:
    """What a GET of an index-less directory is answered with."""
    request = get(path, **headers)
    entry = await docs.content.resolve(path.encode(), path.strip("/"), directory=True)
    assert entry.kind == DIRECTORY and not entry.variants
    return await docs.replace(request, docs.responder.respond(request, entry), entry)


def test_an_index_less_directory_is_listed_with_a_validator(root: Path):
    plan = run(lambda docs: listing_of(docs, "/docs/"), root)
    fields = head_fields(plan)
    assert plan.status == 200 and plan.body is not None
    assert b"guide.txt" in plan.body and b"sub/" in plan.body
    assert fields["etag"].startswith('"l') and fields["cache-control"] == "no-cache"
    assert fields["x-site"] == "yes"


def test_a_listing_the_client_has_is_304(root: Path):
    async def scenario(docs: SiteDocuments) -> tuple[Plan, Plan]:
        first = await listing_of(docs, "/docs/")
        etag = head_fields(first)["etag"]
        return first, await listing_of(docs, "/docs/", **{"if-none-match": etag})

    first, again = run(scenario, root)
    assert again.status == 304 and again.body is None and again.length == 0
    assert head_fields(again)["etag"] == head_fields(first)["etag"]


def test_a_listing_changes_its_validator_when_the_directory_changes(root: Path):
    first = run(lambda docs: listing_of(docs, "/docs/"), root)
    (root / "docs" / "new.txt").write_text("new\n")
    second = run(lambda docs: listing_of(docs, "/docs/"), root)
    assert head_fields(first)["etag"] != head_fields(second)["etag"]


def test_without_the_listing_setting_an_index_less_directory_stays_403(root: Path):
    plan = run(lambda docs: listing_of(docs, "/docs/"), root, listing=False)
    assert plan.status == 403


def test_a_directory_gone_before_its_listing_is_404(root: Path):
    async def scenario(docs: SiteDocuments) -> Plan:
        request = get("/docs/sub/")
        entry = Entry(DIRECTORY, "docs/sub")
        (root / "docs" / "sub").rmdir()
        return await docs.replace(request, docs.responder.respond(request, entry), entry)

    assert run(scenario, root).status == 404
