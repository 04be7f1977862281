"""helpers/jobs.py: the one dispatch from a job to the disk operations, as every model runs it."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import pytest
from flashsrv_helpers.jobs import Jobs
from flashsrv_helpers.wire import (
    CHANGED,
    COMPRESS,
    DATA,
    ERROR,
    FACTS,
    FILE,
    LISTDIR,
    LISTING,
    LOOKUP,
    MISSING,
    READ,
    STAT_MANY,
    WARM,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = Path(os.path.realpath(tmp_path)) / "www"
    www.mkdir()
    (www / "a.txt").write_bytes(b"alpha\n" * 100)
    return www


def version(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def test_lookup_hands_the_descriptors_to_the_caller(root: Path):
    result, fds = Jobs(str(root), local_only=False).run(LOOKUP, ("a.txt", (), 0), None)
    assert result[0] == FILE and len(fds) == 1
    os.close(fds[0])


def test_data_job_through_the_callers_descriptor_leaves_it_open(root: Path):
    jobs = Jobs(str(root), local_only=False)
    fd = os.open(root / "a.txt", os.O_RDONLY)
    try:
        args = ("a.txt", version(root / "a.txt"), 6, 12)
        assert jobs.run(READ, args, fd) == ((DATA, b"alpha\n" * 2), [])
        assert jobs.run(WARM, args, fd) == ((DATA, 12), [])
        os.fstat(fd)
    finally:
        os.close(fd)


def test_data_job_without_a_descriptor_opens_the_file_here(root: Path):
    jobs = Jobs(str(root), local_only=True)
    args = ("a.txt", version(root / "a.txt"), 0, 600)
    assert jobs.run(READ, args, None) == ((DATA, b"alpha\n" * 100), [])
    (kind, data), _ = jobs.run(COMPRESS, (*args, "gzip"), None)
    assert kind == DATA and gzip.decompress(data) == b"alpha\n" * 100


def test_data_job_on_a_version_that_is_gone_answers_changed(root: Path):
    jobs = Jobs(str(root), local_only=True)
    args = ("a.txt", version(root / "a.txt"), 0, 6)
    assert jobs.run(READ, args, None)[0][0] == DATA  # the descriptor is now kept
    with open(root / "a.txt", "ab") as f:
        f.write(b"more\n")
    assert jobs.run(READ, args, None) == (CHANGED, [])
    assert jobs.run(READ, args, None) == (CHANGED, [])  # and it was forgotten, not reused


def test_path_jobs_answer_facts_and_listings(root: Path):
    jobs = Jobs(str(root), local_only=False)
    (kind, results), fds = jobs.run(STAT_MANY, (["a.txt", "nope"], ()), None)
    assert (kind, [r[0] for r in results], fds) == (FACTS, [FILE, MISSING], [])
    (kind, entries), _ = jobs.run(LISTDIR, ("",), None)
    assert kind == LISTING and [e[0] for e in entries] == ["a.txt"]


def test_unknown_operation_and_os_errors_become_error_results(root: Path):
    jobs = Jobs(str(root), local_only=False)
    assert jobs.run("format_disk", (), None) == ((ERROR, 0, "unknown operation 'format_disk'"),
                                                 [])
    fd = os.open(root / "a.txt", os.O_RDONLY)
    os.close(fd)  # a descriptor that is no longer open
    (kind, code, _message), fds = jobs.run(READ, ("a.txt", version(root / "a.txt"), 0, 6), fd)
    assert (kind, code, fds) == (ERROR, errno.EBADF, [])
