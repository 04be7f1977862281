"""flashsrv.connection: HttpConnection driven in-process over a fake transport.

No server process and no network client: the test plays the transport (tests/unit/fakes.py:
bytes in through `data_received`, bytes out recorded, a full socket simulated by pausing and
resuming writing), and a real Site over a temporary folder answers, with the `sped` model's
inline disk so that no helper process runs. The socket the transport reports is one end of a
socketpair: large files may be sent zero-copy to it, and those bytes are read back from the
other end.
"""

from __future__ import annotations

import gc
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeTransport, make_root, run, settle, site_maker

from flashsrv.connection import MAX_PIPELINE, HttpConnection
from flashsrv.phases import ANSWERING, CLOSING, HEAD, IDLE, NEW, SENDING
from flashsrv.site import KeptStream, Site

BIG_SIZE = 1 << 20  # well above the data cache's per-file limit: streamed, never held whole
FILES = {
    "a.txt": b"alpha\n",
    "b.txt": b"bravo\n",
    "c.txt": b"charlie\n",
    "index.html": b"<!doctype html><title>home</title>\n",
}


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: example.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw: bytes


def parse_responses(data: bytes, methods: Sequence[str] = ()) -> list[Response]:
    """Split written bytes into responses; methods[i] == "HEAD" means the i-th has no body."""
    out: list[Response] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        status_line, *lines = data[pos:end].decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method = methods[len(out)] if len(out) < len(methods) else "GET"
        bodiless = method == "HEAD" or status == 304 or status < 200
        length = 0 if bodiless else int(headers.get("content-length", "0"))
        body = data[end + 4 : end + 4 + length]
        assert len(body) == length, f"response {len(out)} is cut short"
        out.append(Response(status, headers, body, data[pos : end + 4 + length]))
        pos = end + 4 + length
    return out


class Client:
    """One HttpConnection with its fake transport, as the loop would set it up."""

    def __init__(self, site: Site) -> None:
        self.sock, self.peer_sock = socket.socketpair()
        self.sock.setblocking(False)
        self.peer_sock.setblocking(False)
        self.transport = FakeTransport(self.sock)
        self.conn = HttpConnection(site)
        self.transport.protocol = self.conn
        self.conn.connection_made(self.transport)
        self._seen = 0

    def send(self, data: bytes) -> None:
        assert self.transport.reading, "the connection paused reading: nothing more arrives"
        self.conn.data_received(data)

    def output(self) -> bytes:
        """What was written through the transport since the last call."""
        data = bytes(self.transport.written[self._seen :])
        self._seen = len(self.transport.written)
        return data

    def responses(self, *methods: str) -> list[Response]:
        return parse_responses(self.output(), methods)

    def zero_copy(self) -> bytes:
        """What went straight to the socket (sendfile), read from its other end."""
        chunks = []
        while True:
            try:
                chunk = self.peer_sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()
        self.peer_sock.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path, FILES, BIG_SIZE, seed=7)


@pytest.fixture
def make_site(root: Path) -> Iterator[Callable[..., Site]]:
    with site_maker(root) as make:
        yield make


def assert_deadline(conn: HttpConnection, phase: str, before: float, after: float) -> None:
    """conn is in phase, with the deadline that phase's setting gives from a moment between
    before and after."""
    assert conn.phase == phase
    timeout = conn.site.timeouts[phase]
    assert before + timeout <= conn.deadline <= after + timeout


def assert_unrenewed(conn: HttpConnection, phase: str, deadline: float) -> None:
    assert conn.phase == phase
    assert conn.deadline == deadline


# -- answering ---------------------------------------------------------------------------------


