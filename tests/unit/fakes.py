"""What the in-process connection tests share (test_connection for HTTP/1.1,
test_h2_connection for HTTP/2): a fake transport, a real Site over a temporary folder with the
`sped` model's inline disk (so no helper process runs), and `run` for a scenario on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvloop

from flashsrv.config import Config
from flashsrv.server import build_site
from flashsrv.site import Site

PEER = ("192.0.2.7", 40123)


class FakeTransport:
    """What a connection and its response sender use of an asyncio transport, recorded.

    `room` is how many more bytes the client's socket takes (None: any amount). A write that
    leaves bytes buffered pauses the protocol, as a transport with write buffer limits (0, 0)
    does; `drain()` plays the client reading them all, which resumes it. close() and abort()
    report connection_lost on the next loop turn (close() only once the buffer is empty).
    A write after close() or abort() reaches no client: it is kept in `late_writes`, or where
    `strict` it fails at once.
    """

    def __init__(self, sock: socket.socket | None = None, peer: tuple[str, int] = PEER,
                 strict: bool = False) -> None:
        self.sock = sock  # what an HTTP/1.1 connection's sender asks for
        self.peer = peer
        self.strict = strict
        self.protocol: Any = None
        self.written = bytearray()
        self.room: int | None = None
        self.buffered = 0
        self.writing_paused = False
        self.reading = True
        self.closed = False
        self.aborted = False
        self.lost = False
        self.limits: tuple[int | None, int | None] | None = None
        self.late_writes: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": self.peer,
                "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def write(self, data: bytes) -> None:
        if self.is_closing():
            assert not self.strict, "a write after close"
            self.late_writes.append(bytes(data))
            return
        self.written += data
        if self.room is not None:
            taken = min(self.room, len(data))
            self.room -= taken
            self.buffered += len(data) - taken
        if self.buffered and not self.writing_paused:
            self.writing_paused = True
            self.protocol.pause_writing()

    def writelines(self, chunks: Sequence[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def fill(self) -> None:
        """The client stopped reading and its socket is full: the protocol is paused."""
        self.room = 0
        self.buffered = max(self.buffered, 1)
        if not self.writing_paused:
            self.writing_paused = True
            self.protocol.pause_writing()

    def drain(self, room: int | None = None) -> None:
        """The client read everything buffered; its socket then takes `room` more bytes."""
        self.buffered = 0
        self.room = room
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()
        if self.closed:
            asyncio.get_running_loop().call_soon(self._lose)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        if self.is_closing():
            return
        self.closed = True
        if not self.buffered:
            asyncio.get_running_loop().call_soon(self._lose)

    def abort(self) -> None:
        self.aborted = True
        asyncio.get_running_loop().call_soon(self._lose)

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)


async def settle() -> None:
    """Let every ready callback and task run; the inline disk never really waits."""
    for _ in range(100):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a scenario on uvloop; any error the loop reports (a task's exception nobody
    retrieved, a failing callback) fails the test."""
    reported: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        await scenario()
        await settle()
        gc.collect()
        await settle()

    uvloop.run(main())
    assert not reported, reported


def make_root(tmp_path: Path, files: dict[str, bytes], big_size: int, seed: int) -> Path:
    """tmp_path/www with files, and big.bin: big_size random bytes (from seed)."""
    www = tmp_path / "www"
    www.mkdir()
    for name, data in files.items():
        (www / name).write_bytes(data)
    (www / "big.bin").write_bytes(random.Random(seed).randbytes(big_size))
    return www


@contextlib.contextmanager
def site_maker(root: Path) -> Iterator[Callable[..., Site]]:
    """make(**settings): a Site over root with those Config settings, the `sped` model and no
    access log; the open files of every Site made are given back at the end."""
    sites: list[Site] = []

    def make(**settings: Any) -> Site:
        config = Config(root=str(root), model="sped", access_log="off", **settings)
        site = build_site(config, str(root), 1024)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.content.paths.clear()
