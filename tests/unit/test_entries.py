"""flashsrv.entries: served paths of entries and ETags of variants (no real descriptors)."""

from __future__ import annotations

from flashsrv.entries import DIRECTORY, FILE, MISSING, Entry, GeneratedFile, OpenFile, Variant

MTIME_NS = 1_700_000_000_123_456_789


def open_file(size: int = 1234, mtime_ns: int = MTIME_NS) -> OpenFile:
    return OpenFile(-1, "/srv/a.txt", size, mtime_ns, ino=7, dev=3)


def test_a_file_serves_its_own_path():
    assert Entry(FILE, "a/b.txt").served_path == "a/b.txt"
    assert Entry(MISSING, "gone.html").served_path == "gone.html"


def test_a_directory_serves_its_index():
    assert Entry(DIRECTORY, "docs").served_path == "docs/index.html"
    assert Entry(DIRECTORY, "a/b").served_path == "a/b/index.html"
    assert Entry(DIRECTORY, "").served_path == "index.html"


def test_identity_etag_is_hex_mtime_and_size_quoted():
    variant = Variant(open_file(), "identity")
    assert variant.etag == f'"{MTIME_NS:x}-{1234:x}"' == '"17979cfe3d85cd15-4d2"'
    assert variant.mtime == 1_700_000_000
    assert variant.encoding == "identity"


def test_encoded_etag_names_the_coding():
    assert Variant(open_file(), "gzip").etag == f'"{MTIME_NS:x}-4d2-gzip"'
    assert Variant(open_file(), "br").etag.endswith('-br"')


def test_etag_changes_with_mtime_or_size():
    base = Variant(open_file(), "identity").etag
    assert Variant(open_file(size=1235), "identity").etag != base
    assert Variant(open_file(mtime_ns=MTIME_NS + 1), "identity").etag != base


def test_generated_file_identity_adds_the_coding():
    source = open_file()
    gz = GeneratedFile(source, 400, "gzip")
    assert gz.identity == (3, 7, 1234, MTIME_NS, "gzip") and gz.generated
    assert Variant(gz, "gzip").etag == f'"{MTIME_NS:x}-{400:x}-gzip"'


def test_facts_leave_out_generated_variants():
    source = open_file()
    entry = Entry(FILE, "a.txt", {"identity": Variant(source, "identity"),
                                  "gzip": Variant(GeneratedFile(source, 9, "gzip"), "gzip")})
    assert entry.facts() == (FILE, {"identity": (3, 7, 1234, MTIME_NS)})
    assert Entry(MISSING, "x").facts() == (MISSING, {})
