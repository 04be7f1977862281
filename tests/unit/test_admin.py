"""flashsrv.admin: the Prometheus text and the admin protocol, in-process over a fake transport.

The site is a real one over a temporary folder (the inline disk: no helper process); the test
plays the transport, so each request's bytes and the connection's end are seen directly.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from flashsrv import admin
from flashsrv.admin import (
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    PROMETHEUS_TYPE,
    AdminConnection,
    metrics_text,
    start_admin,
)
from flashsrv.config import Config
from flashsrv.helper_pool import HelperPool
from flashsrv.logsink import ACCESS, LogLosses
from flashsrv.server import build_site
from flashsrv.site import Site

# One sample line: a metric name, optional labels, a value (the exposition format, v0.0.4).
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([a-zA-Z_]\w*="[^"\\\n]*"(?:,[a-zA-Z_]\w*="[^"\\\n]*")*)\})?'
    r" (\S+)$")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(Config(root=str(tmp_path), model="sped", access_log="off"),
                      str(tmp_path), 64)


@pytest.fixture(autouse=True)
def no_open_admin_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test counts its own admin connections against the cap."""
    monkeypatch.setattr(AdminConnection, "open", set())


def parse_metrics(text: str) -> tuple[dict[str, str], dict[tuple[str, str], float]]:
    """The type of each family, and each sample's value by (name, labels); fails on any line
    a Prometheus scraper would refuse, a family declared twice, or a sample of no family."""
    types: dict[str, str] = {}
    samples: dict[tuple[str, str], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"{name} declared twice"
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        family = name if name in types else HISTOGRAM_SUFFIX.sub("", name)
        assert family in types, f"{name} comes before its TYPE line"
        samples[(name, labels or "")] = float(value)
    return types, samples


# -- metrics_text ------------------------------------------------------------------------------


def test_metrics_parse_as_prometheus_text_with_a_type_for_every_family(site: Site):
    types, samples = parse_metrics(metrics_text(site))
    assert types["flashsrv_open_connections"] == "gauge"
    assert types["flashsrv_timeouts_total"] == "counter"
    assert types["flashsrv_event_loop_delay_seconds"] == "histogram"
    assert samples[("flashsrv_open_connections", "")] == 0
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")


def test_requests_are_counted_by_status_and_the_fast_lane_counts_as_200(site: Site):
    site.log_request(b"- - - [", b"GET", b"/a", "1.1", 200, 6)
    site.log_request(b"- - - [", b"GET", b"/b", "1.1", 404, 0)
    site.prepared.hits, site.prepared.bytes_sent = 5, 50
    _, samples = parse_metrics(metrics_text(site))
    assert samples[("flashsrv_requests_total", 'status="200"')] == 6
    assert samples[("flashsrv_requests_total", 'status="404"')] == 1
    assert samples[("flashsrv_prepared_hits_total", "")] == 5
    assert samples[("flashsrv_bytes_sent_total", "")] == 56


def test_histogram_buckets_are_cumulative_with_sum_and_count(site: Site):
    site.stats.slow_requests.observe(0.003)
    site.stats.slow_requests.observe(0.2)
    _, samples = parse_metrics(metrics_text(site))
    name = "flashsrv_slow_request_duration_seconds"
    assert samples[(f"{name}_bucket", 'le="0.0025"')] == 0
    assert samples[(f"{name}_bucket", 'le="0.005"')] == 1
    assert samples[(f"{name}_bucket", 'le="+Inf"')] == 2
    assert samples[(f"{name}_count", "")] == 2
    assert samples[(f"{name}_sum", "")] == pytest.approx(0.203)


def test_disk_layer_counters_are_exposed_with_their_kind(site: Site, tmp_path: Path):
    pool = HelperPool(str(tmp_path), 2, 1.0, 8)  # never started: no process, stats only
    pool.restarts = 3
    site.content.disk = pool
    types, samples = parse_metrics(metrics_text(site))
    assert types["flashsrv_helpers"] == "gauge" and types["flashsrv_helper_queue"] == "gauge"
    assert types["flashsrv_helper_restarts"] == "counter"
    assert samples[("flashsrv_helper_restarts", "")] == 3


def test_dropped_log_lines_are_labelled_by_log(site: Site):
    site.stats.logs = LogLosses()
    site.stats.logs.drop(ACCESS, 4)
    _, samples = parse_metrics(metrics_text(site))
    assert samples[("flashsrv_log_dropped_total", 'log="access"')] == 4
    assert samples[("flashsrv_log_dropped_total", 'log="error"')] == 0


# -- AdminConnection ---------------------------------------------------------------------------


class FakeTransport:
    """What an AdminConnection uses of its transport, recorded."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted


def exchange(site: Site, *chunks: bytes) -> FakeTransport:
    """One admin connection that receives chunks, then goes away."""

    async def scenario() -> FakeTransport:
        transport = FakeTransport()
        conn = AdminConnection(site)
        conn.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            conn.data_received(chunk)
        conn.connection_lost(None)
        return transport

    return asyncio.run(scenario())


def response(transport: FakeTransport) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the one response written."""
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (h.partition(": ") for h in lines)}
    return int(status_line.split()[1]), headers, body