def test_get_is_answered_with_the_file_and_its_head(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        client.send(get("/a.txt"))
        await settle()
        (response,) = client.responses()
        assert response.raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.body == FILES["a.txt"]
        assert response.headers["content-length"] == str(len(FILES["a.txt"]))
        assert response.headers["content-type"].startswith("text/plain")
        assert "etag" in response.headers and "date" in response.headers
        assert "connection" not in response.headers  # HTTP/1.1 keep-alive is the default
        assert not client.transport.closed and not client.transport.aborted
        assert client.transport.limits == (0, 0)  # paused as soon as anything is buffered
        assert site.stats.by_status[200] == 1
        client.close()

    run(scenario)


def test_keep_alive_connection_answers_a_second_request(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt"))
        await settle()
        assert [r.body for r in client.responses()] == [FILES["a.txt"]]
        assert client.conn.phase == IDLE
        client.send(get("/b.txt"))
        await settle()
        assert [r.body for r in client.responses()] == [FILES["b.txt"]]
        assert client.conn.phase == IDLE
        assert not client.transport.closed
        client.close()

    run(scenario)


def test_a_new_connections_first_request_may_be_sent_prepared(make_site):
    async def scenario():
        site = make_site()
        first = Client(site)
        kept = await _prepare(first, "/a.txt")
        second = Client(site)
        before = time.monotonic()
        second.send(get("/a.txt"))
        assert second.output() == kept and site.prepared.hits == 1
        assert_deadline(second.conn, IDLE, before, time.monotonic())
        first.close()
        second.close()

    run(scenario)


def test_expect_100_continue_is_answered_before_the_response(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt", "Expect: 100-continue", "Content-Length: 4"))
        assert client.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"body")
        await settle()
        assert [r.body for r in client.responses()] == [FILES["a.txt"]]
        client.close()

    run(scenario)


def test_upgrade_request_is_answered_plainly_and_the_connection_closed(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt", "Connection: upgrade", "Upgrade: websocket") + get("/b.txt"))
        await settle()
        (response,) = client.responses()
        assert response.body == FILES["a.txt"]
        assert response.headers["connection"] == "close"
        assert client.transport.closed and not client.transport.late_writes
        client.close()

    run(scenario)


def test_http_1_0_without_keep_alive_is_closed_after_its_response(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt", version="1.0"))
        await settle()
        (response,) = client.responses()
        assert response.body == FILES["a.txt"]
        assert response.headers["connection"] == "close"
        assert client.transport.closed and client.transport.lost
        assert not client.transport.late_writes
        client.close()

    run(scenario)


def test_pipelined_requests_are_answered_in_order_around_a_disk_lookup(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        for path in ("/a.txt", "/c.txt"):  # these two are then answered from memory
            client.send(get(path))
            await settle()
        client.output()
        assert b"/b.txt" not in site.content.paths
        client.send(get("/a.txt") + get("/b.txt") + get("/c.txt") + get("/a.txt"))
        # /a.txt went out at once; /b.txt needs the disk layer, so what follows it waits.
        assert client.conn.phase == ANSWERING
        assert len(client.conn.queue) == 2
        await settle()
        bodies = [r.body for r in client.responses()]
        assert bodies == [FILES["a.txt"], FILES["b.txt"], FILES["c.txt"], FILES["a.txt"]]
        assert b"/b.txt" in site.content.paths
        assert client.conn.phase == IDLE and not client.conn.queue
        assert client.transport.reading
        client.close()

    run(scenario)


def test_pipelined_slow_requests_stay_in_order(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/c.txt") + get("/b.txt", method="HEAD") + get("/a.txt")
                    + get("/missing.txt") + get("/index.html"))
        await settle()
        responses = client.responses("GET", "HEAD", "GET", "GET", "GET")
        assert [r.status for r in responses] == [200, 200, 200, 404, 200]
        assert responses[0].body == FILES["c.txt"]
        assert responses[1].body == b""
        assert responses[1].headers["content-length"] == str(len(FILES["b.txt"]))
        assert responses[2].body == FILES["a.txt"]
        assert responses[4].body == FILES["index.html"]
        client.close()

    run(scenario)


def test_a_long_pipeline_pauses_reading_until_it_is_answered(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/b.txt") * (MAX_PIPELINE + 4))
        assert not client.transport.reading  # the queue is full: read no more for now
        await settle()
        responses = client.responses()
        assert len(responses) == MAX_PIPELINE + 4
        assert all(r.body == FILES["b.txt"] for r in responses)
        assert client.transport.reading
        client.close()

    run(scenario)


def test_head_is_answered_without_a_body_on_every_path(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        length = str(len(FILES["a.txt"]))
        client.send(get("/a.txt", method="HEAD"))  # through the disk layer
        await settle()
        client.send(get("/a.txt", method="HEAD"))  # from memory
        await settle()
        client.send(get("/a.txt") + get("/a.txt"))  # kept, then sent prepared
        await settle()
        assert site.prepared.hits == 1
        client.send(get("/a.txt", method="HEAD") + get("/big.bin", method="HEAD"))
        await settle()
        responses = client.responses("HEAD", "HEAD", "GET", "GET", "HEAD", "HEAD")
        for i in (0, 1, 4):
            assert responses[i].status == 200
            assert responses[i].body == b""
            assert responses[i].headers["content-length"] == length
        assert responses[5].headers["content-length"] == str(BIG_SIZE)
        assert responses[5].body == b""
        assert client.zero_copy() == b""
        assert site.prepared.hits == 1  # a HEAD is never answered with a prepared GET
        client.close()

    run(scenario)


# -- the prepared fast lane --------------------------------------------------------------------


async def _prepare(client: Client, target: str) -> bytes:
    """Answer target until its plain GET is kept in site.prepared; the last response's bytes.
    The first GET goes through the disk layer; the next, answered from memory, is kept."""
    for _ in range(2):
        client.send(get(target))
        await settle()
    assert target.encode() in client.conn.site.prepared
    (*_, last) = client.responses()
    return last.raw


def test_a_plain_get_answered_from_memory_is_kept_and_then_sent_prepared(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        client.send(get("/a.txt"))
        await settle()
        assert b"/a.txt" not in site.prepared  # a disk-layer answer is not kept
        client.send(get("/a.txt"))
        await settle()
        kept = client.responses()[-1].raw
        assert b"/a.txt" in site.prepared and site.prepared.hits == 0
        client.send(get("/a.txt"))
        await settle()
        assert site.prepared.hits == 1
        assert site.prepared.bytes_sent == len(FILES["a.txt"])
        assert client.output() == kept  # the very bytes of the answer it was kept from
        assert client.conn.phase == IDLE
        client.close()

    run(scenario)


def test_a_repeated_request_is_answered_from_its_bytes_on_any_connection(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        kept = await _prepare(client, "/a.txt")
        client.send(get("/a.txt"))  # answered prepared after a parse: its bytes are kept
        await settle()
        repeats = site.prepared.repeats(False)  # this site's log reads no request fields
        assert list(repeats) == [get("/a.txt")] and not site.prepared.repeats(True)
        other = Client(site)
        other.send(get("/a.txt"))
        other.send(get("/a.txt"))
        await settle()
        assert other.output() == kept + kept and site.prepared.hits == 3
        assert other.conn.phase == IDLE
        site.prepared.expire(lambda kept: True)  # the tick: whole responses go, repeats stay
        assert not site.prepared and list(repeats) == [get("/a.txt")]
        other.send(get("/a.txt"))  # its bytes are known, its response is not: answered
        await settle()  # from memory (and kept again)
        assert other.output() == kept and site.prepared.hits == 3
        assert b"/a.txt" in site.prepared
        site.prepared.clear()  # a reload or a changed file: everything goes
        assert not repeats
        client.close()
        other.close()

    run(scenario)


@pytest.mark.parametrize("header", [
    "Range: bytes=0-1",
    "If-None-Match: *",
    "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
    "If-Match: *",
    "Connection: close",
])
def test_a_request_whose_answer_may_differ_is_not_sent_prepared(make_site, header):
    async def scenario():
        site = make_site()
        client = Client(site)
        await _prepare(client, "/a.txt")
        client.send(get("/a.txt", header))
        await settle()
        (response,) = client.responses()
        assert site.prepared.hits == 0
        expected = {"Range": 206, "If-None-Match": 304, "If-Modified-Since": 200,
                    "If-Match": 200, "Connection": 200}
        assert response.status == expected[header.split(":")[0]]
        if header.startswith("Range"):
            assert response.body == FILES["a.txt"][:2]
        if header.startswith("Connection"):
            assert response.headers["connection"] == "close"
        client.close()

    run(scenario)


def test_if_none_match_with_the_etag_gets_304_not_the_prepared_200(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        kept = parse_responses(await _prepare(client, "/a.txt"))[0]
        client.send(get("/a.txt", f"If-None-Match: {kept.headers['etag']}"))
        await settle()
        (response,) = client.responses()
        assert response.status == 304 and response.body == b""
        assert site.prepared.hits == 0
        client.close()

    run(scenario)


def test_prepared_lane_is_only_for_http_1_1_and_the_exact_target(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        await _prepare(client, "/a.txt")
        client.send(get("/a.txt", "Connection: keep-alive", version="1.0"))
        client.send(get("/a.txt?v=2"))
        await settle()
        responses = client.responses()
        assert [r.body for r in responses] == [FILES["a.txt"]] * 2
        assert responses[0].headers["connection"] == "keep-alive"  # a 1.0 client is told
        assert site.prepared.hits == 0
        client.close()

    run(scenario)


def test_a_prepared_request_waits_behind_a_response_in_progress(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        await _prepare(client, "/a.txt")
        client.send(get("/b.txt") + get("/a.txt"))  # /b.txt needs the disk layer first
        await settle()
        assert [r.body for r in client.responses()] == [FILES["b.txt"], FILES["a.txt"]]
        client.close()

    run(scenario)


# -- flow control ------------------------------------------------------------------------------


def test_request_while_the_socket_is_full_is_queued_and_answered_after_resume(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        await _prepare(client, "/a.txt")
        before = time.monotonic()
        client.transport.fill()
        assert_deadline(client.conn, SENDING, before, time.monotonic())
        client.send(get("/a.txt") + get("/c.txt"))
        await settle()
        assert client.output() == b""
        assert len(client.conn.queue) == 2
        client.transport.drain()
        await settle()
        assert [r.body for r in client.responses()] == [FILES["a.txt"], FILES["c.txt"]]
        assert client.conn.phase == IDLE and not client.conn.queue
        client.close()

    run(scenario)


def test_a_response_the_socket_cannot_take_keeps_the_next_request_waiting(make_site):
    async def scenario():
        client = Client(make_site())
        client.transport.room = 10  # less than one response
        client.send(get("/a.txt") + get("/b.txt"))
        await settle()
        assert client.conn.phase == SENDING
        assert [r.body for r in client.responses()] == [FILES["a.txt"]]
        assert len(client.conn.queue) == 1
        client.transport.drain()
        await settle()
        assert [r.body for r in client.responses()] == [FILES["b.txt"]]
        assert client.conn.phase == IDLE
        client.close()

    run(scenario)


def test_a_large_file_streams_after_the_socket_drains(make_site, root: Path):
    async def scenario():
        client = Client(make_site())
        client.transport.room = 0  # the head already fills the socket
        client.send(get("/big.bin"))
        await settle()
        assert client.conn.phase == ANSWERING and client.conn.task is not None
        client.transport.drain()
        await settle()
        data = client.output()
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert f"Content-Length: {BIG_SIZE}".encode() in head
        # Zero-copy bytes went to the socket first, the rest through the transport.
        assert client.zero_copy() + rest == (root / "big.bin").read_bytes()
        assert client.conn.phase == IDLE and client.conn.task is None
        client.close()

    run(scenario)


# -- refusals ----------------------------------------------------------------------------------


def test_malformed_request_gets_400_and_close_after_the_valid_ones_before_it(make_site):
    async def scenario():
        site = make_site()
        client = Client(site)
        client.send(get("/a.txt") + get("/c.txt") + b"GARBAGE\r\n\r\n" + get("/b.txt"))
        await settle()
        responses = client.responses()
        assert [r.status for r in responses] == [200, 200, 400]
        assert [r.body for r in responses[:2]] == [FILES["a.txt"], FILES["c.txt"]]
        assert responses[2].headers["connection"] == "close"
        assert client.transport.closed and client.transport.lost
        assert not client.transport.reading
        assert not client.transport.late_writes
        assert site.stats.rejected == 1
        client.close()

    run(scenario)


def test_malformed_request_while_the_socket_is_full_waits_for_the_drain(make_site):
    async def scenario():
        client = Client(make_site())
        client.transport.room = 10
        client.send(get("/a.txt") + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        await settle()
        assert [r.status for r in client.responses()] == [200]
        assert not client.transport.closed
        client.transport.drain()
        await settle()
        (response,) = client.responses()
        assert response.status == 400 and response.headers["connection"] == "close"
        assert client.transport.closed
        client.close()

    run(scenario)


def test_unknown_method_gets_501_and_close(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt") + get("/pot", method="BREW"))
        await settle()
        responses = client.responses()
        assert [r.status for r in responses] == [200, 501]
        assert responses[1].headers["connection"] == "close"
        assert client.transport.closed
        client.close()

    run(scenario)


@pytest.mark.parametrize(("method", "status"), [("PROPFIND", 501), ("POST", 405)])
def test_parsed_but_unserved_method_is_refused_and_the_connection_kept(make_site, method,
                                                                      status):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt", method=method) + get("/a.txt"))
        await settle()
        responses = client.responses()
        assert [r.status for r in responses] == [status, 200]
        if status == 405:
            assert responses[0].headers["allow"] == "GET, HEAD"
        assert not client.transport.closed
        client.close()

    run(scenario)


def test_traversal_is_refused_by_the_connection(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/../etc/passwd") + get("/%2e%2e/etc/passwd") + get("/.env"))
        await settle()
        assert [r.status for r in client.responses()] == [403, 403, 404]
        client.close()

    run(scenario)


def test_connection_over_the_cap_reclaims_an_idle_one_else_gets_503(make_site):
    async def scenario():
        site = make_site(max_connections=1)
        idle = Client(site)
        second = Client(site)  # the first is waiting for a request: it makes room
        assert idle.transport.aborted and site.stats.reclaimed == 1
        assert second.conn.phase == NEW
        second.send(get("/big.bin"))  # busy with a response: nothing to reclaim
        third = Client(site)
        (response,) = third.responses()
        assert response.status == 503 and response.headers["connection"] == "close"
        assert third.transport.closed and site.stats.refused == 1
        second.conn.connection_lost(None)
        for client in (idle, second, third):
            client.close()

    run(scenario)


# -- phases and deadlines ----------------------------------------------------------------------


def test_new_connection_must_start_a_request_within_request_start_timeout(make_site):
    async def scenario():
        site = make_site()
        before = time.monotonic()
        client = Client(site)
        assert_deadline(client.conn, NEW, before, time.monotonic())
        assert client.conn in site.connections
        client.close()

    run(scenario)


def test_after_a_response_the_connection_waits_keepalive_timeout(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt"))
        before = time.monotonic()
        await settle()
        assert_deadline(client.conn, IDLE, before, time.monotonic())
        before = time.monotonic()
        client.send(get("/a.txt"))  # from memory, within data_received
        assert_deadline(client.conn, IDLE, before, time.monotonic())
        client.close()

    run(scenario)


def test_partial_head_has_header_timeout_not_renewed_by_more_of_it(make_site):
    async def scenario():
        client = Client(make_site())
        before = time.monotonic()
        client.send(b"GET /a.txt HTTP/1.1\r\n")
        assert_deadline(client.conn, HEAD, before, time.monotonic())
        deadline = client.conn.deadline
        for piece in (b"Host: exa", b"mple.test\r\n", b"Accept: */*\r\n"):
            time.sleep(0.002)  # a renewed deadline would be later than the first one
            client.send(piece)
            assert_unrenewed(client.conn, HEAD, deadline)
        client.send(b"\r\n")
        await settle()
        assert [r.body for r in client.responses()] == [FILES["a.txt"]]
        assert client.conn.phase == IDLE
        client.close()

    run(scenario)


def test_partial_head_after_a_response_starts_a_header_deadline(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt"))
        await settle()
        # A complete request and the beginning of the next one in one read.
        before = time.monotonic()
        client.send(get("/a.txt") + b"GET /b.t")
        assert_deadline(client.conn, HEAD, before, time.monotonic())
        deadline = client.conn.deadline
        time.sleep(0.002)
        client.send(b"xt HTTP/1.1\r\n")
        assert_unrenewed(client.conn, HEAD, deadline)
        client.close()

    run(scenario)


def test_bytes_before_the_target_do_not_start_a_header_deadline(make_site):
    async def scenario():
        client = Client(make_site())
        deadline = client.conn.deadline
        time.sleep(0.002)
        client.send(b"GE")
        assert_unrenewed(client.conn, NEW, deadline)
        client.close()

    run(scenario)


def test_slow_response_is_answering_with_send_timeout(make_site):
    async def scenario():
        client = Client(make_site())
        before = time.monotonic()
        client.send(get("/a.txt"))  # not cached yet: the disk layer must be asked
        assert_deadline(client.conn, ANSWERING, before, time.monotonic())
        assert client.conn.busy and client.conn.task is not None
        await settle()
        assert client.conn.phase == IDLE
        client.close()

    run(scenario)


def test_stream_waiting_for_the_socket_is_answering_and_renewed_per_wait(make_site):
    async def scenario():
        client = Client(make_site())
        client.transport.room = 0
        client.send(get("/big.bin"))
        before = time.monotonic()
        await settle()
        assert_deadline(client.conn, ANSWERING, before, time.monotonic())
        first = client.conn.deadline
        time.sleep(0.002)
        client.transport.drain(room=100)  # the client reads a little; the socket fills again
        await settle()
        assert client.conn.phase == ANSWERING
        assert client.conn.deadline > first  # progress renews the wait's deadline
        client.transport.drain()
        await settle()
        assert client.conn.phase == IDLE
        client.close()

    run(scenario)


def test_full_socket_after_a_response_is_sending_with_send_timeout(make_site):
    async def scenario():
        client = Client(make_site())
        client.transport.room = 10
        client.send(get("/a.txt"))
        before = time.monotonic()
        await settle()
        assert_deadline(client.conn, SENDING, before, time.monotonic())
        before = time.monotonic()
        client.transport.drain()
        assert_deadline(client.conn, IDLE, before, time.monotonic())
        client.close()

    run(scenario)


def test_closing_connection_gets_send_timeout_to_drain(make_site):
    async def scenario():
        client = Client(make_site())
        client.transport.room = 10
        client.send(get("/a.txt", "Connection: close"))
        before = time.monotonic()
        await settle()
        assert_deadline(client.conn, CLOSING, before, time.monotonic())
        assert client.transport.closed and not client.transport.lost
        client.transport.drain()
        await settle()
        assert client.transport.lost
        client.close()

    run(scenario)


@pytest.mark.parametrize("phase", [NEW, IDLE, HEAD, ANSWERING, SENDING, CLOSING])
def test_check_deadline_aborts_an_overdue_connection_and_counts_a_timeout(make_site, phase):
    async def scenario():
        site = make_site()
        client = Client(site)
        if phase == IDLE:
            client.send(get("/a.txt"))
        elif phase == HEAD:
            client.send(b"GET /a.txt HTTP/1.1\r\n")
        elif phase == ANSWERING:
            client.transport.room = 0
            client.send(get("/big.bin"))
        elif phase == SENDING:
            client.transport.room = 10
            client.send(get("/a.txt"))
        elif phase == CLOSING:
            client.transport.room = 10
            client.send(get("/a.txt", "Connection: close"))
        await settle()
        conn = client.conn
        assert conn.phase == phase
        conn.check_deadline(conn.deadline - 0.001)
        assert not client.transport.aborted and site.stats.timeouts == 0
        conn.check_deadline(conn.deadline + 0.001)
        assert client.transport.aborted and site.stats.timeouts == 1
        assert conn.phase == CLOSING
        await settle()
        assert client.transport.lost
        assert conn not in site.connections and conn.task is None
        client.close()

    run(scenario)


async def _streamed(client: Client, root: Path, target: str = "/big.bin") -> bytes:
    """One GET of the large file, streamed whole (the socket has room); its head."""
    client.send(get(target))
    await settle()
    data = client.output()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert client.zero_copy() + rest == (root / "big.bin").read_bytes()
    return head


def test_a_streamed_answer_is_kept_and_streamed_again_with_the_same_checks(make_site,
                                                                         root: Path):
    async def scenario():
        site = make_site()
        client = Client(site)
        first = await _streamed(client, root)  # looked up through the disk layer
        await _streamed(client, root)  # from the path cache: its plan is kept
        assert b"/big.bin" in site.prepared.streams and site.prepared.stream_hits == 0
        again = await _streamed(client, root)  # answered from the kept plan, parsed
        third = await _streamed(client, root)  # from its bytes: the parser is not run
        assert site.prepared.stream_hits == 2 and again == first and third == first
        assert client.conn.phase == IDLE
        assert site.stats.by_status[200] == 4  # every answer is counted and logged
        site.prepared.expire(lambda kept: True)  # the tick keeps what is still current
        assert b"/big.bin" in site.prepared.streams
        await _streamed(client, root)
        assert site.prepared.stream_hits == 3
        client.close()

    run(scenario)


def test_a_kept_stream_is_dropped_once_its_entry_is_not_the_cached_one(make_site, root: Path):
    async def scenario():
        site = make_site()
        client = Client(site)
        await _streamed(client, root)
        await _streamed(client, root)
        kept = site.prepared.streams[b"/big.bin"]
        site.content.paths.discard(b"/big.bin")  # a change event or an eviction
        site.prepared.expire(KeptStream.cached)  # as the tick does
        assert b"/big.bin" not in site.prepared.streams  # the tick let it go
        site.prepared.keep_stream(b"/big.bin", kept)  # as if the tick had not come yet
        await _streamed(client, root)  # looked up afresh, not answered from the old plan
        assert site.prepared.stream_hits == 0 and b"/big.bin" not in site.prepared.streams
        await _streamed(client, root)  # from the new entry: kept again, with it
        assert site.prepared.streams[b"/big.bin"].entry is not kept.entry
        client.close()

    run(scenario)


def test_only_a_plain_whole_get_of_one_representation_is_kept(make_site, root: Path):
    async def scenario():
        site = make_site()
        client = Client(site)
        for request in (get("/big.bin", "Range: bytes=0-9"), get("/big.bin", method="HEAD"),
                        get("/big.bin", version="1.0"), get("/big.bin", "If-None-Match: *")):
            client.send(request)
            client.output()
        assert not site.prepared.streams
        client.close()

    run(scenario)


def test_a_file_truncated_while_it_streams_aborts_the_connection(make_site, root: Path):
    async def scenario():
        site = make_site()
        client = Client(site)
        client.transport.room = 0
        client.send(get("/big.bin"))
        await settle()
        assert client.conn.phase == ANSWERING
        with open(root / "big.bin", "r+b") as f:
            f.truncate(BIG_SIZE // 2)
        client.transport.drain()
        await settle()
        # The head promised BIG_SIZE bytes: only closing is honest, never a second head.
        assert client.output().count(b"HTTP/1.1 ") == 1
        assert client.transport.aborted and client.transport.lost
        assert client.conn not in site.connections
        client.close()

    run(scenario)


# -- the client going away ---------------------------------------------------------------------


def _no_unawaited_coroutines(caught: list[warnings.WarningMessage]) -> None:
    gc.collect()
    unawaited = [w for w in caught if issubclass(w.category, RuntimeWarning)
                 and "never awaited" in str(w.message)]
    assert not unawaited, [str(w.message) for w in unawaited]


def test_connection_lost_during_a_stream_cancels_its_task(make_site):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        async def scenario():
            site = make_site()
            client = Client(site)
            client.transport.room = 0
            client.send(get("/big.bin") + get("/a.txt"))
            await settle()
            task = client.conn.task
            assert client.conn.phase == ANSWERING and task is not None
            client.conn.connection_lost(ConnectionResetError())
            await settle()
            assert task.cancelled()
            assert client.conn.task is None and client.conn.phase == CLOSING
            assert client.conn not in site.connections and not client.conn.queue
            written = len(client.transport.written)
            client.transport.drain()
            await settle()
            assert len(client.transport.written) == written  # nothing more for a gone client
            client.close()

        run(scenario)
        _no_unawaited_coroutines(caught)


def test_connection_lost_before_the_slow_path_ran_leaves_no_coroutine_behind(make_site):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        async def scenario():
            site = make_site()
            client = Client(site)
            client.send(get("/a.txt") + get("/b.txt"))
            task = client.conn.task
            assert task is not None
            client.conn.connection_lost(None)  # before the task's first step
            await settle()
            assert task.cancelled()
            assert client.output() == b""
            client.close()

        run(scenario)
        _no_unawaited_coroutines(caught)


@pytest.mark.parametrize("cached", [False, True])
def test_nothing_is_written_or_counted_after_a_connection_close_response(make_site, cached):
    async def scenario():
        site = make_site()
        client = Client(site)
        if cached:
            client.send(get("/a.txt"))
            await settle()
            client.output()
        client.send(get("/a.txt", "Connection: close") + get("/b.txt"))
        await settle()
        (response,) = client.responses()
        assert response.body == FILES["a.txt"] and response.headers["connection"] == "close"
        assert client.transport.closed
        assert not client.transport.late_writes
        assert site.stats.rejected == 0
        client.close()

    run(scenario)


def test_half_closed_client_gets_its_pipelined_answers_then_the_close(make_site):
    async def scenario():
        client = Client(make_site())
        client.send(get("/a.txt") + get("/b.txt"))
        assert client.conn.eof_received() is True  # keep the transport open: answers pending
        await settle()
        assert [r.body for r in client.responses()] == [FILES["a.txt"], FILES["b.txt"]]
        assert client.transport.closed
        client.close()

    run(scenario)
