"""One HTTP/1.x connection: an asyncio.Protocol whose methods are the events it receives.

The connection reads requests (`RequestReader`, its base class: the httptools callbacks), keeps
them in order (a request arriving while another is answered waits in a short queue: pipelining),
and answers each one in the cheapest way that is right:

- prepared: a plain keep-alive GET whose whole response is kept (`flashsrv.prepared`): one
  dict lookup and one write;
- from memory: a fresh path-cache entry whose bytes are in the data cache (or a large file
  whose first bytes are resident): answered inside `data_received`;
- slow: anything that needs the disk layer or a document step runs as a task (`handler`
  decides, `ResponseSender` sends); the connection is ANSWERING and queues what follows.

Its phase says what it waits for, and the phase alone sets its deadline (`flashsrv.phases`),
which the server's periodic sweep checks: the hot path only stores a number.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

from flashsrv.connection_base import PhasedConnection, reclaim_one
from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.entries import Entry
from flashsrv.h2_connection import H2Connection
from flashsrv.handler import before_files, decide, failure, from_cache
from flashsrv.phases import ANSWERING, CLOSING, HEAD, IDLE, NEW, SENDING
from flashsrv.request_reader import RequestReader
from flashsrv.responder import Plan, Request, body_of, error_plan
from flashsrv.response_sender import ResponseSender
from flashsrv.site import KeptStream

if TYPE_CHECKING:
    from flashsrv.site import Docroot, Site

log = logging.getLogger("flashsrv.connection")

MAX_PIPELINE = 32
# What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_END_CLOSE = b"Connection: close\r\n\r\n"
_END_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n\r\n"
_END = b"\r\n"
# Stands in for the request line of something that could not be parsed (for the access log).
_UNPARSED = Request(b"-", b"-", b"", "1.1", {}, False, False)


def _keepable(request: Request, plan: Plan, entry: Entry) -> bool:
    """Whether the next plain keep-alive GET of this target may get this answer again: a 200
    of a file with one representation, asked without conditions."""
    return (plan.status == 200 and len(entry.variants) == 1 and not entry.vary
            and request.method == b"GET" and request.keep_alive and request.version == "1.1"
            and not request.conditional and not plan.close)


class HttpConnection(PhasedConnection, RequestReader, asyncio.Protocol):
    def __init__(self, site: Site, tls: bool = False) -> None:
        self.site = site
        self.tls = tls
        # Strict-Transport-Security belongs on TLS responses only; such a connection leaves
        # the prepared lane (its kept responses do not carry the field).
        self.hsts = site.hsts_line if tls else b""
        # Plain HTTP when --redirect-http: every request is sent to the https origin.
        self.to_https = not tls and site.config.redirect_http and site.config.tls_cert is not None
        self.local_host = ""  # the address a request without Host reached (for to_https)
        # The log's wish is read once per connection: after a reload that switches to a
        # format recording Referer and User-Agent, older connections log them as "-".
        log_headers = site.access_log is not None and site.access_log.reads_headers
        super().__init__(log_headers, site.prepared.repeats(log_headers))
        # Set by connection_made, before any byte arrives: the methods the request reader
        # calls (and the answering that follows) assert it for the type checker.
        self.transport: asyncio.Transport | None = None
        self.sender: ResponseSender
        self.queue: deque[Request | Plan] = deque()
        self.phase = NEW
        self.deadline = 0.0
        self.task: asyncio.Task | None = None
        self.peer = "-"
        self.log_addr = b"-"
        self._began = 0.0  # when the request being answered was taken up (monotonic)
        self._head_sent = False
        self._rejected = False
        self._last_request_seen = False

    # -- phases ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.phase == ANSWERING

    @property
    def closed(self) -> bool:
        return self.phase == CLOSING

    @property
    def reclaimable(self) -> bool:
        """Waiting for a request (idle keep-alive, or nothing or part of a head sent): closing
        it loses no response, which is what makes room for a new client under a flood."""
        return self.phase in (NEW, IDLE, HEAD) and not self.queue

    def check_deadline(self, now: float) -> None:
        """Called by the server's sweep: drop connections whose current phase took too long."""
        if now > self.deadline:
            self.site.stats.timeouts += 1
            self.abort()

    # -- transport events ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        site = self.site
        if self.to_https:
            local = transport.get_extra_info("sockname")
            self.local_host = f"[{local[0]}]" if ":" in local[0] else local[0]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.log_addr = self.peer.encode()
        self.sender = ResponseSender(transport, site.content, zero_copy=not self.tls)
        if site.stopping or (len(site.connections) >= site.config.max_connections
                             and not reclaim_one(site.connections)):
            site.stats.refused += 1
            plan = error_plan(503, "too many connections", close=True)
            self.phase = CLOSING
            self._input_closed = True
            transport.write(plan.head + _END_CLOSE + (plan.body or b""))
            transport.close()
            return
        site.connections[self] = None
        self._enter(NEW)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        if self.task is not None:
            self.task.cancel()
        self.sender.lost()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.sender.pause()
        if self.phase == ANSWERING:
            self._enter(ANSWERING)
        elif self.phase != CLOSING:
            self._enter(SENDING)

    def resume_writing(self) -> None:
        self.sender.resume()
        if self.phase == ANSWERING:
            self._enter(ANSWERING)
        elif self.phase == SENDING:
            self._between_requests()
            self._run_queue()

    def eof_received(self) -> bool:
        """The client half-closed: answer what it already sent, then close. (TLS has no
        half-close: its transport closes after this whatever we return.)"""
        self._last_request_seen = True
        return not self.tls and bool(self.busy or self.queue)

    # -- what the request reader hands over ---------------------------------------------------

    def head_started(self) -> None:
        """Unless a response is in progress (a pipelined request), a head that has begun must
        arrive within header_timeout of the read that began it."""
        if self.phase is IDLE or self.phase is NEW:
            self._enter(HEAD)

    def body_started(self) -> None:
        if self.phase is IDLE or self.phase is NEW or self.phase is HEAD:
            self._enter(HEAD)

    def answer_prepared(self, target: bytes, host: bytes, headers: dict[str, str]) -> bool:
        site = self.site
        table = site.prepared
        # With virtual hosts a kept response belongs to the Host it was asked of too.
        key = target if site.hosts is None else host + b"\n" + target
        prepared = table.get(key)
        kept = None if prepared is not None else table.streams.get(key)
        phase = self.phase
        if ((prepared is None and kept is None) or self.hsts or self.to_https
                or (phase is not IDLE and phase is not HEAD and phase is not NEW)
                or self.queue):
            return False
        if prepared is None:
            assert kept is not None  # one of the two was found
            if not kept.current():
                del table.streams[key]  # changed or stale: the full path looks it up again
                return False
            table.stream_hits += 1
            self._stream_kept(kept, headers)
            return True
        response, length = prepared
        assert self.transport is not None
        now = monotonic()  # the log's start of this request and the idle deadline's base
        self.transport.write(response)
        table.hits += 1  # counted as 200s by the admin endpoint
        table.bytes_sent += length
        if site.access_log is not None:
            # A prepared response has one representation: no Content-Encoding (head b"").
            site.access_log.write(self.log_addr, b"GET", target, "1.1", 200, length,
                                  headers, b"", now)
        if self.phase is phase:  # not paused by that write
            self.phase = IDLE
            self.deadline = now + site.timeouts[IDLE]
        return True

    def request_received(self, request: Request) -> None:
        if self.busy or self.queue or self.sender.paused:
            self.queue.append(request)
            if len(self.queue) >= MAX_PIPELINE:
                assert self.transport is not None
                self.transport.pause_reading()
        else:
            self._dispatch(request)

    def expect_continue(self) -> None:
        if not self.busy and not self.queue:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def upgrade_seen(self) -> None:
        """A static server upgrades nothing: the request was answered as a plain one, and
        since nothing after it can be parsed, the connection ends with its response."""
        self._last_request_seen = True
        if not self.busy and not self.queue:
            self.close_idle()

    def preface_received(self, data: bytes) -> bool:
        """h2c with prior knowledge: when the preface opens this plain connection's first
        read (every client sends its 24 bytes in one write), HTTP/2 takes the transport over
        and is given those bytes again; anywhere else it is a bad request."""
        if self.phase is not NEW or self.tls or not data.startswith(H2_PREFACE):
            return False
        assert self.transport is not None
        self._gone()
        protocol = H2Connection(self.site, tls=False)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(data)
        return True

    def reject(self, status: int, detail: str) -> None:
        """A request we cannot parse or will not serve: answer it after the requests before it
        (they were valid and keep their place) and close; nothing after it is read. Bytes
        that follow a response that closes the connection are not a request: ignored."""
        if self._input_closed:
            return
        log.info("%s: %d %s", self.peer, status, detail)
        self.site.stats.rejected += 1
        self._rejected = self._input_closed = True
        assert self.transport is not None
        self.transport.pause_reading()
        plan = self.site.responder.error(status, detail, close=True)
        if self.busy or self.queue or self.sender.paused:
            self.queue.append(plan)
        else:
            self._refuse(plan)

    # -- answering ----------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        """Answer from memory if possible, else start the slow path as a task."""
        self._began = monotonic()
        site = self.site
        plan = before_files(site, request, self.to_https, self.local_host)
        if plan is not None:
            self._send(request, plan, plan.body)
            return
        docroot, entry, plan, data = from_cache(site, request)
        if docroot is None:
            self._send_error(request, int(site.config.unknown_host))
            return
        self.sender.content = docroot.content  # its files' bytes come through its helpers
        if plan is None:
            self._start(request, self._answer_retrying(request, entry, docroot))
        elif data is not None:
            if entry is not None and _keepable(request, plan, entry):
                site.prepared.keep(self._kept_key(request),
                                   (plan.head, site.date.line, _END, data))
            self._send(request, plan, data)
        elif plan.file is None:
            self._send(request, plan, None)
        else:
            if entry is not None and _keepable(request, plan, entry) and not plan.part_heads:
                site.prepared.keep_stream(self._kept_key(request), KeptStream(
                    plan, entry, docroot.content, request.path, request.query))
            self._stream_now(request, plan)

    def _kept_key(self, request: Request) -> bytes:
        """What a kept answer is found by: the target, and with virtual hosts the Host too."""
        if self.site.hosts is None:
            return request.target
        return request.headers["host"].encode("latin-1") + b"\n" + request.target

    def _stream_kept(self, kept: KeptStream, headers: dict[str, str]) -> None:
        """A plain keep-alive GET of a file streamed before: its plan again (head, file and
        spans), with the residency and the version of the file checked as always."""
        self._next_message()  # before the answer, whose next phase looks at the next message
        self._began = monotonic()
        self.sender.content = kept.content
        self._stream_now(Request(b"GET", kept.path, kept.query, "1.1", headers, True, False),
                         kept.plan)

    def _start(self, request: Request, work: Coroutine[Any, Any, None]) -> None:
        """Go on with a response in a task; the connection is ANSWERING until it is done."""
        self._enter(ANSWERING)
        self.task = asyncio.get_running_loop().create_task(work)
        self.task.add_done_callback(partial(self._slow_done, request, monotonic()))

    def _stream_now(self, request: Request, plan: Plan) -> None:
        """A large file: its head and as much of its body as goes without waiting (sendfile
        from resident pages), here and now; a task sends the rest if something must wait."""
        close = self._write_head(request, plan)
        try:
            position = None if request.method == b"HEAD" else self.sender.pump(plan)
        except OSError as exc:  # FileChanged is one
            self._fail(request, exc)
            return
        if position is None:
            self._done(close)
        else:
            self._start(request, self._stream(plan, position, close))

    async def _stream(self, plan: Plan, position: tuple[int, int], close: bool) -> None:
        await self.sender.stream(plan, position, self._answering)
        if close:
            self.close_idle()

    def _answering(self) -> None:
        """A streamed response made progress: its next wait gets a whole send_timeout."""
        self._enter(ANSWERING)

    async def _answer_retrying(self, request: Request, entry: Entry | None, docroot: Docroot
                               ) -> None:
        try:
            await self._answer(request, entry, docroot)
        except FileChanged:
            if self._head_sent:
                raise
            # Nothing sent yet: look the file up again and answer with its new version.
            await self._answer(request, None, docroot)

    async def _answer(self, request: Request, entry: Entry | None, docroot: Docroot) -> None:
        self._head_sent = False
        plan = await decide(docroot, request, entry, self.peer)
        if plan.file is None:
            close = self._send(request, plan, plan.body, carry_on=False)
        elif docroot.content.from_memory(plan.file):
            data = await docroot.content.whole(plan.file)
            close = self._send(request, plan, body_of(plan, data), carry_on=False)
        else:
            close = self._write_head(request, plan)
            if request.method != b"HEAD":
                await self.sender.stream(plan, self.sender.pump(plan), self._answering)
        if close:
            self.close_idle()

    def _slow_done(self, request: Request, started: float, task: asyncio.Task) -> None:
        """The slow part of a response ended: report how, then carry on with the queue. A
        cancelled task means the connection is gone (connection_lost cancels it)."""
        self.task = None
        self.site.stats.slow_requests.observe(monotonic() - started)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fail(request, exc)
        self._finished()

    def _fail(self, request: Request, exc: BaseException) -> None:
        """An error response while nothing of the response has gone out, else a closed
        connection (only closing is honest); `handler.failure` says which error."""
        answer = failure(exc)
        if answer is None:
            self.abort()
            return
        status, detail, why = answer
        if isinstance(exc, DiskUnavailable):
            self.site.stats.unavailable += 1
        log.error("%s %s: %s", self.peer, request.target_text, why)
        self._send_error(request, status, detail)

    # -- writing ------------------------------------------------------------------------------

    def _head_end(self, request: Request, plan: Plan) -> bytes:
        """Date, Connection and the blank line that end every head we send."""
        if not request.keep_alive or plan.close or self.site.stopping:
            end = _END_CLOSE
        elif request.version == "1.0":
            end = _END_KEEP_ALIVE_10
        else:
            end = _END
        return self.site.date.line + self.hsts + end

    def _log(self, request: Request, plan: Plan, sent_body: bool) -> None:
        self.site.log_request(self.log_addr, request.method, request.target, request.version,
                              plan.status, plan.length if sent_body else 0, request.headers,
                              plan.head, self._began)

    def _write_head(self, request: Request, plan: Plan) -> bool:
        """Write the head of a streamed response; returns whether to close afterwards."""
        end = self._head_end(request, plan)
        assert self.transport is not None
        self.transport.write(plan.head + end)
        self._head_sent = True
        self._log(request, plan, request.method != b"HEAD")
        return end.endswith(_END_CLOSE)

    def _send(self, request: Request, plan: Plan, body: bytes | bytearray | None,
              carry_on: bool = True) -> bool:
        """Write a response whose body is in memory. With carry_on (the synchronous paths),
        close the connection or wait for the next request; else return whether to close."""
        end = self._head_end(request, plan)
        if request.method == b"HEAD":
            body = None
        self.sender.send(plan.head + end, body)
        self._log(request, plan, body is not None)
        close = end.endswith(_END_CLOSE)
        if carry_on:
            self._done(close)
        return close

    def _done(self, close: bool) -> None:
        """A response written synchronously: close, or wait for the next request."""
        self._head_sent = False
        if close:
            self.close_idle()
        elif self.phase != ANSWERING and self.phase != CLOSING:
            self._between_requests()

    def _between_requests(self) -> None:
        """The phase after a response: its bytes still wait in the transport, or the next
        request has already begun (pipelined), or nothing has."""
        if self.sender.paused:
            self._enter(SENDING)
        else:
            self._enter(HEAD if self._url or self._body_bytes else IDLE)

    def _send_error(self, request: Request, status: int, detail: str = "") -> None:
        """An error instead of the response; after a head went out, only closing is honest."""
        if self._head_sent:
            self.abort()
            return
        plan = self.site.responder.error(status, detail)
        self._send(request, plan, plan.body)

    def _finished(self) -> None:
        """The slow path's response is written: carry on with queued requests."""
        self._head_sent = False
        if self.phase == CLOSING:
            return
        if self._last_request_seen and not self.queue:
            self.close_idle()
            return
        self._between_requests()
        self._run_queue()

    def _refuse(self, plan: Plan) -> None:
        """Send the refusal of a request that could not be parsed, now that its turn came."""
        self._began = monotonic()
        self._send(_UNPARSED, plan, plan.body)

    def _run_queue(self) -> None:
        queue = self.queue
        while queue and self.phase in (IDLE, HEAD):
            item = queue.popleft()
            if isinstance(item, Request):
                self._dispatch(item)
            else:
                self._refuse(item)
        if queue or self.phase == CLOSING or self.transport is None:
            return
        if self._last_request_seen and not self.busy:
            self.close_idle()
        elif not self._rejected:
            self.transport.resume_reading()

    # -- closing ------------------------------------------------------------------------------

    def close_idle(self) -> None:
        """Close after what is written has been sent; the connection stays counted until the
        transport reports it lost, so a draining server waits for those bytes too."""
        self._enter(CLOSING)
        self._input_closed = True
        if self.transport is not None:
            self.transport.close()

    def drain_idle(self) -> None:
        """Shutting down: close now if no response is being written."""
        if self.reclaimable and not self.sender.paused:
            self.close_idle()
