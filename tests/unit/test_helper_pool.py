"""flashsrv.helper_pool: lanes, queues and helper replacement, seen from the main process.

Most tests start no process: `subprocess.Popen` in the pool's module is replaced by a fake that
keeps the helper's end of the socket pair, so the test reads each job the pool sends and writes
the helper's answer (or hangs up) itself, on the pool's real sockets and a real event loop.
The last tests run real helper processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from flashsrv_helpers.wire import (
    DATA,
    FILE,
    LOOKUP,
    MAX_FRAME,
    READ,
    STAT_MANY,
    FrameDecoder,
    Message,
    encode,
)

from flashsrv import helper_pool
from flashsrv.disk import DiskUnavailable
from flashsrv.helper_pool import HelperPool

T = TypeVar("T")


class FakeHelper:
    """What the pool sees of a helper process (pid, poll, kill, wait), with no process: the
    test holds the helper's end of the socket pair. It "exits" when the pool closes its end
    (as a real helper does at end-of-file) or kills it."""

    def __init__(self, args: list[str], fd: int) -> None:
        self.args = args
        self.pid = 0
        self.sock = socket.socket(fileno=os.dup(fd))
        self.sock.setblocking(False)
        self._decoder = FrameDecoder()
        self._received: list[Message] = []
        self.eof = False
        self.killed = False

    def _receive(self) -> None:
        while not self.eof and self.sock.fileno() >= 0:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            self.eof = not data
            self._received += self._decoder.feed(data)

    def jobs(self) -> list[Message]:
        """The jobs received since the last call: (job id, operation, arguments)."""
        self._receive()
        jobs, self._received = self._received, []
        return jobs

    def answer(self, job_id: int, result: tuple, fds: tuple[int, ...] = ()) -> None:
        socket.send_fds(self.sock, [encode((job_id, result))], list(fds))

    def poll(self) -> int | None:
        self._receive()
        return 0 if self.eof or self.killed or self.sock.fileno() < 0 else None

    def kill(self) -> None:
        self.killed = True

    def wait(self) -> int:
        return 0


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeHelper]]:
    """Every helper the pool starts in this test, oldest first (no process is started)."""
    started: list[FakeHelper] = []

    def popen(args: list[str], pass_fds: tuple[int, ...], **_options: Any) -> FakeHelper:
        started.append(FakeHelper(args, pass_fds[0]))
        return started[-1]

    monkeypatch.setattr(helper_pool, "subprocess",
                        SimpleNamespace(Popen=popen, DEVNULL=subprocess.DEVNULL))
    monkeypatch.setattr(helper_pool, "RESPAWN_PAUSE", 0.01)
    yield started
    for helper in started:
        helper.sock.close()


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


@asynccontextmanager
async def running(count: int, job_timeout: float = 5.0, max_queue: int = 16,
                  root: str = "/srv") -> AsyncIterator[HelperPool]:
    pool = HelperPool(root, count, job_timeout, max_queue)
    pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def turn() -> None:
    """Let the tasks just created reach the pool, and the pool's reader run."""
    for _ in range(3):
        await asyncio.sleep(0)


def file_ref(fd: int, path: str, identity: tuple[int, int, int, int]) -> Any:
    """One version of a file as the pool's data jobs see it (a disk.FileRef)."""
    return SimpleNamespace(fd=fd, path=path, size=identity[2], identity=identity)


REF = file_ref(-1, "big.bin", (1, 2, 1 << 20, 3))


def test_each_helper_runs_the_worker_module_with_its_socket_root_and_our_pid(
        helpers: list[FakeHelper]):
    async def scenario() -> dict[str, int]:
        async with running(2) as pool:
            return pool.stats()

    stats = run(scenario)
    assert len(helpers) == 2 and stats["helpers"] == 2 and stats["helper_busy"] == 0
    command = helpers[0].args
    assert command[:3] == [sys.executable, "-m", "flashsrv_helpers.worker"]
    assert command[4:] == ["/srv", str(os.getpid())]


@pytest.mark.parametrize(("count", "data_lane"), [(1, 1), (2, 1), (3, 2), (4, 3), (8, 6)])
def test_data_jobs_leave_a_quarter_of_the_helpers_to_lookups(
        helpers: list[FakeHelper], count: int, data_lane: int):
    async def scenario() -> tuple[list[str], dict[str, int]]:
        async with running(count) as pool:
            waiting = [asyncio.ensure_future(pool.read(REF, 0, 10)) for _ in range(count + 1)]
            waiting.append(asyncio.ensure_future(pool.lookup("page.html", (), 0)))
            await turn()
            ops = [str(job[1]) for helper in helpers for job in helper.jobs()]
            return ops, pool.stats()

    ops, stats = run(scenario)
    assert ops.count(READ) == data_lane
    assert ops.count(LOOKUP) == (1 if count > 1 else 0), "a lookup finds a free helper"
    assert stats["helper_queue"] == count + 2 - len(ops)


