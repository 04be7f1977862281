"""Hostile clients over real sockets: many slowloris connections, a slow request body, a client
that never reads a large response, a pipelining flood that reads nothing, descriptor exhaustion
(EMFILE on accept) under a low `ulimit -n`, and a client that half-closes after its request.

Each test checks the same three things: the hostile connections end by the server's timeouts
(or are held at a bounded cost), the server's memory and CPU stay bounded (read from /proc), and
a normal client is served promptly meanwhile and afterwards.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import time
from pathlib import Path

import pytest
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    admin_address,
    connect,
    get,
    open_fd_count,
    read_until_eof,
    request_bytes,
    rss_bytes,
    scrape_metrics,
    wait_until,
)

MiB = 1 << 20
PAGE = b"a normal page\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "www"
    root.mkdir()
    (root / "page.txt").write_bytes(PAGE)
    (root / "four_k.bin").write_bytes(bytes(range(256)) * 16)
    for i in range(20):
        (root / f"cold{i}.txt").write_bytes(b"cold %d\n" % i)
    with open(root / "sparse100m.bin", "wb") as f:  # 100 MB of holes: no disk space used
        f.truncate(100 * 1000 * 1000)
    return root


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_get(server: ServerProcess, path: str = "/page.txt") -> float:
    start = time.monotonic()
    r = get(server, path)
    assert r.status == 200, r.status
    return time.monotonic() - start


# --- slowloris: many connections trickling their heads ---------------------------------------


def test_many_slowloris_connections_are_closed_by_the_header_timeout(site: Path, serve: Serve):
    server = serve(site, "--header-timeout", "1", "--access-log", "off")
    n = 60
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = connect(server, timeout=5)
            s.setblocking(False)
            socks.append(s)
        head = b"GET /page.txt HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        sent = 0
        closed_at: dict[socket.socket, float] = {}
        start = time.monotonic()
        normal_latency = None
        while len(closed_at) < n and time.monotonic() - start < 6:
            for s in socks:
                if s in closed_at:
                    continue
                try:
                    s.send(head[sent:sent + 1])
                except OSError:
                    closed_at[s] = time.monotonic() - start
            sent += 1
            readable, _, _ = select.select([s for s in socks if s not in closed_at], [], [], 0.3)
            for s in readable:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed_at[s] = time.monotonic() - start
                else:
                    pytest.fail(f"a trickling client got an answer: {data[:80]!r}")
            if normal_latency is None and time.monotonic() - start > 0.5:
                normal_latency = timed_get(server)  # while all of them are still trickling
        assert len(closed_at) == n, f"{n - len(closed_at)} of {n} trickling connections still " \
                                    "open 6 s into a 1 s header timeout"
        assert max(closed_at.values()) < 3.5, sorted(closed_at.values())[-5:]
        assert normal_latency is not None and normal_latency < 1.0, normal_latency
        assert timed_get(server) < 1.0
        assert server.proc.poll() is None
    finally:
        for s in socks:
            s.close()


# Regression test for defect D6 (found by this file, fixed by the lead).
def test_request_body_trickled_byte_by_byte_is_cut_off(site: Path, serve: Serve):
    server = serve(site, "--header-timeout", "1", "--access-log", "off")
    with connect(server, timeout=5) as s:
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 6:
            try:
                s.sendall(b"x")
            except OSError:
                closed = True
                break
            r, _, _ = select.select([s], [], [], 0.3)
            if r:
                with contextlib.suppress(OSError):
                    if s.recv(4096) == b"":
                        closed = True
                        break
        assert closed, "a body trickled 1 byte / 0.3 s kept the connection open for 6 s " \
                       "with a 1 s header timeout"


# --- a client that never reads -----------------------------------------------------------


def test_client_that_never_reads_a_large_file_is_disconnected_with_bounded_memory(
        site: Path, serve: Serve):
    server = serve(site, "--send-timeout", "2", "--admin-port", "0",
                   "--cache-bytes", "8M", "--access-log", "off")
    admin = admin_address(server)
    assert get(server, "/page.txt").status == 200
    baseline = rss_bytes(server.proc.pid)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.settimeout(10)
        s.connect((server.host, server.port))
        s.sendall(request_bytes(server, "/sparse100m.bin"))
        start = time.monotonic()
        peak = baseline

        def gone() -> bool:
            nonlocal peak
            peak = max(peak, rss_bytes(server.proc.pid))
            return scrape_metrics(admin)["flashsrv_open_connections"] == 0

        assert wait_until(gone, timeout=8, interval=0.1), \
            "a client that reads nothing is still connected 8 s into a 2 s send timeout"
        elapsed = time.monotonic() - start
        # What reached us is a prefix of the promised body, then the end.
        got = read_until_eof(s, timeout=5, limit=200 * MiB)
        assert got.startswith(b"HTTP/1.1 200")
        assert len(got) < 100 * 1000 * 1000, "the whole file was sent to a non-reader?"
    assert elapsed < 6, f"disconnected only after {elapsed:.1f} s"
    growth = peak - baseline
    assert growth < 24 * MiB, f"RSS grew by {growth / MiB:.1f} MiB for one stalled reader"
    assert scrape_metrics(admin)["flashsrv_timeouts_total"] >= 1
    assert timed_get(server) < 1.0


# --- a pipelining flood ----------------------------------------------------------------------


def test_ten_thousand_pipelined_requests_unread_keep_memory_bounded(site: Path, serve: Serve):
    server = serve(site, "--send-timeout", "3", "--access-log", "off")
    assert get(server, "/four_k.bin").status == 200  # in the cache: answered at once
    baseline = rss_bytes(server.proc.pid)
    one = request_bytes(server, "/four_k.bin")
    flood = one * 10_000  # 40 MB of responses if the server buffered them all
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.connect((server.host, server.port))
        s.setblocking(False)
        view = memoryview(flood)
        stalled_since = None
        peak = baseline
        start = time.monotonic()
        while view and time.monotonic() - start < 10:
            try:
                view = view[s.send(view):]
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break  # the server stopped reading: back-pressure reached us
                select.select([], [s], [], 0.05)
            except OSError:
                break  # the server closed the connection (send timeout)
            peak = max(peak, rss_bytes(server.proc.pid))
        accepted = len(flood) - len(view)
        # Meanwhile other clients are served promptly.
        latency = timed_get(server)
        for _ in range(20):
            peak = max(peak, rss_bytes(server.proc.pid))
            time.sleep(0.05)
    growth = peak - baseline
    assert growth < 24 * MiB, (
        f"RSS grew by {growth / MiB:.1f} MiB after {accepted / len(one):.0f} requests were "
        "pipelined without reading")
    assert latency < 1.0, latency
    assert server.proc.poll() is None
    assert timed_get(server) < 1.0


# --- descriptor exhaustion ---------------------------------------------------------------------


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


def _exhaust_descriptors(server: ServerProcess, socks: list[socket.socket]) -> None:
    """Open 200 connections to a server limited to 128 descriptors; wait until it is full."""
    for _ in range(200):
        try:
            socks.append(socket.create_connection((server.host, server.port), timeout=2))
        except OSError:
            continue
    assert wait_until(lambda: open_fd_count(server.proc.pid) >= 120, timeout=5), \
        open_fd_count(server.proc.pid)


def _low_limit_server(serve: Serve, site: Path) -> ServerProcess:
    return serve(site, "--helpers", "1", "--access-log", "off", "--header-timeout", "30",
                 "--keepalive-timeout", "30", preexec_fn=_low_fd_limit)


def test_running_out_of_descriptors_neither_kills_nor_spins_the_server(site: Path, serve: Serve):
    server = _low_limit_server(serve, site)
    socks: list[socket.socket] = []
    try:
        assert get(server, "/page.txt").status == 200
        _exhaust_descriptors(server, socks)
        time.sleep(0.3)
        cpu_before = cpu_seconds(server.proc.pid)
        time.sleep(2.0)
        cpu_used = cpu_seconds(server.proc.pid) - cpu_before
        assert server.proc.poll() is None, "server died of EMFILE"
        assert cpu_used < 0.6, f"server burned {cpu_used:.2f} s of CPU in 2 s while out of " \
                               "descriptors (an accept loop spinning on EMFILE?)"
        for s in socks:
            s.close()
        socks.clear()

        def serves_again() -> bool:
            try:
                with socket.create_connection((server.host, server.port), timeout=2) as s:
                    s.settimeout(2)
                    s.sendall(request_bytes(server, "/cold7.txt", close=True))
                    return ResponseReader(s).read().body == b"cold 7\n"
            except (OSError, ConnectionError):
                return False

        assert wait_until(serves_again, timeout=10, interval=0.2), \
            "server did not serve again after the descriptors were released"
        for i in range(8, 14):  # and cold files keep working: helpers can pass descriptors
            r = get(server, f"/cold{i}.txt")
            assert r.status == 200 and r.body == b"cold %d\n" % i
        assert server.proc.poll() is None
    finally:
        for s in socks:
            s.close()


# Regression test for defect D7 (found by this file, fixed by the lead).
def test_request_on_an_admitted_connection_gets_an_answer_while_descriptors_are_exhausted(
        site, serve: Serve):
    server = _low_limit_server(serve, site)
    socks: list[socket.socket] = []
    try:
        _exhaust_descriptors(server, socks)
        first = socks[0]  # admitted before the table filled up
        first.settimeout(5)
        first.sendall(request_bytes(server, "/cold2.txt"))
        try:
            r = ResponseReader(first).read()
        except ConnectionError:
            pytest.fail("connection dropped without an answer")
        assert r.status in (200, 503), r.status
        assert "Traceback" not in server.stderr_text()
    finally:
        for s in socks:
            s.close()


# --- a client that half-closes after its request ---------------------------------------------


# Regression test for defect D1 (found by this file, fixed by the lead).
def test_half_closed_client_still_gets_the_answer_to_a_cold_request(site: Path, serve: Serve):
    server = serve(site, "--access-log", "off")
    with connect(server, timeout=5) as s:
        s.sendall(request_bytes(server, "/cold3.txt"))
        s.shutdown(socket.SHUT_WR)  # like `printf 'GET ...' | nc -N host port`
        data = read_until_eof(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"cold 3\n"), data[:100]


def test_half_closed_client_gets_the_answer_to_a_cached_request(site: Path, serve: Serve):
    server = serve(site, "--access-log", "off")
    assert get(server, "/page.txt").status == 200
    with connect(server, timeout=5) as s:
        s.sendall(request_bytes(server, "/page.txt"))
        s.shutdown(socket.SHUT_WR)
        data = read_until_eof(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(PAGE), data[:100]
