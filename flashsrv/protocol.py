"""One HTTP/1.x connection: an asyncio.Protocol whose methods are the events it receives.

httptools calls `on_*` while `data_received` feeds it; the transport calls `pause_writing` /
`resume_writing` and `connection_lost`. Requests are answered strictly in order: a request
arriving while another is being answered waits in a short queue (pipelining), and reading
pauses when that queue is full or when the client stops reading what we write, so no
connection can make the server buffer without bound.

The hot path - a fresh path-cache entry whose bytes are in the data cache - is answered inside
`data_received` with one `write`. Anything that needs the disk layer runs as a task; the
connection is then busy and queues what follows. Timeouts are deadlines checked by the
server's periodic sweep, so the hot path only stores a number.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from functools import partial
from itertools import islice
from time import monotonic
from typing import TYPE_CHECKING, Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.entries import MISSING, Entry
from flashsrv.fields import method_status, only_chunked, unparsed_method_status, valid_host
from flashsrv.responder import Plan, Request, body_of, error_plan
from flashsrv.urlpath import BadTarget, split_target, to_target

if TYPE_CHECKING:
    from flashsrv.server import Site

log = logging.getLogger("flashsrv.connection")

MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 32768
MAX_HEADERS = 100
# Bytes a request head may take before it is complete, counted per data_received call:
# a coarse bound that also covers what httptools accumulates before it calls on_header.
MAX_PENDING_HEAD = 1 << 20
MAX_PIPELINE = 32
# How many of the oldest connections a new one at the cap may look at to find one to close.
RECLAIM_SCAN = 64
STREAM_CHUNK = 256 * 1024
# What a zero-copy stream puts in the transport when the socket is full, to learn when it drains.
WAIT_CHUNK = 16 * 1024
# A cold stream asks a helper to bring this much of its file into the page cache at a time.
WARM_WINDOW = 1 << 20
SMALL_WRITE = 64 * 1024
SENDFILE_TAIL = 4096
# The request headers the response depends on; all others are counted and dropped.
SEMANTIC_HEADERS = frozenset({
    b"accept", b"accept-encoding", b"if-match", b"if-none-match", b"if-modified-since",
    b"if-unmodified-since", b"if-range", b"range", b"expect", b"transfer-encoding", b"upgrade",
})
# A GET or HEAD body means nothing here; beyond this size it is refused rather than drained.
MAX_BODY_BYTES = 1 << 20
CONDITIONAL_HEADERS = frozenset({
    b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"range",
})
_END_CLOSE = b"Connection: close\r\n\r\n"
_END_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n\r\n"
_END = b"\r\n"


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _drop(task: asyncio.Task | None) -> None:
    """Cancel a task nobody will await (the warm-ahead of a response that ended or moved on)
    and consume its outcome, so that a failure is not reported as never retrieved."""
    if task is not None:
        task.cancel()
        task.add_done_callback(_retrieve)


def reclaim_one(connections: dict[HttpConnection, None]) -> bool:
    """At the connection cap: close the oldest connection that is waiting for a request, as
    nginx reuses idle connections when it runs short, so that a flood of connections that
    send nothing cannot lock real clients out. Looks at the RECLAIM_SCAN oldest only (a
    bounded cost per new connection); False when none of them can go."""
    for conn in islice(connections, RECLAIM_SCAN):
        if conn.reclaimable:
            conn.site.stats.reclaimed += 1
            connections.pop(conn)
            conn.abort()
            return True
    return False


class Reject(Exception):
    """Raised from a parser callback: answer with this status and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# Stands in for the request line of something that could not be parsed (for the access log).