def test_a_freed_helper_takes_metadata_before_data(helpers: list[FakeHelper]):
    async def scenario() -> tuple[bytes, list[str]]:
        async with running(1) as pool:
            first, *_waiting = [asyncio.ensure_future(job) for job in (
                pool.read(REF, 0, 5), pool.read(REF, 5, 5), pool.lookup("page.html", (), 0))]
            await turn()
            (job_id, _, _), = helpers[0].jobs()
            helpers[0].answer(job_id, (DATA, b"hello"))
            data = await first
            await turn()
            return data, [str(job[1]) for job in helpers[0].jobs()]

    assert run(scenario) == (b"hello", [LOOKUP])


def test_revalidation_jumps_the_queue(helpers: list[FakeHelper]):
    async def scenario() -> list[str]:
        async with running(1) as pool:
            _waiting = [asyncio.ensure_future(job) for job in (
                pool.lookup("a", (), 0), pool.lookup("b", (), 0), pool.stat_many(["c"], ()))]
            await turn()
            (job_id, _, _), = helpers[0].jobs()
            helpers[0].answer(job_id, ("missing",))
            await turn()
            return [str(job[1]) for job in helpers[0].jobs()]

    assert run(scenario) == [STAT_MANY]


def test_a_full_queue_answers_disk_unavailable_at_once(helpers: list[FakeHelper]):
    async def scenario() -> dict[str, int]:
        async with running(1, max_queue=2) as pool:
            waiting = [asyncio.ensure_future(pool.lookup(name, (), 0)) for name in "abc"]
            # the data lane has a queue of its own
            waiting.append(asyncio.ensure_future(pool.read(REF, 0, 1)))
            await turn()
            with pytest.raises(DiskUnavailable, match="queue is full"):
                await pool.lookup("d", (), 0)
            return pool.stats()

    stats = run(scenario)
    assert stats["helper_rejected"] == 1 and stats["helper_queue"] == 3


def test_descriptors_a_helper_passes_reach_the_caller(helpers: list[FakeHelper],
                                                       tmp_path: Path):
    (tmp_path / "a.txt").write_bytes(b"alpha\n")

    async def scenario() -> bytes:
        async with running(1) as pool:
            task = asyncio.ensure_future(pool.lookup("a.txt", (), 0))
            await turn()
            (job_id, _, _), = helpers[0].jobs()
            fd = os.open(tmp_path / "a.txt", os.O_RDONLY)
            helpers[0].answer(job_id, (FILE, [("", 6, 1, 2, 3, None, True, True)]), (fd,))
            os.close(fd)
            found, fds = await task
            assert found.kind == FILE and len(fds) == 1
            data = os.pread(fds[0], 6, 0)
            os.close(fds[0])
            return data

    assert run(scenario) == b"alpha\n"


def test_an_answer_nobody_waits_for_closes_its_descriptors(helpers: list[FakeHelper]):
    async def scenario() -> tuple[dict[str, int], list[str]]:
        async with running(1) as pool:
            task = asyncio.ensure_future(pool.lookup("a.txt", (), 0))
            await turn()
            (job_id, _, _), = helpers[0].jobs()
            task.cancel()  # the request went away while the helper worked
            r, w = os.pipe()
            helpers[0].answer(job_id, (FILE, [("", 0, 1, 2, 3, None, True, True)]), (r,))
            os.close(r)
            await turn()
            try:  # no copy of the read end is left open anywhere: the pipe is broken
                with pytest.raises(BrokenPipeError):
                    os.write(w, b"x")
            finally:
                os.close(w)
            following = asyncio.ensure_future(pool.lookup("b", (), 0))
            await turn()
            following.cancel()
            return pool.stats(), [str(job[1]) for job in helpers[0].jobs()]

    stats, next_jobs = run(scenario)
    assert next_jobs == [LOOKUP], "the helper is free for the next job"
    assert stats["helper_restarts"] == 0


