"""AMPED's helper processes, seen from the main process.

Each helper is a child process with one end of a UNIX stream socket pair: a bidirectional pipe
that can also carry file descriptors, so a helper can do the blocking `open()` and hand the
open file to the main process, which then never touches a path itself. The main process
registers its end with the event loop (`add_reader`): a helper finishing a job is a readiness
event like any client socket. One job is in flight per helper; the rest wait in bounded queues.

Two lanes: jobs on file bytes (read, warm, compress: `wire.DATA_OPS`) may occupy all helpers but
a quarter (at least one, when there are two or more), so that lookups, revalidations and
listings always find a helper even while many cold streams keep the disk busy.

A helper that dies (EOF on its socket) or overruns the job timeout (it is then killed) fails its
job with DiskUnavailable and is replaced at once. Helpers die with the main process: their
socket reaches EOF, and the kernel signals them (PR_SET_PDEATHSIG, set in the helper).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque

from flashsrv_helpers.wire import DATA_OPS, MAX_FDS, FrameDecoder, encode

from flashsrv.disk import Disk, DiskUnavailable, close_fds

log = logging.getLogger("flashsrv.helpers")

RECV_BYTES = 1 << 18
RESPAWN_PAUSE = 1.0


class _Job:
    __slots__ = ("args", "data", "fd", "future", "id", "op", "timer")

    def __init__(self, job_id: int, op: str, args: tuple, fd: int | None, future) -> None:
        self.id = job_id
        self.op = op
        self.args = args
        self.fd = fd
        self.future = future
        self.data = op in DATA_OPS
        self.timer: asyncio.TimerHandle | None = None


class _Helper:
    __slots__ = ("decoder", "fds", "fds_lost", "job", "proc", "sock", "started")

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.decoder = FrameDecoder()
        self.fds: list[int] = []
        self.fds_lost = False  # the kernel dropped descriptors we had no room for (EMFILE)
        self.job: _Job | None = None
        self.started = time.monotonic()


class HelperPool(Disk):
    """N helper processes, a bounded queue of jobs, replacement of dead or stuck helpers."""

    def __init__(self, root: str, count: int, job_timeout: float, max_queue: int) -> None:
        super().__init__(root)
        self.count = count
        self.job_timeout = job_timeout
        self.max_queue = max_queue
        self._helpers: list[_Helper] = []
        self._idle: list[_Helper] = []
        self._queue: deque[_Job] = deque()  # metadata jobs
        self._data_queue: deque[_Job] = deque()
        self._data_limit = count - max(1, count // 4) if count > 1 else 1
        self._data_busy = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop  # set by start(), before any other use
        self._closing = False
        self._zombies: list[subprocess.Popen] = []
        self.restarts = 0
        self.jobs = 0
        self.rejected = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self.count):
            self._spawn()

    def _spawn(self) -> None:
        if self._closing:
            return
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flashsrv_helpers.worker",
                 str(child_end.fileno()), self.root, str(os.getpid())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_end.close()
        parent_end.setblocking(False)
        helper = _Helper(proc, parent_end)
        self._helpers.append(helper)
        self._loop.add_reader(parent_end.fileno(), self._on_readable, helper)
        self._make_idle(helper)

    async def close(self) -> None:
        self._closing = True
        for helper in list(self._helpers):
            job = self._finish(helper)  # a job in flight fails now: its helper is going away
            if job is not None:
                if job.timer is not None:
                    job.timer.cancel()
                if not job.future.done():
                    job.future.set_exception(DiskUnavailable("server is stopping"))
            self._retire(helper)
        for queue in (self._queue, self._data_queue):
            for job in queue:
                if not job.future.done():
                    job.future.set_exception(DiskUnavailable("server is stopping"))
            queue.clear()
        deadline = asyncio.get_running_loop().time() + 2.0
        while self._zombies and asyncio.get_running_loop().time() < deadline:
            self.reap()
            await asyncio.sleep(0.02)
        for proc in self._zombies:
            proc.kill()
            proc.wait()
        self._zombies.clear()

    def reap(self) -> None:
        """Collect exited helpers so that none stays a zombie (called from the periodic tick)."""
        self._zombies = [p for p in self._zombies if p.poll() is None]

    def stats(self) -> dict[str, int]:
        return {
            "helpers": len(self._helpers),
            "helper_busy": len(self._helpers) - len(self._idle),
            "helper_queue": len(self._queue) + len(self._data_queue),
            "helper_restarts": self.restarts,
            "helper_jobs": self.jobs,
            "helper_rejected": self.rejected,
        }

    # -- jobs --------------------------------------------------------------------------------

    async def _call(self, op: str, args: tuple, fd: int | None = None,
                    urgent: bool = False) -> tuple[tuple, list[int]]:
        """Run a job on a helper. An urgent job (revalidation of what the cache already
        serves) jumps the queue: hot files must not wait behind cold reads."""
        if self._closing:
            raise DiskUnavailable("server is stopping")
        job = _Job(next(self._ids), op, args, fd, self._loop.create_future())
        queue = self._data_queue if job.data else self._queue
        if self._idle and not (job.data and self._data_busy >= self._data_limit):
            self._dispatch(self._idle.pop(), job)
        elif len(queue) >= self.max_queue:
            self.rejected += 1
            raise DiskUnavailable("all helpers are busy and the queue is full")
        elif urgent:
            queue.appendleft(job)
        else:
            queue.append(job)
        return await job.future

    def _dispatch(self, helper: _Helper, job: _Job) -> None:
        if job.data:
            self._data_busy += 1
        frame = encode((job.id, job.op, job.args))
        try:
            if job.fd is None:
                sent = helper.sock.send(frame)
            else:
                sent = socket.send_fds(helper.sock, [frame], [job.fd])
        except OSError as exc:
            sent = -1
            log.error("helper %d: cannot send a job: %s", helper.proc.pid, exc)
        helper.job = job
        self.jobs += 1
        if sent != len(frame):
            # One job at a time on an empty socket: a short write means the helper is gone.
            self._on_death(helper, "its socket refused a job")
            return
        job.timer = self._loop.call_later(self.job_timeout, self._on_timeout, helper, job)

    def _take(self) -> _Job | None:
        """The job a helper that is free now should run: metadata first, then data while the
        data lane has room."""
        for queue in (self._queue, self._data_queue):
            if queue is self._data_queue and self._data_busy >= self._data_limit:
                break
            while queue:
                job = queue.popleft()
                if not job.future.done():
                    return job
        return None

    def _make_idle(self, helper: _Helper) -> None:
        job = self._take()
        if job is None:
            self._idle.append(helper)
        else:
            self._dispatch(helper, job)

    def _finish(self, helper: _Helper) -> _Job | None:
        """Detach the job a helper was running (done, or failed with it)."""
        job, helper.job = helper.job, None
        if job is not None and job.data:
            self._data_busy -= 1
        return job

    def _on_readable(self, helper: _Helper) -> None:
        try:
            data, fds, flags, _addr = socket.recv_fds(helper.sock, RECV_BYTES, MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds, flags = b"", [], 0
        helper.fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            helper.fds_lost = True
        if not data:
            self._on_death(helper, "it exited")
            return
        try:
            messages = helper.decoder.feed(data)
        except ValueError as exc:
            self._on_death(helper, str(exc))
            return
        for _job_id, result in messages:
            job = self._finish(helper)
            fds, helper.fds = helper.fds, []
            fds_lost, helper.fds_lost = helper.fds_lost, False
            if job is None:
                close_fds(fds)
                continue
            if job.timer is not None:  # always: _dispatch set it before the reply could come
                job.timer.cancel()
            if job.future.done():  # the request went away meanwhile
                close_fds(fds)
            elif fds_lost:
                close_fds(fds)
                log.error("out of file descriptors: a helper's open files were dropped")
                job.future.set_exception(DiskUnavailable("out of file descriptors"))
            else:
                job.future.set_result((result, fds))
            self._make_idle(helper)

    def _on_timeout(self, helper: _Helper, job: _Job) -> None:
        if helper.job is job:
            self._on_death(helper, f"it did not answer within {self.job_timeout:g}s")

    def _retire(self, helper: _Helper) -> None:
        """Stop using a helper: close our end (EOF makes it exit) and reap it later."""
        if helper in self._helpers:
            self._helpers.remove(helper)
        if helper in self._idle:
            self._idle.remove(helper)
        self._loop.remove_reader(helper.sock.fileno())
        helper.sock.close()
        close_fds(helper.fds)
        helper.fds = []
        self._zombies.append(helper.proc)

    def _on_death(self, helper: _Helper, why: str) -> None:
        job = self._finish(helper)
        if helper.proc.poll() is None:
            helper.proc.kill()
        self._retire(helper)
        if job is not None:
            if job.timer is not None:
                job.timer.cancel()
            log.error("helper %d failed (%s) during %s %r", helper.proc.pid, why, job.op,
                      job.args[:1])
            if not job.future.done():
                job.future.set_exception(DiskUnavailable(f"helper failed: {why}"))
        else:
            log.error("helper %d failed (%s)", helper.proc.pid, why)
        if not self._closing:
            self.restarts += 1
            # A helper that dies as soon as it starts (a broken installation, say) is
            # replaced after a pause, not in a loop that would burn a core on process starts.
            quick_death = time.monotonic() - helper.started < RESPAWN_PAUSE
            self._loop.call_later(RESPAWN_PAUSE if quick_death else 0, self._spawn)