_UNPARSED = Request(b"-", b"-", b"", "1.1", {}, False, False)


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "_body_bytes",
        "_conditional",
        "_drain",
        "_has_host",
        "_head_bytes",
        "_head_sent",
        "_header_count",
        "_headers",
        "_host_ok",
        "_in_head",
        "_last_request_seen",
        "_pending_head",
        "_rejected",
        "_sock_fd",
        "_url",
        "busy",
        "closed",
        "deadline",
        "log_prefix",
        "parser",
        "peer",
        "queue",
        "site",
        "task",
        "transport",
        "write_paused",
    )

    def __init__(self, site: Site) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.queue: deque[Request | Plan] = deque()
        self.busy = False
        self.closed = False
        self.write_paused = False
        self.task: asyncio.Task | None = None
        self.deadline = 0.0
        self.peer = "-"
        self.log_prefix = b"- - - ["
        self._drain: asyncio.Future | None = None
        self._head_sent = False
        self._rejected = False
        self._last_request_seen = False
        self._host_ok = b""
        self._next_message()

    # -- transport events ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._sock_fd = transport.get_extra_info("socket").fileno()
        site = self.site
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.log_prefix = f"{self.peer} - - [".encode()
        if site.stopping or (len(site.connections) >= site.config.max_connections
                             and not reclaim_one(site.connections)):
            site.stats.refused += 1
            plan = error_plan(503, "too many connections", close=True)
            transport.write(plan.head + _END_CLOSE + (plan.body or b""))
            transport.close()
            self.closed = True
            return
        site.connections[self] = None
        # Paused as soon as anything waits in the transport's buffer, resumed when it is empty:
        # bytes are produced only for a client that reads them.
        transport.set_write_buffer_limits(high=0, low=0)
        self.deadline = monotonic() + site.config.request_start_timeout

    @property
    def reclaimable(self) -> bool:
        """Waiting for a request (idle keep-alive, or nothing or part of a head sent): closing
        it loses no response, which is what makes room for a new client under a flood."""
        return not (self.busy or self.queue or self.write_paused or self.closed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.site.connections.pop(self, None)
        if self.task is not None:
            self.task.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client went away"))
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline = monotonic() + self.site.config.send_timeout

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.busy:
            self.deadline = monotonic() + self.site.config.send_timeout
        else:
            self.deadline = monotonic() + self.site.config.keepalive_timeout
            self._run_queue()

    def data_received(self, data: bytes) -> None:
        if self.closed or self._rejected:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Reject):
                self._reject(cause.status, cause.detail)
            else:
                log.exception("internal error while parsing a request", exc_info=cause)
                self._reject(500, "")
            return
        except HttpParserUpgrade:
            # A static server upgrades nothing: the request was answered as a plain one, and
            # since nothing after it can be parsed, the connection ends with its response.
            self._last_request_seen = True
            if not self.busy and not self.queue:
                self.close_idle()
        except HttpParserInvalidMethodError:
            status = unparsed_method_status(data)
            self._reject(status, "method not implemented" if status == 501 else "bad method")
            return
        except HttpParserError as exc:
            detail = str(exc)
            self._reject(505 if detail == "Invalid HTTP version" else 400, detail)
            return
        if self._in_head:
            self._pending_head += len(data)
            if self._pending_head > MAX_PENDING_HEAD:
                self._reject(431, "request head too large")

    # -- parser events ------------------------------------------------------------------------

    def _next_message(self) -> None:
        """Reset the per-request state (instead of an on_message_begin callback, which would
        cost a Python call per request)."""
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._has_host = False
        self._conditional = False
        self._head_bytes = 0
        self._pending_head = 0
        self._body_bytes = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        if not self._url:  # a request has begun: its head must arrive within header_timeout
            self.deadline = monotonic() + self.site.config.header_timeout
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            raise Reject(414, "request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._head_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            raise Reject(431, "request header fields too large")
        key = name.lower()
        if key == b"host":
            if self._has_host:
                raise Reject(400, "more than one Host header")
            self._has_host = True
            if value != self._host_ok:
                if not valid_host(value):
                    raise Reject(400, "invalid Host header")
                self._host_ok = value  # a keep-alive client repeats it: check it once
        elif key in SEMANTIC_HEADERS:
            if key in CONDITIONAL_HEADERS:
                self._conditional = True
            elif key == b"expect":
                self._expect(value)
            elif key == b"transfer-encoding":
                if "transfer-encoding" in self._headers:
                    raise Reject(400, "more than one Transfer-Encoding header")
                if not only_chunked(value):
                    raise Reject(501, "transfer coding not implemented")
            text_key = key.decode("latin-1")
            text = value.decode("latin-1")
            old = self._headers.get(text_key)
            self._headers[text_key] = text if old is None else f"{old}, {text}"

    # No on_headers_complete: every check it would make is made in on_message_complete (or
    # on_body), saving a Python call per request.

    def _expect(self, value: bytes) -> None:
        """`Expect: 100-continue`: the client holds its body back until told to send it; its
        final answer (which never depends on the body here) follows once the body is read."""
        if (value.strip().lower() == b"100-continue"
                and self.parser.get_http_version() == "1.1" and not self.busy and not self.queue):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        """A body on GET/HEAD means nothing to a static server: it is read and dropped. It must
        arrive within header_timeout of its first byte (no re-arming per chunk, so a body
        trickled byte by byte cannot hold the connection), and it is bounded in size."""
        if not self._body_bytes:
            self._in_head = False
            self.deadline = monotonic() + self.site.config.header_timeout
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            raise Reject(413, "request body too large")

    def on_message_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise Reject(505, f"HTTP/{version} is not supported")
        elif not self._has_host:
            raise Reject(400, "HTTP/1.1 request without Host")
        url = self._url
        headers = self._headers
        conditional = self._conditional
        keep_alive = parser.should_keep_alive()
        if headers:
            if "upgrade" in headers and parser.should_upgrade():
                keep_alive = False  # nothing after an upgrade request can be parsed
            if "transfer-encoding" in headers and version == "1.0":
                keep_alive = False  # RFC 9112 §6.1: framing a 1.0 peer cannot have meant
        self._next_message()
        if url.startswith(b"/") and b"?" not in url and b"#" not in url:
            path, query = url, b""
        else:
            try:
                path, query = split_target(url)
            except BadTarget as exc:
                raise Reject(exc.status, exc.reason) from None
        request = Request(parser.get_method(), path, query, version, headers, keep_alive,
                          conditional)
        if self.busy or self.queue or self.write_paused:
            self.queue.append(request)
            if len(self.queue) >= MAX_PIPELINE:
                self.transport.pause_reading()
        else:
            self._dispatch(request)

    # -- answering ----------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        """Answer from memory if possible, else start the slow path as a task."""
        site = self.site
        status = method_status(request.method)
        if status:
            self._send_error(request, status)
            return
        content = site.content
        entry = content.fresh(request.path)
        if entry is not None and entry.kind != MISSING:
            plan = site.responder.respond(request, entry)
            file = plan.file
            if plan.status >= 400:
                pass  # error pages and listings may replace it: the slow path decides
            elif file is None:
                self._send(request, plan, plan.body)
                return
            elif file.size <= content.max_object or file.generated:
                data = content.cached_body(file)
                if data is not None:
                    if plan.part_heads or plan.length != len(data):
                        data = body_of(plan, data)
                    self._send(request, plan, data)
                    return
            else:
                self._stream_now(request, plan)
                return
        self._start(request, self._answer_retrying(request, entry))

    def _start(self, request: Request, work: Coroutine[Any, Any, None]) -> None:
        """Go on with a response in a task; the connection is busy until it is done, and
        still has a deadline: each wait (disk or socket) must end within send_timeout."""
        self.busy = True
        started = monotonic()
        self.deadline = started + self.site.config.send_timeout
        self.task = asyncio.get_running_loop().create_task(work)
        self.task.add_done_callback(partial(self._slow_done, request, started))

    def _stream_now(self, request: Request, plan: Plan) -> None:
        """A large file: its head and as much of its body as goes without waiting (sendfile
        from resident pages), here and now; a task sends the rest if something must wait."""
        self._head_sent = False
        close = self._write_head(request, plan)
        try:
            position = None if request.method == b"HEAD" else self._pump(plan, 0, -1)
        except (FileChanged, OSError) as exc:
            self._fail(request, exc)
            return
        if position is None:
            self._done(close)
        else:
            self._start(request, self._stream_rest(plan, position, close))

    async def _answer_retrying(self, request: Request, entry: Entry | None) -> None:
        try:
            await self._answer(request, entry)
        except FileChanged:
            if self._head_sent:
                raise
            # Nothing sent yet: look the file up again and answer with its new version.
            await self._answer(request, None)

    def _slow_done(self, request: Request, started: float, task: asyncio.Task) -> None:
        """The slow part of a response ended: report how, then carry on with the queue. A
        cancelled task means the connection is gone (connection_lost cancels it)."""
        self.task = None
        self.site.stats.slow_requests.observe(monotonic() - started)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fail(request, exc)
        self._finished()

    def _fail(self, request: Request, exc: BaseException) -> None:
        """The one place where a failure becomes an answer: an error response while nothing
        of the response has gone out, else a closed connection (only closing is honest)."""
        if isinstance(exc, ConnectionError):
            self.abort()  # the client went away (seen by our own sendfile): nothing to report
            return
        if isinstance(exc, DiskUnavailable):
            self.site.stats.unavailable += 1
            status, detail, why = 503, "the server is busy, try again", str(exc)
        elif isinstance(exc, FileChanged):
            status, detail = 503, "the file changed while being read, try again"
            why = "the file changed while being sent"
        elif isinstance(exc, OSError):
            status, detail, why = 500, "", str(exc)
        else:
            log.error("%s %s: internal error", self.peer, request.target_text, exc_info=exc)
            self.abort()
            return
        log.error("%s %s: %s", self.peer, request.target_text, why)
        self._send_error(request, status, detail)

    async def _answer(self, request: Request, entry: Entry | None) -> None:
        site = self.site
        self._head_sent = False
        try:
            plan, entry = await self._plan(request, entry)
        except BadTarget as exc:
            log.info("%s %s: %s", self.peer, request.target_text, exc.reason)
            plan = site.responder.error(exc.status, exc.reason)
        if plan.status >= 400 and plan.file is None:
            plan = await site.documents.replace(request, plan, entry)
        if plan.file is None:
            self._send(request, plan, plan.body)
        elif await self._send_file(request, plan):
            self.close_idle()

    async def _plan(self, request: Request, entry: Entry | None) -> tuple[Plan, Entry]:
        """Translate the path if the cache could not, then decide the response."""
        site = self.site
        if entry is None:
            target = to_target(request.path, site.config.show_dotfiles)
            try:
                entry = await site.content.resolve(request.path, target.relpath,
                                                   target.directory and target.relpath != "")
            except DiskUnavailable:
                # Stale if error: an entry we had is better than a 503 while the disk
                # layer is saturated (the next request looks again).
                entry = site.content.paths.get(request.path)
                if entry is None:
                    raise
                log.warning("%s %s: disk layer unavailable, answering from a stale entry",
                            self.peer, request.target_text)
        if entry.kind == MISSING:
            entry = await site.documents.fallback(request) or entry
        return site.responder.respond(request, entry), entry

    async def _send_file(self, request: Request, plan: Plan) -> bool:
        """Send plan.head and then the file's spans: a small file whole (and into the data
        cache), a large one in bounded chunks, pausing while the transport's buffer is full.
        Returns whether the connection must close afterwards."""
        content = self.site.content
        file = plan.file
        if file.size <= content.max_object or file.generated:
            data = content.cached_body(file) or await content.body(file)
            return self._send(request, plan, body_of(plan, data), carry_on=False)
        close = self._write_head(request, plan)
        if request.method != b"HEAD":
            await self._stream_rest(plan, self._pump(plan, 0, -1), close, finish=False)
        return close

    def _pump(self, plan: Plan, index: int, offset: int) -> tuple[int, int] | None:
        """Send the plan's file spans from (span index, offset; -1 = before its part head)
        for as long as nothing has to wait. Returns where it stopped (the disk or a full
        socket must be waited for), or None when the body is all written.

        Zero-copy for the bytes mincore calls resident; when the socket is full, a small piece
        goes through the transport instead, whose buffer then pauses us until it drains (the
        write buffer's limits are 0), so a slow reader costs at most that piece. Files that
        cannot be sent zero-copy go in chunks through memory. The last bytes always go through
        memory, read and checked before they are written: a file rewritten during a sendfile is
        caught by that check, so a response can only be complete if its file never changed.
        """
        transport = self.transport
        content = self.site.content
        file = plan.file
        spans = plan.spans
        while index < len(spans):
            start, end = spans[index]
            if offset < 0:
                if plan.part_heads:
                    transport.write(plan.part_heads[index])
                offset = start
            while offset <= end:
                if self.write_paused:
                    return index, offset
                left = end + 1 - offset
                if left > SENDFILE_TAIL and file.mapping >= 0:
                    sent = content.sendfile(self._sock_fd, file, offset, left - SENDFILE_TAIL)
                    if sent is None:
                        return index, offset  # not in the page cache: the disk first
                    if sent:
                        offset += sent
                        continue
                    left = min(left, WAIT_CHUNK)
                data = content.read_nowait(file, offset, min(STREAM_CHUNK, left))
                if data is None:
                    return index, offset
                transport.write(data)
                offset += len(data)
            index, offset = index + 1, -1
        if plan.trailer:
            transport.write(plan.trailer)
        return None

    async def _stream_rest(self, plan: Plan, position: tuple[int, int] | None, close: bool,
                           finish: bool = True) -> None:
        """Finish what _pump could not: wait for the socket, or for the disk layer.

        A file this process can send from the page cache is warmed by a helper (read into the
        page cache) one window at a time, the next window's warm running while the current one
        is sent, so the disk keeps streaming while the socket drains; the loop itself only
        ever sends what mincore calls resident. When a warmed window still cannot be sent
        (evicted at once, under memory pressure) or the file's descriptor is a helper's, its
        bytes come through the disk layer instead.
        """
        content = self.site.content
        file = plan.file
        ahead: asyncio.Task | None = None  # the warm of the window after the current one
        ahead_at = warmed_at = None
        try:
            while position is not None:
                self.deadline = monotonic() + self.site.config.send_timeout
                index, offset = position
                end = plan.spans[index][1] + 1
                if self.write_paused:
                    await self._wait_writable()
                elif position != warmed_at and content.can_warm(file):
                    if ahead is not None and ahead_at == position:
                        await ahead
                    else:
                        _drop(ahead)
                        await content.warm(file, offset, min(WARM_WINDOW, end - offset))
                    warmed_at = position
                    ahead_at = (index, min(offset + WARM_WINDOW, end))
                    ahead = None
                    if ahead_at[1] < end:
                        ahead = asyncio.get_running_loop().create_task(content.warm(
                            file, ahead_at[1], min(WARM_WINDOW, end - ahead_at[1])))
                else:
                    data = await content.read(file, offset, min(STREAM_CHUNK, end - offset))
                    self.transport.write(data)
                    offset += len(data)
                position = self._pump(plan, index, offset)
        finally:
            _drop(ahead)
        if finish:
            self._done(close)

    async def _wait_writable(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def _head_end(self, request: Request, plan: Plan) -> bytes:
        """Date, Connection and the blank line that end every head we send."""
        if not request.keep_alive or plan.close or self.site.stopping:
            end = _END_CLOSE
        elif request.version == "1.0":
            end = _END_KEEP_ALIVE_10
        else:
            end = _END
        return self.site.date.line + end

    def _write_head(self, request: Request, plan: Plan) -> bool:
        """Write the head of a streamed response; returns whether to close afterwards."""
        end = self._head_end(request, plan)
        self.transport.write(plan.head + end)
        self._head_sent = True
        head_only = request.method == b"HEAD"
        self.site.log_request(self.log_prefix, request, plan.status,
                              0 if head_only else plan.length)
        return end.endswith(_END_CLOSE)

    def _send(self, request: Request, plan: Plan, body: bytes | None,
              carry_on: bool = True) -> bool:
        """Write a response whose body is in memory. With carry_on (the synchronous paths),
        close the connection or arm the keep-alive deadline; else return whether to close."""
        site = self.site
        end = self._head_end(request, plan)
        if request.method == b"HEAD":
            body = None
        if body is None:
            self.transport.write(plan.head + end)
        elif len(body) <= SMALL_WRITE:
            self.transport.write(b"".join((plan.head, end, body)))
        else:
            self.transport.write(plan.head + end)
            self.transport.write(body)
        site.log_request(self.log_prefix, request, plan.status,
                         0 if body is None else plan.length)
        close = end.endswith(_END_CLOSE)
        if carry_on:
            self._done(close)
        return close

    def _done(self, close: bool) -> None:
        """A response is all written: close, or wait for the next request."""
        self._head_sent = False
        if close:
            self.close_idle()
        elif not self.busy:
            self.deadline = monotonic() + self.site.config.keepalive_timeout

    def _send_error(self, request: Request, status: int, detail: str = "") -> None:
        """An error instead of the response; after a head went out, only closing is honest."""
        if self._head_sent:
            self.abort()
            return
        plan = self.site.responder.error(status, detail)
        self._send(request, plan, plan.body)

    def _finished(self) -> None:
        """The slow path's response is written: carry on with queued requests."""
        self.busy = False
        self._head_sent = False
        if self.closed:
            return
        if self._last_request_seen and not self.queue:
            self.close_idle()
            return
        self.deadline = monotonic() + self.site.config.keepalive_timeout
        self._run_queue()

    def _run_queue(self) -> None:
        queue = self.queue
        while queue and not self.busy and not self.write_paused and not self.closed:
            item = queue.popleft()
            if isinstance(item, Request):
                self._dispatch(item)
            else:
                self._send(_UNPARSED, item, item.body)
        if queue or self.closed or self.transport is None:
            return
        if self._last_request_seen and not self.busy:
            self.close_idle()
        elif not self._rejected:
            self.transport.resume_reading()

    def _reject(self, status: int, detail: str) -> None:
        """A request we cannot parse or will not serve: answer it after the requests before it
        (they were valid and keep their place) and close; nothing after it is read."""
        log.info("%s: %d %s", self.peer, status, detail)
        self.site.stats.rejected += 1
        self._rejected = True
        self.transport.pause_reading()
        plan = self.site.responder.error(status, detail, close=True)
        if self.busy or self.queue or self.write_paused:
            self.queue.append(plan)
        else:
            self._send(_UNPARSED, plan, plan.body)

    def eof_received(self) -> bool:
        """The client half-closed: answer what it already sent, then close."""
        self._last_request_seen = True
        return bool(self.busy or self.queue)

    def close_idle(self) -> None:
        """Close after what is written has been sent; the connection stays counted until the
        transport reports it lost, so a draining server waits for those bytes too."""
        self.closed = True
        self.deadline = monotonic() + self.site.config.send_timeout
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def check_deadline(self, now: float) -> None:
        """Called by the server's sweep: drop connections whose current phase took too long."""
        if self.deadline and now > self.deadline:
            self.site.stats.timeouts += 1
            self.abort()
