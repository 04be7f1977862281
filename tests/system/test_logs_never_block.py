"""The event loop never waits for a log: a stdout or stderr pipe that nobody reads, floods of log
lines that clients cause, and the reload (SIGHUP) and reopen (SIGUSR1) signals.

Each test owns the server's stdout and stderr pipes (tests/support.py drains them, which is just
what these tests must not do), speaks HTTP to it over real sockets, and ends by checking that
its stderr shows no traceback and no coroutine that was never awaited.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from support import scrape_metrics, split_response, wait_until

BODY = b"hello, logs\n"
ANNOUNCE = re.compile(rb"flashsrv (listening|admin endpoint) on http://([^:\s]+):(\d+)")
# No stall: a loop that waited for a full pipe would not answer at all, so this bound only has
# to be far above scheduling noise on a busy two-core machine.
LAG_BOUND = 2.0


class Drain:
    """Reads a pipe to EOF in a thread, from the moment it is made."""

    def __init__(self, fd: int, already: bytes = b"") -> None:
        self.fd = fd
        self.data = bytearray(already)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            self.data += chunk

    def finish(self, timeout: float = 10.0) -> bytes:
        self._thread.join(timeout)
        return bytes(self.data)


@dataclass
class Server:
    """A flashsrv process whose stderr (and, if asked, stdout) is a pipe only the test reads."""

    proc: subprocess.Popen
    port: int
    admin: tuple[str, int]
    err_r: int
    err_w: int  # the test's own copy of the write end: lets it fill the pipe
    err_seen: bytes  # what was read from stderr before the addresses were known
    out_r: int | None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return split_response(data, path)


def start(root: Path, *args: str, stdout_pipe: bool = False) -> Server:
    err_r, err_w = os.pipe()
    out_r, out_w = os.pipe() if stdout_pipe else (None, None)
    cmd = [sys.executable, "-m", "flashsrv", "serve", str(root), "--host", "127.0.0.1",
           "--port", "0", "--admin-port", "0", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=err_w,
                            stdout=out_w if stdout_pipe else subprocess.DEVNULL)
    if out_w is not None:
        os.close(out_w)
    seen = b""
    found: dict[bytes, tuple[str, int]] = {}
    deadline = time.monotonic() + 15
    while len(found) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, \
            f"server did not announce its addresses: {seen.decode(errors='replace')}"
        if select.select([err_r], [], [], 0.1)[0]:
            seen += os.read(err_r, 65536)
            found = {m[1]: (m[2].decode(), int(m[3])) for m in ANNOUNCE.finditer(seen)}
    return Server(proc, found[b"listening"][1], found[b"admin endpoint"], err_r, err_w, seen,
                  out_r)


def assert_clean(stderr: bytes) -> None:
    for sign in (b"Traceback", b"never awaited"):
        assert sign not in stderr, f"{sign!r} on the server's stderr:\n{stderr[-4000:]!r}"


def fill_pipe(write_end: int) -> None:
    """Shrink the pipe to one page and fill it, through an open file description of our own
    (O_NONBLOCK on the shared one would change the server's stderr too)."""
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    fd = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b"filler: nobody reads this pipe\n")
    finally:
        os.close(fd)


