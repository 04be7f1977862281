"""The slow path's decisions: from a request the caches could not answer to a plan, and from a
failure to the status that reports it.

`decide` translates the path through the disk layer when it must (answering from a stale entry
if the disk layer is unavailable), swaps in the SPA fallback, error pages and listings, and
asks the responder for the plan. `failure` is the one table from exceptions to answers. No
sockets here: the connection sends what this decides.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.entries import MISSING, Entry
from flashsrv.responder import Plan, Request
from flashsrv.urlpath import BadTarget, to_target

if TYPE_CHECKING:
    from flashsrv.site import Site

log = logging.getLogger("flashsrv.connection")


async def decide(site: Site, request: Request, entry: Entry | None, peer: str) -> Plan:
    """The plan for a GET or HEAD whose entry (None: not in the cache, or stale) needs the
    disk layer or a document step."""
    try:
        if entry is None:
            entry = await _translate(site, request, peer)
        if entry.kind == MISSING:
            entry = await site.documents.fallback(request) or entry
        plan = site.responder.respond(request, entry)
    except BadTarget as exc:
        log.info("%s %s: %s", peer, request.target_text, exc.reason)
        plan = site.responder.error(exc.status, exc.reason)
    if plan.status >= 400 and plan.file is None:
        plan = await site.documents.replace(request, plan, entry)
    return plan


async def _translate(site: Site, request: Request, peer: str) -> Entry:
    target = to_target(request.path, site.config.show_dotfiles)
    try:
        return await site.content.resolve(request.path, target.relpath,
                                          target.directory and target.relpath != "")
    except DiskUnavailable:
        # Stale if error: an entry we had is better than a 503 while the disk layer is
        # saturated (the next request looks again).
        entry = site.content.paths.get(request.path)
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