def request(method: str, target: str) -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: admin\r\n\r\n".encode()


def test_healthz_is_ok_and_closes_the_connection(site: Site):
    transport = exchange(site, request("GET", "/healthz"))
    status, headers, body = response(transport)
    assert (status, body) == (200, b"ok\n")
    assert headers["connection"] == "close" and headers["content-length"] == "3"
    assert transport.closed


def test_healthz_fails_while_the_server_is_stopping(site: Site):
    site.stopping = True
    status, _, body = response(exchange(site, request("GET", "/healthz")))
    assert (status, body) == (503, b"stopping\n")


def test_metrics_answer_the_prometheus_text_whatever_the_query(site: Site):
    status, headers, body = response(exchange(site, request("GET", "/metrics?x=1")))
    assert status == 200 and headers["content-type"] == PROMETHEUS_TYPE
    assert int(headers["content-length"]) == len(body)
    types, _ = parse_metrics(body.decode())
    assert "flashsrv_requests_total" in types


def test_any_other_path_is_404(site: Site):
    status, _, body = response(exchange(site, request("GET", "/")))
    assert status == 404 and b"/healthz" in body


def test_head_gets_the_length_without_the_body(site: Site):
    status, headers, body = response(exchange(site, request("HEAD", "/healthz")))
    assert (status, headers["content-length"], body) == (200, "3", b"")


def test_head_of_an_unknown_path_gets_no_body(site: Site):
    status, _, body = response(exchange(site, request("HEAD", "/nope")))
    assert (status, body) == (404, b"")


def test_a_request_in_several_pieces_is_put_together(site: Site):
    status, _, body = response(exchange(site, b"GET /hea", b"lthz HTTP/1.1\r\n", b"\r\n"))
    assert (status, body) == (200, b"ok\n")


def test_malformed_bytes_get_400(site: Site):
    status, _, _ = response(exchange(site, b"\x00\x01 not http\r\n\r\n"))
    assert status == 400


def test_a_request_over_the_size_limit_gets_431(site: Site):
    filler = b"X-Filler: " + b"a" * 1024 + b"\r\n"
    chunks = [b"GET /healthz HTTP/1.1\r\n"] + [filler] * (MAX_REQUEST_BYTES // len(filler) + 1)
    transport = exchange(site, *chunks)
    status, _, _ = response(transport)
    assert status == 431 and transport.closed


def test_one_answer_per_connection_even_when_requests_are_pipelined(site: Site):
    transport = exchange(site, request("GET", "/healthz") + request("GET", "/metrics"))
    assert transport.written.count(b"HTTP/1.1 ") == 1


def test_connections_over_the_cap_are_aborted_until_one_leaves(site: Site):
    async def scenario() -> tuple[FakeTransport, FakeTransport]:
        conns = []
        for _ in range(MAX_CONNECTIONS):
            conn = AdminConnection(site)
            conn.connection_made(FakeTransport())  # type: ignore[arg-type]
            conns.append(conn)
        refused = FakeTransport()
        AdminConnection(site).connection_made(refused)  # type: ignore[arg-type]
        conns[0].connection_lost(None)
        admitted = FakeTransport()
        AdminConnection(site).connection_made(admitted)  # type: ignore[arg-type]
        return refused, admitted

    refused, admitted = asyncio.run(scenario())
    assert refused.aborted and not refused.written
    assert not admitted.aborted
    assert len(AdminConnection.open) == MAX_CONNECTIONS


def test_a_client_that_never_finishes_is_aborted_at_the_deadline(
        site: Site, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(admin, "DEADLINE", 0.01)

    async def scenario() -> tuple[FakeTransport, FakeTransport]:
        slow, quick = FakeTransport(), FakeTransport()
        slow_conn, quick_conn = AdminConnection(site), AdminConnection(site)
        slow_conn.connection_made(slow)  # type: ignore[arg-type]
        quick_conn.connection_made(quick)  # type: ignore[arg-type]
        slow_conn.data_received(b"GET /healthz HTTP/1.1\r\n")
        quick_conn.connection_lost(None)  # gone before the deadline: its timer is cancelled
        await asyncio.sleep(0.05)
        return slow, quick

    slow, quick = asyncio.run(scenario())
    assert slow.aborted and not slow.written
    assert not quick.aborted


def test_start_admin_serves_healthz_on_a_loopback_port(site: Site):
    async def scenario() -> bytes:
        server = await start_admin(site, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request("GET", "/healthz"))
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return answer
        finally:
            server.close()
            await server.wait_closed()

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n")
