"""flashsrv.disk: the wire results decoded into typed values, and the inline and thread models
on a real temporary folder (no helper process)."""

from __future__ import annotations

import asyncio
import errno
import gzip
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from flashsrv_helpers.wire import (
    DIRECTORY,
    ERROR,
    FACTS,
    FILE,
    FORBIDDEN,
    LISTING,
    MISSING,
    WATCHING,
)

from flashsrv.disk import (
    Disk,
    FileChanged,
    FileFacts,
    InlineDisk,
    Lookup,
    ThreadDisk,
    decode_lookup,
)

T = TypeVar("T")
TEXT = b"hello, disk layer\n" * 40


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


@dataclass
class Ref:
    """One version of a file, as the disk layer's data jobs need it (a FileRef)."""

    fd: int
    path: str
    size: int
    identity: tuple


def ref_of(root: Path, relpath: str, fd: int = -1) -> Ref:
    st = os.stat(root / relpath)
    return Ref(fd, relpath, st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = Path(os.path.realpath(tmp_path)) / "www"
    www.mkdir()
    (www / "a.txt").write_bytes(TEXT)
    (www / "a.txt.gz").write_bytes(gzip.compress(TEXT))
    (www / "sub").mkdir()
    (www / "sub" / "index.html").write_text("<h1>sub</h1>\n")
    return www


# -- decoding ----------------------------------------------------------------------------------


def test_a_file_result_becomes_file_facts_with_identity_and_encoding():
    found = decode_lookup((FILE, [("", 10, 7, 3, 2, b"x" * 10, True, True),
                                  (".br", 4, 8, 5, 2, None, False, False)]))
    plain, brotli = found.files
    assert found.kind == FILE
    assert plain == FileFacts("", 10, 7, 3, 2, b"x" * 10, True, True)
    assert plain.identity == (2, 3, 10, 7) and plain.encoding == "identity"
    assert brotli.encoding == "br" and brotli.data is None and not brotli.passed


def test_an_error_result_keeps_errno_and_message():
    assert decode_lookup((ERROR, errno.EIO, "Input/output error")) == Lookup(
        ERROR, (), errno.EIO, "Input/output error")


@pytest.mark.parametrize("kind", [MISSING, FORBIDDEN])
def test_other_results_are_just_their_kind(kind: str):
    assert decode_lookup((kind,)) == Lookup(kind)


def test_facts_compare_identities_by_encoding():
    found = decode_lookup((DIRECTORY, [("", 1, 2, 3, 4, None, True, True),
                                       (".gz", 5, 6, 7, 4, None, True, True)]))
    assert found.facts(directory=True) == (DIRECTORY, {"identity": (4, 3, 1, 2),
                                                       "gzip": (4, 7, 5, 6)})


def test_a_trailing_slash_on_a_regular_file_names_nothing():
    found = decode_lookup((FILE, [("", 1, 2, 3, 4, None, True, True)]))
    assert found.facts(directory=True) == (MISSING, {})
    assert found.facts(directory=False)[0] == FILE


class ScriptedDisk(Disk):
    """A disk layer whose every job answers one given result (and descriptors)."""

    def __init__(self, result: tuple, fds: list[int] | None = None) -> None:
        super().__init__("/nonexistent")
        self.result = result
        self.fds = fds or []
        self.calls: list[tuple[str, tuple, int | None, bool]] = []

    async def _call(self, op, args, fd=None, urgent=False):
        self.calls.append((op, args, fd, urgent))
        return self.result, self.fds


def test_stat_many_is_urgent_and_closes_any_descriptor_that_came_with_it():
    r, w = os.pipe()
    disk = ScriptedDisk((FACTS, [(MISSING,)]), [r])
    try:
        assert run(lambda: disk.stat_many(["gone"], ())) == [Lookup(MISSING)]
        assert disk.calls[0][3] is True
        with pytest.raises(OSError):
            os.fstat(r)
    finally:
        os.close(w)


@pytest.mark.parametrize(("result", "message"), [
    ((ERROR, errno.EIO, "Input/output error"), "Input/output error"),
    ((FACTS, []), "unexpected revalidation result"),
    ((LISTING, []), "unexpected revalidation result"),
])
def test_stat_many_raises_on_an_error_or_a_result_of_the_wrong_shape(result: tuple,
                                                                     message: str):
    with pytest.raises(OSError, match=message):
        run(lambda: ScriptedDisk(result).stat_many(["a", "b"], ()))


def test_a_data_job_raises_file_changed_on_the_changed_reply():
    ref = Ref(-1, "a.txt", 1, (1, 2, 1, 3))
    with pytest.raises(FileChanged):
        run(lambda: ScriptedDisk(("changed",)).read(ref, 0, 1))


def test_a_data_job_passes_the_descriptor_it_holds_and_none_otherwise():
    disk = ScriptedDisk(("data", 5))
    run(lambda: disk.warm(Ref(7, "a", 5, (0, 0, 5, 0)), 0, 5))
    run(lambda: disk.warm(Ref(-1, "a", 5, (0, 0, 5, 0)), 0, 5))
    assert [call[2] for call in disk.calls] == [7, None]


def test_watch_answers_the_descriptor_or_minus_one():
    assert run(lambda: ScriptedDisk((WATCHING, 12)).watch("d", 3)) == 12
    assert run(lambda: ScriptedDisk((FORBIDDEN,)).watch("d", 3)) == -1


# -- the inline model on a real folder ---------------------------------------------------------


def test_inline_lookup_finds_the_file_and_its_sibling_with_one_descriptor_each(root: Path):
    found, fds = run(lambda: InlineDisk(str(root)).lookup("a.txt", (".br", ".gz"), 0))
    try:
        assert found.kind == FILE
        assert [f.encoding for f in found.files] == ["identity", "gzip"]
        assert len(fds) == sum(f.passed for f in found.files) == 2
        assert os.pread(fds[0], 5, 0) == b"hello"
    finally:
        for fd in fds:
            os.close(fd)


def test_inline_lookup_prefetches_small_files_whole(root: Path):
    found, fds = run(lambda: InlineDisk(str(root)).lookup("a.txt", (), 1 << 16))
    for fd in fds:
        os.close(fd)
    assert found.files[0].data == TEXT


def test_inline_lookup_of_a_directory_finds_its_index(root: Path):
    found, fds = run(lambda: InlineDisk(str(root)).lookup("sub", (), 0))
    for fd in fds:
        os.close(fd)
    assert found.kind == DIRECTORY and found.files[0].size == len("<h1>sub</h1>\n")


def test_inline_lookup_kinds_for_missing_and_outside_the_root(root: Path, tmp_path: Path):
    (tmp_path / "secret").write_text("no\n")
    (root / "escape").symlink_to(tmp_path / "secret")
    disk = InlineDisk(str(root))
    assert run(lambda: disk.lookup("nothing.txt", (), 0)) == (Lookup(MISSING), [])
    assert run(lambda: disk.lookup("escape", (), 0)) == (Lookup(FORBIDDEN), [])


def test_inline_read_warm_and_compress_one_version(root: Path):
    disk = InlineDisk(str(root))
    ref = ref_of(root, "a.txt")
    assert run(lambda: disk.read(ref, 7, 10)) == TEXT[7:17]
    assert run(lambda: disk.read(ref, len(TEXT) - 3, 10)) == TEXT[-3:]
    assert run(lambda: disk.warm(ref, 0, 1 << 20)) == len(TEXT)
    assert gzip.decompress(run(lambda: disk.compress(ref, "gzip"))) == TEXT


def test_inline_read_of_a_rewritten_file_raises_file_changed(root: Path):
    ref = ref_of(root, "a.txt")
    (root / "a.txt").write_bytes(b"another version\n")
    with pytest.raises(FileChanged):
        run(lambda: InlineDisk(str(root)).read(ref, 0, 10))


def test_inline_read_failure_is_the_os_error_of_the_job(root: Path):
    fd = os.open(root / "sub", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            run(lambda: InlineDisk(str(root)).read(Ref(fd, "sub", 10, (0, 0, 10, 0)), 0, 10))
    finally:
        os.close(fd)
    assert info.value.errno == errno.EISDIR


def test_inline_listdir_and_stat_many(root: Path):
    disk = InlineDisk(str(root))
    listing = run(lambda: disk.listdir(""))
    assert listing.kind == LISTING
    assert {(name, is_dir) for name, is_dir, _, _ in listing.entries} == {
        ("a.txt", False), ("a.txt.gz", False), ("sub", True)}
    assert run(lambda: disk.listdir("nowhere")).kind == MISSING
    found = run(lambda: disk.stat_many(["a.txt", "nothing"], (".gz",)))
    assert [f.kind for f in found] == [FILE, MISSING]
    assert all(not f.passed for f in found[0].files)


def test_thread_model_runs_the_same_jobs_in_its_pool(root: Path):
    async def scenario() -> tuple[bytes, int]:
        disk = ThreadDisk(str(root), 2)
        disk.start()
        try:
            found, fds = await disk.lookup("a.txt", (), 0)
            for fd in fds:
                os.close(fd)
            return await disk.read(ref_of(root, "a.txt"), 0, 5), len(found.files)
        finally:
            await disk.close()

    assert run(scenario) == (b"hello", 1)

