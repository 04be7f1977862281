"""helpers/diskops.py: the blocking disk operations, on a real temporary tree."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import brotli
import pytest
import zstandard
from flashsrv_helpers import diskops
from flashsrv_helpers.diskops import KeptFiles, _failure, _inside, lookup
from flashsrv_helpers.wire import DIRECTORY, ERROR, FILE, FORBIDDEN, LISTING, MISSING


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A document root (its real path) with a folder of secrets beside it."""
    base = Path(os.path.realpath(tmp_path))
    root = base / "www"
    root.mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "style.css").write_bytes(b"body{}\n" * 10)
    (root / "style.css.gz").write_bytes(b"gz")
    (root / "style.css.br").write_bytes(b"br")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "empty").mkdir()
    secret = base / "secret"
    secret.mkdir()
    (secret / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    return root


def found(root: Path, relpath: str, suffixes=(), prefetch=0, **kw):
    """lookup's result, with the descriptors it returned checked and closed."""
    result, fds = lookup(str(root), relpath, suffixes, prefetch, **kw)
    passed = [v for v in result[1] if v[6]] if result[0] in (FILE, DIRECTORY) else []
    assert len(fds) == len(passed)
    for fd in fds:
        os.fstat(fd)  # open
        os.close(fd)
    return result


def test_inside_means_the_root_or_below_it_not_a_sibling_with_the_same_prefix():
    assert _inside("/srv/www", "/srv/www")
    assert _inside("/srv/www", "/srv/www/a/b")
    assert not _inside("/srv/www", "/srv/www2/a")
    assert not _inside("/srv/www", "/srv")
    assert not _inside("/srv/www", "/etc/passwd")


def test_lookup_of_a_file_gives_its_facts_and_one_descriptor(tree: Path):
    kind, variants = found(tree, "a.txt")
    st = os.stat(tree / "a.txt")
    assert kind == FILE
    # passed: its descriptor came along; direct: no symbolic link on the way (watchable)
    assert variants == [("", 6, st.st_mtime_ns, st.st_ino, st.st_dev, None, True, True)]


def test_small_file_comes_with_its_bytes_when_prefetch_allows(tree: Path):
    assert found(tree, "a.txt", prefetch=6)[1][0][5] == b"alpha\n"
    assert found(tree, "a.txt", prefetch=5)[1][0][5] is None


def test_missing_path_is_missing_with_no_descriptor(tree: Path):
    assert found(tree, "nope.txt") == (MISSING,)
    assert found(tree, "a.txt/below") == (MISSING,)  # ENOTDIR


def test_directory_with_index_gives_the_index_as_its_file(tree: Path):
    kind, variants = found(tree, "docs")
    assert kind == DIRECTORY
    assert [(v[0], v[1]) for v in variants] == [("", len(b"<h1>docs</h1>\n"))]
    assert variants[0][3] == os.stat(tree / "docs" / "index.html").st_ino


def test_directory_without_index_is_a_directory_with_no_files(tree: Path):
    assert found(tree, "empty") == (DIRECTORY, [])
    assert found(tree, "")[0] == DIRECTORY  # the root itself


def test_precompressed_siblings_come_after_the_file_in_the_order_asked(tree: Path):
    kind, variants = found(tree, "style.css", suffixes=(".br", ".gz"), prefetch=1 << 20)
    assert kind == FILE
    assert [(v[0], v[5]) for v in variants] == [
        ("", b"body{}\n" * 10), (".br", b"br"), (".gz", b"gz")]
    assert found(tree, "a.txt", suffixes=(".br", ".gz"))[1][0][0] == ""
    assert len(found(tree, "a.txt", suffixes=(".br", ".gz"))[1]) == 1


def test_symlink_leaving_the_root_is_forbidden(tree: Path):
    (tree / "key.pem").symlink_to(tree.parent / "secret" / "key.pem")
    (tree / "outside").symlink_to(tree.parent / "secret")
    assert found(tree, "key.pem") == (FORBIDDEN,)
    assert found(tree, "outside") == (FORBIDDEN,)
    assert found(tree, "outside/key.pem") == (FORBIDDEN,)


def test_symlink_within_the_root_is_followed(tree: Path):
    (tree / "alias.txt").symlink_to(tree / "a.txt")
    kind, variants = found(tree, "alias.txt")
    assert kind == FILE and variants[0][3] == os.stat(tree / "a.txt").st_ino


def test_sibling_or_index_leaving_the_root_is_left_out(tree: Path):
    (tree / "a.txt.gz").symlink_to(tree.parent / "secret" / "key.pem")
    assert [v[0] for v in found(tree, "a.txt", suffixes=(".gz",))[1]] == [""]
    (tree / "empty" / "index.html").symlink_to(tree.parent / "secret" / "key.pem")
    assert found(tree, "empty") == (DIRECTORY, [])


def test_symlink_loop_and_special_files_are_forbidden(tree: Path):
    (tree / "loop").symlink_to(tree / "loop")
    assert found(tree, "loop") == (FORBIDDEN,)
    os.mkfifo(tree / "pipe")
    assert found(tree, "pipe") == (FORBIDDEN,)  # opened non-blocking: no wait for a writer


def test_stat_only_lookup_opens_nothing_and_reads_nothing(tree: Path):
    result, fds = lookup(str(tree), "a.txt", (), 1 << 20, open_file=False)
    assert fds == []
    assert result[0] == FILE and result[1][0][5:] == (None, False, False)


def test_failures_map_to_missing_forbidden_or_an_error():
    assert _failure(OSError(errno.ENOENT, "x")) == (MISSING,)
    assert _failure(OSError(errno.ENAMETOOLONG, "x")) == (MISSING,)
    assert _failure(OSError(errno.EACCES, "x")) == (FORBIDDEN,)
    assert _failure(OSError(errno.ELOOP, "x")) == (FORBIDDEN,)
    assert _failure(OSError(errno.EIO, "Input/output error")) == (
        ERROR, errno.EIO, "Input/output error")


def test_stat_many_answers_each_path_in_order(tree: Path):
    results = diskops.stat_many(str(tree), ["a.txt", "nope", "docs"], ())
    assert [r[0] for r in results] == [FILE, MISSING, DIRECTORY]


def test_read_and_warm_cover_the_range_and_stop_at_end_of_file(tree: Path):
    fd = os.open(tree / "style.css", os.O_RDONLY)
    try:
        assert diskops.read(fd, 7, 7) == b"body{}\n"
        assert diskops.read(fd, 63, 100) == b"body{}\n"
        assert diskops.read(fd, 70, 10) == b""
        assert diskops.warm(fd, 0, 100, bytearray(16)) == 70
    finally:
        os.close(fd)


@pytest.mark.parametrize(("coding", "decompress"), [
    ("gzip", gzip.decompress), ("br", brotli.decompress),
    ("zstd", zstandard.ZstdDecompressor().decompress)])
def test_compression_of_a_file_is_deterministic(tree: Path, coding: str, decompress):
    fd = os.open(tree / "style.css", os.O_RDONLY)
    try:
        first = diskops.compress(fd, 70, coding)
        assert first == diskops.compress(fd, 70, coding)
        assert decompress(first) == b"body{}\n" * 10
    finally:
        os.close(fd)


def test_listdir_lists_files_and_folders_below_the_root_only(tree: Path):
    (tree / "outside").symlink_to(tree.parent / "secret")
    kind, entries = diskops.listdir(str(tree), "")
    assert kind == LISTING
    names = {name: (is_dir, size) for name, is_dir, size, _ in entries}
    assert names["a.txt"] == (False, 6) and names["docs"] == (True, 0)
    assert "outside" not in names
    assert diskops.listdir(str(tree), "outside") == (FORBIDDEN,)
    assert diskops.listdir(str(tree), "nope") == (MISSING,)


# -- KeptFiles ----------------------------------------------------------------------------------


def identity(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def test_kept_file_is_opened_by_path_once_and_reused(tree: Path):
    kept = KeptFiles(str(tree))
    fd = kept.open("a.txt", identity(tree / "a.txt"))
    assert fd is not None and os.pread(fd, 10, 0) == b"alpha\n"
    assert kept.open("a.txt", list(identity(tree / "a.txt"))) == fd  # a list off the wire
    kept.forget("a.txt", identity(tree / "a.txt"))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_kept_file_answers_none_once_its_path_leads_to_another_file(tree: Path):
    old = identity(tree / "a.txt")
    (tree / "new.txt").write_bytes(b"other\n")
    os.replace(tree / "new.txt", tree / "a.txt")
    assert KeptFiles(str(tree)).open("a.txt", old) is None


def test_kept_file_answers_none_for_a_version_rewritten_in_place(tree: Path):
    old = identity(tree / "a.txt")
    with open(tree / "a.txt", "ab") as f:
        f.write(b"more\n")
    assert KeptFiles(str(tree)).open("a.txt", old) is None


def test_kept_descriptor_shows_a_rewrite_in_place_as_changed(tree: Path):
    kept = KeptFiles(str(tree))
    version = identity(tree / "a.txt")
    fd = kept.open("a.txt", version)
    assert KeptFiles.unchanged(fd, version)
    with open(tree / "a.txt", "ab") as f:
        f.write(b"more\n")
    assert not KeptFiles.unchanged(fd, version)
    kept.forget("a.txt", version)


def test_kept_descriptor_keeps_reading_its_own_version_after_the_path_is_replaced(tree: Path):
    kept = KeptFiles(str(tree))
    version = identity(tree / "a.txt")
    fd = kept.open("a.txt", version)
    (tree / "new.txt").write_bytes(b"other\n")
    os.replace(tree / "new.txt", tree / "a.txt")
    again = kept.open("a.txt", version)  # a response in flight reads the version it began
    assert again == fd and os.pread(again, 10, 0) == b"alpha\n"
    assert KeptFiles.unchanged(again, version)
    assert kept.open("a.txt", identity(tree / "a.txt")) not in (None, fd)


def test_kept_file_refuses_a_path_whose_real_path_leaves_the_root(tree: Path):
    (tree / "key.pem").symlink_to(tree.parent / "secret" / "key.pem")
    assert KeptFiles(str(tree)).open("key.pem", identity(tree / "key.pem")) is None
    assert KeptFiles(str(tree)).open("nope.txt", (0, 0, 0, 0)) is None


def test_kept_files_close_the_least_recently_used_past_the_limit(tree: Path):
    kept = KeptFiles(str(tree), limit=2)
    fds = [kept.open(name, identity(tree / name)) for name in ("a.txt", "style.css")]
    kept.open("a.txt", identity(tree / "a.txt"))  # used again: style.css is now the oldest
    kept.open("style.css.gz", identity(tree / "style.css.gz"))
    os.fstat(fds[0])
    with pytest.raises(OSError):
        os.fstat(fds[1])


def test_a_file_reached_through_a_link_is_not_direct(tree: Path):
    (tree / "via-link.txt").symlink_to(tree / "a.txt")
    assert found(tree, "via-link.txt")[1][0][7] is False
    assert found(tree, "a.txt")[1][0][7] is True
