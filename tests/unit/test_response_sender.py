"""flashsrv.response_sender: writes, file pumping and flow control for one connection.

A recording transport and a real Content over a temporary folder (inline disk). Files are
marked as not zero-copy (`mapping = -1`) so that every byte goes through the transport and
the order of what is written can be checked.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from flashsrv.content import Content
from flashsrv.disk import FileChanged, InlineDisk
from flashsrv.responder import Request, Responder, body_of
from flashsrv.response_sender import SMALL_WRITE, STREAM_CHUNK, ResponseSender
from flashsrv.site_rules import SiteRules

SIZE = 3 * STREAM_CHUNK + 123


class Recording:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []
        self.limits = None

    def get_extra_info(self, name, default=None):
        return self.sock if name == "socket" else default

    def set_write_buffer_limits(self, high=None, low=None):
        self.limits = (high, low)

    def write(self, data) -> None:
        self.writes.append(data)


@pytest.fixture
def sender_parts(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    data = random.Random(3).randbytes(SIZE)
    (root / "big.bin").write_bytes(data)
    a, b = socket.socketpair()
    yield root, data, Recording(a)
    a.close()
    b.close()


def test_small_body_goes_in_one_write_with_its_head(sender_parts):
    _, _, transport = sender_parts
    sender = ResponseSender(transport, None)
    assert transport.limits == (0, 0)
    sender.send(b"HEAD\r\n\r\n", b"body")
    sender.send(b"HEAD\r\n\r\n", None)
    assert transport.writes == [b"HEAD\r\n\r\nbody", b"HEAD\r\n\r\n"]


def test_large_body_is_written_as_it_is_not_copied(sender_parts):
    _, _, transport = sender_parts
    body = b"x" * (SMALL_WRITE + 1)
    ResponseSender(transport, None).send(b"HEAD\r\n\r\n", body)
    assert transport.writes[0] == b"HEAD\r\n\r\n" and transport.writes[1] is body


def test_waiter_for_the_socket_wakes_on_resume_and_fails_when_the_client_is_gone(sender_parts):
    _, _, transport = sender_parts

    async def scenario():
        sender = ResponseSender(transport, None)
        sender.pause()
        waiter = asyncio.ensure_future(sender._wait_writable())
        await asyncio.sleep(0)
        sender.resume()
        await waiter
        assert not sender.paused
        sender.pause()
        waiter = asyncio.ensure_future(sender._wait_writable())
        await asyncio.sleep(0)
        sender.lost()
        with pytest.raises(ConnectionResetError):
            await waiter

    asyncio.run(scenario())


async def _plan(root: Path, range_value: str | None):
    content = Content(InlineDisk(str(root)), 1 << 20, 64 << 10, 16)
    entry = await content.resolve(b"/big.bin", "big.bin")
    file = entry.variants["identity"].file
    file.mapping = -1  # not zero-copy: everything through the transport
    headers = {"range": range_value} if range_value else {}
    request = Request(b"GET", b"/big.bin", b"", "1.1", headers, True, bool(range_value))
    return content, Responder(SiteRules()).respond(request, entry)


@pytest.mark.parametrize("range_value", [None, "bytes=10-20", "bytes=0-9,100-199,-5"])
def test_pump_writes_the_spans_with_their_part_heads_in_order(sender_parts, range_value):
    root, data, transport = sender_parts

    async def scenario():
        content, plan = await _plan(root, range_value)
        assert plan.status == (206 if range_value else 200)
        assert ResponseSender(transport, content).pump(plan) is None
        assert b"".join(transport.writes) == body_of(plan, data)
        assert all(len(w) <= STREAM_CHUNK for w in transport.writes)

    asyncio.run(scenario())


def test_pump_stops_where_the_socket_is_full_and_resumes_from_there(sender_parts):
    root, data, transport = sender_parts

    async def scenario():
        content, plan = await _plan(root, "bytes=0-9,100-199")
        sender = ResponseSender(transport, content)
        sender.pause()
        position = sender.pump(plan)
        assert position == (0, 0) and transport.writes == [plan.part_heads[0]]
        sender.resume()
        assert sender.pump(plan, *position) is None
        assert b"".join(transport.writes) == body_of(plan, data)

    asyncio.run(scenario())


def test_pump_of_a_file_truncated_under_it_raises_file_changed(sender_parts):
    root, _, transport = sender_parts

    async def scenario():
        content, plan = await _plan(root, None)
        with open(root / "big.bin", "r+b") as f:
            f.truncate(SIZE // 2)
        with pytest.raises(FileChanged):
            ResponseSender(transport, content).pump(plan)

    asyncio.run(scenario())
