"""The admin endpoint: /healthz and /metrics (Prometheus text format) on a separate port.

It is not part of the site: it listens on its own address (loopback by default), so counters and
health never leak to the public side. Each request is answered from the counters in memory;
nothing here touches the disk.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpRequestParser

from flashsrv.responses import build_head

if TYPE_CHECKING:
    from flashsrv.site import Site

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_text(site: Site) -> str:
    """All counters of one main process in the Prometheus exposition format."""
    stats = site.stats
    content = site.content
    lines = [
        "# HELP flashsrv_requests_total Requests answered, by status code.",
        "# TYPE flashsrv_requests_total counter",
    ]
    by_status = dict(stats.by_status)
    if site.prepared.hits:
        by_status[200] = by_status.get(200, 0) + site.prepared.hits
    lines += [f'flashsrv_requests_total{{status="{status}"}} {count}'
              for status, count in sorted(by_status.items())]
    lines += [
        "# HELP flashsrv_log_dropped_total Log lines dropped because the log was full or failing.",
        "# TYPE flashsrv_log_dropped_total counter",
    ]
    lines += [f'flashsrv_log_dropped_total{{log="{name}"}} {count}'
              for name, count in stats.logs.dropped.items()]
    gauges = {
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
                                   round(stats.loop_lag, 6)),
        "event_loop_lag_max_seconds": ("gauge", "Largest lateness of a loop sample since start.",
                                       round(stats.loop_lag_max, 6)),
        "warm_bytes_total": ("counter", "File bytes helpers read into the page cache for the "
                             "loop to send.", content.warm_bytes),
        "log_suppressed_total": ("counter", "Connection log lines over the rate limit.",
                                 stats.logs.suppressed),
        "uptime_seconds": ("gauge", "Seconds since start.", round(time.time() - stats.started)),
    }
    gauges.update({
        name: ("gauge" if name in ("helpers", "helper_busy", "helper_queue") else "counter",
               f"Disk layer: {name.replace('_', ' ')}.", value)
        for name, value in content.disk.stats().items()
    })
    for name, (kind, helptext, value) in gauges.items():
        lines += [f"# HELP flashsrv_{name} {helptext}", f"# TYPE flashsrv_{name} {kind}",
                  f"flashsrv_{name} {value}"]
    lines += stats.loop_delay.lines(
        "flashsrv_event_loop_delay_seconds",
        "How late the loop ran a callback due every 10 ms: what a request waits before the "
        "loop reads it.")
    lines += stats.slow_requests.lines(
        "flashsrv_slow_request_duration_seconds",
        "Requests that waited for the disk layer, from the request to the response written.")
    return "\n".join(lines) + "\n"


# An admin client has this long from connecting to its answer, at most MAX_CONNECTIONS at once
# and MAX_REQUEST_BYTES of request: scrapers are few and quick, anything else is refused.
DEADLINE = 5.0
MAX_CONNECTIONS = 64
MAX_REQUEST_BYTES = 16 * 1024


class AdminConnection(asyncio.Protocol):
    """One admin request per connection: small, rare, and never on the site's hot path."""

    open: set[AdminConnection] = set()

    def __init__(self, site: Site) -> None:
        self.site = site
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
        if path == b"/healthz":
            stopping = self.site.stopping
            self._answer(503 if stopping else 200, "text/plain; charset=utf-8",
                         b"stopping\n" if stopping else b"ok\n")
        elif path == b"/metrics":
            self._answer(200, PROMETHEUS_TYPE, metrics_text(self.site).encode())
        else:
            self._answer(404, "text/plain; charset=utf-8", b"try /healthz or /metrics\n")

    def _answer(self, status: int, ctype: str, body: bytes) -> None:
        if self.transport.is_closing():
            return
        head = build_head(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                   ("Connection", "close")])
        method = self.parser.get_method() if status < 400 else b"GET"
        self.transport.write(head + b"\r\n" + (b"" if method == b"HEAD" else body))
        self.transport.close()


async def start_admin(site: Site, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AdminConnection(site), host, port,
                                    reuse_port=site.config.workers > 1)
