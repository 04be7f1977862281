"""Sending a response's bytes: writes, file pumping and flow control for one connection.

The sender owns what happens between a decided plan and the socket: in-memory bodies in one
write, files zero-copy from resident pages or through memory in bounded chunks, waiting for the
socket (the transport pauses us as soon as anything waits in its buffer) and for the disk layer
(helpers warm the next window of a cold file while the current one is sent). It never decides
what to send and knows nothing of requests beyond the plan; the loop never waits in it.
"""

from __future__ import annotations

import asyncio

from flashsrv.content import Content
from flashsrv.entries import OpenFile
from flashsrv.responder import Plan

STREAM_CHUNK = 256 * 1024
# What a zero-copy stream puts in the transport when the socket is full, to learn when it drains.
WAIT_CHUNK = 16 * 1024
# A cold stream asks a helper to bring this much of its file into the page cache at a time.
WARM_WINDOW = 1 << 20
SMALL_WRITE = 64 * 1024
SENDFILE_TAIL = 4096

Position = tuple[int, int]  # (span index, offset in the file; -1 = before the span's part head)


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _drop(task: asyncio.Task | None) -> None:
    """Cancel a task nobody will await (the warm-ahead of a response that ended or moved on)
    and consume its outcome, so that a failure is not reported as never retrieved."""
    if task is not None:
        task.cancel()
        task.add_done_callback(_retrieve)


# TLS: bytes are encrypted into a buffer below the transport; uvloop's TLS transport never
# resumes a writer whose low-water mark is 0 (seen: a stream stalled after 256 KiB), and a
# little room keeps the stream going between the two buffers.
TLS_BUFFER = 64 * 1024


class ResponseSender:
    """Writes to one transport; `paused` mirrors the transport's flow control."""

    __slots__ = ("_drain", "_sock_fd", "content", "paused", "transport")

    def __init__(self, transport: asyncio.Transport, content: Content,
                 zero_copy: bool = True) -> None:
        self.transport = transport
        self.content = content
        # -1: bytes must pass through the transport (TLS encrypts them), never sendfile.
        self._sock_fd = transport.get_extra_info("socket").fileno() if zero_copy else -1
        self.paused = False
        self._drain: asyncio.Future | None = None
        # Paused as soon as anything waits in the transport's buffer, resumed when it is empty:
        # bytes are produced only for a client that reads them.
        if zero_copy:
            transport.set_write_buffer_limits(high=0, low=0)
        else:
            transport.set_write_buffer_limits(high=TLS_BUFFER, low=TLS_BUFFER // 4)

    # -- flow control ------------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def lost(self) -> None:
        """The connection is gone: whoever waits for the socket gets ConnectionResetError."""
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client went away"))

    async def _wait_writable(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    # -- bodies in memory --------------------------------------------------------------------

    def send(self, head: bytes, body: bytes | bytearray | None) -> None:
        """A head (ending in its blank line) and a body held in memory: one write when small,
        else two, so that a large cached body is shared, not copied."""
        transport = self.transport
        if body is None:
            transport.write(head)
        elif len(body) <= SMALL_WRITE:
            transport.write(b"".join((head, body)))
        else:
            transport.write(head)
            transport.write(body)

    # -- files -------------------------------------------------------------------------------

    def pump(self, plan: Plan, index: int = 0, offset: int = -1) -> Position | None:
        """Send the plan's file spans from a position for as long as nothing has to wait.
        Returns where it stopped (the disk or a full socket must be waited for), or None when
        the body is all written.

        Zero-copy for the bytes mincore calls resident; when the socket is full, a small piece
        goes through the transport instead, whose buffer then pauses us until it drains, so a
        slow reader costs at most that piece. Files that cannot be sent zero-copy go in chunks
        through memory. The last bytes always go through memory, read and checked before they
        are written: a file rewritten during a sendfile is caught by that check, so a response
        can only be complete if its file never changed.
        """
        transport = self.transport
        content = self.content
        file = plan.file
        assert isinstance(file, OpenFile)  # only files on disk stream; the rest is in memory
        spans = plan.spans
        while index < len(spans):
            start, end = spans[index]
            if offset < 0:
                if plan.part_heads:
                    transport.write(plan.part_heads[index])
                offset = start
            while offset <= end:
                if self.paused:
                    return index, offset
                left = end + 1 - offset
                if left > SENDFILE_TAIL and file.mapping >= 0 and self._sock_fd >= 0:
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

    async def stream(self, plan: Plan, position: Position | None, progress) -> None:
        """Finish what `pump` could not: wait for the socket, or for the disk layer. progress()
        is called before each wait (the connection renews its deadline).

        A file this process can send from the page cache is warmed by a helper (read into the
        page cache) one window at a time, the next window's warm running while the current one
        is sent, so the disk keeps streaming while the socket drains; the loop itself only
        ever sends what mincore calls resident. When a warmed window still cannot be sent
        (evicted at once, under memory pressure) or the file's descriptor is a helper's, its
        bytes come through the disk layer instead.
        """
        content = self.content
        file = plan.file
        assert isinstance(file, OpenFile)  # only files on disk stream; the rest is in memory
        ahead: asyncio.Task | None = None  # the warm of the window after the current one
        ahead_at = warmed_at = None
        try:
            while position is not None:
                progress()
                index, offset = position
                end = plan.spans[index][1] + 1
                if self.paused:
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
                position = self.pump(plan, index, offset)
        finally:
            _drop(ahead)
