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

from flashsrv_helpers.jobs import Jobs
from flashsrv_helpers.wire import MAX_FDS, FrameDecoder, encode

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send sig when the parent exits; exit now if it already has (it may
    have died before the request was made). Also used by flashsrv's worker processes."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def handle(message: tuple, fds: list[int], jobs: Jobs) -> tuple[tuple, list[int]]:
    """Run one job; returns (reply message, descriptors to pass back). The descriptors that
    came with the job are copies made by the kernel for this process: closed here."""
    job_id, op, args = message
    try:
        result, out_fds = jobs.run(op, args, fds[0] if fds else None)
    finally:
        for fd in fds:
            os.close(fd)
    return (job_id, result), out_fds


def send_reply(sock: socket.socket, frame: bytes, fds: list[int]) -> None:
    sent = socket.send_fds(sock, [frame], fds) if fds else sock.send(frame)
    if sent < len(frame):
        sock.sendall(memoryview(frame)[sent:])
    for fd in fds:
        os.close(fd)


def serve(sock: socket.socket, root: str) -> None:
    jobs = Jobs(root, local_only=True)
    decoder = FrameDecoder()
    received: list[int] = []
    while True:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, MAX_FDS)
        received.extend(fds)
        if not data:
            return
        for message in decoder.feed(data):
            reply, out_fds = handle(message, received, jobs)
            received = []
            send_reply(sock, encode(reply), out_fds)


def main(argv: list[str]) -> None:
    fd, root, parent_pid = int(argv[0]), argv[1], int(argv[2])
    die_with_parent(parent_pid)
    # The main process decides when helpers end (EOF on this socket, or its death): a signal
    # sent to the whole process group (Ctrl-C, a HUP or USR1 to the group) is meant for it.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(sock, root)


if __name__ == "__main__":
    main(sys.argv[1:])
