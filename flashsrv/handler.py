"""Answering a request, for HTTP/1.1 and HTTP/2 alike: from the caches when they can, else the
slow path's decisions, and from a failure to the status that reports it.

`from_cache` is the synchronous part (no await, no disk): the docroot the Host chooses, the
cached entry and, when memory holds the answer, its plan and body. `decide` translates the
path through the disk layer when it must (answering from a stale entry if the disk layer is
unavailable), swaps in the SPA fallback, error pages and listings, and asks the responder for
the plan. `failure` is the one table from exceptions to answers. No
sockets here: the connection sends what this decides.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.entries import DIRECTORY, FILE, MISSING, Entry
from flashsrv.fields import method_status
from flashsrv.path_patterns import REWRITE_STATUS
from flashsrv.responder import Plan, Request, body_of, https_location
from flashsrv.urlpath import BadTarget, to_target

if TYPE_CHECKING:
    from flashsrv.site import Docroot, Site

log = logging.getLogger("flashsrv.connection")


# What `from_cache` found: (docroot, entry, plan, body). docroot None: no site answers this
# Host (refused with site.config.unknown_host). plan None: the slow path (`decide`) answers,
# with the entry if one is cached. Else the plan stands: its body is in memory when it has
# one (possibly None: a 304), and a plan with a file but no body streams that file.
Cached = tuple["Docroot | None", Entry | None, Plan | None, bytes | bytearray | None]


def before_files(site: Site, request: Request, to_https: bool, local_host: str) -> Plan | None:
    """What answers a request before any file is looked at: a method a static server does
    not serve (405 or 501), or with --redirect-http the same URL on https (308)."""
    status = method_status(request.method)
    if status:
        return site.responder.error(status)
    if to_https:
        location = https_location(request, site.https_port, local_host)
        return site.responder.error(308, keep=[("Location", location)])
    return None


def from_cache(site: Site, request: Request) -> Cached:
    """The answer to a GET or HEAD the caches hold right now, without waiting for anything:
    both protocols' fast path, so that files, validators, ranges and encodings are decided
    in one place. Error statuses go to the slow path (error pages and listings may replace
    them)."""
    docroot: Docroot = site
    if site.hosts is not None:
        found = site.hosts.choose(request.headers.get("host"))
        if found is None:
            return None, None, None, None
        docroot = found
    content = docroot.content
    responder = docroot.responder
    rules = responder.rules
    if rules.early and rules.route_early(request.path) is not None:
        return docroot, None, None, None  # a site rule answers: the slow path decides how
    entry = content.fresh(request.path)
    if entry is None or entry.kind == MISSING or _rule_may_fill(docroot, entry):
        return docroot, entry, None, None  # the slow path looks for a rule or a fallback
    plan = responder.respond(request, entry)
    file = plan.file
    if plan.status >= 400:
        return docroot, entry, None, None
    if file is None:
        return docroot, entry, plan, plan.body
    if not content.from_memory(file):
        return docroot, entry, plan, None
    data = content.cached_body(file)
    if data is None:
        return docroot, entry, None, None
    if plan.part_heads or plan.length != len(data):
        data = body_of(plan, data)
    return docroot, entry, plan, data


async def decide(site: Docroot, request: Request, entry: Entry | None, peer: str) -> Plan:
    """The plan for a GET or HEAD whose entry (None: not in the cache, or stale) needs the
    disk layer, a site rule or a document step."""
    responder = site.responder
    rules = responder.rules
    path = request.path
    try:
        route = rules.route_early(path) if rules.early else None
        if route is not None:
            if route.status != REWRITE_STATUS:
                return await _replaced(site, request, responder.redirect(request, route)
                                       if route.status != 404 else
                                       responder.error(404, path=path), entry)
            path, entry = route.path, None
            if rules.hides(path):
                return await _replaced(site, request, responder.error(404, path=path), entry)
        if entry is None:
            entry = await _translate(site, request, path, peer)
        if entry.kind == MISSING or _rule_may_fill(site, entry):
            found = await _missing(site, request, path, peer, entry.kind == DIRECTORY)
            if isinstance(found, Plan):
                return found
            entry = found or entry
        plan = responder.respond(request, entry)
    except BadTarget as exc:
        log.info("%s %s: %s", peer, request.target_text, exc.reason)
        plan = responder.error(exc.status, exc.reason)
    return await _replaced(site, request, plan, entry)


async def _replaced(site: Docroot, request: Request, plan: Plan, entry: Entry | None) -> Plan:
    """An error page or a listing in place of a generated error, where the site has one."""
    if plan.status >= 400 and plan.file is None:
        return await site.documents.replace(request, plan, entry)
    return plan


def _rule_may_fill(site: Docroot, entry: Entry) -> bool:
    """A folder without an index (and no listing) holds no file, so a shadowing rule applies
    there as where nothing is, as on Netlify."""
    return (entry.kind == DIRECTORY and not entry.variants
            and bool(site.responder.rules.shadowing) and not site.documents.listing)


async def _missing(site: Docroot, request: Request, path: bytes, peer: str,
                   folder: bool = False) -> Entry | Plan | None:
    """What serves a path where no file is: a clean URL's .html file, a shadowing redirect or
    rewrite, the SPA fallback; None when nothing does. In a folder (`_rule_may_fill`) only
    the shadowing rules apply: clean URLs and the fallback stop at a folder, as nginx's
    `try_files $uri $uri/ ...` does."""
    rules = site.responder.rules
    if not folder and rules.clean_urls and not path.endswith(b".html"):
        stem = path.rstrip(b"/") if rules.trailing_slash == "leave" else path
        if stem and not stem.endswith(b"/"):
            entry = await _translate(site, request, stem + b".html", peer)
            if entry.kind == FILE:
                return entry
    route = rules.route_missing(path)
    if route is not None:
        if route.status != REWRITE_STATUS:
            return site.responder.redirect(request, route)
        if rules.hides(route.path):
            return None
        entry = await _translate(site, request, route.path, peer)
        if entry.kind != MISSING:
            return entry
    return None if folder else await site.documents.fallback(request)


async def _translate(site: Docroot, request: Request, path: bytes, peer: str) -> Entry:
    target = to_target(path, site.config.show_dotfiles)
    try:
        return await site.content.resolve(path, target.relpath,
                                          target.directory and target.relpath != "")
    except DiskUnavailable:
        # Stale if error: an entry we had is better than a 503 while the disk layer is
        # saturated (the next request looks again).
        entry = site.content.paths.get(path)
        if entry is None:
            raise
        log.warning("%s %s: disk layer unavailable, answering from a stale entry",
                    peer, request.target_text)
        return entry


def failure(exc: BaseException) -> tuple[int, str, str] | None:
    """How a failure is answered: (status, detail for the page, reason for the log), or None
    when only closing the connection is right (the client went away, or a bug: logged)."""
    if isinstance(exc, ConnectionError):
        return None  # the client went away (seen by our own sendfile): nothing to report
    if isinstance(exc, DiskUnavailable):
        return 503, "the server is busy, try again", str(exc)
    if isinstance(exc, FileChanged):
        return 503, "the file changed while being read, try again", \
            "the file changed while being sent"
    if isinstance(exc, OSError):
        return 500, "", str(exc)
    log.error("internal error", exc_info=exc)
    return None
