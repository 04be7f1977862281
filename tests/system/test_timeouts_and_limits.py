"""Timeouts and connection limits over real sockets: slow or stalled headers are cut off, idle
keep-alive connections are closed, a full connection table does not harm the connections
already in it, and thousands of idle connections do not stop normal requests.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from pathlib import Path

import pytest
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    connect,
    get,
    open_fd_count,
    raise_nofile_limit,
    request_bytes,
    start_server,
    wait_until,
)

PAGE = b"plain text\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("limits") / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "page.txt").write_bytes(PAGE)
    (root / "big.bin").write_bytes(bytes(range(256)) * (8 * 4096))  # 8 MiB
    return root


@pytest.fixture(scope="module")
def quick(site: Path):
    """A server with 1 s header and keep-alive timeouts."""
    server = start_server(site, "--header-timeout", "1", "--keepalive-timeout", "1",
                          "--access-log", "off")
    yield server
    server.stop()


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """Read (and drop) whatever arrives until the peer closes; elapsed seconds, None if not."""
    start = time.monotonic()
    deadline = start + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - start
        if not chunk:
            return time.monotonic() - start


# --- header timeout ------------------------------------------------------------------------


def test_partial_request_line_is_disconnected_after_the_header_timeout(quick: ServerProcess):
    with connect(quick) as s:
        s.sendall(b"GET /page.t")
        elapsed = seconds_until_closed(s, limit=6)
    assert elapsed is not None, "stalled client still connected after 6 s (header-timeout 1)"
    assert 0.7 <= elapsed <= 3.5, f"closed after {elapsed:.2f} s, expected about 1 s"


def test_partial_headers_are_disconnected_after_the_header_timeout(quick: ServerProcess):
    with connect(quick) as s:
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: stall")
        elapsed = seconds_until_closed(s, limit=6)
    assert elapsed is not None, "client stalled inside the headers still connected after 6 s"
    assert 0.7 <= elapsed <= 3.5, elapsed


def test_trickled_header_bytes_do_not_extend_the_header_timeout(quick: ServerProcess):
    """One byte every 0.3 s keeps the socket busy but must not keep it alive (slowloris)."""
    s = connect(quick)
    try:
        s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        start = time.monotonic()
        closed_at = None
        while time.monotonic() - start < 6:
            try:
                s.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - start
                break
            readable, _, _ = select.select([s], [], [], 0.3)
            if readable:
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data or seconds_until_closed(s, limit=1) is not None:
                    closed_at = time.monotonic() - start
                    break
    finally:
        s.close()
    assert closed_at is not None, "trickling client kept alive for 6 s with header-timeout 1"
    assert 0.7 <= closed_at <= 3.5, f"closed after {closed_at:.2f} s"


def test_slow_but_timely_headers_are_served(site: Path, serve: Serve):
    server = serve(site, "--header-timeout", "3", "--access-log", "off")
    raw = request_bytes(server, "/page.txt", close=True)
    with connect(server) as s:
        for i in range(0, len(raw), 10):
            s.sendall(raw[i:i + 10])
            time.sleep(0.1)
        r = ResponseReader(s).read()
    assert r.status == 200 and r.body == PAGE


# --- keep-alive timeout --------------------------------------------------------------------


def test_idle_keepalive_connection_is_closed_after_the_keepalive_timeout(quick: ServerProcess):
    with connect(quick) as s:
        s.sendall(request_bytes(quick, "/page.txt"))
        r = ResponseReader(s).read()
        assert r.status == 200
        elapsed = seconds_until_closed(s, limit=6)
    assert elapsed is not None, "idle keep-alive connection still open after 6 s"
    assert 0.5 <= elapsed <= 3.5, f"closed after {elapsed:.2f} s, expected about 1 s"


def test_keepalive_connection_reused_within_the_timeout_is_served(site: Path, serve: Serve):
    server = serve(site, "--keepalive-timeout", "3", "--header-timeout", "1",
                   "--access-log", "off")
    with connect(server) as s:
        reader = ResponseReader(s)
        s.sendall(request_bytes(server, "/page.txt"))
        assert reader.read().status == 200
        # Idle longer than the header timeout but shorter than the keep-alive timeout.
        time.sleep(1.6)
        s.sendall(request_bytes(server, "/page.txt"))
        r = reader.read()
    assert r.status == 200 and r.body == PAGE


def test_slow_download_is_not_cut_by_the_header_or_keepalive_timeout(quick: ServerProcess):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.settimeout(10)
        s.connect((quick.host, quick.port))
        s.sendall(request_bytes(quick, "/big.bin"))
        reader = ResponseReader(s)
        while b"\r\n\r\n" not in reader.buf:
            assert reader._fill()
        head, _, rest = reader.buf.partition(b"\r\n\r\n")
        length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                      if ln.lower().startswith(b"content-length:")))
        received = len(rest)
        start = time.monotonic()
        while received < length:
            chunk = s.recv(128 * 1024)
            if not chunk:
                break
            received += len(chunk)
            if time.monotonic() - start < 2.5:
                time.sleep(0.04)  # ~3 MB/s for the first 2.5 s: longer than both timeouts
        assert received == length, f"download cut at {received} of {length} bytes"
        # The same connection is still usable afterwards.
        s.sendall(request_bytes(quick, "/page.txt"))
        r = ResponseReader(s).read()
        assert r.status == 200 and r.body == PAGE


# --- max connections -----------------------------------------------------------------------


def _try_connect(server: ServerProcess, timeout: float = 1.0) -> socket.socket | None:
    try:
        return socket.create_connection((server.host, server.port), timeout=timeout)
    except OSError:
        return None


def _collect_replies(socks: list[socket.socket], duration: float) -> dict[socket.socket, bytes]:
    """Non-blocking read of whatever each socket receives within `duration` (b'' = closed)."""
    got: dict[socket.socket, bytes] = {}
    pending = set(socks)
    deadline = time.monotonic() + duration
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], 0.05)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            got[s] = got.get(s, b"") + data
            if not data or b"\r\n\r\n" in got[s]:
                pending.discard(s)
    return got


def test_connections_beyond_the_limit_never_take_a_response_in_flight(site: Path, serve: Serve):
    """At the cap, a new connection may only take the slot of one waiting for a request
    (idle keep-alive, or a head not yet complete); downloads in progress are never cut."""
    raise_nofile_limit(4096)
    server = serve(site, "--max-connections", "50", "--access-log", "off")
    first: list[socket.socket] = []
    extras: list[socket.socket] = []
    later: list[socket.socket] = []
    big = (site / "big.bin").read_bytes()
    try:
        readers = []
        for _ in range(40):
            s = connect(server, timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # 8 MiB cannot fit
            s.sendall(request_bytes(server, "/big.bin"))
            reader = ResponseReader(s)
            while b"\r\n\r\n" not in reader.buf:
                assert reader._fill(), "a download was closed before its head"
            first.append(s)
            readers.append(reader)

        for _ in range(100):
            s = _try_connect(server)
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.sendall(request_bytes(server, "/page.txt"))
            extras.append(s)

        replies = _collect_replies(extras, duration=1.5)
        answers = [d[:12] for d in replies.values() if d]
        assert all(a.startswith((b"HTTP/1.1 200", b"HTTP/1.1 503")) for a in answers), answers
        assert any(a.startswith(b"HTTP/1.1 200") for a in answers), "no free slot was used"

        # The downloads admitted before the flood were left alone: each completes intact.
        for s, reader in zip(first, readers, strict=True):
            s.settimeout(10)
            r = reader.read()
            assert r.status == 200 and r.body == big

        for s in extras:
            s.close()
        extras.clear()

        # Once the extras are gone, 10 new connections (40 + 10 = the limit) are served again.
        def ten_new_connections_served() -> bool:
            for s in later:
                s.close()
            later.clear()
            for _ in range(10):
                s = _try_connect(server, timeout=2)
                if s is None:
                    return False
                later.append(s)
                s.settimeout(2)
                try:
                    s.sendall(request_bytes(server, "/page.txt"))
                    if ResponseReader(s).read().status != 200:
                        return False
                except OSError:
                    return False
            return True

        assert wait_until(ten_new_connections_served, timeout=8, interval=0.2), \
            "connection slots were not released after the extra clients left"
        assert server.proc.poll() is None
    finally:
        for s in first + extras + later:
            s.close()


# --- thousands of idle connections ---------------------------------------------------------


def test_two_thousand_idle_connections_do_not_stop_a_normal_request(site: Path, serve: Serve):
    n = 2000
    if raise_nofile_limit(n + 500) < n + 200:
        pytest.skip("RLIMIT_NOFILE hard limit too low for 2,000 connections in the test process")
    server = serve(site, "--max-connections", "10000", "--header-timeout", "60",
                   "--keepalive-timeout", "60", "--access-log", "off")
    idle: list[socket.socket] = []
    try:
        for i in range(n):
            s = socket.create_connection((server.host, server.port), timeout=10)
            if i % 2:
                s.sendall(b"GET /page.txt HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            idle.append(s)
        accepted = wait_until(lambda: open_fd_count(server.proc.pid) >= n, timeout=15)
        assert accepted, f"server holds only {open_fd_count(server.proc.pid)} fds for {n} clients"

        start = time.monotonic()
        r = get(server, "/page.txt")
        elapsed = time.monotonic() - start
        assert r.status == 200 and r.body == PAGE
        assert elapsed < 5, f"a normal request took {elapsed:.1f} s beside {n} idle connections"

        # The idle connections themselves are alive and served when they finally speak.
        for s in (idle[0], idle[n // 2], idle[-2]):
            s.sendall(request_bytes(server, "/page.txt", close=True))
            assert ResponseReader(s).read().status == 200
        for s in (idle[1], idle[-1]):
            s.sendall(b"\r\n")
            assert ResponseReader(s).read().status == 200
        assert server.proc.poll() is None
    finally:
        for s in idle:
            s.close()
