"""One HTTP/2 connection (RFC 9113): the `h2` state machine behind an asyncio.Protocol.

Each stream is a GET or HEAD answered on the HTTP/1.1 path: `handler.from_cache` when the
caches hold the answer, else `handler.decide` in a task; the responder's plan and the content
layer's bytes are the same, only the framing differs. Heads become header lists (`h2_fields`),
bodies become DATA frames within the peer's flow-control windows, one frame per ready stream
in turn, and only while the transport takes them. File bytes come from `content.read_nowait`
when resident, else a task has a helper warm or read them: the loop never waits for the disk
and never uses sendfile (every byte goes inside a frame).

The phase (`flashsrv.phases`) sets the connection's deadline as for HTTP/1.1: NEW until the
first request, IDLE while no stream is open, ANSWERING while one is (renewed by progress),
CLOSING. A stream that makes no progress for send_timeout (a zero window) is reset alone.

Defences, each bounded per connection: header lists (hpack) and header blocks (CONTINUATION
floods) by size, streams by number, closed-stream memory, the HPACK tables, output (reading
pauses while the socket is full), and per-second counts of client resets (rapid reset), new
streams, control frames (SETTINGS, PING, PRIORITY, empty DATA, unknown) and WINDOW_UPDATEs;
past a bound the connection gets GOAWAY ENHANCE_YOUR_CALM, or, for new streams, a pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

import h2.connection
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
)
from h2.exceptions import DenialOfServiceError, ProtocolError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from h2.utilities import HeaderValidationFlags, validate_headers
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from flashsrv.connection_base import PhasedConnection, reclaim_one
from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.entries import Entry, OpenFile
from flashsrv.fields import valid_host
from flashsrv.handler import before_files, decide, failure, from_cache
from flashsrv.phases import ANSWERING, CLOSING, IDLE, NEW
from flashsrv.request_reader import (
    CONDITIONAL_HEADERS,
    MAX_HEADERS,
    MAX_URL_BYTES,
    SEMANTIC_AND_LOGGED,
    SEMANTIC_HEADERS,
)
from flashsrv.responder import Plan, Request, body_of
from flashsrv.response_sender import WARM_WINDOW
from flashsrv.urlpath import BadTarget, split_target

if TYPE_CHECKING:
    from flashsrv.content import Content
    from flashsrv.site import Docroot, Site

log = logging.getLogger("flashsrv.connection")

MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 16 << 10  # decoded, as RFC 9113 §6.5.2 counts it; enforced by hpack
# Encoded bytes of one HEADERS + CONTINUATION block. h2 bounds only the number of frames (64,
# up to 1 MiB); an honest block is never much larger than the list it decodes to.
MAX_HEADER_BLOCK = 2 * MAX_HEADER_LIST_SIZE
# The HPACK dynamic table in each direction (RFC 7541 §4.2); the encoder's is capped here
# whatever size the client allows, since it holds every distinct field we send.
HEADER_TABLE_SIZE = 4096
# How many closed streams h2 remembers (to tell late frames from errors); its default, 65536,
# would let one long connection hold megabytes.
CLOSED_STREAMS_KEPT = 1024
# The flood counters' window, and what a client may do in one.
FLOOD_WINDOW = 1.0
MAX_RESETS = 100  # streams the client opens and then resets (CVE-2023-44487)
MAX_NEW_STREAMS = 10_000  # past it, reading pauses until the window ends
MAX_CONTROL_FRAMES = 100  # SETTINGS, PING, PRIORITY, empty DATA and unknown frames together
# Input goes to h2 this much at a time, so that a flood is seen (and stopped) before one read
# of it has all been parsed.
INPUT_SLICE = 16 << 10
# File bytes read at a time (bounded by the windows, so a stalled stream holds little).
FILE_CHUNK = 64 << 10
# Frames produced per turn of the loop before other connections get theirs.
FLUSH_BYTES = 256 << 10
# The transport pauses us (and we stop reading) above this many unsent bytes: a few frames of
# slack keep the socket busy while the next ones are made.
WRITE_HIGH = 64 << 10
WRITE_LOW = 16 << 10
# Converted heads kept (`h2_fields`); past this many it starts again.
MAX_FIELD_LISTS = 4096

Fields = list[tuple[bytes, bytes]]
_REQUEST_FLAGS = HeaderValidationFlags(is_client=False, is_trailer=False,
                                       is_response_header=False, is_push_promise=False)
# Connection-specific fields (RFC 9113 §8.2.2) an HTTP/1.1 head may carry.
_NOT_IN_H2 = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade",
                        b"proxy-connection"})
_field_lists: dict[bytes, Fields] = {}


def h2_fields(head: bytes) -> Fields:
    """An HTTP/1.1 head (status line and header lines, as the responder builds it) as an
    HTTP/2 field list: `:status` first, lower-case names, no connection-specific fields.
    Kept by head bytes, which the responder caches per file version: one lookup per response.
    """
    fields = _field_lists.get(head)
    if fields is None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = [(b":status", status_line.split(" ", 2)[1].encode())]
        for line in lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name and name.encode() not in _NOT_IN_H2:
                fields.append((name.encode(), value.strip().encode("latin-1")))
        if len(_field_lists) >= MAX_FIELD_LISTS:
            _field_lists.clear()
        _field_lists[head] = fields
    return fields


class _InboundFrames(FrameBuffer):
    """h2's frame buffer, counting what the client sends per FLOOD_WINDOW and refusing a
    header block whose encoded size passes MAX_HEADER_BLOCK while it arrives (h2 counts only
    CONTINUATION frames). Every frame passes here, whatever h2 makes of it afterwards (a frame
    on a closed stream raises no event), so these are the client's own counts; past a bound,
    h2 answers the DenialOfServiceError with GOAWAY ENHANCE_YOUR_CALM."""

    def __init__(self) -> None:
        super().__init__(server=True)
        self.block_bytes = 0
        self.window_end = 0.0
        self.resets = self.control = self.window_updates = 0
        self.data_frames_sent = 0  # each may earn the client two WINDOW_UPDATEs

    def roll(self, now: float) -> None:
        """Start a new window (the current one is over)."""
        self.window_end = now + FLOOD_WINDOW
        self.resets = self.control = self.window_updates = self.data_frames_sent = 0

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        kind = type(f)
        if kind is DataFrame:
            assert isinstance(f, DataFrame)
            if not f.data and "END_STREAM" not in f.flags:
                self._control("empty DATA")
        elif kind is WindowUpdateFrame:
            self.window_updates += 1
            if self.window_updates > MAX_CONTROL_FRAMES + 2 * self.data_frames_sent:
                raise DenialOfServiceError("WINDOW_UPDATE flood")
        elif kind is RstStreamFrame:
            self.resets += 1
            if self.resets > MAX_RESETS:
                raise DenialOfServiceError("rapid reset")
        elif kind is HeadersFrame:
            assert isinstance(f, HeadersFrame)
            self.block_bytes = len(f.data)
        elif kind is ContinuationFrame:
            assert isinstance(f, ContinuationFrame)
            self.block_bytes += len(f.data)
            if self.block_bytes > MAX_HEADER_BLOCK:
                raise DenialOfServiceError("header block too large")
        elif kind is not GoAwayFrame:  # SETTINGS, PING, PRIORITY, unknown types
            self._control(kind.__name__)
        return super()._update_header_buffer(f)

    def _control(self, what: str) -> None:
        self.control += 1
        if self.control > MAX_CONTROL_FRAMES:
            raise DenialOfServiceError(f"control frame flood ({what})")


class _ServerState(h2.connection.H2Connection):
    """h2's connection state with our bounds (h2 reads these class attributes when built)."""

    DEFAULT_MAX_HEADER_LIST_SIZE = MAX_HEADER_LIST_SIZE  # advertised and enforced at once
    MAX_CLOSED_STREAMS = CLOSED_STREAMS_KEPT

    def __init__(self) -> None:
        # Requests are validated per stream (`_request`), so that a malformed one resets its
        # stream instead of the connection; our own fields need no normalising.
        super().__init__(H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            validate_outbound_headers=False, normalize_outbound_headers=False))
        # Ours from the first SETTINGS frame on (a value set before any is sent needs no ack).
        self.local_settings.max_concurrent_streams = MAX_CONCURRENT_STREAMS
        self.local_settings.acknowledge()
        self.frames = self.incoming_buffer = _InboundFrames()

    def release(self) -> None:
        """Break h2's own reference cycle (its frame dispatch table holds bound methods), so
        that a closed connection's buffers go at once: the server collects cycles rarely, and
        a flood of short connections would pile them up until it does."""
        self._frame_dispatch_table.clear()


