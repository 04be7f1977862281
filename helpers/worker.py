"""A helper process: take one disk job at a time from the main process, do it, answer.

Started by the main process as `python -m flashsrv_helpers.worker FD ROOT PARENT_PID`, where FD is
its end of a UNIX socket pair. It may block as long as the disk makes it: that is its purpose.
It never outlives the main process: the kernel kills it when the parent dies (PR_SET_PDEATHSIG),
and end-of-file on its socket (the parent closed it or died) makes it exit as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from flashsrv_helpers import diskops
from flashsrv_helpers.wire import CHANGED, DATA_OPS, FrameDecoder, encode

PR_SET_PDEATHSIG = 1
MAX_FDS_PER_JOB = 8


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent exits; exit now if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


class Worker:
    """One helper's state across jobs: the files it keeps open and its warm buffer."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.kept = diskops.KeptFiles(root)
        self.buffer = bytearray(diskops.WARM_BUFFER)

    def file_job(self, op: str, args: tuple, fds: list[int]) -> tuple:
        """read, warm or gzip of one version of a file: through the descriptor the main
        process passed, or one this helper keeps for a file the main process must not hold."""
        relpath, identity, offset, length = args
        fd = fds[0] if fds else self.kept.open(relpath, identity)
        if fd is None:
            return CHANGED
        if op == "read":
            result: bytes | int = diskops.read(fd, offset, length)
        elif op == "warm":
            result = diskops.warm(fd, offset, length, self.buffer)
        else:
            result = diskops.gzip_file(fd, length)
        if not fds and not self.kept.unchanged(fd, identity):
            self.kept.forget(relpath, identity)
            return CHANGED
        return ("data", result)


def handle(message: tuple, fds: list[int], worker: Worker) -> tuple[tuple, list[int]]:
    """Run one job; returns (reply message, descriptors to pass back)."""
    job_id, op, args = message
    root = worker.root
    try:
        if op == "lookup":
            result, out_fds = diskops.lookup(root, *args, local_only=True)
            return (job_id, result), out_fds
        if op in DATA_OPS:
            return (job_id, worker.file_job(op, args, fds)), []
        if op == "stat_many":
            return (job_id, ("facts", diskops.stat_many(root, *args))), []
        if op == "listdir":
            return (job_id, diskops.listdir(root, *args)), []
        return (job_id, ("error", 0, f"unknown operation {op!r}")), []
    except OSError as exc:
        return (job_id, ("error", exc.errno or 0, exc.strerror or str(exc))), []
    finally:
        for fd in fds:
            os.close(fd)


def send_reply(sock: socket.socket, frame: bytes, fds: list[int]) -> None:
    sent = socket.send_fds(sock, [frame], fds) if fds else sock.send(frame)
    if sent < len(frame):
        sock.sendall(memoryview(frame)[sent:])
    for fd in fds:
        os.close(fd)


def serve(sock: socket.socket, root: str) -> None:
    worker = Worker(root)
    decoder = FrameDecoder()
    received: list[int] = []
    while True:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, MAX_FDS_PER_JOB)
        received.extend(fds)
        if not data:
            return
        for message in decoder.feed(data):
            reply, out_fds = handle(message, received, worker)
            received = []
            send_reply(sock, encode(reply), out_fds)


def main(argv: list[str]) -> None:
    fd, root, parent_pid = int(argv[0]), argv[1], int(argv[2])
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(sock, root)


if __name__ == "__main__":
    main(sys.argv[1:])
