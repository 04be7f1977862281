"""Shared test plumbing: start a real flashsrv process and speak raw HTTP to it over sockets.

Nothing here mocks the network or the disk: every helper opens a real socket to a real server.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    import trustme

LISTEN_RE = re.compile(r"flashsrv listening on http://(\[[^\]]+\]|[^:]+):(\d+)")
HTTPS_LISTEN_RE = re.compile(r"flashsrv listening on https://(\[[^\]]+\]|[^:]+):(\d+)")


@dataclass
class ServerProcess:
    """A running `flashsrv serve` subprocess; its stdout and stderr are collected by threads."""

    proc: subprocess.Popen
    host: str
    port: int
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    https_port: int | None = None  # its HTTPS listener (started with https=True)
    # Set on the view over_tls() returns: connect() (so get, exchange ...) then speaks TLS.
    tls: ssl.SSLContext | None = None
    # Set on the view over_h2() returns: get() and on_one_connection() then speak HTTP/2.
    h2: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def http_version(self) -> str:
        """The version its responses carry as `get` reports it."""
        return "HTTP/2" if self.h2 else "HTTP/1.1"

    def over_tls(self, context: ssl.SSLContext) -> ServerProcess:
        """The same process seen through its HTTPS port, as a client trusting `context`."""
        assert self.https_port is not None, "started without https=True"
        return replace(self, port=self.https_port, tls=context)

    def over_h2(self, context: ssl.SSLContext | None = None) -> ServerProcess:
        """The same process spoken to in HTTP/2: over TLS with ALPN h2 on its HTTPS port, as a
        client trusting `context` (which is set to offer h2 alone), or without a context as h2c
        with prior knowledge on its plain port."""
        if context is None:
            return replace(self, h2=True)
        context.set_alpn_protocols(["h2"])
        return replace(self.over_tls(context), h2=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stderr_text(self) -> str:
        return "".join(self.stderr_lines)

    def stdout_text(self) -> str:
        return "".join(self.stdout_lines)

    def helper_pids(self) -> list[int]:
        """Pids of the direct children of the server process (its helper processes)."""
        return children_of(self.proc.pid)


# The type of the `serve` fixture (tests/conftest.py): start_server's arguments, and every
# server it started is stopped when the test ends.
Serve = Callable[..., ServerProcess]


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _drain(stream, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
    stream.close()


def start_server(
    root: Path | str | None,
    *args: str,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    preexec_fn=None,
    https: bool = False,
) -> ServerProcess:
    """Start `python -m flashsrv serve ROOT --port 0 ...` and wait for its listening line
    (https=True: for its https:// line too, which gives `https_port`)."""
    cmd = [sys.executable, "-m", "flashsrv", "serve"]
    if root is not None:
        cmd.append(str(root))
    cmd += ["--host", host, "--port", "0", *args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        preexec_fn=preexec_fn,
    )
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True).start()
    threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = list(err)
        m = next(filter(None, map(LISTEN_RE.search, lines)), None)
        tls = next(filter(None, map(HTTPS_LISTEN_RE.search, lines)), None)
        if m and (tls or not https):
            h = m.group(1).strip("[]")
            return ServerProcess(proc, h, int(m.group(2)), out, err,
                                 https_port=int(tls.group(2)) if tls else None)
        if proc.poll() is not None:
            time.sleep(0.1)
            raise RuntimeError(f"server exited with {proc.returncode}: {''.join(err)}")
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"server did not report its address: {''.join(err)}")


def connect(server: ServerProcess, timeout: float = 10.0) -> socket.socket:
    """A connection to the server; a TLS one (handshake done) on an over_tls() view."""
    return _secured(server, socket.create_connection((server.host, server.port),
                                                     timeout=timeout))


def _secured(server: ServerProcess, sock: socket.socket) -> socket.socket:
    """sock as it is, or wrapped in TLS when server is an over_tls() view."""
    if server.tls is None:
        return sock
    try:
        return server.tls.wrap_socket(sock, server_hostname=server.host)
    except BaseException:
        sock.close()
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


