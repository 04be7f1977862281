"""helpers/worker.py: a helper's job loop, run in a thread of the test over a real socket pair.

The test plays the main process: it writes framed jobs (descriptors beside them) and reads the
answers. die_with_parent changes the calling process, so it runs in a short-lived child.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flashsrv_helpers.jobs import Jobs
from flashsrv_helpers.wire import DATA, FILE, LOOKUP, MAX_FDS, READ, FrameDecoder, Message, encode
from flashsrv_helpers.worker import handle, serve

BIG = bytes(range(256)) * 4096  # 1 MiB: its answer is larger than a socket buffer


@pytest.fixture
def root(tmp_path: Path) -> str:
    www = Path(os.path.realpath(tmp_path)) / "www"
    www.mkdir()
    (www / "a.txt").write_bytes(b"alpha\n")
    (www / "big.bin").write_bytes(BIG)
    return str(www)


def identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


# -- handle ------------------------------------------------------------------------------------


def test_handle_answers_with_the_job_id_and_the_descriptors_to_pass(root: str):
    reply, fds = handle((7, LOOKUP, ("a.txt", (), 0)), [], Jobs(root, local_only=False))
    try:
        job_id, result = reply
        assert job_id == 7 and result[0] == FILE and len(fds) == 1
        assert os.pread(fds[0], 6, 0) == b"alpha\n"
    finally:
        for fd in fds:
            os.close(fd)


def test_handle_reads_through_the_descriptor_that_came_with_the_job_and_closes_it(root: str):
    path = os.path.join(root, "a.txt")
    fd = os.open(path, os.O_RDONLY)
    reply, fds = handle((3, READ, ("a.txt", identity(path), 0, 5)), [fd],
                        Jobs(root, local_only=False))
    assert reply == (3, (DATA, b"alpha")) and fds == []
    assert closed(fd), "the kernel's copy of the main process's descriptor is ours to close"


def test_handle_closes_the_descriptors_of_a_job_that_fails(root: str):
    fd = os.open(os.path.join(root, "a.txt"), os.O_RDONLY)
    with pytest.raises(ValueError):  # a data job without its identity and range
        handle((4, READ, ("a.txt",)), [fd], Jobs(root, local_only=False))
    assert closed(fd)


# -- serve -------------------------------------------------------------------------------------


class MainEnd:
    """The main process's end of a helper's socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.decoder = FrameDecoder()
        self.pending: list[Message] = []
        self.fds: list[int] = []

    def ask(self, message: Message, fds: tuple[int, ...] = ()) -> tuple[Message, list[int]]:
        """Send one job; its answer and the descriptors that came with it."""
        socket.send_fds(self.sock, [encode(message)], list(fds))
        while not self.pending:
            data, fds_in, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, MAX_FDS)
            assert data, "the helper hung up"
            self.fds += fds_in
            self.pending += self.decoder.feed(data)
        fds_out, self.fds = self.fds, []
        return self.pending.pop(0), fds_out


@pytest.fixture
def helper(root: str) -> Iterator[tuple[MainEnd, threading.Thread]]:
    """serve() running in a thread on one end of a socket pair; the test holds the other."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    thread = threading.Thread(target=serve, args=(theirs, root), daemon=True)
    thread.start()
    yield MainEnd(ours), thread
    ours.close()
    thread.join(10)
    theirs.close()


def test_serve_answers_jobs_in_turn_and_passes_descriptors(
        helper: tuple[MainEnd, threading.Thread], root: str):
    main, _ = helper
    (job_id, result), fds = main.ask((1, LOOKUP, ("a.txt", (), 0)))
    assert job_id == 1 and result[0] == FILE and len(fds) == 1
    try:
        assert os.pread(fds[0], 6, 0) == b"alpha\n"
        path = os.path.join(root, "a.txt")
        reply, more = main.ask((2, READ, ("a.txt", identity(path), 1, 4)), (fds[0],))
        assert reply == (2, (DATA, b"lpha")) and more == []
    finally:
        for fd in fds:
            os.close(fd)


def test_serve_sends_all_of_an_answer_larger_than_the_socket_buffer(
        helper: tuple[MainEnd, threading.Thread], root: str):
    main, _ = helper
    path = os.path.join(root, "big.bin")
    reply, _ = main.ask((5, READ, ("big.bin", identity(path), 0, len(BIG))))
    assert reply == (5, (DATA, BIG))


def test_serve_returns_when_the_main_process_closes_its_end(
        helper: tuple[MainEnd, threading.Thread]):
    main, thread = helper
    main.sock.close()
    thread.join(10)
    assert not thread.is_alive()


# -- die_with_parent ---------------------------------------------------------------------------

CHILD = """
import ctypes, os, sys
from flashsrv_helpers.worker import die_with_parent
die_with_parent(int(sys.argv[1]), int(sys.argv[2]))
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG
print(sig.value)
"""


def run_child(parent_pid: int, sig: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(parent_pid), str(sig)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_die_with_parent_asks_the_kernel_for_the_signal():
    child = run_child(os.getpid(), signal.SIGTERM)
    assert child.returncode == 0 and child.stdout.strip() == str(int(signal.SIGTERM))


def test_die_with_parent_exits_at_once_when_the_parent_is_already_gone():
    not_its_parent = os.getpid() + 1  # what getppid() says once the parent died: another pid
    child = run_child(not_its_parent, signal.SIGKILL)
    assert child.returncode == 0 and child.stdout == "", "it exited before printing"