def pipelined(port: int, raw: bytes, total: int, batch: int, status: bytes) -> int:
    """Send `total` copies of one keep-alive request in pipelined batches and read the answers;
    how many had `status` (responses to one request are all the same length, so a batch of
    answers is batch times the first one's length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(raw)
        first = b""
        while b"\r\n\r\n" not in first:
            first += s.recv(65536)
        head, _, body = first.partition(b"\r\n\r\n")
        size = int(re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)[1])
        while len(body) < size:
            body += s.recv(65536)
        length = len(head) + 4 + size
        answered = int(first.startswith(b"HTTP/1.1 " + status))
        sent = 1
        while sent < total:
            n = min(batch, total - sent)
            s.sendall(raw * n)
            want, got = n * length, bytearray()
            while len(got) < want:
                chunk = s.recv(want - len(got))
                assert chunk, f"connection closed after {answered} answers"
                got += chunk
            answered += bytes(got).count(b"HTTP/1.1 " + status)
            sent += n
    return answered


def in_threads(count: int, work) -> list:
    """work() run by `count` client threads at once: their results, or the first failure."""
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = work()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(BODY)
    return root


def test_stdout_nobody_reads_costs_access_log_lines_never_answers(tmp_path: Path):
    server = start(site(tmp_path), "--access-log", "-", stdout_pipe=True)
    err = Drain(server.err_r, server.err_seen)
    raw = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
    try:
        answered = in_threads(2, lambda: pipelined(server.port, raw, 50_000, 500, b"200"))
        assert answered == [50_000, 50_000]
        m = scrape_metrics(server.admin)
        assert m['flashsrv_requests_total{status="200"}'] == 100_000
        dropped = m['flashsrv_log_dropped_total{log="access"}']
        assert dropped > 0, "100,000 log lines fitted in a pipe nobody reads?"
        assert m["flashsrv_event_loop_lag_max_seconds"] < LAG_BOUND
        assert server.get("/hello.txt")[0] == 200

        # Reading again: the lines that waited come out, with summary lines that account
        # for every dropped one, and no request is missing from lines + drops.
        out = Drain(server.out_r)

        def reported() -> int:
            return sum(int(n) for n in re.findall(rb"(\d+) access log lines dropped", out.data))

        # Lines still batched in the server when the metric was read may have been dropped
        # since (the pipe was full until now): compare with the metric as it ends up.
        def settled() -> bool:
            nonlocal dropped
            dropped = scrape_metrics(server.admin)['flashsrv_log_dropped_total{log="access"}']
            return reported() == dropped

        assert wait_until(settled, timeout=10, interval=0.3), \
            f"summary lines report {reported()} dropped lines, the metric {dropped}"
        logged = wait_until(lambda: bytes(out.data).count(b'"GET /hello.txt HTTP/1.1" 200')
                            >= 100_001 - dropped, timeout=5)
        assert logged, f"{bytes(out.data).count(b'GET /hello.txt')} lines + {dropped} dropped"
    finally:
        assert server.stop() == 0
        os.close(server.err_w)
    assert_clean(err.finish())


def test_stderr_nobody_reads_and_a_flood_of_bad_requests(tmp_path: Path):
    server = start(site(tmp_path), "--access-log", "off")
    fill_pipe(server.err_w)  # from now on any write to the server's stderr would wait
    try:
        probes = [(b"GET /.env HTTP/1.1\r\nHost: t\r\n\r\n", b"404"),
                  (b"GET /wp-login.php HTTP/1.1\r\nHost: t\r\n\r\n", b"404"),
                  (b"GET /a/%00 HTTP/1.1\r\nHost: t\r\n\r\n", b"400")]
        for raw, status in probes:
            answered = in_threads(2, lambda r=raw, s=status: pipelined(server.port, r, 1500,
                                                                      100, s))
            assert answered == [1500, 1500], raw
        for _ in range(1000):  # unparseable: each answered 400 and its connection closed
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 400 ")
        status, _, body = server.get("/hello.txt")
        assert (status, body) == (200, BODY)
        m = scrape_metrics(server.admin)
        assert m["flashsrv_requests_rejected_total"] >= 1000
        assert m['flashsrv_requests_total{status="404"}'] >= 6000
        assert m["flashsrv_log_suppressed_total"] > 0
        assert m["flashsrv_event_loop_lag_max_seconds"] < LAG_BOUND

        os.close(server.err_w)
        err = Drain(server.err_r)
        assert wait_until(lambda: b"connection log lines suppressed" in err.data, timeout=5), \
            err.data[-2000:]
    finally:
        assert server.stop() == 0
    stderr = err.finish()
    assert b"hidden file" in stderr  # the lines under the rate limit were written
    assert_clean(stderr)


def test_reload_and_reopen_keep_serving_and_keep_the_config_on_errors(tmp_path: Path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    config = tmp_path / "flashsrv.toml"

    def configure(log: Path, version: str) -> None:
        config.write_text(f'access-log = "{log}"\n[headers]\nX-Version = "{version}"\n')

    configure(first, "one")
    server = start(site(tmp_path), "--config", str(config))
    err = Drain(server.err_r, server.err_seen)

    def version() -> str | None:
        status, headers, body = server.get("/hello.txt")
        assert (status, body) == (200, BODY)
        return headers.get("x-version")

    def reload_fails(count: int) -> bool:
        return err.data.count(b"reload failed, keeping the running configuration") == count

    try:
        assert version() == "one"
        config.write_text("[headers\n")  # not TOML
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: reload_fails(1), timeout=5), err.data[-2000:]
        assert version() == "one"

        configure(tmp_path / "no" / "such" / "folder.log", "two")  # a log it cannot open
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: reload_fails(2), timeout=5), err.data[-2000:]
        assert version() == "one"
        assert server.get("/hello.txt?first")[0] == 200

        configure(second, "three")
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: version() == "three", timeout=5, interval=0.05)
        assert server.get("/hello.txt?second")[0] == 200
        assert wait_until(lambda: second.exists() and b"?second" in second.read_bytes(), 5)
        assert b"?first" in first.read_bytes() and b"?second" not in first.read_bytes()

        rotated = tmp_path / "second.log.1"  # logrotate: rename, then SIGUSR1
        second.rename(rotated)
        server.proc.send_signal(signal.SIGUSR1)
        assert wait_until(second.exists, timeout=5), "no new log file after SIGUSR1"
        assert server.get("/hello.txt?rotated")[0] == 200
        assert wait_until(lambda: b"?rotated" in second.read_bytes(), timeout=5)
        assert b"?rotated" not in rotated.read_bytes()
        assert scrape_metrics(server.admin)["flashsrv_event_loop_lag_max_seconds"] < LAG_BOUND
    finally:
        assert server.stop() == 0
        os.close(server.err_w)
    assert_clean(err.finish())
