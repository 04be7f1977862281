"""flashsrv.request_reader: httptools callbacks, the limits they leave to us, and `Request`.

A recording subclass stands in for the connection: no loop, no site, no transport.
"""

from __future__ import annotations

import pytest

from flashsrv.prepared import MAX_REQUEST, RepeatedRequests
from flashsrv.request_reader import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_PENDING_HEAD,
    MAX_URL_BYTES,
    RequestReader,
)


class Recorder(RequestReader):
    def __init__(self, prepared: tuple[bytes, ...] = (),
                 repeats: RepeatedRequests | None = None) -> None:
        super().__init__(repeats=repeats)
        self.prepared = prepared
        self.requests = []
        self.rejects: list[tuple[int, str]] = []
        self.asked: list[bytes] = []
        self.events: list[str] = []

    def request_received(self, request) -> None:
        self.requests.append(request)

    def answer_prepared(self, target: bytes, host: bytes, headers: dict[str, str]) -> bool:
        self.asked.append(target)
        return target in self.prepared

    def reject(self, status: int, detail: str) -> None:
        self.rejects.append((status, detail))
        self._input_closed = True  # as the connection does

    def expect_continue(self) -> None:
        self.events.append("continue")

    def head_started(self) -> None:
        self.events.append("head")

    def body_started(self) -> None:
        self.events.append("body")

    def upgrade_seen(self) -> None:
        self.events.append("upgrade")


