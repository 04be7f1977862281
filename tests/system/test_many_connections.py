"""10,000 concurrent keep-alive connections on one worker, all served.

The test process raises its own descriptor limit (the server raises its own at start-up), opens
the connections in batches, sends one request on each, reads every response with a selector,
checks that the connections are still open (keep-alive) by using a sample of them again, and
checks that a normal client is still served promptly.
"""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

import pytest
from support import Serve, get, open_fd_count, raise_nofile_limit, request_bytes

N = 10_000
BATCH = 500
BODY = b"ten thousand\n"


def _response_complete(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _read_all(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """Read one response from each socket, all at once; returns what each received."""
    sel = selectors.DefaultSelector()
    got: dict[socket.socket, bytes] = {}
    for s in socks:
        got[s] = b""
        sel.register(s, selectors.EVENT_READ)
    pending = len(socks)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            got[s] += chunk
            if not chunk or _response_complete(got[s]):
                sel.unregister(s)
                pending -= 1
    sel.close()
    return got


@pytest.mark.timeout(180)
def test_ten_thousand_keepalive_connections_on_one_worker_are_all_served(tmp_path: Path,
                                                                          serve: Serve):
    if raise_nofile_limit(N + 1000) < N + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit is below {N + 200}: cannot hold {N} sockets")
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.txt").write_bytes(BODY)
    server = serve(root, "--max-connections", str(N + 1000), "--workers", "1",
                   "--header-timeout", "60", "--keepalive-timeout", "120",
                   "--access-log", "off")
    socks: list[socket.socket] = []
    try:
        start = time.monotonic()
        request = request_bytes(server, "/page.txt")
        for _ in range(0, N, BATCH):
            batch = []
            for _ in range(BATCH):
                s = socket.create_connection((server.host, server.port), timeout=10)
                s.setblocking(False)
                batch.append(s)
            for s in batch:
                s.send(request)  # ~60 bytes on a fresh socket: never a short write
            socks += batch
        opened = time.monotonic() - start

        replies = _read_all(socks, timeout=60)
        served = sum(1 for data in replies.values()
                     if data.startswith(b"HTTP/1.1 200") and data.endswith(BODY))
        failed = [d[:80] for d in replies.values() if not d.endswith(BODY)]
        assert served == N, f"{N - served} of {N} connections were not served: {failed[:3]!r}"
        elapsed = time.monotonic() - start
        assert open_fd_count(server.proc.pid) >= N, "server does not hold all the connections"

        # Still open and usable: a spread-out sample asks again on the same connections.
        sample = socks[::100]
        for s in sample:
            s.send(request)
        again = _read_all(sample, timeout=20)
        assert all(d.endswith(BODY) for d in again.values()), "keep-alive connections dropped"

        t = time.monotonic()
        r = get(server, "/page.txt")
        assert r.status == 200 and r.body == BODY
        assert time.monotonic() - t < 2.0, "a normal request was slow beside 10,000 connections"
        assert server.proc.poll() is None
        print(f"\n{N} connections opened in {opened:.1f} s, all served in {elapsed:.1f} s")
    finally:
        for s in socks:
            s.close()