class ResponseReader:
    """Reads successive HTTP/1.x responses from one socket (for keep-alive and pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read(self, head_request: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"connection closed before a full head: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        resp = Response(int(status), reason[0] if reason else "", version, headers, b"")
        if head_request or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        length = resp.header("content-length")
        if length is None:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
            return resp
        n = int(length)
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self.buf)} of {n} body bytes")
        resp.body, self.buf = self.buf[:n], self.buf[n:]
        return resp

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (no further bytes) within timeout."""
        self.sock.settimeout(timeout)
        try:
            return self.buf == b"" and self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def exchange(server: ServerProcess, raw: bytes, head_request: bool = False,
             timeout: float = 10.0) -> Response:
    """Send raw request bytes on a fresh connection and read one response."""
    assert not server.h2, "raw HTTP/1 bytes to an HTTP/2 view: use get or on_one_connection"
    with connect(server, timeout=timeout) as s:
        s.sendall(raw)
        return ResponseReader(s).read(head_request=head_request)


def get(server: ServerProcess, path: str, headers: dict[str, str] | None = None,
        method: str = "GET", version: str = "HTTP/1.1", timeout: float = 10.0) -> Response:
    """One request (Connection: close) on a fresh connection; the response read by its
    Content-Length (see `fetch` for a response read to EOF). On an over_h2() view: one stream
    on a fresh HTTP/2 connection, answered as the same `Response` (version "HTTP/2")."""
    if server.h2:
        assert version == "HTTP/1.1", f"an {version} request cannot go over HTTP/2"
        return on_one_connection(server, (method, path, headers or {}), timeout=timeout)[0]
    lines = [f"{method} {path} {version}", f"Host: {server.host}:{server.port}",
             "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return exchange(server, raw, head_request=(method == "HEAD"), timeout=timeout)


def on_one_connection(server: ServerProcess, *requests: tuple[str, str, dict[str, str]],
                      timeout: float = 10.0) -> list[Response]:
    """(method, path, headers) requests on one fresh connection, their responses in order.

    HTTP/1.1: pipelined, the last with Connection: close, each response read by its
    Content-Length, so body bytes a response should not have (a 304's, a HEAD's) are read as
    the next one's head and fail it. On an over_h2() view: one stream after the other on one
    HTTP/2 connection (whose client checks each stream's DATA against its Content-Length)."""
    if server.h2:
        from h2_client import exchanges

        return exchanges(server, requests, timeout=timeout)
    raw = b"".join(request_bytes(server, path, method, headers=headers,
                                 close=i == len(requests) - 1)
                   for i, (method, path, headers) in enumerate(requests))
    with connect(server, timeout=timeout) as s:
        s.sendall(raw)
        reader = ResponseReader(s)
        return [reader.read(head_request=(method == "HEAD")) for method, _, _ in requests]


# --- Generic helpers added for the socket-level suites (polling, processes, raw requests) ---


def wait_until(predicate, timeout: float, interval: float = 0.02):
    """Poll predicate() until it is truthy or timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def pid_gone(pid: int) -> bool:
    """True when the process no longer exists or is a zombie (it has exited, unreaped)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True
    return False


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc/PID/status), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def open_fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return 0


