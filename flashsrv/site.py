"""What one main process shares among its connections: the `Site` and its counters.

Connections, the admin endpoint and the server start-up all see the site through this module,
so none of them imports another to reach it. No I/O here: the parts that do I/O (content, the
access log) are handed in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from flashsrv.accesslog import NO_HEADERS, AccessLog
from flashsrv.config import Config
from flashsrv.content import Content
from flashsrv.entries import Entry
from flashsrv.fields import host_name
from flashsrv.histogram import Histogram
from flashsrv.httpdate import DateHeader
from flashsrv.logsink import LOSSES
from flashsrv.phases import phase_timeouts
from flashsrv.prepared import PreparedResponses
from flashsrv.responder import Plan, Responder
from flashsrv.rule_files_watch import RuleFiles
from flashsrv.site_documents import SiteDocuments

if TYPE_CHECKING:
    from flashsrv.connection_base import PhasedConnection



class KeptStream(NamedTuple):
    """A streamed 200 answer kept for the next plain GET of its target (`prepared`): the plan
    (head, open file, span), the path-cache entry it was made from (it stands while the cache
    trusts that entry), the content layer its bytes come through, the target's parts."""

    plan: Plan
    entry: Entry
    content: Content
    path: bytes
    query: bytes

    def current(self) -> bool:
        """Whether the path cache still trusts the entry this answer was made from."""
        return self.content.fresh(self.path) is self.entry

    def cached(self) -> bool:
        """Whether the path cache still holds that entry (the tick's question: it starts no
        revalidation, which `current` may)."""
        return self.content.paths.get(self.path) is self.entry

class Stats:
    """Counters the admin endpoint exposes; plain attributes, bumped on the hot path."""

    def __init__(self) -> None:
        self.by_status: defaultdict[int, int] = defaultdict(int)
        self.bytes_sent = 0
        self.refused = 0
        self.rejected = 0
        self.timeouts = 0
        self.unavailable = 0
        self.reclaimed = 0
        self.loop_lag = 0.0
        self.loop_lag_max = 0.0
        self.loop_delay = Histogram()
        self.slow_requests = Histogram()
        self.logs = LOSSES
        self.started = time.time()


class Docroot:
    """One document root with its rules: the part of a site that a request's Host chooses.
    The default site is one; each [[sites]] entry (a virtual host) is another."""

    def __init__(self, config: Config, content: Content, responder: Responder,
                 documents: SiteDocuments) -> None:
        self.config = config
        self.content = content
        self.responder = responder
        self.documents = documents
        # The rules of the root's _headers and _redirects.
        self.rule_files = RuleFiles(config.root or "")


# Host values remembered by the table before it starts again (a bound, not a need).
MAX_REMEMBERED_HOSTS = 1024


class HostTable:
    """Which Docroot answers a Host: exact names first, then the longest `*.` wildcard
    (which, as in nginx, does not match the bare domain); else the default or a refusal."""

    def __init__(self, sites: list[Docroot], default: Docroot | None) -> None:
        self.sites = sites
        self.default = default
        self._exact: dict[str, Docroot] = {}
        self._wildcards: list[tuple[str, Docroot]] = []
        for docroot in sites:
            for name in docroot.config.hosts:
                if name.startswith("*."):
                    self._wildcards.append((name[1:], docroot))
                else:
                    self._exact[name] = docroot
        self._wildcards.sort(key=lambda pair: -len(pair[0]))
        self._chosen: dict[str, Docroot | None] = {}

    def choose(self, host: str | None) -> Docroot | None:
        """The Docroot for a request's Host value (None: no Host, HTTP/1.0); None when no
        site answers and unknown hosts are refused."""
        if host is None:
            return self.default
        try:
            return self._chosen[host]
        except KeyError:
            pass
        name = host_name(host)
        found = self._exact.get(name)
        if found is None:
            found = next((d for suffix, d in self._wildcards if name.endswith(suffix)),
                         self.default)
        if len(self._chosen) >= MAX_REMEMBERED_HOSTS:
            self._chosen.clear()
        self._chosen[host] = found
        return found


class Site(Docroot):
    """Everything one main process shares among its connections; itself the default
    Docroot."""

    def __init__(self, config: Config, content: Content, responder: Responder,
                 documents: SiteDocuments, access_log: AccessLog | None) -> None:
        super().__init__(config, content, responder, documents)
        self.timeouts = phase_timeouts(config)
        self.access_log = access_log
        self.hosts: HostTable | None = None  # virtual hosts, when [[sites]] names any
        self.https_port = config.tls_port  # the one bound, once known (--tls-port 0)
        self.stats = Stats()
        self.date = DateHeader()
        self.prepared: PreparedResponses[KeptStream] = PreparedResponses()
        # Open connections, oldest first (reclaim_one closes the oldest idle one at the cap).
        self.connections: dict[PhasedConnection, None] = {}
        self.stopping = False

    @property
    def hsts_line(self) -> bytes:
        """The Strict-Transport-Security field TLS responses end their head with (--hsts)."""
        if self.config.hsts is None:
            return b""
        return b"Strict-Transport-Security: max-age=%d\r\n" % self.config.hsts

    def log_request(self, addr: bytes, method: bytes, target: bytes, version: str,
                    status: int, length: int, headers: Mapping[str, str] = NO_HEADERS,
                    head: bytes = b"", began: float | None = None) -> None:
        """Count a response and log it (the arguments are AccessLog.write's)."""
        stats = self.stats
        stats.by_status[status] += 1
        stats.bytes_sent += length
        if self.access_log is not None:
            self.access_log.write(addr, method, target, version, status, length, headers, head,
                                  began)
