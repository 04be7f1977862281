"""The admin endpoint's counters move with what really happens (requests by status, helper
restarts, open connections, 503s), the endpoint is not part of the site, and overload is
well-conditioned: with the helpers stuck and the helper queue full, requests that need the disk
get a quick 503 with Retry-After while requests answered from memory keep flowing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    admin_address,
    get,
    helpers_of,
    read_until_eof,
    request_each,
    resume,
    scrape_metrics,
    slow_connection,
    split_response,
    wait_until,
)

HOT = b"hot file, served from memory\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "hot.txt").write_bytes(HOT)
    for i in range(30):
        (www / f"cold{i}.txt").write_bytes(b"cold %d\n" % i)
    return www


def admin_get(server: ServerProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = admin_address(server)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
        data = read_until_eof(s, timeout=5)
    status, headers, body = split_response(data, f"admin {path}")
    assert int(headers["content-length"]) == len(body)
    return status, headers, body


def requests_with(status: int, sample: dict[str, float]) -> float:
    return sample.get(f'flashsrv_requests_total{{status="{status}"}}', 0.0)


# --- the admin endpoint ---------------------------------------------------------------------


def test_request_counters_move_by_status(root: Path, serve: Serve):
    server = serve(root, "--admin-port", "0", "--access-log", "off")
    admin = admin_address(server)
    before = scrape_metrics(admin)
    for _ in range(3):
        assert get(server, "/hot.txt").status == 200
    for _ in range(2):
        assert get(server, "/nothing-here").status == 404
    assert get(server, "/hot.txt", method="DELETE").status == 405
    after = scrape_metrics(admin)
    assert requests_with(200, after) - requests_with(200, before) == 3
    assert requests_with(404, after) - requests_with(404, before) == 2
    assert requests_with(405, after) - requests_with(405, before) == 1
    assert after["flashsrv_bytes_sent_total"] - before["flashsrv_bytes_sent_total"] \
        >= 3 * len(HOT)
    assert after["flashsrv_data_cache_bytes"] >= len(HOT)
    assert after["flashsrv_event_loop_lag_seconds"] < 1.0


def test_helper_restarts_counted_after_a_kill(root: Path, serve: Serve):
    server = serve(root, "--admin-port", "0", "--helpers", "2", "--access-log", "off")
    admin = admin_address(server)
    pids = helpers_of(server, 2)
    before = scrape_metrics(admin)["flashsrv_helper_restarts"]
    os.kill(pids[0], signal.SIGKILL)
    assert wait_until(lambda: scrape_metrics(admin)["flashsrv_helper_restarts"] == before + 1,
                      timeout=3), "helper restart not counted"
    assert wait_until(lambda: scrape_metrics(admin)["flashsrv_helpers"] == 2, timeout=3)
    assert get(server, "/cold1.txt").status == 200


def test_open_connections_gauge_follows_the_clients(root: Path, serve: Serve):
    server = serve(root, "--admin-port", "0", "--keepalive-timeout", "30", "--access-log", "off")
    admin = admin_address(server)
    socks = []
    try:
        assert wait_until(lambda: scrape_metrics(admin)["flashsrv_open_connections"] == 0, 3)
        for s in request_each(server, ["/hot.txt"] * 7, close=False):
            socks.append(s)
            assert ResponseReader(s).read().status == 200
        assert scrape_metrics(admin)["flashsrv_open_connections"] == 7
        for s in socks[:4]:
            s.close()
        assert wait_until(lambda: scrape_metrics(admin)["flashsrv_open_connections"] == 3, 3), \
            scrape_metrics(admin)["flashsrv_open_connections"]
    finally:
        for s in socks:
            s.close()


def test_admin_is_on_loopback_and_not_part_of_the_site(root: Path, serve: Serve):
    server = serve(root, "--admin-port", "0", "--access-log", "off")
    host, port = admin_address(server)
    assert host == "127.0.0.1"
    assert port != server.port
    status, _, body = admin_get(server, "/healthz")
    assert (status, body) == (200, b"ok\n")
    for path in ("/metrics", "/healthz"):
        r = get(server, path)
        assert r.status == 404, f"{path} on the site port: {r.status}"
        assert b"flashsrv_" not in r.body
    # The admin endpoint serves no site files either.
    status, _, body = admin_get(server, "/hot.txt")
    assert status == 404 and HOT not in body


def test_healthz_says_stopping_while_draining(root: Path, serve: Serve):
    (root / "big.bin").write_bytes(b"\0" * (16 << 20))
    server = serve(root, "--admin-port", "0", "--grace", "3", "--access-log", "off")
    # a download in flight keeps the drain going
    with slow_connection(server, "/big.bin", rcvbuf=32 * 1024, timeout=None) as s:
        s.recv(1024)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            status, _, body = admin_get(server, "/healthz")
        except OSError:
            status, body = None, b""  # the admin socket closed with the listener: fine
        assert status in (None, 503), (status, body)
    assert server.proc.wait(6) == 0


def test_metrics_survive_hostile_admin_requests(root: Path, serve: Serve):
    server = serve(root, "--admin-port", "0", "--access-log", "off")
    admin = admin_address(server)
    for raw in (b"\x00\xff garbage\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n",
                b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(admin, timeout=5) as s:
            with contextlib.suppress(OSError):
                s.sendall(raw)
            data = read_until_eof(s, timeout=5)
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:80]
    assert scrape_metrics(admin)["flashsrv_helpers"] >= 1
    assert server.proc.poll() is None


def test_admin_connections_are_bounded_in_number_and_time(root: Path, serve: Serve):
    """A client that connects to the admin port and says nothing is closed after the admin
    deadline (5 s); past 64 open admin connections, more are refused at once; /metrics still
    answers once they are gone."""
    server = serve(root, "--admin-port", "0", "--access-log", "off")
    admin = admin_address(server)
    idle: list[socket.socket] = []
    try:
        start = time.monotonic()
        for _ in range(64):
            idle.append(socket.create_connection(admin, timeout=10))
        with socket.create_connection(admin, timeout=5) as extra:
            assert read_until_eof(extra, timeout=3) == b"", "the 65th admin connection was kept"
        assert read_until_eof(idle[0], timeout=10) == b""
        assert 4.0 < time.monotonic() - start < 8.0, "an idle admin connection outlived 5 s"
        for s in idle:
            s.close()
        assert wait_until(lambda: scrape_metrics(admin)["flashsrv_helpers"] >= 1, timeout=5)
    finally:
        for s in idle:
            s.close()


# --- overload ---------------------------------------------------------------------------------


def _overload_server(serve: Serve, root: Path) -> tuple[ServerProcess, int]:
    server = serve(root, "--helpers", "1", "--helper-queue", "4", "--helper-timeout", "5",
                   "--admin-port", "0", "--access-log", "off")
    (pid,) = helpers_of(server, 1)
    return server, pid


def _flood_cold(server: ServerProcess, n: int) -> list[tuple[socket.socket, float]]:
    return [(s, time.monotonic())
            for s in request_each(server, [f"/cold{i}.txt" for i in range(n)])]


def _release(helper: int, socks: list[tuple[socket.socket, float]]) -> None:
    """Cleanup after an overload test: resume the helper, close the clients."""
    resume(helper)
    for s, _ in socks:
        s.close()


def test_saturated_helpers_give_quick_503s_while_cached_files_flow(root: Path, serve: Serve):
    server, helper = _overload_server(serve, root)
    socks: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(2):
            assert get(server, "/hot.txt").status == 200  # now in the caches
        os.kill(helper, signal.SIGSTOP)
        socks = _flood_cold(server, 20)
        quick_503 = 0
        for s, sent_at in socks[5:]:  # 1 at the stuck helper + 4 queued; the rest overflow
            s.settimeout(3)
            r = ResponseReader(s).read()
            assert r.status == 503, r.status
            assert r.header("retry-after") == "1"
            if time.monotonic() - sent_at < 1.0:
                quick_503 += 1
        assert quick_503 == 15, f"only {quick_503} of 15 overflow requests got a quick 503"
        start = time.monotonic()
        r = get(server, "/hot.txt")
        assert r.status == 200 and r.body == HOT
        assert time.monotonic() - start < 0.5
        sample = scrape_metrics(admin_address(server))
        assert sample["flashsrv_helper_queue"] == 4
        assert sample["flashsrv_helper_rejected"] >= 15
        assert requests_with(503, sample) >= 15
    finally:
        _release(helper, socks)


def test_queued_requests_are_answered_once_the_helper_resumes(root: Path, serve: Serve):
    server, helper = _overload_server(serve, root)
    socks: list[tuple[socket.socket, float]] = []
    try:
        os.kill(helper, signal.SIGSTOP)
        socks = _flood_cold(server, 5)  # exactly the helper's job + the queue
        time.sleep(0.3)
        os.kill(helper, signal.SIGCONT)
        for i, (s, _) in enumerate(socks):
            s.settimeout(5)
            r = ResponseReader(s).read()
            assert (r.status, r.body) == (200, b"cold %d\n" % i)
    finally:
        _release(helper, socks)


# Regression test for defect D9 (found by this file, fixed by the lead).
def test_cached_file_still_flows_when_saturation_outlasts_the_revalidation_interval(
        root: Path, serve: Serve):
    server, helper = _overload_server(serve, root)
    socks: list[tuple[socket.socket, float]] = []
    try:
        assert get(server, "/hot.txt").status == 200
        os.kill(helper, signal.SIGSTOP)
        socks = _flood_cold(server, 20)
        time.sleep(1.5)  # the helpers stay saturated longer than REVALIDATE_AFTER
        start = time.monotonic()
        r = get(server, "/hot.txt")
        assert r.status == 200 and r.body == HOT, r.status
        assert time.monotonic() - start < 0.5
    finally:
        _release(helper, socks)
