"""The admin endpoint: /healthz and /metrics (Prometheus text format) on a separate port.

It is not part of the site: it listens on its own address (loopback by default), so counters and
health never leak to the public side. Each request is answered from the counters in memory;
nothing here touches the disk. With `--workers N` whichever worker a scrape reaches answers for
the whole server, from the slots of shared memory every worker publishes to (worker_metrics).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpRequestParser

from flashsrv.responses import build_head
from flashsrv.worker_metrics import Family, MetricsSlot, Snapshot, render

if TYPE_CHECKING:
    from flashsrv.site import Site

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def snapshot(site: Site) -> Snapshot:
    """Every metric of this main process by name, in the order of the exposition."""
    stats = site.stats
    content = site.content
    by_status = dict(stats.by_status)
    if site.prepared.hits:
        by_status[200] = by_status.get(200, 0) + site.prepared.hits
    families = {
        "requests_total": Family(
            "counter", "Requests answered, by status code.",
            {f'{{status="{status}"}}': count for status, count in sorted(by_status.items())}),
        "log_dropped_total": Family(
            "counter", "Log lines dropped because the log was full or failing.",
            {f'{{log="{name}"}}': count for name, count in stats.logs.dropped.items()}),
    }
    unlabelled = {
        "open_connections": ("gauge", "Client connections open now.", len(site.connections)),
        "bytes_sent_total": ("counter", "Body bytes promised in responses.",
                             stats.bytes_sent + site.prepared.bytes_sent),
        "connections_refused_total": ("counter", "Connections over --max-connections.",
                                      stats.refused),
        "requests_rejected_total": ("counter", "Unparseable or over-limit requests.",
                                    stats.rejected),
        "timeouts_total": ("counter", "Connections closed by a timeout.", stats.timeouts),
        "disk_unavailable_total": ("counter", "Requests answered 503 for lack of disk workers.",
                                   stats.unavailable),
        "data_cache_hits_total": ("counter", "File-data cache hits.", content.data.hits),
        "data_cache_misses_total": ("counter", "File-data cache misses.", content.data.misses),
        "prepared_hits_total": ("counter", "Requests answered with a whole prepared response "
                                "(the fast lane).", site.prepared.hits),
        "data_cache_bytes": ("gauge", "Bytes held by the file-data cache.", content.data.used),
        "data_cache_limit_bytes": ("gauge", "The file-data cache budget.",
                                   content.data.max_bytes),
        "path_cache_entries": ("gauge", "Entries in the pathname-translation cache.",
                               len(content.paths)),
        "nowait_reads_total": ("counter", "Reads done by the loop with RWF_NOWAIT.",
                               content.nowait_reads),
        "disk_reads_total": ("counter", "Reads sent to the disk layer.", content.disk_reads),
        "revalidations_total": ("counter", "Cached entries checked again on the disk.",
                                content.revalidations),
        "watched_directories": ("gauge", "Directories whose changes inotify reports (their "
                                "files need no revalidation).", len(content.watches)),
        "change_events_total": ("counter", "inotify events read.", content.watches.events),
        "sendfile_bytes_total": ("counter", "Body bytes sent zero-copy from the page cache.",
                                 content.sendfile_bytes),
        "connections_reclaimed_total": ("counter", "Idle connections closed at the cap to "
                                        "make room for a new one.", stats.reclaimed),
        "event_loop_lag_seconds": ("gauge", "Lateness of the last 10 ms loop sample.",
                                   stats.loop_lag),
        "event_loop_lag_max_seconds": ("gauge", "Largest lateness of a loop sample since start.",
                                       stats.loop_lag_max),
        "warm_bytes_total": ("counter", "File bytes helpers read into the page cache for the "
                             "loop to send.", content.warm_bytes),
        "log_suppressed_total": ("counter", "Connection log lines over the rate limit.",
                                 stats.logs.suppressed),
        "uptime_seconds": ("gauge", "Seconds since start.", round(time.time() - stats.started)),
    }
    unlabelled.update({
        name: ("gauge" if name in ("helpers", "helper_busy", "helper_queue") else "counter",
               f"Disk layer: {name.replace('_', ' ')}.", value)
        for name, value in content.disk.stats().items()
    })
    families.update({name: Family(kind, helptext, {"": value})
                     for name, (kind, helptext, value) in unlabelled.items()})
    families["event_loop_delay_seconds"] = Family(
        "histogram", "How late the loop ran a callback due every 10 ms: what a request waits "
        "before the loop reads it.", stats.loop_delay.samples())
    families["slow_request_duration_seconds"] = Family(
        "histogram", "Requests that waited for the disk layer, from the request to the response "
        "written.", stats.slow_requests.samples())
    return {f"flashsrv_{name}": family for name, family in families.items()}


@dataclass(frozen=True, slots=True)
class WorkerAdmin:
    """A supervised worker's part of the admin endpoint: the socket the supervisor bound for it
    (every worker's on one port, SO_REUSEPORT) and its slot on the shared metrics board."""

    sock: socket.socket
    slot: MetricsSlot

    def publish(self, site: Site) -> None:
        """From the tick: other workers' scrapes see this one's metrics PUBLISH_EVERY old at
        most."""
        self.slot.publish(snapshot(site))


def metrics_text(site: Site, worker: WorkerAdmin | None = None) -> str:
    """The answer to a scrape: this main process's metrics, or for a supervised worker the
    whole server's (it publishes first, so its own slot is fresh)."""
    families = snapshot(site)
    if worker is None:
        return render(families)
    worker.slot.publish(families)
    return render(families, worker.slot.board.all_values())


# An admin client has this long from connecting to its answer, at most MAX_CONNECTIONS at once
# and MAX_REQUEST_BYTES of request: scrapers are few and quick, anything else is refused.
DEADLINE = 5.0
MAX_CONNECTIONS = 64
MAX_REQUEST_BYTES = 16 * 1024


class AdminConnection(asyncio.Protocol):
    """One admin request per connection: small, rare, and never on the site's hot path."""

    open: set[AdminConnection] = set()

    def __init__(self, site: Site, worker: WorkerAdmin | None = None) -> None:
        self.site = site
        self.worker = worker
        self.url = b""
        self.received = 0
        self.transport: asyncio.Transport  # set by connection_made, before any byte arrives
        self.timer: asyncio.TimerHandle | None = None
        self.parser = HttpRequestParser(self)

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if len(AdminConnection.open) >= MAX_CONNECTIONS:
            transport.abort()
            return
        AdminConnection.open.add(self)
        self.timer = asyncio.get_running_loop().call_later(DEADLINE, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        AdminConnection.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MAX_REQUEST_BYTES:
            self._answer(431, "text/plain; charset=utf-8", b"request too large\n")
            return
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self._answer(400, "text/plain; charset=utf-8", b"bad request\n")

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        path = self.url.partition(b"?")[0]
        head_only = self.parser.get_method() == b"HEAD"  # RFC 9110 §9.3.2: no content
        if path == b"/healthz":
            stopping = self.site.stopping
            self._answer(503 if stopping else 200, "text/plain; charset=utf-8",
                         b"stopping\n" if stopping else b"ok\n", head_only)
        elif path == b"/metrics":
            self._answer(200, PROMETHEUS_TYPE, metrics_text(self.site, self.worker).encode(),
                         head_only)
        else:
            self._answer(404, "text/plain; charset=utf-8", b"try /healthz or /metrics\n",
                         head_only)

    def _answer(self, status: int, ctype: str, body: bytes, head_only: bool = False) -> None:
        if self.transport.is_closing():
            return
        head = build_head(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                   ("Connection", "close")])
        self.transport.write(head + b"\r\n" + (b"" if head_only else body))
        self.transport.close()


async def start_admin(site: Site, host: str, port: int, worker: WorkerAdmin | None = None
                      ) -> asyncio.Server:
    """Listen on host:port, or for a supervised worker on the socket the supervisor bound."""
    loop = asyncio.get_running_loop()
    if worker is None:
        return await loop.create_server(lambda: AdminConnection(site), host, port)
    return await loop.create_server(lambda: AdminConnection(site, worker), sock=worker.sock)