def test_a_helper_that_exits_fails_its_job_and_is_replaced(helpers: list[FakeHelper]):
    async def scenario() -> tuple[dict[str, int], list[str]]:
        async with running(1) as pool:
            task = asyncio.ensure_future(pool.lookup("a", (), 0))
            await turn()
            helpers[0].sock.close()
            with pytest.raises(DiskUnavailable, match="it exited"):
                await task
            await asyncio.sleep(0.05)  # RESPAWN_PAUSE
            following = asyncio.ensure_future(pool.lookup("b", (), 0))
            await turn()
            following.cancel()
            return pool.stats(), [str(job[1]) for job in helpers[-1].jobs()]

    stats, jobs = run(scenario)
    assert len(helpers) == 2 and stats["helpers"] == 1 and stats["helper_restarts"] == 1
    assert jobs == [LOOKUP]


def test_a_helper_over_the_job_timeout_is_killed(helpers: list[FakeHelper]):
    async def scenario() -> None:
        async with running(1, job_timeout=0.02) as pool:
            with pytest.raises(DiskUnavailable, match=r"did not answer within 0\.02s"):
                await pool.lookup("slow", (), 0)

    run(scenario)
    assert helpers[0].killed


def test_a_helper_sending_an_oversized_frame_is_replaced(helpers: list[FakeHelper]):
    async def scenario() -> dict[str, int]:
        async with running(1) as pool:
            task = asyncio.ensure_future(pool.lookup("a", (), 0))
            await turn()
            helpers[0].sock.send((MAX_FRAME + 1).to_bytes(4, "big"))
            with pytest.raises(DiskUnavailable, match="exceeds the limit"):
                await task
            return pool.stats()

    assert run(scenario)["helper_restarts"] == 1
    assert helpers[0].killed


def test_close_fails_queued_jobs_and_refuses_new_ones(helpers: list[FakeHelper]):
    async def scenario() -> float:
        pool = HelperPool("/srv", 1, 5.0, 8)
        pool.start()
        _running, queued = (asyncio.ensure_future(pool.lookup(name, (), 0)) for name in "ab")
        await turn()
        started = time.monotonic()
        await pool.close()
        took = time.monotonic() - started
        with pytest.raises(DiskUnavailable, match="stopping"):
            await queued
        with pytest.raises(DiskUnavailable, match="stopping"):
            await pool.lookup("c", (), 0)
        return took

    assert run(scenario) < 1.0, "the helpers exit at end-of-file: close waits for no timeout"
    assert helpers[0].eof and not helpers[0].killed


def test_close_fails_the_jobs_in_flight_too(helpers: list[FakeHelper]):
    async def scenario() -> None:
        pool = HelperPool("/srv", 1, 5.0, 8)
        pool.start()
        in_flight = asyncio.ensure_future(pool.lookup("a", (), 0))
        await turn()
        await pool.close()
        with pytest.raises(DiskUnavailable, match="stopping"):
            await asyncio.wait_for(in_flight, 0.5)

    run(scenario)


# -- real helper processes ---------------------------------------------------------------------


def test_a_real_helper_answers_and_a_killed_one_is_replaced(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    started: list[subprocess.Popen] = []

    def popen(*args: Any, **options: Any) -> subprocess.Popen:
        started.append(subprocess.Popen(*args, **options))
        return started[-1]

    monkeypatch.setattr(helper_pool, "subprocess",
                        SimpleNamespace(Popen=popen, DEVNULL=subprocess.DEVNULL))
    monkeypatch.setattr(helper_pool, "RESPAWN_PAUSE", 0.05)
    (tmp_path / "a.txt").write_bytes(b"alpha\n" * 10)
    root = os.path.realpath(tmp_path)

    async def lookup_and_read(pool: HelperPool) -> bytes:
        found, fds = await pool.lookup("a.txt", (), 0)
        facts = found.files[0]
        fd = fds[0] if fds else -1
        try:
            return await pool.read(file_ref(fd, "a.txt", facts.identity), 6, 6)
        finally:
            if fd >= 0:
                os.close(fd)

    async def scenario() -> tuple[bytes, bytes, dict[str, int]]:
        async with running(1, root=root) as pool:
            before = await lookup_and_read(pool)
            started[0].kill()
            deadline = time.monotonic() + 10
            while len(started) < 2 or pool.stats()["helpers"] == 0:
                assert time.monotonic() < deadline, "the killed helper was not replaced"
                await asyncio.sleep(0.02)
            after = await lookup_and_read(pool)
            return before, after, pool.stats()

    before, after, stats = run(scenario)
    assert before == after == b"alpha\n"
    assert stats["helper_restarts"] == 1 and stats["helper_jobs"] == 4
    assert all(proc.poll() is not None for proc in started), "no helper outlives the pool"
