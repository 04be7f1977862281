"""What one main process shares among its connections: the `Site` and its counters.

Connections, the admin endpoint and the server start-up all see the site through this module,
so none of them imports another to reach it. No I/O here: the parts that do I/O (content, the
access log) are handed in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from flashsrv.accesslog import AccessLog
from flashsrv.config import Config
from flashsrv.content import Content
from flashsrv.histogram import Histogram
from flashsrv.httpdate import DateHeader
from flashsrv.logsink import LOSSES
from flashsrv.phases import phase_timeouts
from flashsrv.prepared import PreparedResponses
from flashsrv.responder import Responder
from flashsrv.site_documents import SiteDocuments

if TYPE_CHECKING:
    from flashsrv.connection import HttpConnection


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


class Site:
    """Everything one main process shares among its connections."""

    def __init__(self, config: Config, content: Content, responder: Responder,
                 documents: SiteDocuments, access_log: AccessLog | None) -> None:
        self.config = config
        self.timeouts = phase_timeouts(config)
        self.content = content
        self.responder = responder
        self.documents = documents
        self.access_log = access_log
        self.stats = Stats()
        self.date = DateHeader()
        self.prepared = PreparedResponses()
        # Open connections, oldest first (reclaim_one closes the oldest idle one at the cap).
        self.connections: dict[HttpConnection, None] = {}
        self.stopping = False

    def log_request(self, prefix: bytes, method: bytes, target: bytes, version: str,
                    status: int, length: int) -> None:
        """Count a response and log it; prefix is the connection's `HOST - - [`."""
        stats = self.stats
        stats.by_status[status] += 1
        stats.bytes_sent += length
        if self.access_log is not None:
            self.access_log.write(prefix, method, target, version, status, length)