Piece = bytes | bytearray | tuple[int, int]  # bytes to send, or an inclusive span of the file


class _Stream:
    """One request and what is left to send of its response."""

    __slots__ = ("began", "content", "file", "head_sent", "id", "pending", "pieces",
                 "progress_at", "request", "task", "warmed")

    def __init__(self, stream_id: int, request: Request, now: float) -> None:
        self.id = stream_id
        self.request = request
        self.began = now
        self.progress_at = now
        self.head_sent = False
        self.task: asyncio.Task | None = None
        self.pending = memoryview(b"")  # bytes ready to frame
        self.pieces: deque[Piece] = deque()  # what follows them
        self.content: Content | None = None  # where the file's bytes come from
        self.file: OpenFile | None = None
        self.warmed = -1  # the offset a helper last warmed (a second miss there reads)


class H2Connection(PhasedConnection, asyncio.Protocol):
    def __init__(self, site: Site, tls: bool = True) -> None:
        self.site = site
        self.tls = tls
        self.h2 = _ServerState()
        self.transport: asyncio.Transport | None = None
        self.phase = NEW
        self.deadline = 0.0
        self.peer = "-"
        self.log_addr = b"-"
        self.streams: dict[int, _Stream] = {}
        self.ready: dict[int, _Stream] = {}  # streams with bytes to send and no task running
        self.paused = False  # the transport's buffer is full
        self._reading = True
        self._input_closed = False
        self._ending = False  # close once the open streams are done (drain, client EOF)
        self._last_stream: int | None = None  # set by our GOAWAY: later streams are refused
        self._flush_soon = False
        self._throttle: asyncio.TimerHandle | None = None  # too many new streams: reading waits
        self._backlog = b""  # input not yet given to h2 when the throttle began
        # The request fields kept: those the answer depends on, and those the log records.
        log_headers = site.access_log is not None and site.access_log.reads_headers
        self._kept = SEMANTIC_AND_LOGGED if log_headers else SEMANTIC_HEADERS
        hsts = site.hsts_line if tls else b""
        self._hsts: Fields = [(b"strict-transport-security",
                               hsts.partition(b":")[2].strip())] if hsts else []
        self.to_https = not tls and site.config.redirect_http and site.config.tls_cert is not None
        self.local_host = ""
        self._date_line = b""
        self._date: Fields = []
        self._new_streams = 0  # in the current flood window

    # -- phases ------------------------------------------------------------------------------

    @property
    def reclaimable(self) -> bool:
        """No stream open: closing it loses no response (see connection.reclaim_one)."""
        return self.phase in (NEW, IDLE) and not self.streams

    def check_deadline(self, now: float) -> None:
        """The server's sweep: a connection idle for too long is closed politely, one that
        could send nothing for send_timeout (its socket or its window full) is aborted, and a
        stream that made no progress for send_timeout (its own window at zero, or a wait for
        the disk) is reset alone."""
        if now > self.deadline and (self.phase is not ANSWERING or self.paused
                                    or self.h2.outbound_flow_control_window <= 0):
            self.site.stats.timeouts += 1
            if self.phase is NEW or self.phase is IDLE:
                self.h2.close_connection(ErrorCodes.NO_ERROR)
                self.close_idle()
            else:
                self.abort()
            return
        if self.streams:
            stalled_since = now - self.site.timeouts[ANSWERING]
            for stream in [s for s in self.streams.values() if s.progress_at < stalled_since]:
                self.site.stats.timeouts += 1
                self._reset(stream, ErrorCodes.CANCEL)
            self._write()

    # -- transport events ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        site = self.site
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.log_addr = self.peer.encode()
        if self.to_https:
            local = transport.get_extra_info("sockname")
            self.local_host = f"[{local[0]}]" if ":" in local[0] else local[0]
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.h2.initiate_connection()
        if site.stopping or (len(site.connections) >= site.config.max_connections
                             and not reclaim_one(site.connections)):
            site.stats.refused += 1
            self.h2.close_connection(ErrorCodes.REFUSED_STREAM, b"too many connections", 0)
            self.close_idle()
            return
        site.connections[self] = None
        self._enter(NEW)
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        if self._throttle is not None:
            self._throttle.cancel()
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self.ready.clear()
        self.h2.release()

    def pause_writing(self) -> None:
        self.paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._update_reading()
        self._flush()

    def eof_received(self) -> bool:
        """The client half-closed: finish the streams it opened, then close."""
        self._input_closed = True
        self._ending = True
        return bool(self.streams)

    def _update_reading(self) -> None:
        """Read while the socket takes our output (replies to control frames cannot pile up)
        and no throttle holds new streams back."""
        want = not self.paused and self._throttle is None and not self._input_closed
        if want != self._reading and self.transport is not None:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- bytes in ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._input_closed:
            return
        now = monotonic()
        frames = self.h2.frames
        if now >= frames.window_end:
            frames.roll(now)
            self._new_streams = 0
        view = memoryview(data)
        for start in range(0, len(data), INPUT_SLICE):
            if self._throttle is not None:
                self._backlog = data[start:]
                break
            if self._input_closed:
                break
            self._receive(view[start : start + INPUT_SLICE], now)
        self._flush()

    def _receive(self, data: memoryview | bytes, now: float) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:  # h2 has queued its GOAWAY
            self._shut(str(exc) or type(exc).__name__)
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._request_received(event, now)
            elif isinstance(event, DataReceived):
                if event.flow_controlled_length:  # a body means nothing here: dropped
                    self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)
            elif isinstance(event, StreamReset):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self._forget(stream)
            elif isinstance(event, ConnectionTerminated):
                self._shut("")
            elif isinstance(event, RemoteSettingsChanged):
                table = event.changed_settings.get(SettingCodes.HEADER_TABLE_SIZE)
                if table is not None and table.new_value > HEADER_TABLE_SIZE:
                    self.h2.encoder.header_table_size = HEADER_TABLE_SIZE
            if self._input_closed:
                return

    def _request_received(self, event: RequestReceived, now: float) -> None:
        stream_id = event.stream_id
        state = self.h2.streams.get(stream_id)
        if state is None or state.closed:
            return  # reset in the same read: nothing to answer
        if self._last_stream is not None and stream_id > self._last_stream:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)  # after our GOAWAY
            return
        self._new_streams += 1
        if self._new_streams > MAX_NEW_STREAMS and self._throttle is None:
            # Enough for this window: the rest of this input slice is answered, the input
            # after it waits for the next window.
            self._throttle = asyncio.get_running_loop().call_later(
                max(0.0, self.h2.frames.window_end - monotonic()), self._end_throttle)
            self._update_reading()
        parsed = self._request(event.headers)
        if parsed is None:
            log.info("%s: malformed HTTP/2 request on stream %d", self.peer, stream_id)
            self.site.stats.rejected += 1
            self.h2.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        request, status = parsed
        stream = _Stream(stream_id, request, now)
        self.streams[stream_id] = stream
        if self.phase is not ANSWERING:
            self._enter(ANSWERING)
        if status:
            self.site.stats.rejected += 1
            self._error(stream, status)
        else:
            self._dispatch(stream)

    def _end_throttle(self) -> None:
        """The window in which too many streams began is over: read (the rest) again."""
        self._throttle = None
        backlog, self._backlog = self._backlog, b""
        if backlog:
            self.data_received(backlog)
        self._update_reading()

    def _request(self, fields: list) -> tuple[Request, int] | None:
        """The Request a stream's fields describe, with the status that refuses it (0: none)
        after the checks the HTTP/1.1 reader makes; None when the fields are malformed (RFC
        9113 §8.1.1: pseudo-header fields, connection-specific fields, characters)."""
        try:
            fields = list(validate_headers(fields, _REQUEST_FLAGS))
        except ProtocolError:
            return None
        method = target = authority = b""
        headers: dict[str, str] = {}
        kept = self._kept
        conditional = False
        count = 0
        for name, value in fields:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                continue
            count += 1
            if name == b"host":
                authority = authority or value  # :authority, when sent, comes first and wins
            elif name in kept:
                if name in CONDITIONAL_HEADERS:
                    conditional = True
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                old = headers.get(key)
                headers[key] = text if old is None else f"{old}, {text}"
        path, query, status = target, b"", 0
        if len(target) > MAX_URL_BYTES:
            status = 414
        elif count > MAX_HEADERS:
            status = 431
        elif authority and not valid_host(authority):
            status = 400
        elif not target.startswith(b"/") or b"?" in target or b"#" in target:
            try:
                path, query = split_target(target)
            except BadTarget as exc:
                status = exc.status
        if authority:
            headers["host"] = authority.decode("latin-1")
        return Request(method, path, query, "2", headers, True, conditional), status

    # -- answering -----------------------------------------------------------------------------

    def _dispatch(self, stream: _Stream) -> None:
        """Answer from memory if possible, else start the slow path as a task."""
        request = stream.request
        site = self.site
        plan = before_files(site, request, self.to_https, self.local_host)
        if plan is not None:
            self._respond(stream, plan, plan.body, site.content)
            return
        docroot, entry, plan, data = from_cache(site, request)
        if docroot is None:
            self._error(stream, int(site.config.unknown_host))
        elif plan is None:
            self._start(stream, self._answer(stream, entry, docroot), slow=True)
        else:
            self._respond(stream, plan, data, docroot.content)

    def _start(self, stream: _Stream, work: Coroutine[Any, Any, None], slow: bool = False
               ) -> None:
        """Go on with a stream in a task (it leaves the ready streams until the task ends)."""
        task = asyncio.get_running_loop().create_task(work)
        stream.task = task
        self.ready.pop(stream.id, None)
        task.add_done_callback(partial(self._task_done, stream, monotonic() if slow else -1.0))

    async def _answer(self, stream: _Stream, entry: Entry | None, docroot: Docroot) -> None:
        try:
            plan, body = await self._decided(stream.request, entry, docroot)
        except FileChanged:
            # Nothing sent yet: look the file up again and answer with its new version.
            plan, body = await self._decided(stream.request, None, docroot)
        stream.task = None  # what is left is synchronous: ending the stream must not cancel us
        self._respond(stream, plan, body, docroot.content)

    async def _decided(self, request: Request, entry: Entry | None, docroot: Docroot
                       ) -> tuple[Plan, bytes | bytearray | None]:
        plan = await decide(docroot, request, entry, self.peer)
        content = docroot.content
        if plan.file is not None and content.from_memory(plan.file):
            return plan, body_of(plan, await content.whole(plan.file))
        return plan, plan.body

    def _task_done(self, stream: _Stream, slow_since: float, task: asyncio.Task) -> None:
        """A slow answer or a file read ended: report how, and go on sending."""
        stream.task = None
        if task.cancelled():
            return  # the stream or the connection is gone
        if slow_since >= 0:
            self.site.stats.slow_requests.observe(monotonic() - slow_since)
        exc = task.exception()
        if exc is not None:
            self._fail(stream, exc)
        elif stream.id in self.streams:
            stream.progress_at = monotonic()
            self.deadline = stream.progress_at + self.site.timeouts[ANSWERING]
            if stream.pending or stream.pieces:
                self.ready[stream.id] = stream
        self._flush()

    def _fail(self, stream: _Stream, exc: BaseException) -> None:
        """An error response while nothing of the response has gone out, else a reset stream
        (only that is honest); `handler.failure` says which error."""
        if stream.id not in self.streams:
            return
        answer = failure(exc)
        if answer is None or stream.head_sent:
            self._reset(stream, ErrorCodes.INTERNAL_ERROR)
            return
        status, detail, why = answer
        if isinstance(exc, DiskUnavailable):
            self.site.stats.unavailable += 1
        log.error("%s %s: %s", self.peer, stream.request.target_text, why)
        self._error(stream, status, detail)

    def _error(self, stream: _Stream, status: int, detail: str = "") -> None:
        plan = self.site.responder.error(status, detail)
        self._respond(stream, plan, plan.body, self.site.content)

    def _respond(self, stream: _Stream, plan: Plan, body: bytes | bytearray | None,
                 content: Content) -> None:
        """Send the head, and make the body (in memory, or the plan's file spans) ready."""
        request = stream.request
        head_only = (request.method == b"HEAD" or plan.length == 0
                     or (body is None and plan.file is None))
        line = self.site.date.line
        if line is not self._date_line:
            self._date_line = line
            self._date = [(b"date", line[6:-2])]
        self.h2.send_headers(stream.id, h2_fields(plan.head) + self._date + self._hsts,
                             end_stream=head_only)
        stream.head_sent = True
        self.site.log_request(self.log_addr, request.method, request.target, "2.0",
                              plan.status, 0 if head_only else plan.length, request.headers,
                              plan.head, stream.began)
        if head_only:
            self._finish(stream)
            return
        if body is not None:
            stream.pending = memoryview(body)
        else:
            file = plan.file
            assert isinstance(file, OpenFile)  # only files on disk stream; others are bytes
            stream.content = content
            stream.file = file
            heads = plan.part_heads
            for index, span in enumerate(plan.spans):
                if heads:
                    stream.pieces.append(heads[index])
                stream.pieces.append(span)
            if plan.trailer:
                stream.pieces.append(plan.trailer)
        self.ready[stream.id] = stream

    # -- bytes out -----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Frame what the ready streams have, one frame per stream in turn, while the windows
        and the socket take them and nothing waits for the disk (up to FLUSH_BYTES per turn of
        the loop); then write h2's output."""
        self._flush_soon = False
        if self.ready and not self.paused and self.phase is not CLOSING:
            h2_state = self.h2
            budget = FLUSH_BYTES
            now = monotonic()
            sent = False
            progressed = True
            while progressed and budget > 0 and self.ready and not self.paused:
                progressed = False
                for stream in list(self.ready.values()):
                    window = h2_state.local_flow_control_window(stream.id)
                    if window <= 0:
                        continue
                    try:
                        chunk = self._chunk(stream, window, h2_state.max_outbound_frame_size)
                    except OSError as exc:  # FileChanged is one
                        self._fail(stream, exc)
                        continue
                    if chunk is None:
                        continue  # a task brings the bytes
                    last = not stream.pending and not stream.pieces
                    h2_state.send_data(stream.id, chunk, end_stream=last)
                    self.h2.frames.data_frames_sent += 1
                    stream.progress_at = now
                    budget -= len(chunk)
                    progressed = sent = True
                    if last:
                        self._finish(stream)
                    if budget <= 0:
                        break
                self._write()
            if sent and self.phase is ANSWERING:
                self.deadline = now + self.site.timeouts[ANSWERING]
            if budget <= 0 and self.ready and not self._flush_soon:
                self._flush_soon = True  # the others' turn first
                asyncio.get_running_loop().call_soon(self._flush)
        self._write()

    def _chunk(self, stream: _Stream, window: int, frame: int) -> memoryview | None:
        """The next frame's worth of the stream's body (within window and frame size) that
        can be had now; None when the disk must be asked first (a task is started for that).
        """
        pending = stream.pending
        while not pending:
            piece = stream.pieces[0]
            if not isinstance(piece, tuple):
                stream.pieces.popleft()
                pending = memoryview(piece)
                continue
            start, end = piece
            file = stream.file
            content = stream.content
            assert file is not None and content is not None
            length = min(FILE_CHUNK, end + 1 - start, window)
            data = content.read_nowait(file, start, length)
            if data is None:
                self._start(stream, self._fetch(stream, content, file, start, end))
                return None
            _advance(stream.pieces, length)
            pending = memoryview(data)
        size = min(window, frame)
        stream.pending = pending[size:]
        return pending[:size]

    async def _fetch(self, stream: _Stream, content: Content, file: OpenFile, start: int,
                     end: int) -> None:
        """Bring a cold file's next bytes within reach: a helper warms the page cache (the loop
        then reads them without waiting), or, when that cannot help or did not (evicted at
        once), reads them itself."""
        if content.can_warm(file) and stream.warmed != start:
            stream.warmed = start
            await content.warm(file, start, min(WARM_WINDOW, end + 1 - start))
        else:
            data = await content.read(file, start, min(FILE_CHUNK, end + 1 - start))
            _advance(stream.pieces, len(data))
            stream.pending = memoryview(data)

    def _write(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- ending streams and the connection ------------------------------------------------------

    def _finish(self, stream: _Stream) -> None:
        """The response is all framed: a client still sending a body (the stream is not
        closed yet) is told to stop (RFC 9113 §8.1)."""
        self._reset(stream, ErrorCodes.NO_ERROR)

    def _reset(self, stream: _Stream, code: ErrorCodes) -> None:
        state = self.h2.streams.get(stream.id)
        if state is not None and not state.closed:
            self.h2.reset_stream(stream.id, code)
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        self.streams.pop(stream.id, None)
        self.ready.pop(stream.id, None)
        if stream.task is not None:
            stream.task.cancel()
        if not self.streams and self.phase is not CLOSING:
            if self._ending:
                self.close_idle()
            else:
                self._enter(IDLE)

    def _shut(self, reason: str) -> None:
        """End a connection h2 ended (it broke the protocol or a bound, and h2 queued the
        GOAWAY saying so; or the client sent GOAWAY: reason ""), dropping the responses in
        progress: h2 sends nothing more on such a connection."""
        if reason:
            log.info("%s: HTTP/2 connection closed: %s", self.peer, reason)
            self.site.stats.rejected += 1
        for stream in list(self.streams.values()):
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self.ready.clear()
        self.close_idle()

    def close_idle(self) -> None:
        """Close once what is written has been sent; the connection stays counted until the
        transport reports it lost."""
        self._input_closed = True
        self._write()
        self._enter(CLOSING)
        if self.transport is not None:
            self.transport.close()

    def drain_idle(self) -> None:
        """Shutting down: GOAWAY once (streams already opened finish, later ones are refused),
        and close when none is left. The frame is ours, not h2's: h2 sends nothing more after
        a GOAWAY of its own (python-hyper/h2#1181)."""
        if self._last_stream is None and self.phase is not CLOSING:
            self._last_stream = self.h2.highest_inbound_stream_id
            self._write()
            assert self.transport is not None
            self.transport.write(GoAwayFrame(0, last_stream_id=self._last_stream).serialize())
        self._ending = True
        if not self.streams and self.phase is not CLOSING:
            self.close_idle()


def _advance(pieces: deque[Piece], length: int) -> None:
    """length bytes of the first piece (a file span) are read."""
    span = pieces[0]
    assert isinstance(span, tuple)
    start, end = span
    if start + length > end:
        pieces.popleft()
    else:
        pieces[0] = (start + length, end)
