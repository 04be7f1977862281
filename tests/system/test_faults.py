"""Faults injected for real: helpers stopped (SIGSTOP) or killed (SIGKILL) again and again, files
rewritten, truncated or deleted while they are being sent, the document root removed and
recreated, permission-denied files seen by an unprivileged server, and the operator's signals
(SIGHUP reload, SIGUSR1 log reopen, SIGTERM drain with a grace period that runs out).

The rule checked throughout: a response is either complete and correct, or an error status, or
a connection closed short of its Content-Length; never a 200 whose promised bytes are wrong; and
the server carries on serving afterwards.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import (
    ResponseReader,
    Serve,
    ServerProcess,
    SlowDownload,
    admin_address,
    connect,
    fetch,
    fuse_mount,
    get,
    helpers_of,
    pid_gone,
    request_bytes,
    resume,
    scrape_metrics,
    wait_until,
)

MiB = 1 << 20


def pattern(size: int, salt: bytes) -> bytes:
    """size bytes whose every 32-byte block differs (position and salt are hashed in)."""
    blocks = (hashlib.sha256(salt + i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>home</h1>\n")
    return www


# --- helpers stuck or killed -----------------------------------------------------------------


def test_stopped_helper_fails_its_request_quickly_and_is_replaced_every_time(root: Path,
                                                                            serve: Serve):
    rounds = 3
    for i in range(rounds + 1):
        (root / f"cold{i}.txt").write_bytes(b"cold %d\n" % i)
    server = serve(root, "--helpers", "1", "--helper-timeout", "1", "--access-log", "off",
                   "--admin-port", "0")
    admin = admin_address(server)
    stopped: list[int] = []
    try:
        for i in range(rounds):
            (pid,) = helpers_of(server, 1, exclude=tuple(stopped))
            # Stopped while idle, so that it is the cold request's job that it never answers
            # (not a background one, such as adding a directory watch, with the request
            # queued behind it and then answered by the replacement).
            assert wait_until(lambda: scrape_metrics(admin)["flashsrv_helper_busy"] == 0, 3)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            start = time.monotonic()
            status, headers, _, _ = fetch(server, f"/cold{i}.txt", timeout=10)
            elapsed = time.monotonic() - start
            assert status == 503, f"round {i}: {status}"
            assert headers.get("retry-after"), "a 503 for a failed helper should say Retry-After"
            assert 0.8 < elapsed < 3.0, f"round {i}: the 503 took {elapsed:.2f} s with a 1 s " \
                                        "helper timeout"
            (new,) = helpers_of(server, 1, exclude=tuple(stopped))
            assert new != pid
            assert wait_until(lambda p=pid: pid_gone(p), 3), f"stopped helper {pid} not killed"
            status, _, body, _ = fetch(server, f"/cold{i}.txt")
            assert (status, body) == (200, b"cold %d\n" % i), f"round {i}: not served after"
        assert server.proc.poll() is None
        assert "Traceback" not in server.stderr_text()
    finally:
        resume(*stopped)


def test_helpers_killed_over_and_over_during_cold_requests_never_corrupt_a_response(
        root: Path, serve: Serve):
    n = 120
    bodies = {i: pattern(2000 + 37 * i, b"k%d" % i) for i in range(n)}
    for i, body in bodies.items():
        (root / f"f{i}.bin").write_bytes(body)
    server = serve(root, "--helpers", "2", "--helper-timeout", "2", "--access-log", "off")
    rng = random.Random(6)
    kills = 0

    def kill_one():
        nonlocal kills
        for pid in server.helper_pids()[:1]:
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass

    helpers_of(server, 2)
    outcomes: dict[int, int] = {}
    timers = []
    for i in range(n):
        if i % 3 == 0:  # a kill lands somewhere during this request (or just before it)
            timer = threading.Timer(rng.uniform(0, 0.004), kill_one)
            timer.start()
            timers.append(timer)
        start = time.monotonic()
        status, _, body, complete = fetch(server, f"/f{i}.bin", timeout=10)
        assert time.monotonic() - start < 5, f"request {i} took too long"
        outcomes[status] = outcomes.get(status, 0) + 1
        assert status in (200, 503), (i, status)
        if status == 200:
            assert complete and body == bodies[i], f"/f{i}.bin: wrong bytes under a 200"
    for timer in timers:
        timer.join(2)
    assert kills >= 10, f"only {kills} helpers were killed: the test proves little"
    assert outcomes.get(200, 0) >= n // 4, outcomes
    helpers_of(server, 2)
    for i in range(0, n, 10):  # every file is served correctly once the killing stops
        status, _, body, _ = fetch(server, f"/f{i}.bin")
        assert (status, body == bodies[i]) == (200, True), i
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr_text()


# --- files changing under a response in flight ----------------------------------------------


def download_in_flight(server: ServerProcess, root: Path, name: str, size: int,
                       salt: bytes) -> tuple[Path, bytes, SlowDownload]:
    """Write root/name with pattern(size, salt) and start a SlowDownload of it (a 200)."""
    original = pattern(size, salt)
    f = root / name
    f.write_bytes(original)
    dl = SlowDownload(server, "/" + name)
    assert dl.head.startswith(b"HTTP/1.1 200"), dl.head[:80]
    return f, original, dl


@pytest.fixture
def big_server(root: Path, serve: Serve) -> ServerProcess:
    return serve(root, "--cache-bytes", "4M", "--access-log", "off")


def test_file_truncated_while_sent_is_never_a_wrong_body_and_new_length_follows(big_server,
                                                                                 root: Path):
    size = 16 * MiB
    f, original, dl = download_in_flight(big_server, root, "shrink.bin", size, b"trunc")
    with open(f, "r+b") as fh:
        fh.truncate(2 * MiB)
    complete = dl.finish()
    if complete:
        assert dl.body == original, "a complete 200 body that is not the file's bytes"
    else:
        assert dl.body == original[: len(dl.body)], "the bytes sent before the cut are wrong"

    def new_length_served():
        status, _, body, ok = fetch(big_server, "/shrink.bin")
        return status == 200 and ok and body == original[: 2 * MiB]

    assert wait_until(new_length_served, timeout=3, interval=0.1), \
        "the shorter file was not served with its new length"


# Regression test for defect D8 (found by this file, fixed by the lead).
def test_file_rewritten_in_place_while_sent_is_never_a_wrong_complete_body(big_server,
                                                                          root: Path):
    size = 16 * MiB
    f, original, dl = download_in_flight(big_server, root, "rewrite.bin", size, b"old")
    with open(f, "r+b") as fh:  # what `cp new.bin rewrite.bin` does: same inode, new bytes
        fh.write(pattern(size, b"new"))
    # Bytes leave by sendfile, straight from the page cache, so a cut-off body may already hold
    # some new bytes (as with nginx); what must never happen is a body of the full length.
    if dl.finish():
        assert dl.body == original, "200 with the full Content-Length but mixed old/new bytes"
    else:
        assert len(dl.body) < size


def test_file_deleted_while_sent_completes_with_old_bytes_then_404(big_server, root: Path):
    size = 8 * MiB
    f, original, dl = download_in_flight(big_server, root, "doomed.bin", size, b"del")
    f.unlink()
    deleted_at = time.monotonic()
    assert wait_until(lambda: fetch(big_server, "/doomed.bin")[0] == 404, timeout=3,
                      interval=0.05), "deleted file still served"
    assert time.monotonic() - deleted_at < 1.6
    assert dl.finish(), "the in-flight download was cut although the descriptor stays valid"
    assert dl.body == original


def test_document_root_removed_and_recreated(tmp_path: Path, serve: Serve):
    www = tmp_path / "site"
    www.mkdir()
    (www / "page.txt").write_bytes(b"version 1\n")
    server = serve(www, "--access-log", "off")
    assert fetch(server, "/page.txt")[:1] == (200,)
    shutil.rmtree(www)
    assert wait_until(lambda: fetch(server, "/page.txt")[0] in (404, 500), timeout=3,
                      interval=0.1), "files still served after the root was removed"
    assert fetch(server, "/")[0] in (404, 500, 403)
    www.mkdir()
    (www / "page.txt").write_bytes(b"version 2\n")
    assert wait_until(lambda: fetch(server, "/page.txt")[::2] == (200, b"version 2\n"),
                      timeout=3, interval=0.1), "not served again after the root came back"
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr_text()


# --- a disk that answers EIO, through a FUSE test filesystem (tests/eio_fs.py) ----------------

EIO_FS = Path(__file__).resolve().parents[1] / "eio_fs.py"
EIO_LATE_OK = 2 * MiB  # bytes of an eio-late-* file that read fine (eio_fs.LATE_OK)
@pytest.fixture
def eio_mount(tmp_path: Path):
    """(backing, mountpoint): tests/eio_fs.py mirroring backing, whose eio-* files fail with
    EIO; skips only when FUSE cannot mount here at all. A test names it before `serve`, so
    that its server is stopped before the unmount."""
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "index.html").write_text("<h1>home</h1>\n")
    (backing / "ok.txt").write_bytes(b"fine\n")
    (backing / "eio-small.txt").write_bytes(b"unreadable\n")
    (backing / "ok-big.bin").write_bytes(pattern(3 * MiB, b"okbig"))
    (backing / "eio-late-big.bin").write_bytes(pattern(6 * MiB, b"late"))
    mountpoint = tmp_path / "mnt"
    with fuse_mount(EIO_FS, backing, mountpoint, log=tmp_path / "eio_fs.log"):
        yield backing, mountpoint


def _log_line_about(server: ServerProcess, name: str) -> str | None:
    """The server's stderr line naming the file and the I/O error, once its reader thread has
    collected it."""
    def line():
        return next((x for x in server.stderr_lines
                     if name in x and ("Input/output error" in x or "errno 5" in x.lower())),
                    None)
    return wait_until(line, timeout=3, interval=0.05)


def _still_serving(server: ServerProcess, helpers: list[int]) -> None:
    """The server answers normal files from the same mount and kept its helpers (an EIO is the
    disk's fault: no reason to kill the helper that met it)."""
    assert fetch(server, "/ok.txt")[::2] == (200, b"fine\n")
    assert fetch(server, "/")[::2] == (200, b"<h1>home</h1>\n")
    assert server.proc.poll() is None
    assert sorted(server.helper_pids()) == helpers, "helpers were replaced after an EIO"
    assert "Traceback" not in server.stderr_text()


@pytest.mark.parametrize("model", ["amped", "threads", "sped"])
def test_eio_on_a_small_file_gets_500_and_a_log_line(eio_mount, model: str, serve: Serve):
    _, mountpoint = eio_mount
    server = serve(mountpoint, "--model", model, "--access-log", "off")
    helpers = sorted(server.helper_pids())
    assert fetch(server, "/ok.txt")[::2] == (200, b"fine\n"), "the mount serves nothing"
    for attempt in range(2):  # a second time: the failure is not cached into something else
        status, headers, body, complete = fetch(server, "/eio-small.txt")
        assert status == 500, f"attempt {attempt}: {status} {body[:200]!r}"
        assert complete and headers.get("content-type", "").startswith("text/html")
        assert 0 < len(body) < 4096, f"a large 500 body: {len(body)} bytes"
        assert b"unreadable" not in body
    line = _log_line_about(server, "eio-small.txt")
    assert line, f"no log line naming eio-small.txt and EIO: {server.stderr_text()!r}"
    _still_serving(server, helpers)


@pytest.mark.parametrize("model", ["amped", "threads", "sped"])
def test_eio_midway_through_a_large_file_is_never_a_complete_200(eio_mount, model: str,
                                                                 serve: Serve):
    backing, mountpoint = eio_mount
    server = serve(mountpoint, "--model", model, "--access-log", "off")
    helpers = sorted(server.helper_pids())
    status, _, body, complete = fetch(server, "/ok-big.bin")
    assert (status, complete) == (200, True), "a large file does not stream from the mount"
    assert body == (backing / "ok-big.bin").read_bytes()
    original = (backing / "eio-late-big.bin").read_bytes()
    status, headers, body, complete = fetch(server, "/eio-late-big.bin")
    if status == 200:
        assert not complete, "a complete 200 for a file whose later reads fail with EIO"
        assert int(headers["content-length"]) == len(original)
        assert len(body) <= EIO_LATE_OK, f"{len(body)} bytes sent, only {EIO_LATE_OK} read"
        assert body == original[: len(body)], "the bytes sent before the cut are wrong"
    else:
        assert status == 500, f"{status} {body[:200]!r}"
    line = _log_line_about(server, "eio-late-big.bin")
    assert line, f"no log line naming eio-late-big.bin and EIO: {server.stderr_text()!r}"
    _still_serving(server, helpers)


# --- permissions, checked by a server that is not root ---------------------------------------


def _drop_privileges() -> None:
    os.setgid(65534)
    os.setuid(65534)


def _nobody_can_run_python() -> bool:
    try:
        subprocess.run([sys.executable, "-c", "import flashsrv"], preexec_fn=_drop_privileges,
                       check=True, capture_output=True, timeout=20, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def test_unprivileged_server_answers_403_for_unreadable_files_and_folders(serve: Serve):
    if os.geteuid() != 0:
        pytest.skip("needs root to start the server as nobody")
    if not _nobody_can_run_python():
        pytest.skip(f"user nobody cannot run {sys.executable} with flashsrv importable "
                    "(the interpreter or the checkout is in a private folder)")
    base = Path(tempfile.mkdtemp(prefix="flashsrv-perm-"))
    try:
        base.chmod(0o755)
        www = base / "www"
        www.mkdir()
        (www / "open.txt").write_bytes(b"open\n")
        (www / "locked.txt").write_bytes(b"locked\n")
        (www / "locked.txt").chmod(0)
        closed = www / "closed"
        closed.mkdir()
        (closed / "inside.txt").write_bytes(b"inside\n")
        closed.chmod(0)
        for p in (www, www / "open.txt"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

        server = serve(www, "--access-log", "off", preexec_fn=_drop_privileges)
        assert fetch(server, "/open.txt")[::2] == (200, b"open\n")
        assert fetch(server, "/locked.txt")[0] == 403
        assert fetch(server, "/closed/inside.txt")[0] == 403
        assert fetch(server, "/closed/")[0] == 403
        assert server.proc.poll() is None
        assert "Traceback" not in server.stderr_text()
    finally:
        for p in base.rglob("*"):
            if not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# --- operator signals ------------------------------------------------------------------------


def test_sighup_applies_new_headers_without_dropping_keepalive_connections(root: Path,
                                                                         tmp_path: Path,
                                                                         serve: Serve):
    (root / "page.txt").write_bytes(b"page\n")
    config = tmp_path / "flashsrv.toml"
    config.write_text('[headers]\nX-Site-Version = "one"\n')
    server = serve(root, "--config", str(config), "--access-log", "off",
                   "--keepalive-timeout", "30")
    socks = []
    try:
        for _ in range(3):
            s = connect(server)
            s.sendall(request_bytes(server, "/page.txt"))
            r = ResponseReader(s).read()
            assert r.header("x-site-version") == "one"
            socks.append((s, ResponseReader(s)))
        config.write_text('[headers]\nX-Site-Version = "two"\n')
        server.proc.send_signal(signal.SIGHUP)

        def new_value_on_old_connection():
            s, reader = socks[0]
            s.sendall(request_bytes(server, "/page.txt"))
            r = reader.read()
            assert r.status == 200 and r.body == b"page\n"
            return r.header("x-site-version") == "two"

        assert wait_until(new_value_on_old_connection, timeout=3, interval=0.1), \
            "new [headers] value not applied after SIGHUP"
        for s, reader in socks:  # every connection opened before the reload is still served
            s.sendall(request_bytes(server, "/page.txt"))
            r = reader.read()
            assert r.status == 200 and r.header("x-site-version") == "two"
        assert get(server, "/page.txt").header("x-site-version") == "two"
        assert server.proc.poll() is None
    finally:
        for s, _ in socks:
            s.close()


def test_sigusr1_after_logrotate_writes_to_a_new_file_at_the_original_path(root: Path,
                                                                          tmp_path: Path,
                                                                          serve: Serve):
    (root / "page.txt").write_bytes(b"page\n")
    log = tmp_path / "access.log"
    server = serve(root, "--access-log", str(log))
    assert get(server, "/page.txt?before").status == 200
    assert wait_until(lambda: log.exists() and b"?before" in log.read_bytes(), timeout=3)
    rotated = tmp_path / "access.log.1"
    log.rename(rotated)
    server.proc.send_signal(signal.SIGUSR1)
    assert wait_until(log.exists, timeout=3), "no new log file after SIGUSR1"
    assert get(server, "/page.txt?after").status == 200
    assert wait_until(lambda: b"?after" in log.read_bytes(), timeout=3), \
        "request after SIGUSR1 not logged at the original path"
    assert b"?after" not in rotated.read_bytes(), "still writing to the rotated file"
    assert b"?before" in rotated.read_bytes()


def test_sigterm_cuts_a_download_that_outlasts_the_grace_period_and_exits_0(root: Path,
                                                                            serve: Serve):
    (root / "big.bin").write_bytes(pattern(32 * MiB, b"grace"))
    server = serve(root, "--grace", "1", "--access-log", "off")
    dl = SlowDownload(server, "/big.bin", first=256 * 1024)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(6)
    except Exception:
        pytest.fail("server still running 6 s after SIGTERM with --grace 1")
    elapsed = time.monotonic() - start
    assert code == 0
    assert 0.8 < elapsed < 4, f"exited {elapsed:.2f} s after SIGTERM with --grace 1"
    assert not dl.finish(), "a client reading nothing cannot have received 32 MiB"
    # A new connection is refused once the server has gone.
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2).close()