def request(target: str = "/a.txt", *headers: str, method: str = "GET", version: str = "1.1",
            host: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", *(["Host: example.test"] if host else []),
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read(data: bytes, prepared: tuple[bytes, ...] = ()) -> Recorder:
    reader = Recorder(prepared)
    reader.data_received(data)
    return reader


def status_of(data: bytes) -> int:
    reader = read(data)
    assert len(reader.rejects) == 1, reader.rejects
    return reader.rejects[0][0]


def test_plain_get_becomes_a_request():
    reader = read(request("/docs/a.txt?v=1"))
    (req,) = reader.requests
    assert (req.method, req.path, req.query, req.version) == (b"GET", b"/docs/a.txt", b"v=1",
                                                             "1.1")
    assert req.keep_alive and not req.conditional
    # Host chooses the virtual host; fields the answer does not depend on are dropped.
    assert req.headers == {"host": "example.test"}


def test_only_the_headers_the_answer_depends_on_are_kept_and_repeats_are_joined():
    reader = read(request("/a", "Accept-Encoding: br", "ACCEPT-ENCODING: gzip", "Cookie: x=1",
                          "User-Agent: t", "Accept: text/html"))
    assert reader.requests[0].headers == {"host": "example.test", "accept-encoding": "br, gzip",
                                          "accept": "text/html"}


@pytest.mark.parametrize("header", [
    "If-None-Match: \"x\"", "If-Match: *", "If-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT",
    "If-Unmodified-Since: Thu, 01 Jan 2099 00:00:00 GMT", "Range: bytes=0-1"])
def test_preconditions_and_range_mark_the_request_conditional(header):
    assert read(request("/a", header)).requests[0].conditional


def test_plain_http_1_1_get_is_offered_to_the_prepared_lane_first():
    reader = read(request("/a.txt") + request("/b.txt"), prepared=(b"/a.txt",))
    assert reader.asked == [b"/a.txt", b"/b.txt"]
    assert [r.path for r in reader.requests] == [b"/b.txt"]  # /a.txt was answered prepared


# -- repeated requests: the same bytes, answered again without the parser ------------------------

def test_a_whole_request_answered_prepared_is_answered_again_from_its_bytes():
    repeats = RepeatedRequests()
    first = Recorder(prepared=(b"/a.txt",), repeats=repeats)
    data = request("/a.txt", "User-Agent: ua/1")
    first.data_received(data)
    assert repeats == {data: (b"/a.txt", b"example.test", {"host": "example.test"})}
    second = Recorder(prepared=(b"/a.txt",), repeats=repeats)  # another connection
    second.parser = None  # type: ignore[assignment]  # the parser must not be needed
    second.data_received(data)
    second.data_received(data)
    assert second.asked == [b"/a.txt", b"/a.txt"] and not second.requests


def test_a_repeated_request_the_connection_cannot_answer_prepared_is_parsed():
    repeats = RepeatedRequests()
    data = request("/a.txt")
    Recorder(prepared=(b"/a.txt",), repeats=repeats).data_received(data)
    reader = Recorder(prepared=(), repeats=repeats)  # e.g. busy, or the table was emptied
    reader.data_received(data)
    assert reader.asked == [b"/a.txt", b"/a.txt"]  # once from the bytes, once parsed
    assert [r.path for r in reader.requests] == [b"/a.txt"]


@pytest.mark.parametrize("data", [
    request("/a.txt") + request("/a.txt"),  # two messages in one read
    request("/a.txt", "Range: bytes=0-1"),  # not answered prepared
    request("/a.txt") + b"GE",  # a next message has begun
    request("/a.txt", "X-Pad: " + "p" * MAX_REQUEST),  # too long to remember
])
def test_only_one_whole_request_answered_prepared_is_remembered(data):
    repeats = RepeatedRequests()
    Recorder(prepared=(b"/a.txt",), repeats=repeats).data_received(data)
    assert not repeats


def test_a_request_that_did_not_start_at_a_message_boundary_is_not_remembered():
    repeats = RepeatedRequests()
    reader = Recorder(prepared=(b"/a.txt",), repeats=repeats)
    data = request("/a.txt")
    reader.data_received(data[:10])
    reader.data_received(data[10:])  # completes a message, but began in the middle of one
    assert not repeats and reader.asked == [b"/a.txt"]
    reader.data_received(data)  # the previous read ended at a boundary: this one starts one
    assert list(repeats) == [data]


def test_remembered_bytes_are_not_taken_in_the_middle_of_a_message():
    repeats = RepeatedRequests()
    data = request("/a.txt")
    Recorder(prepared=(b"/a.txt",), repeats=repeats).data_received(data)
    reader = Recorder(prepared=(b"/a.txt",), repeats=repeats)
    reader.data_received(b"GET /b.txt HTTP/1.1\r\n")  # a head in progress
    reader.data_received(data)  # now header lines of /b.txt: a bad header, not a repeat
    assert reader.rejects and reader.asked == []


def test_repeated_requests_are_bounded_in_bytes_and_emptied_by_clear():
    repeats = RepeatedRequests(max_bytes=100)
    repeats.remember(b"x" * 60, (b"/a", b"h", {}))
    repeats.remember(b"y" * 60, (b"/b", b"h", {}))  # would go over
    assert list(repeats) == [b"x" * 60] and repeats.used == 60
    repeats.clear()
    assert not repeats and repeats.used == 0


@pytest.mark.parametrize("data", [
    request("/a.txt", "Range: bytes=0-1"),
    request("/a.txt", "If-None-Match: *"),
    request("/a.txt", version="1.0"),
    request("/a.txt", "Expect: 100-continue"),
])
def test_request_whose_answer_may_differ_is_not_offered_to_the_prepared_lane(data):
    reader = read(data, prepared=(b"/a.txt",))
    assert reader.asked == [] and len(reader.requests) == 1


def test_http_1_0_keeps_alive_only_when_asked():
    assert not read(request(version="1.0", host=False)).requests[0].keep_alive
    assert read(request("/a", "Connection: keep-alive", version="1.0")).requests[0].keep_alive
    assert not read(request("/a", "Connection: close")).requests[0].keep_alive


def test_absolute_form_target_is_split_into_path_and_query():
    (req,) = read(request("http://example.test/a/b?c=d")).requests
    assert (req.path, req.query) == (b"/a/b", b"c=d")


@pytest.mark.parametrize(("data", "status"), [
    (request("/" + "a" * MAX_URL_BYTES), 414),
    (request("/a", *[f"X-{i}: v" for i in range(MAX_HEADERS + 1)]), 431),
    (request("/a", "X-Big: " + "v" * MAX_HEADER_BYTES), 431),
    (request("/a", "Host: other.test"), 400),
    (request("/a", host=False), 400),
    (b"GET /a HTTP/1.1\r\nHost: bad host\r\n\r\n", 400),
    (request("/a", "Transfer-Encoding: gzip, chunked"), 501),
    (request("/a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400),
    (request("/a", version="2.0"), 505),
    (request("/a", method="BREW"), 501),
    (b"G@T /a HTTP/1.1\r\n\r\n", 400),
    (request("*", method="GET"), 400),
    (b"GARBAGE\r\n\r\n", 400),
])
def test_request_beyond_a_limit_or_malformed_is_rejected_with_its_status(data, status):
    assert status_of(data) == status


def test_body_of_a_get_is_read_and_dropped_up_to_a_limit():
    reader = read(request("/a", "Content-Length: 4") + b"bodyGET")
    assert len(reader.requests) == 1 and "body" in reader.events
    big = MAX_BODY_BYTES + 1
    assert status_of(request("/a", f"Content-Length: {big}") + b"x" * big) == 413


def test_chunked_body_is_read_and_dropped():
    reader = read(request("/a", "Transfer-Encoding: chunked") + b"4\r\nbody\r\n0\r\n\r\n")
    assert len(reader.requests) == 1 and reader.requests[0].keep_alive


def test_chunked_request_from_http_1_0_is_not_kept_alive():
    reader = read(request("/a", "Transfer-Encoding: chunked", version="1.0") + b"0\r\n\r\n")
    assert not reader.requests[0].keep_alive


def test_nothing_is_read_after_a_rejection():
    reader = read(request("/a", host=False) + request("/b"))
    reader.data_received(request("/c"))
    assert reader.requests == [] and len(reader.rejects) == 1


def test_valid_requests_before_a_malformed_one_are_all_handed_over():
    reader = read(request("/a") + request("/b") + b"GARBAGE\r\n\r\n")
    assert [r.path for r in reader.requests] == [b"/a", b"/b"]
    assert reader.rejects[0][0] == 400


def test_each_read_that_leaves_a_head_incomplete_reports_it():
    reader = Recorder()
    reader.data_received(b"GET /a HTTP/1.1\r\n")
    reader.data_received(b"Host: example.test\r\n")
    assert reader.events == ["head", "head"]
    reader.data_received(b"\r\n")
    assert reader.events == ["head", "head"] and len(reader.requests) == 1
    reader.data_received(request("/b"))
    assert reader.events == ["head", "head"]  # complete in one read: nothing to bound


def test_head_growing_past_the_pending_limit_is_refused_with_431():
    reader = Recorder()
    reader.data_received(b"GET /a HTTP/1.1\r\nX-Long: ")
    chunk = b"v" * (MAX_PENDING_HEAD // 2)
    for _ in range(3):
        reader.data_received(chunk)
    assert reader.rejects and reader.rejects[0][0] == 431


def test_expect_100_continue_is_reported_for_http_1_1_only():
    assert read(request("/a", "Expect: 100-continue")).events == ["continue"]
    assert read(request("/a", "Expect: 100-continue", version="1.0")).events == []


def test_upgrade_request_is_handed_over_not_kept_alive_and_reported():
    reader = read(request("/a", "Connection: upgrade", "Upgrade: websocket") + request("/b"))
    assert [r.path for r in reader.requests] == [b"/a"]
    assert not reader.requests[0].keep_alive
    assert reader.events == ["upgrade"]
