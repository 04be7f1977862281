"""flashsrv.h2_connection: H2Connection driven in-process by an h2 client over a fake transport.

The test plays the transport (tests/unit/fakes.py: bytes in through `data_received`, bytes
out recorded, a full socket simulated by pausing writing) and the `h2` client of
tests/h2_client.py speaks to it, so every frame the server sends is checked by a real HTTP/2
state machine (a flow-control or framing mistake is an error on the client side). Attacks are
written as raw frames (hyperframe) where h2 would refuse to produce them. A real Site over a
temporary folder answers, with the `sped` model's inline disk, so no helper process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import socket
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeTransport, make_root, run, site_maker
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2_client import H2ClientCore, Stream
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from flashsrv import h2_connection
from flashsrv.connection import HttpConnection
from flashsrv.h2_connection import (
    HEADER_TABLE_SIZE,
    MAX_CONTROL_FRAMES,
    MAX_HEADER_LIST_SIZE,
    MAX_RESETS,
    H2Connection,
    h2_fields,
)
from flashsrv.phases import ANSWERING, IDLE, NEW
from flashsrv.site import Site

BIG_SIZE = 3 << 20  # several windows and many frames
FILES = {
    "a.txt": b"alpha\n",
    "b.txt": b"bravo\n",
    "page.html": b"<!doctype html><title>page</title>" + b"<p>words words words</p>" * 40,
}


# -- the client ---------------------------------------------------------------------------------


class Client(H2ClientCore):
    """An h2 client connection (tests/h2_client.py) and the server's H2Connection joined by a
    FakeTransport on which a write after close fails the test.

    `pump()` carries bytes both ways until neither side has more.
    """

    def __init__(self, site: Site, settings: dict[int, int] | None = None,
                 server: Any = None, sock: socket.socket | None = None) -> None:
        super().__init__(settings, authority="example.test")
        self.transport = FakeTransport(sock, strict=True)
        self.conn = server or H2Connection(site, tls=False)
        self.transport.protocol = self.conn
        self._seen = 0
        if server is None:
            self.conn.connection_made(self.transport)
            self.flush()

    def send(self, data: bytes) -> None:
        if data:
            self.conn.data_received(data)

    def flush(self) -> None:
        self.send(self.h2.data_to_send())

    def pump(self) -> None:
        while True:
            data = bytes(self.transport.written[self._seen :])
            self._seen = len(self.transport.written)
            if not data:
                return
            self.receive(data)
            if not self.transport.is_closing():
                self.flush()

    async def settle(self) -> None:
        for _ in range(60):
            self.pump()
            await asyncio.sleep(0)
        self.pump()

    async def get(self, path: str, *extra: tuple[str, str], method: str = "GET") -> Stream:
        stream_id = self.request(path, *extra, method=method)
        await self.settle()
        return self.streams[stream_id]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = make_root(tmp_path, FILES, BIG_SIZE, seed=11)
    (www / "page.html.gz").write_bytes(gzip.compress(FILES["page.html"]))
    return www


@pytest.fixture
def make_site(root: Path) -> Iterator[Callable[..., Site]]:
    with site_maker(root) as make:
        yield make


@contextlib.contextmanager
def http1_transport(site: Site) -> Iterator[FakeTransport]:
    """A FakeTransport with an HttpConnection made on it (its sender wants a socket)."""
    sock, other = socket.socketpair()
    transport = FakeTransport(sock)
    transport.protocol = HttpConnection(site)
    transport.protocol.connection_made(transport)
    try:
        yield transport
    finally:
        sock.close()
        other.close()


def closed_with(client: Client, code: ErrorCodes) -> bool:
    """The server sent GOAWAY with code and closed the connection."""
    return (bool(client.goaways) and client.goaways[-1][1] == code
            and client.transport.is_closing())


# -- answering ----------------------------------------------------------------------------------


def test_get_is_answered_with_the_file_and_an_h2_head(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        response = await client.get("/a.txt")
        assert response.ended and bytes(response.body) == FILES["a.txt"]
        headers = response.headers
        assert headers[b":status"] == b"200"
        assert headers[b"content-length"] == b"6"
        assert headers[b"content-type"].startswith(b"text/plain")
        assert b"etag" in headers and b"date" in headers
        assert b"connection" not in headers and b"strict-transport-security" not in headers
        assert site.stats.by_status[200] == 1
        assert client.conn.phase == IDLE and not client.conn.streams

    run(scenario)


def test_the_same_file_is_answered_again_from_memory(make_site):
    async def scenario():
        client = Client(make_site())
        first = await client.get("/a.txt")
        stream_id = client.request("/a.txt")  # a cache hit: answered inside data_received
        assert not client.conn.streams
        await client.settle()
        assert bytes(client.streams[stream_id].body) == bytes(first.body) == FILES["a.txt"]

    run(scenario)


def test_head_sends_the_head_with_end_stream_and_no_data(make_site):
    async def scenario():
        client = Client(make_site())
        response = await client.get("/big.bin", method="HEAD")
        assert response.ended and response.frames == 0
        assert response.headers[b"content-length"] == str(BIG_SIZE).encode()

    run(scenario)


def test_missing_file_is_a_404_page(make_site):
    async def scenario():
        client = Client(make_site())
        response = await client.get("/nope.txt")
        assert response.headers[b":status"] == b"404"
        assert b"404" in response.body and response.ended

    run(scenario)


@pytest.mark.parametrize(("method", "status"), [("POST", b"405"), ("BREW", b"501")])
def test_methods_other_than_get_and_head_are_refused_as_in_http_1(make_site, method, status):
    async def scenario():
        client = Client(make_site())
        response = await client.get("/a.txt", method=method)
        assert response.headers[b":status"] == status
        if status == b"405":
            assert response.headers[b"allow"] == b"GET, HEAD"

    run(scenario)


def test_if_none_match_gives_304(make_site):
    async def scenario():
        client = Client(make_site())
        etag = (await client.get("/a.txt")).headers[b"etag"].decode()
        response = await client.get("/a.txt", ("if-none-match", etag))
        assert response.headers[b":status"] == b"304" and not response.body

    run(scenario)


def test_ranges_give_206_single_and_multipart(make_site, root):
    async def scenario():
        client = Client(make_site())
        data = (root / "big.bin").read_bytes()
        one = await client.get("/big.bin", ("range", "bytes=100-199"))
        assert one.headers[b":status"] == b"206"
        assert one.headers[b"content-range"] == f"bytes 100-199/{BIG_SIZE}".encode()
        assert bytes(one.body) == data[100:200]
        two = await client.get("/big.bin", ("range", "bytes=0-9,-10"))
        assert two.headers[b":status"] == b"206"
        assert two.headers[b"content-type"].startswith(b"multipart/byteranges; boundary=")
        assert len(two.body) == int(two.headers[b"content-length"])
        assert data[:10] in two.body and data[-10:] in two.body
        assert b"Content-Range: bytes 0-9/" in two.body

    run(scenario)


def test_gzip_sibling_is_chosen_by_accept_encoding(make_site):
    async def scenario():
        client = Client(make_site())
        response = await client.get("/page.html", ("accept-encoding", "gzip"))
        assert response.headers[b"content-encoding"] == b"gzip"
        assert response.headers[b"vary"] == b"Accept-Encoding"
        assert gzip.decompress(bytes(response.body)) == FILES["page.html"]
        plain = await client.get("/page.html")
        assert b"content-encoding" not in plain.headers
        assert bytes(plain.body) == FILES["page.html"]

    run(scenario)


def test_a_large_file_flows_within_the_windows_in_frames_of_the_allowed_size(make_site, root):
    async def scenario():
        client = Client(make_site())
        response = await client.get("/big.bin")
        # The client's h2 refuses any frame beyond its windows or its frame size: the body
        # arriving whole means every frame respected them (16 KiB frames, 64 KiB windows).
        assert response.ended and bytes(response.body) == (root / "big.bin").read_bytes()
        assert response.frames >= BIG_SIZE // 16384

    run(scenario)


def test_a_file_that_is_not_resident_comes_through_the_disk_layer(make_site, root,
                                                                    monkeypatch):
    async def scenario():
        site = make_site()
        content = site.content
        read, warm = [], []
        real_read, real_warm = content.read, content.warm

        async def counting_read(file, offset, length):
            read.append(length)
            return await real_read(file, offset, length)

        async def counting_warm(file, offset, length):
            warm.append(length)
            return await real_warm(file, offset, length)

        monkeypatch.setattr(content, "read_nowait", lambda *_args: None)  # nothing resident
        monkeypatch.setattr(content, "read", counting_read)
        monkeypatch.setattr(content, "warm", counting_warm)
        client = Client(site)
        response = await client.get("/big.bin", ("range", "bytes=0-199999"))
        assert bytes(response.body) == (root / "big.bin").read_bytes()[:200000]
        # A warm that did not make the bytes readable now is followed by a read.
        assert read and sum(read) == 200000 and len(warm) == len(read)

    run(scenario)


def test_concurrent_streams_interleave_and_a_small_one_is_not_stuck_behind_a_large_one(
        make_site, root):
    async def scenario():
        client = Client(make_site())
        await client.get("/a.txt")  # cached
        big = client.request("/big.bin")
        small = client.request("/b.txt")
        await client.settle()
        assert bytes(client.streams[small].body) == FILES["b.txt"]
        assert bytes(client.streams[big].body) == (root / "big.bin").read_bytes()
        ids = [client.request(name) for name in ("/a.txt", "/b.txt", "/page.html") * 10]
        await client.settle()
        assert all(client.streams[i].ended for i in ids)

    run(scenario)


def test_malformed_pseudo_headers_reset_only_that_stream(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        encoder = Encoder()
        block = encoder.encode([(":method", "GET"), (":path", "/a.txt"), (":scheme", "http"),
                                (":bogus", "x")])
        frame = HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"])
        raw = Client(site)  # its own connection, read as bytes: its h2 opened no stream 1
        raw.send(frame.serialize())
        await asyncio.sleep(0)
        assert bytes(raw.transport.written).find(
            RstStreamFrame(1, error_code=ErrorCodes.PROTOCOL_ERROR).serialize()) >= 0
        assert not raw.transport.is_closing()
        assert site.stats.rejected == 1
        assert (await client.get("/a.txt")).headers[b":status"] == b"200"

    run(scenario)


@pytest.mark.parametrize("target", [
    "/" + "x" * 9000, "/../etc/passwd", "/a.txt?x=1", "/%2e%2e/a.txt", "/a%00.txt",
    "/b.txt/", "/nope/../a.txt",
])
def test_odd_targets_get_the_status_http_1_gives_them(make_site, target):
    async def scenario():
        site = make_site()
        with http1_transport(site) as transport:
            transport.protocol.data_received(
                f"GET {target} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
            for _ in range(20):
                await asyncio.sleep(0)
            status_1 = bytes(transport.written).split(b" ", 2)[1]
        response = await Client(site).get(target)
        assert response.headers[b":status"] == status_1

    run(scenario)


def test_h2_fields_convert_an_http_1_head_once():
    head = (b"HTTP/1.1 200 OK\r\nServer: flashsrv\r\nContent-Length: 3\r\n"
            b"Connection: close\r\nKeep-Alive: timeout=5\r\nETag: \"x\"\r\n")
    fields = h2_fields(head)
    assert fields == [(b":status", b"200"), (b"server", b"flashsrv"),
                      (b"content-length", b"3"), (b"etag", b'"x"')]
    assert h2_fields(head) is fields


def test_hsts_goes_on_tls_responses_only(make_site, tmp_path):
    async def scenario():
        site = make_site(hsts=3600)
        tls = Client(site, server=H2Connection(site, tls=True))
        tls.conn.connection_made(tls.transport)
        tls.send(tls.h2.data_to_send())
        response = await tls.get("/a.txt")
        assert response.headers[b"strict-transport-security"] == b"max-age=3600"
        plain = await Client(site).get("/a.txt")
        assert b"strict-transport-security" not in plain.headers

    run(scenario)


# -- phases, timeouts, shutdown -------------------------------------------------------------------


def test_an_idle_connection_is_sent_goaway_and_closed_after_keepalive_timeout(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        assert client.conn.phase == NEW
        await client.get("/a.txt")
        assert client.conn.phase == IDLE
        client.conn.check_deadline(client.conn.deadline - 0.01)
        assert not client.transport.is_closing()
        client.conn.check_deadline(client.conn.deadline + 0.01)
        client.pump()
        assert closed_with(client, ErrorCodes.NO_ERROR)
        await asyncio.sleep(0)
        assert client.conn not in site.connections and site.stats.timeouts == 1

    run(scenario)


def test_a_zero_window_stream_is_reset_after_send_timeout_and_others_go_on(make_site, root):
    async def scenario():
        site = make_site()
        client = Client(site, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
        await client.settle()
        await client.get("/a.txt", method="HEAD")  # /a.txt in the cache; HEAD needs no window
        stalled = client.request("/big.bin")
        await client.settle()
        assert client.streams[stalled].headers[b":status"] == b"200"
        assert not client.streams[stalled].body
        stalled_since = client.conn.streams[stalled].progress_at
        time.sleep(0.02)
        moving = client.request("/a.txt")
        client.h2.increment_flow_control_window(1 << 16, moving)
        client.send(client.h2.data_to_send())
        await client.settle()
        assert bytes(client.streams[moving].body) == FILES["a.txt"]
        # The connection made progress (its deadline moved on); the stalled stream did not.
        now = stalled_since + site.timeouts[ANSWERING] + 0.01
        assert now < client.conn.deadline
        client.conn.check_deadline(now)
        client.pump()
        assert client.streams[stalled].reset == ErrorCodes.CANCEL
        assert not client.transport.is_closing() and site.stats.timeouts == 1
        assert client.conn.phase == IDLE

    run(scenario)


def test_a_connection_whose_socket_stays_full_is_aborted_after_send_timeout(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        await client.settle()
        client.transport.room = 0
        client.request("/big.bin")
        await client.settle()
        assert client.conn.paused and not client.transport.reading  # back-pressure: no reads
        client.conn.check_deadline(client.conn.deadline + 0.01)
        assert client.transport.aborted
        await asyncio.sleep(0)
        assert client.conn not in site.connections

    run(scenario)


def test_drain_sends_goaway_lets_open_streams_finish_and_refuses_new_ones(make_site, root):
    async def scenario():
        site = make_site()
        client = Client(site)
        await client.settle()
        client.acking = False  # the large response waits for our window updates
        big = client.request("/big.bin")
        await client.settle()
        assert client.conn.streams
        site.stopping = True
        client.conn.drain_idle()
        client.pump()
        assert client.goaways == [(big, ErrorCodes.NO_ERROR)]
        late = client.request("/a.txt")
        await client.settle()
        assert client.streams[late].reset == ErrorCodes.REFUSED_STREAM
        client.acking = True
        client.h2.increment_flow_control_window(BIG_SIZE)
        client.h2.increment_flow_control_window(BIG_SIZE, big)
        client.send(client.h2.data_to_send())
        await client.settle()
        assert bytes(client.streams[big].body) == (root / "big.bin").read_bytes()
        assert client.transport.closed  # once the last stream ended
        await asyncio.sleep(0)
        assert client.conn not in site.connections

    run(scenario)


def test_drain_closes_an_idle_connection_at_once(make_site):
    async def scenario():
        client = Client(make_site())
        await client.get("/a.txt")
        client.conn.drain_idle()
        client.pump()
        assert client.goaways and client.transport.closed

    run(scenario)


def test_a_connection_over_the_cap_is_refused_with_goaway(make_site):
    async def scenario():
        site = make_site(max_connections=1)
        first = Client(site)
        first.acking = False
        first.request("/big.bin")  # in progress (waiting for window): not reclaimable
        await first.settle()
        assert first.conn.streams and not first.conn.reclaimable
        second = Client(site)
        second.pump()
        assert closed_with(second, ErrorCodes.REFUSED_STREAM)
        assert site.stats.refused == 1 and first.conn in site.connections

    run(scenario)


def test_a_closed_connection_is_freed_without_the_cycle_collector(make_site):
    async def scenario():
        client = Client(make_site())
        await client.get("/a.txt")
        client.transport.close()
        await asyncio.sleep(0)  # connection_lost
        state = weakref.ref(client.conn.h2)
        client.transport.protocol = None  # as the event loop lets go of its protocol
        gc.disable()
        try:
            del client
            assert state() is None  # reference counting alone freed h2's buffers
        finally:
            gc.enable()

    run(scenario)


# -- h2c with prior knowledge on the HTTP/1.1 port -------------------------------------------------


def test_h2c_prior_knowledge_hands_the_connection_to_http_2(make_site):
    async def scenario():
        site = make_site()
        http1 = HttpConnection(site)
        sock, other = socket.socketpair()
        client = Client(site, server=http1, sock=sock)
        http1.connection_made(client.transport)
        client.h2.send_headers(1, [(":method", "GET"), (":path", "/a.txt"), (":scheme", "http"),
                                   (":authority", "example.test")], end_stream=True)
        client.streams[1] = h2_response = Stream()
        client.send(client.h2.data_to_send())  # preface, SETTINGS and HEADERS in one read
        assert isinstance(client.transport.protocol, H2Connection)
        client.conn = client.transport.protocol
        await client.settle()
        assert bytes(h2_response.body) == FILES["a.txt"]
        assert http1 not in site.connections and client.conn in site.connections
        assert client.transport.limits == (h2_connection.WRITE_HIGH, h2_connection.WRITE_LOW)
        sock.close()
        other.close()

    run(scenario)


def test_a_preface_after_an_http_1_request_is_a_bad_request(make_site):
    async def scenario():
        with http1_transport(make_site()) as transport:
            conn = transport.protocol
            conn.data_received(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                               + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            for _ in range(20):
                await asyncio.sleep(0)
            assert transport.protocol is conn
            assert bytes(transport.written).count(b"HTTP/1.1 ") == 2
            assert b"HTTP/1.1 400" in transport.written

    run(scenario)


# -- defences -------------------------------------------------------------------------------


def _headers_frame(stream_id: int, encoder: Encoder, path: str = "/a.txt",
                   flags: tuple[str, ...] = ("END_HEADERS", "END_STREAM")) -> bytes:
    block = encoder.encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                            (":authority", "example.test")])
    return HeadersFrame(stream_id, data=block, flags=list(flags)).serialize()


def test_rapid_reset_gets_goaway_enhance_your_calm(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        encoder = Encoder()
        flood = b"".join(_headers_frame(2 * i + 1, encoder, "/nope", ("END_HEADERS",))
                         + RstStreamFrame(2 * i + 1, error_code=ErrorCodes.CANCEL).serialize()
                         for i in range(MAX_RESETS + 50))
        client.send(flood)
        client.pump()
        assert closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)
        assert not client.conn.streams and site.stats.rejected == 1

    run(scenario)


@pytest.mark.parametrize("frame", [
    PingFrame(0, opaque_data=b"12345678"),
    SettingsFrame(0, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 100}),
    PriorityFrame(3, depends_on=0, stream_weight=16),
    WindowUpdateFrame(0, window_increment=1),
], ids=["PING", "SETTINGS", "PRIORITY", "WINDOW_UPDATE"])
def test_control_frame_floods_get_goaway_enhance_your_calm(make_site, frame):
    async def scenario():
        client = Client(make_site())
        client.send(frame.serialize() * (MAX_CONTROL_FRAMES + 10))
        client.pump()
        assert closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    run(scenario)


def test_empty_data_frame_flood_gets_goaway_enhance_your_calm(make_site):
    async def scenario():
        client = Client(make_site())
        encoder = Encoder()
        opened = _headers_frame(1, encoder, "/nope", ("END_HEADERS",))  # a body may follow
        client.send(opened + DataFrame(1, data=b"").serialize() * (MAX_CONTROL_FRAMES + 10))
        client.pump()
        assert closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    run(scenario)


def test_a_request_body_is_dropped_and_its_window_given_back(make_site, root):
    async def scenario():
        client = Client(make_site())
        client.acking = False  # the response stays in progress while the body is sent
        stream_id = client.request("/big.bin", end=False)
        await client.settle()
        for _ in range(16):  # 240 KB: more than the 64 KiB window unless credit comes back
            client.h2.send_data(stream_id, b"x" * 15000)
            client.send(client.h2.data_to_send())
            await client.settle()
        client.acking = True
        client.h2.acknowledge_received_data(len(client.streams[stream_id].body), stream_id)
        client.send(client.h2.data_to_send())
        await client.settle()
        response = client.streams[stream_id]
        assert bytes(response.body) == (root / "big.bin").read_bytes()
        # The response ended before the body did: the client is told to stop sending.
        assert response.reset == ErrorCodes.NO_ERROR
        assert not client.transport.is_closing()

    run(scenario)


def test_a_body_ended_in_the_same_read_as_a_cached_answer_needs_no_reset(make_site):
    async def scenario():
        client = Client(make_site())
        await client.get("/a.txt")  # cached: the next one is answered inside data_received
        stream_id = client.request("/a.txt", end=False)
        client.h2.send_data(stream_id, b"body", end_stream=True)
        client.send(client.h2.data_to_send())
        await client.settle()
        response = client.streams[stream_id]
        assert bytes(response.body) == FILES["a.txt"] and response.reset is None
        assert not client.transport.is_closing()

    run(scenario)


def test_the_clients_goaway_closes_the_connection(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        await client.get("/a.txt")
        client.h2.close_connection()
        client.send(client.h2.data_to_send())
        assert client.transport.closed and site.stats.rejected == 0
        await asyncio.sleep(0)
        assert client.conn not in site.connections

    run(scenario)


def test_a_closing_connection_that_cannot_flush_is_aborted(make_site):
    async def scenario():
        client = Client(make_site())
        client.transport.close = lambda: None  # its last bytes never drain
        client.conn.close_idle()
        client.conn.check_deadline(client.conn.deadline + 0.01)
        assert client.transport.aborted

    run(scenario)


def test_continuation_flood_past_the_header_block_bound_gets_goaway(make_site):
    async def scenario():
        client = Client(make_site())
        start = HeadersFrame(1, data=b"\x82", flags=[]).serialize()  # no END_HEADERS
        piece = ContinuationFrame(1, data=b"\x00" * 4096).serialize()
        client.send(start + piece * 20)  # 80 KiB, never ending
        client.pump()
        assert closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    run(scenario)


def test_empty_continuation_frames_are_bounded_in_number_by_h2(make_site):
    async def scenario():
        client = Client(make_site())
        start = HeadersFrame(1, data=b"\x82", flags=[]).serialize()
        client.send(start + ContinuationFrame(1, data=b"").serialize() * 100)
        client.pump()
        assert closed_with(client, ErrorCodes.PROTOCOL_ERROR)

    run(scenario)


def test_hpack_bomb_is_stopped_by_the_header_list_size(make_site):
    async def scenario():
        client = Client(make_site())
        encoder = Encoder()
        big = "v" * 4000  # one dynamic-table entry, then referenced over and over
        first = encoder.encode([(":method", "GET"), (":path", "/a.txt"), (":scheme", "http"),
                                ("x-bomb", big)])
        again = encoder.encode([("x-bomb", big)] * 64)  # ~256 KiB decoded from ~64 bytes
        assert len(again) < 200
        client.send(HeadersFrame(1, data=first + again,
                                 flags=["END_HEADERS", "END_STREAM"]).serialize())
        client.pump()
        assert closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    run(scenario)


def test_a_header_list_just_under_the_bound_is_served(make_site):
    async def scenario():
        client = Client(make_site())
        filler = ("x-filler", "f" * (MAX_HEADER_LIST_SIZE - 400))
        response = await client.get("/a.txt", filler)
        assert bytes(response.body) == FILES["a.txt"]

    run(scenario)


def test_the_hpack_encoder_table_stays_small_whatever_the_client_allows(make_site):
    async def scenario():
        client = Client(make_site(), settings={SettingCodes.HEADER_TABLE_SIZE: 1 << 30})
        await client.get("/a.txt")
        assert client.conn.h2.encoder.header_table_size == HEADER_TABLE_SIZE

    run(scenario)


def test_too_many_new_streams_in_a_second_pause_reading_until_the_next(make_site,
                                                                        monkeypatch):
    monkeypatch.setattr(h2_connection, "MAX_NEW_STREAMS", 20)
    monkeypatch.setattr(h2_connection, "INPUT_SLICE", 256)
    monkeypatch.setattr(h2_connection, "FLOOD_WINDOW", 0.2)

    async def scenario():
        client = Client(make_site())
        await client.get("/a.txt")
        for i in range(60):
            client.h2.send_headers(3 + 2 * i, [(":method", "GET"), (":path", "/a.txt"),
                                               (":scheme", "http"), (":authority", "x")],
                                   end_stream=True)
            client.streams[3 + 2 * i] = Stream()
        client.send(client.h2.data_to_send())  # one read
        client.pump()
        assert not client.transport.reading  # the throttle holds the rest of that read
        answered = sum(r.ended for r in client.streams.values())
        assert answered < 50
        for _ in range(4):  # each window takes up to 20 more
            await asyncio.sleep(h2_connection.FLOOD_WINDOW)
            await client.settle()
        assert client.transport.reading and not client.transport.is_closing()
        body_count = bytes(client.transport.written).count(FILES["a.txt"])
        assert body_count == 61  # every stream answered in the end, none refused

    run(scenario)


def test_output_back_pressure_pauses_reading(make_site):
    async def scenario():
        client = Client(make_site())
        await client.settle()
        client.transport.room = 0
        client.send(PingFrame(0, opaque_data=b"12345678").serialize())
        assert client.conn.paused and not client.transport.reading
        client.transport.drain()
        assert client.transport.reading

    run(scenario)