def raise_nofile_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (capped by the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def request_bytes(server: ServerProcess, path: str, method: str = "GET",
                  version: str = "HTTP/1.1", headers: dict[str, str] | None = None,
                  close: bool = False, body: bytes = b"") -> bytes:
    """One raw request with a Host header; keep-alive unless close=True."""
    lines = [f"{method} {path} {version}", f"Host: {server.host}:{server.port}"]
    if close:
        lines.append("Connection: close")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_until_eof(sock: socket.socket, timeout: float = 10.0, limit: int = 1 << 26) -> bytes:
    """Everything the peer sends until it closes (a reset counts as a close)."""
    sock.settimeout(timeout)
    chunks = []
    total = 0
    while total < limit:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def decompress(coding: str, data: bytes) -> bytes:
    """A body in a content-coding flashsrv makes (gzip, br, zstd), decoded."""
    import gzip

    import brotli
    import zstandard

    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompress(data)
    return gzip.decompress(data) if coding == "gzip" else data


def parse_byteranges(resp: Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/byteranges body as (headers, data), checking its framing.

    Raises AssertionError when the Content-Type has no boundary or the body is not a sequence of
    delimiter-separated parts ending with the close delimiter.
    """
    ctype = resp.header("content-type") or ""
    m = re.fullmatch(r'multipart/byteranges;\s*boundary="?([^";]+)"?', ctype)
    assert m, f"not a multipart/byteranges Content-Type: {ctype!r}"
    delimiter = b"\r\n--" + m.group(1).encode("latin-1")
    body = resp.body if resp.body.startswith(b"\r\n") else b"\r\n" + resp.body
    segments = body.split(delimiter)
    assert segments[0] == b"", f"unexpected preamble {segments[0][:80]!r}"
    assert segments[-1] == b"--\r\n", f"no close delimiter: {segments[-1][-80:]!r}"
    parts = []
    for segment in segments[1:-1]:
        assert segment.startswith(b"\r\n"), f"part does not start with CRLF: {segment[:80]!r}"
        head, sep, data = segment[2:].partition(b"\r\n\r\n")
        assert sep, f"part without a blank line after its head: {segment[:80]!r}"
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts


# --- Helpers shared by the process- and fault-level suites ---------------------------------


def split_response(data: bytes, what: str = "the request") -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-cased names, body) of one raw response read to its end."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no response head for {what}: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def fetch(server: ServerProcess, path: str, headers: dict[str, str] | None = None,
          method: str = "GET", timeout: float = 10.0,
          whole: bool = False) -> tuple[int, dict[str, str], bytes, bool]:
    """One request (Connection: close) on a fresh connection, read to EOF: (status, headers
    with lower-cased names, body, complete), where complete says the body has the length its
    Content-Length promised (or there is none; it means nothing for HEAD).

    Fails the test when a body shows a traceback, and, with whole=True, when the body is not
    the promised length (a misframed response)."""
    with connect(server, timeout=timeout) as s:
        s.sendall(request_bytes(server, path, method, headers=headers, close=True))
        data = read_until_eof(s, timeout=timeout, limit=1 << 30)
    status, response_headers, body = split_response(data, path)
    assert b"Traceback" not in body
    complete = int(response_headers.get("content-length", len(body))) == len(body)
    if whole:
        assert complete, (f"{path}: Content-Length {response_headers['content-length']} but "
                          f"{len(body)} body bytes")
    return status, response_headers, body, complete


def helpers_of(server: ServerProcess, count: int, exclude: tuple[int, ...] = (),
               timeout: float = 5.0) -> list[int]:
    """Wait until the server has exactly `count` helpers, none of them in `exclude`; their pids.
    Fails the test when that does not happen within timeout."""
    def ready():
        pids = server.helper_pids()
        return pids if len(pids) == count and not set(pids) & set(exclude) else None
    pids = wait_until(ready, timeout)
    not_these = f" (not {exclude})" if exclude else ""
    assert pids, f"expected {count} helpers{not_these}, have {server.helper_pids()}"
    return pids


def resume(*pids: int) -> None:
    """SIGCONT each of pids that still runs (cleanup after a test stopped helpers)."""
    for pid in pids:
        if not pid_gone(pid):
            os.kill(pid, signal.SIGCONT)


def request_each(server: ServerProcess, paths, close: bool = True, timeout: float = 10.0):
    """For each path, open a connection, send a GET for it and yield the socket (unread)."""
    for path in paths:
        s = connect(server, timeout=timeout)
        s.sendall(request_bytes(server, path, close=close))
        yield s


def slow_connection(server: ServerProcess, path: str, close: bool = False,
                    rcvbuf: int = 64 * 1024, timeout: float | None = 10.0) -> socket.socket:
    """A socket with a small receive buffer (the server's sends block early, as for a slow
    reader) on which a GET for path has been sent."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((server.host, server.port))
        s = _secured(server, s)
        s.sendall(request_bytes(server, path, close=close))
    except BaseException:
        s.close()
        raise
    return s


def open_slow_download(server: ServerProcess, path: str, first: int, close: bool = False,
                       ) -> tuple[socket.socket, bytes, bytes]:
    """slow_connection() read until the head and at least `first` bytes have arrived:
    (socket, response head, the body bytes received so far)."""
    s = slow_connection(server, path, close=close)
    buf = bytearray()
    try:
        while b"\r\n\r\n" not in buf or len(buf) < first:
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(buf)} bytes, before the first {first}"
            buf += chunk
    except BaseException:
        s.close()
        raise
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return s, head, body


class SlowDownload:
    """A GET of a large file read slowly: the head and the first bytes, then the caller changes
    the file, then `finish()` reads the rest until the promised length or EOF."""

    def __init__(self, server: ServerProcess, path: str, first: int = 512 * 1024) -> None:
        self.sock, self.head, self.body = open_slow_download(server, path, first)
        self.length = int(next(line.split(b":")[1] for line in self.head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")))

    def finish(self) -> bool:
        """Read the rest; True when the whole promised length arrived (keep-alive: no EOF)."""
        import pytest

        parts = [self.body]
        got = len(self.body)
        try:
            while got < self.length:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"stalled at {got} of {self.length} bytes")
        finally:
            self.sock.close()
        self.body = b"".join(parts)
        assert len(self.body) <= self.length, "more bytes than the Content-Length promised"
        return len(self.body) == self.length


def serve_refused(root: Path | str, *args: str, failure: str) -> tuple[int, str]:
    """Run `flashsrv serve ROOT --host 127.0.0.1 --port 0 ARGS`, which should refuse to start:
    (exit status, stderr). Fails the test with `failure` if it still runs after 10 s."""
    import pytest

    cmd = [sys.executable, "-m", "flashsrv", "serve", str(root), "--host", "127.0.0.1",
           "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        pytest.fail(failure)
    return proc.returncode, err


# --- Slow disks, the admin endpoint, latency probes and leak checks --------------------------
# (shared by the suites that prove the event loop never waits: test_never_waits.py and
# test_syscall_audit.py)

ADMIN_RE = re.compile(r"flashsrv admin endpoint on http://(\[[^\]]+\]|[^:]+):(\d+)")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")  # name{labels} value
# What a mount that FUSE itself refuses says (no device, no permission in this container).
FUSE_REFUSED = ("fuse: device not found", "failed to open /dev/fuse", "Permission denied",
                "Operation not permitted", "fusermount: ")
FUSE_UNAVAILABLE = 77  # the exit status of tests/fuse_mirror.py when fusepy/libfuse is missing


def admin_address(server: ServerProcess, timeout: float = 5.0) -> tuple[str, int]:
    """The admin endpoint of a server started with --admin-port (its line follows the
    listening line, so it may not be there yet when start_server returns)."""
    def found():
        return next((m for m in map(ADMIN_RE.search, list(server.stderr_lines)) if m), None)
    m = wait_until(found, timeout)
    assert m, f"no admin endpoint line on stderr: {server.stderr_text()!r}"
    return m.group(1).strip("[]"), int(m.group(2))


def scrape_metrics(admin: tuple[str, int], timeout: float = 10.0) -> dict[str, float]:
    """GET /metrics: every sample by its full name (labels included, e.g.
    'flashsrv_requests_total{status="200"}'). Checks the exposition format on the way: the
    Content-Length, the Content-Type, and that every line is a sample, # HELP or # TYPE."""
    with socket.create_connection(admin, timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        status, headers, body = split_response(read_until_eof(s, timeout=timeout), "/metrics")
    assert status == 200, f"/metrics answered {status}"
    assert int(headers["content-length"]) == len(body)
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            assert not line or line.startswith(("# HELP ", "# TYPE ")), line
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def socket_fd_count(pid: int) -> int:
    """How many of a process's descriptors are sockets (clients, listeners, helper pairs)."""
    count = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for name in names:
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
    return count


def abort_connection(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the server learns at once that the client is gone,
    even while it is still waiting for the disk on that connection's behalf."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked in recv on it
    sock.close()


def assert_no_leaks(server: ServerProcess, admin: tuple[str, int], socket_baseline: int,
                    held: int = 0, timeout: float = 5.0) -> None:
    """The end of every test that opened connections: the server counts exactly the `held`
    connections the test still has open, its socket descriptors are back to the baseline
    (taken with no client connected) within timeout, and its stderr shows no coroutine that
    was never awaited and no traceback."""
    def connections():
        return scrape_metrics(admin).get("flashsrv_open_connections")
    open_now = wait_until(lambda: connections() == held, timeout, interval=0.1)
    assert open_now, f"flashsrv_open_connections is {connections()}, the test holds {held}"
    if held == 0:
        sockets = wait_until(lambda: socket_fd_count(server.proc.pid) == socket_baseline,
                             timeout, interval=0.1)
        assert sockets, (f"{socket_fd_count(server.proc.pid)} socket descriptors, "
                         f"{socket_baseline} before the test")
    text = server.stderr_text()
    for sign in ("never awaited", "Traceback"):
        assert sign not in text, f"{sign!r} on the server's stderr:\n{text[-4000:]}"


def is_mounted(path: Path | str) -> bool:
    """Whether path is a mount point, from /proc/self/mountinfo: no stat(2) that a slow or
    stuck FUSE daemon could hang."""
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4].replace("\\040", " ") for line in f}
    return str(path) in points


def unmount(mountpoint: Path | str, daemon: subprocess.Popen) -> None:
    """Unmount (plainly, then lazily if the mount is still busy) and reap the FUSE daemon;
    every step bounded, so a broken filesystem cannot hang the suite."""
    for cmd in (["fusermount", "-u"], ["umount"], ["umount", "-l"]):
        if not is_mounted(mountpoint):
            break
        if shutil.which(cmd[0]) is None:
            continue
        try:
            subprocess.run([*cmd, str(mountpoint)], capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            continue
    try:
        daemon.wait(5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(5)


@contextlib.contextmanager
def fuse_mount(script: Path, backing: Path, mountpoint: Path, *args: str, log: Path):
    """Run a FUSE test filesystem (`python SCRIPT ARGS BACKING MOUNTPOINT`) for the duration of
    the block, its output in log; skips the test when FUSE cannot mount here at all, fails it
    when the filesystem is broken or stays mounted afterwards."""
    import pytest

    if not os.path.exists("/dev/fuse"):
        pytest.skip(f"no /dev/fuse: cannot mount {script.name}")
    mountpoint.mkdir(exist_ok=True)
    with open(log, "wb") as out:
        daemon = subprocess.Popen([sys.executable, str(script), *args, str(backing),
                                   str(mountpoint)], stdout=out, stderr=subprocess.STDOUT)
    try:
        up = wait_until(lambda: is_mounted(mountpoint) or daemon.poll() is not None,
                        timeout=10, interval=0.05)
        if not up or not is_mounted(mountpoint):
            unmount(mountpoint, daemon)
            why = log.read_text(errors="replace").strip()
            if daemon.returncode == FUSE_UNAVAILABLE or any(s in why for s in FUSE_REFUSED):
                pytest.skip(f"FUSE cannot mount here: {why or 'no reason given'}")
            pytest.fail(f"{script.name} did not mount (exit {daemon.returncode}): {why}")
        yield
    finally:
        unmount(mountpoint, daemon)
    assert not is_mounted(mountpoint), f"{mountpoint} is still mounted after the test"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction + 0.999999) - 1))]


class HotProbe:
    """Fetches one path every `interval` seconds on its own keep-alive connection, in a thread.

    Each latency counts from when the request was due, not from when it could be sent: a
    response that takes 500 ms delays the 50 requests due meanwhile, and all of them count
    (no "coordinated omission"). So one long stall of the server weighs in the percentiles as
    it would for clients arriving at that rate, instead of as a single slow sample.
    """

    def __init__(self, server: ServerProcess, path: str, body: bytes,
                 interval: float = 0.01) -> None:
        self.server = server
        self.path = path
        self.body = body
        self.interval = interval
        self.latencies: list[float] = []
        self.slowest: list[tuple[float, float]] = []  # (seconds into the run, latency)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sock = connect(server)

    def __enter__(self) -> HotProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        reader = ResponseReader(self.sock)
        raw = request_bytes(self.server, self.path)
        start = time.monotonic()
        due = start
        while not self._stop.is_set():
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            try:
                self.sock.sendall(raw)
                resp = reader.read()
            except (OSError, ConnectionError) as exc:
                if not self._stop.is_set():
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                # Cut off by stop() while waiting: what was due has waited at least until now.
                self._count(start, due, time.monotonic())
                return
            if resp.status != 200 or resp.body != self.body:
                self.errors.append(f"{resp.status} {resp.body[:80]!r}")
            due = self._count(start, due, time.monotonic())

    def _count(self, start: float, due: float, done: float) -> float:
        """Every request that fell due while one was out counts, each from its due time;
        returns when the next one is due."""
        while due <= done:
            self.latencies.append(done - due)
            if done - due > 0.05:
                self.slowest.append((round(due - start, 3), round(done - due, 3)))
            due += self.interval
        return due

    def stop(self) -> None:
        """Stop now, also in the middle of a request that the server is late to answer (the
        connection is reset)."""
        self._stop.set()
        self._thread.join(0.5)
        if self._thread.is_alive():
            abort_connection(self.sock)
            self._thread.join(30)
        self.sock.close()

    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    def max(self) -> float:
        return max(self.latencies, default=0.0)

    def summary(self) -> str:
        return (f"{len(self.latencies)} probes, p50 {percentile(self.latencies, 0.5) * 1e3:.1f}"
                f" ms, p99 {self.p99() * 1e3:.1f} ms, max {self.max() * 1e3:.1f} ms; slow ones"
                f" (s into the run, latency s): {self.slowest[:20]}; errors {self.errors[:5]}")


class LagSampler:
    """Samples the server's event-loop lag from /metrics every `interval` seconds, in a thread.

    `flashsrv_event_loop_lag_max_seconds` is the largest lateness since the server started: when
    it grew during the sampling, its last value is the largest lag of the run. When it did not
    (or the server has no such gauge), the largest of the sampled
    `flashsrv_event_loop_lag_seconds` (the lateness of the last loop sample) stands in.
    """

    MAX = "flashsrv_event_loop_lag_max_seconds"
    LAST = "flashsrv_event_loop_lag_seconds"

    def __init__(self, admin: tuple[str, int], interval: float = 0.05) -> None:
        self.admin = admin
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagSampler:
        self.samples.append(scrape_metrics(self.admin))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.samples.append(scrape_metrics(self.admin))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(scrape_metrics(self.admin))

    def max_lag(self) -> float:
        sampled = max((s.get(self.LAST, 0.0) for s in self.samples), default=0.0)
        if self.MAX in self.samples[0] and self.samples[-1][self.MAX] > self.samples[0][self.MAX]:
            return max(sampled, self.samples[-1][self.MAX])
        return sampled

    def gauge(self) -> str:
        return self.MAX if self.MAX in self.samples[0] else self.LAST


def memory_answers(metrics: dict[str, float]) -> float:
    """Responses answered from memory so far: data-cache hits plus prepared (fast-lane) ones."""
    return (metrics.get("flashsrv_data_cache_hits_total", 0)
            + metrics.get("flashsrv_prepared_hits_total", 0))


# --- HTTPS: certificates from a test CA ------------------------------------------------------


@dataclass
class TlsFiles:
    """A test CA (trustme) and a certificate it issued for 127.0.0.1, localhost and
    flashsrv.test (a name for curl --resolve), as the PEM files flashsrv reads (`args`) and
    the CA file a client trusts (`ca_file`)."""

    ca: trustme.CA
    cert: Path  # the chain, leaf first
    key: Path
    ca_file: Path
    serial: int = 0  # of the certificate first written to `cert`

    @property
    def args(self) -> tuple[str, ...]:
        """`flashsrv serve` options for HTTPS on a free port with these files."""
        return ("--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-port", "0")

    def issue(self, cert: Path | None = None, key: Path | None = None) -> int:
        """A new certificate and key written over `cert` and `key` (by default the files the
        server was started with); the new certificate's serial number."""
        from cryptography import x509

        leaf = self.ca.issue_cert("127.0.0.1", "localhost", "flashsrv.test")
        (cert or self.cert).write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        (key or self.key).write_bytes(leaf.private_key_pem.bytes())
        return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number

    def client_context(self) -> ssl.SSLContext:
        """What a careful client uses: the test CA trusted, the host name checked."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def tls_files(folder: Path) -> TlsFiles:
    """A fresh test CA and server certificate in folder (fullchain.pem, privkey.pem, ca.pem)."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    files = TlsFiles(ca, folder / "fullchain.pem", folder / "privkey.pem", folder / "ca.pem")
    ca.cert_pem.write_to_path(str(files.ca_file))
    files.serial = files.issue()
    return files


def peer_serial(sock: socket.socket) -> int:
    """The serial number of the certificate the server presented on a TLS connection."""
    assert isinstance(sock, ssl.SSLSocket), "not a TLS connection"
    cert = sock.getpeercert()
    assert cert, "no verified peer certificate"
    serial = cert["serialNumber"]
    assert isinstance(serial, str)
    return int(serial, 16)


SCHEMES = ("http", "https")
SCHEMES_AND_H2 = (*SCHEMES, "h2")


class Servers:
    """A test module's server once per scheme, each started on first use with the same root
    and options, so that a conformance suite can run a test over plain HTTP and again over
    TLS (`on_both_schemes`), and over HTTP/2 too (`on_all_schemes`). The https one has a fresh
    test certificate (made in tls_folder) and is seen through its HTTPS port; "h2" is that same
    process seen through its HTTPS port with ALPN h2 (`over_h2`); the http one is exactly
    `start_server(root, *args)`."""

    def __init__(self, root: Path | str, *args: str, tls_folder: Path) -> None:
        self.root = root
        self.args = args
        self.tls_folder = tls_folder
        self.started: dict[str, ServerProcess] = {}
        self.tls: TlsFiles | None = None

    def __getitem__(self, scheme: str) -> ServerProcess:
        if scheme not in self.started:
            if scheme == "http":
                self.started[scheme] = start_server(self.root, *self.args)
            elif scheme == "https":
                self.tls = tls_files(self.tls_folder)
                server = start_server(self.root, *self.tls.args, *self.args, https=True)
                self.started[scheme] = server.over_tls(self.tls.client_context())
            else:
                assert scheme == "h2", f"no scheme {scheme!r}"
                https = self["https"]
                assert self.tls is not None
                self.started[scheme] = https.over_h2(self.tls.client_context())
        return self.started[scheme]

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.started.values():
            server.stop()


def scheme_of(request: pytest.FixtureRequest) -> str:
    """The scheme a fixture parametrised by `on_both_schemes` or `on_all_schemes` is asked for
    ("http" when the test is not marked)."""
    return getattr(request, "param", "http")


def on_both_schemes(fixture: str) -> pytest.MarkDecorator:
    """Mark: run the test with `fixture` over plain HTTP, then over TLS (the fixture picks its
    server with `scheme_of(request)`)."""
    import pytest

    return pytest.mark.parametrize(fixture, SCHEMES, indirect=True)


def on_all_schemes(fixture: str) -> pytest.MarkDecorator:
    """Mark: as `on_both_schemes`, then once more over HTTP/2 (TLS, ALPN h2), for a test about
    HTTP semantics that makes its requests with `get` or `on_one_connection` only (not about
    HTTP/1.1 framing: no raw bytes, no keep-alive or pipelining of its own)."""
    import pytest

    return pytest.mark.parametrize(fixture, SCHEMES_AND_H2, indirect=True)
