"""flashsrv under systemd's protocols, without systemd: the test passes a real listening socket
as descriptor 3 with LISTEN_FDS/LISTEN_PID (as socket activation does) and receives the
sd_notify datagrams on a socket of its own named by NOTIFY_SOCKET, learning each sender's pid
from the kernel as systemd does. The unit files are linted by `systemd-analyze` when present.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import LISTEN_RE, ServerProcess, children_of, get, wait_until

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
# Runs as the process systemd would start: the passed socket moves to descriptor 3 without
# FD_CLOEXEC (dup2 clears it, but dup2 onto itself would not), and LISTEN_PID is set here,
# the only place that knows the pid the server will have (exec keeps it).
LAUNCHER = """\
import os, sys
fd = int(sys.argv[1])
if fd == 3:
    os.set_inheritable(3, True)
else:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                     "WATCHDOG_USEC", "WATCHDOG_PID")
UCRED = struct.Struct("iII")


class NotifySocket:
    """Stands in for systemd's notification socket; every notice is kept with its arrival
    time and its sender's pid (SO_PASSCRED: the kernel says who sent it)."""

    def __init__(self, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(name.replace("@", "\0", 1) if name.startswith("@") else name)
        self.name = name
        self.notices: list[tuple[float, int, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    def _receive(self, timeout: float) -> bool:
        if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
            return False
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        pid = next(UCRED.unpack_from(value)[0] for level, kind, value in ancillary
                   if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS))
        fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.notices.append((time.monotonic(), pid, fields))
        return True

    def wait_for(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next notice that has `key`=1 (notices before it are kept in .notices)."""
        deadline = time.monotonic() + timeout
        while self._receive(deadline - time.monotonic()):
            if self.notices[-1][2].get(key) == "1":
                return self.notices[-1][2]
        raise AssertionError(f"no {key}=1 within {timeout}s; got {self.notices}")

    def collect(self, seconds: float) -> list[tuple[float, int, dict[str, str]]]:
        """Every notice arriving in the next `seconds`."""
        first = len(self.notices)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        return self.notices[first:]

    def senders(self) -> set[int]:
        return {pid for _at, pid, _fields in self.notices}


def pings(notices: list[tuple[float, int, dict[str, str]]]) -> list[float]:
    return [at for at, _pid, fields in notices if fields.get("WATCHDOG") == "1"]


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """An abstract-namespace notification socket (no path length limit, nothing to clean)."""
    receiver = NotifySocket(f"@flashsrv-test-notify-{os.getpid()}-{time.monotonic_ns()}")
    yield receiver
    receiver.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The socket systemd would have bound for flashsrv.socket."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    yield sock
    sock.close()


def _base_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}
    return {**base, **env}


def _reader(stream, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)


@pytest.fixture
def activate() -> Iterator[Callable[..., ServerProcess]]:
    """Start `flashsrv serve ROOT ARGS` as socket activation would, with `passed` (any open
    descriptor) as its descriptor 3; returns once it announced its address, or once it exited
    when wait=False. Every process started is stopped (workers resumed first) at the end."""
    started: list[subprocess.Popen] = []

    def start(root: Path, passed: int, *args: str, env: dict[str, str] | None = None,
              names: str = "http", wait: bool = True) -> ServerProcess:
        cmd = [sys.executable, "-c", LAUNCHER, str(passed), "-m", "flashsrv", "serve",
               str(root), "--port", "0", "--access-log", "off", *args]
        proc = subprocess.Popen(
            cmd, pass_fds=(passed,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=_base_env({"LISTEN_FDS": "1", "LISTEN_FDNAMES": names, **(env or {})}))
        started.append(proc)
        err: list[str] = []
        threading.Thread(target=_reader, args=(proc.stderr, err), daemon=True).start()
        server = ServerProcess(proc, "", 0, [], err)
        if not wait:
            proc.wait(15)
            return server
        wait_until(lambda: LISTEN_RE.search("".join(err)) or proc.poll() is not None, 15)
        match = LISTEN_RE.search("".join(err))
        assert match, f"no address announced (exit {proc.poll()}): {''.join(err)}"
        server.host, server.port = match.group(1).strip("[]"), int(match.group(2))
        return server

    yield start
    for proc in started:
        for pid in children_of(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_tcp_inodes(pid: int) -> set[int]:
    """The listening TCP sockets (IPv4 and IPv6) process pid holds, by inode."""
    listening = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in list(f)[1:]:
                cols = line.split()
                if cols[3] == "0A":  # TCP_LISTEN
                    listening.add(int(cols[9]))
    return socket_inodes(pid) & listening


def environment_of(pid: int) -> set[str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return {entry.split(b"=", 1)[0].decode() for entry in f.read().split(b"\0") if entry}


def test_serves_on_the_passed_socket_and_binds_nothing_else(docroot: Path, listener,
                                                            activate):
    server = activate(docroot, listener.fileno())
    assert server.port == listener.getsockname()[1]
    page = get(server, "/index.html")
    assert page.status == 200 and b"<h1>home</h1>" in page.body
    assert listening_tcp_inodes(server.proc.pid) == {os.fstat(listener.fileno()).st_ino}
    assert "serving on the sockets systemd passed (http)" in server.stderr_text()
    helpers = wait_until(lambda: children_of(server.proc.pid), timeout=5)
    assert helpers
    for helper in helpers:  # the variables were removed, the socket not inherited
        assert not environment_of(helper) & set(SYSTEMD_VARIABLES)
        assert os.fstat(listener.fileno()).st_ino not in socket_inodes(helper)


def test_ready_watchdog_reload_and_stopping_are_notified(docroot: Path, listener, activate,
                                                         notify_socket: NotifySocket):
    server = activate(docroot, listener.fileno(),
                      env={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "200000"})
    ready = notify_socket.wait_for("READY")
    assert ready["STATUS"] == f"serving on http://127.0.0.1:{server.port}"
    assert get(server, "/", timeout=5).status == 200
    # Twice per 200 ms interval: about 15 pings in 1.5 s. Only "it repeats" is asserted.
    assert len(pings(notify_socket.collect(1.5))) >= 5
    server.proc.send_signal(signal.SIGHUP)
    reloading = notify_socket.wait_for("RELOADING")
    assert re.fullmatch(r"\d+", reloading["MONOTONIC_USEC"])
    notify_socket.wait_for("READY")
    assert get(server, "/", timeout=5).status == 200
    server.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING")
    assert server.proc.wait(15) == 0
    assert notify_socket.senders() == {server.proc.pid}


def test_notify_socket_by_path_without_socket_activation(docroot: Path, serve):
    folder = tempfile.mkdtemp(prefix="flashsrv-notify-")  # short: a socket path has 107 bytes
    receiver = NotifySocket(os.path.join(folder, "notify"))
    try:
        server = serve(docroot, env={"NOTIFY_SOCKET": receiver.name})
        ready = receiver.wait_for("READY")
        assert ready["STATUS"] == f"serving on {server.url}"
        assert "WATCHDOG" not in str(receiver.collect(0.6))  # no WATCHDOG_USEC, no pings
        server.stop()
        receiver.wait_for("STOPPING", timeout=5)
    finally:
        receiver.close()
        shutil.rmtree(folder)


def test_workers_share_the_passed_socket_and_only_the_supervisor_notifies(
        docroot: Path, listener, activate, notify_socket: NotifySocket):
    server = activate(docroot, listener.fileno(), "--workers", "2",
                      env={"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "200000"})
    supervisor = server.proc.pid
    ready = notify_socket.wait_for("READY")
    assert ready["MAINPID"] == str(supervisor) and ready["STATUS"] == "2 workers serving"
    workers = children_of(supervisor)
    assert len(workers) == 2
    passed = {os.fstat(listener.fileno()).st_ino}
    for pid in (supervisor, *workers):
        assert listening_tcp_inodes(pid) == passed  # no SO_REUSEPORT socket of their own
    assert all(get(server, "/style.css", timeout=5).status == 200 for _ in range(20))
    assert len(pings(notify_socket.collect(1.5))) >= 5

    # One stuck worker loop stops the pings (systemd would restart the service)...
    os.kill(workers[0], signal.SIGSTOP)
    notify_socket.collect(0.3)  # a round that was complete already may still arrive
    assert pings(notify_socket.collect(1.0)) == []
    os.kill(workers[0], signal.SIGCONT)
    assert wait_until(lambda: pings(notify_socket.collect(0.2)), timeout=5)  # ...and resumes

    server.proc.send_signal(signal.SIGHUP)
    notify_socket.wait_for("RELOADING")
    assert notify_socket.wait_for("READY")["STATUS"] == "2 workers serving"
    server.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING")
    assert server.proc.wait(15) == 0
    assert notify_socket.senders() == {supervisor}
    readies = [f for _at, _pid, f in notify_socket.notices if f.get("READY") == "1"]
    assert len(readies) == 2  # start-up and the reload, each once


@pytest.mark.parametrize("kind", ["file", "unlistening socket"])
def test_a_passed_descriptor_that_is_no_listening_socket_is_refused(docroot: Path, activate,
                                                                    tmp_path: Path, kind: str):
    if kind == "file":
        passed = os.open(tmp_path / "not-a-socket", os.O_CREAT | os.O_RDWR)
        expected = "is not a socket"
    else:
        passed = socket.socket().detach()
        expected = "is not a listening TCP socket"
    try:
        server = activate(docroot, passed, wait=False)
    finally:
        os.close(passed)
    assert server.proc.returncode == 1
    assert wait_until(lambda: expected in server.stderr_text(), timeout=5), server.stderr_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed: the unit files are not linted")
def test_the_unit_files_pass_systemd_analyze(tmp_path: Path):
    """`verify` checks every directive and that ExecStart= is executable (so the copy points
    at this checkout's command); `security` scores the sandbox (exposure 2.0 at most)."""
    flashsrv = shutil.which("flashsrv", path=os.path.dirname(sys.executable))
    assert flashsrv
    for unit in ("flashsrv.socket", "flashsrv.service"):
        text = (UNITS / unit).read_text().replace("/usr/local/bin/flashsrv", flashsrv)
        (tmp_path / unit).write_text(text)
    units = [str(tmp_path / "flashsrv.socket"), str(tmp_path / "flashsrv.service")]
    verify = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and str(tmp_path) not in verify.stderr + verify.stdout, (
        verify.stderr + verify.stdout)
    security = subprocess.run(["systemd-analyze", "security", "--offline=true",
                               "--threshold=20", units[1]], capture_output=True, text=True,
                              timeout=60)
    assert security.returncode == 0, security.stdout[-3000:]
