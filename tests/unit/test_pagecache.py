"""flashsrv.pagecache: mincore residency of real files in a temporary folder.

A sparse file has no page in the page cache until something writes it, so which pages are
resident is decided by the test, not by the machine's memory pressure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsrv import pagecache
from flashsrv.pagecache import MAX_QUERY, PAGE, Residency, release

SIZE = 3 * PAGE


@pytest.fixture
def sparse(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A file of three pages, all holes: a descriptor open on it, and its path."""
    path = tmp_path / "sparse.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, SIZE)
    yield fd, path
    with contextlib.suppress(OSError):  # released by the test
        os.close(fd)


def mapped(path: Path) -> bool:
    """Whether this process has a mapping of the file."""
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith(str(path)) for line in maps)


def test_a_written_page_is_resident_and_a_hole_is_not(sparse: tuple[int, Path]):
    fd, _ = sparse
    os.pwrite(fd, b"m" * PAGE, PAGE)  # the middle page only
    residency = Residency()
    addr = residency.map(fd, SIZE)
    assert addr
    try:
        assert residency.resident(addr, 0, SIZE) == 0, "the first page is a hole"
        assert residency.resident(addr, PAGE, 2 * PAGE) == PAGE, "a prefix: the middle page"
        assert residency.resident(addr, PAGE + 100, PAGE) == PAGE - 100
        assert residency.resident(addr, PAGE + 100, 50) == 50
        assert residency.resident(addr, 2 * PAGE, PAGE) == 0
    finally:
        residency.unmap(addr, SIZE)


def test_a_whole_resident_file_answers_its_length(sparse: tuple[int, Path]):
    fd, _ = sparse
    os.pwrite(fd, b"w" * SIZE, 0)
    residency = Residency()
    addr = residency.map(fd, SIZE)
    try:
        assert residency.resident(addr, 0, SIZE) == SIZE
        assert residency.resident(addr, 10, SIZE - 10) == SIZE - 10
    finally:
        residency.unmap(addr, SIZE)


def test_one_question_covers_at_most_max_query_bytes(tmp_path: Path):
    path = tmp_path / "big.bin"
    size = MAX_QUERY + 4 * PAGE
    path.write_bytes(b"b" * size)
    fd = os.open(path, os.O_RDONLY)
    residency = Residency()
    addr = residency.map(fd, size)
    try:
        assert residency.resident(addr, 0, size) == MAX_QUERY
        assert residency.resident(addr, PAGE, size) == MAX_QUERY
    finally:
        residency.unmap(addr, size)
        os.close(fd)


def test_map_refuses_an_empty_file_and_a_descriptor_the_kernel_will_not_map(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"data")
    residency = Residency()
    write_only = os.open(path, os.O_WRONLY)
    try:
        assert residency.map(write_only, 4) == 0  # EACCES: a read mapping needs read access
        assert residency.map(write_only, 0) == 0
    finally:
        os.close(write_only)


def test_unmap_gives_the_mapping_back(sparse: tuple[int, Path]):
    fd, path = sparse
    residency = Residency()
    addr = residency.map(fd, SIZE)
    assert mapped(path)
    residency.unmap(addr, SIZE)
    assert not mapped(path)


def test_release_unmaps_through_the_process_residency_and_closes(sparse: tuple[int, Path]):
    fd, path = sparse
    release(fd, pagecache.residency.map(fd, SIZE), SIZE)
    assert not mapped(path)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_release_without_a_mapping_only_closes(sparse: tuple[int, Path]):
    fd, _ = sparse
    release(fd, -1, SIZE)  # -1: the file had no mapping (it could not be sent zero-copy)
    with pytest.raises(OSError):
        os.fstat(fd)
