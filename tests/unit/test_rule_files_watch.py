"""flashsrv.rule_files_watch: `RuleFiles.refresh` reads the site's `_headers` and `_redirects`
through the content layer, again only when a file's version changed, and keeps what it read
before when the disk fails; `mark`/`due` decide when to look again.

Most tests drive it with a small fake content layer whose files are entries built with
flashsrv.entries (each version of a file a new identity), one with the real `Content` over
`InlineDisk` on a temporary folder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from flashsrv import rule_files_watch
from flashsrv.content import Content
from flashsrv.disk import DiskUnavailable, FileChanged, InlineDisk
from flashsrv.entries import FILE, MISSING, Entry, GeneratedFile, OpenFile, Variant
from flashsrv.rule_files import MAX_RULE_FILE
from flashsrv.rule_files_watch import POLL_EVERY, RuleFiles

HEADERS = "/*\n  X-Frame-Options: DENY\n/assets/*\n  Cache-Control: max-age=31536000\n"
REDIRECTS = "/old /new 301\n/go https://example.com/ 302\n"


class FakeContent:
    """The three calls refresh makes of the content layer, over files kept in memory: each
    `put` is a new version (a new identity); `failing` makes a lookup or a read raise."""

    def __init__(self, files: Mapping[str, str | bytes] | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.versions: dict[str, int] = {}
        self.failing: dict[str, Exception] = {}
        self.failing_reads: dict[str, Exception] = {}
        self.lookups: list[tuple[bytes, str]] = []
        self.reads: list[str] = []
        for name, text in (files or {}).items():
            self.put(name, text)

    def put(self, name: str, data: str | bytes) -> None:
        self.files[name] = data.encode() if isinstance(data, str) else data
        self.versions[name] = self.versions.get(name, 0) + 1

    def remove(self, name: str) -> None:
        del self.files[name]

    def fresh(self, key: bytes) -> Entry | None:
        return None  # never cached: every refresh looks the files up

    async def resolve(self, key: bytes, relpath: str, directory: bool = False) -> Entry:
        self.lookups.append((key, relpath))
        if relpath in self.failing:
            raise self.failing[relpath]
        if relpath not in self.files:
            return Entry(MISSING, relpath)
        size = len(self.files[relpath])
        file = OpenFile(-1, relpath, size, mtime_ns=self.versions[relpath] * 10**9, ino=7,
                        dev=1)
        return Entry(FILE, relpath, {"identity": Variant(file, "identity")})

    async def whole(self, file: OpenFile | GeneratedFile) -> bytes:
        self.reads.append(file.path)
        if file.path in self.failing_reads:
            raise self.failing_reads[file.path]
        return self.files[file.path]


def refresh(files: RuleFiles, content: FakeContent | Content) -> bool:
    return asyncio.run(files.refresh(cast(Content, content)))


def redirects(files: RuleFiles) -> list[tuple[str, str, int, str]]:
    return [(r.pattern.text, r.to, r.status, r.where) for r in files.redirects]


def header_rules(files: RuleFiles) -> list[tuple[str, tuple[tuple[str, str], ...], str]]:
    return [(r.pattern.text, tuple(r.headers), r.where) for r in files.header_rules]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "flashsrv.rules" and r.levelno == level]


@pytest.fixture(autouse=True)
def rule_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flashsrv.rules")


# --- reading, and reading again only what changed --------------------------------------------


def test_the_first_refresh_reads_and_parses_both_files(caplog: pytest.LogCaptureFixture) -> None:
    content = FakeContent({"_headers": HEADERS, "_redirects": REDIRECTS})
    files = RuleFiles("/srv/site")

    assert refresh(files, content) is True

    assert sorted(content.reads) == ["_headers", "_redirects"]
    assert sorted(content.lookups) == [(b"\x00rule-file:_headers", "_headers"),
                                       (b"\x00rule-file:_redirects", "_redirects")]
    assert header_rules(files) == [
        ("/*", (("X-Frame-Options", "DENY"),), "/srv/site/_headers:1"),
        ("/assets/*", (("Cache-Control", "max-age=31536000"),), "/srv/site/_headers:3"),
    ]
    assert redirects(files) == [("/old", "/new", 301, "/srv/site/_redirects:1"),
                                ("/go", "https://example.com/", 302, "/srv/site/_redirects:2")]
    assert sorted(files.present) == ["_headers", "_redirects"]
    assert sorted(messages(caplog, logging.INFO)) == ["/srv/site/_headers: 2 rules read",
                                                      "/srv/site/_redirects: 2 rules read"]


def test_the_same_versions_are_not_read_again() -> None:
    content = FakeContent({"_headers": HEADERS, "_redirects": REDIRECTS})
    files = RuleFiles()
    refresh(files, content)
    rules = files.header_rules, files.redirects

    assert refresh(files, content) is False

    assert sorted(content.reads) == ["_headers", "_redirects"], "each read once"
    assert len(content.lookups) == 4, "but both were looked up again"
    assert (files.header_rules, files.redirects) == rules
    assert files.header_rules is rules[0] and files.redirects is rules[1]


def test_a_changed_file_is_read_again_and_only_it() -> None:
    content = FakeContent({"_headers": HEADERS, "_redirects": REDIRECTS})
    files = RuleFiles()
    refresh(files, content)
    headers_before = files.header_rules
    content.put("_redirects", "/a /b 308\n")

    assert refresh(files, content) is True

    assert sorted(content.reads) == ["_headers", "_redirects", "_redirects"]
    assert redirects(files) == [("/a", "/b", 308, "_redirects:1")]
    assert files.header_rules is headers_before


def test_a_new_version_with_the_same_text_is_read_again() -> None:
    content = FakeContent({"_redirects": REDIRECTS})
    files = RuleFiles()
    refresh(files, content)
    content.put("_redirects", REDIRECTS)  # touched: a new identity, the same bytes

    assert refresh(files, content) is True
    assert content.reads == ["_redirects", "_redirects"]
    assert len(files.redirects) == 2


def test_a_removed_file_drops_its_rules_and_leaves_present(
        caplog: pytest.LogCaptureFixture) -> None:
    content = FakeContent({"_headers": HEADERS, "_redirects": REDIRECTS})
    files = RuleFiles()
    refresh(files, content)
    content.remove("_redirects")
    caplog.clear()

    assert refresh(files, content) is True

    assert files.redirects == []
    assert files.present == ("_headers",)
    assert len(files.header_rules) == 2, "the other file's rules stay"
    assert content.reads == ["_headers", "_redirects"], "nothing read for a missing file"
    assert messages(caplog, logging.INFO) == [], "no 'rules read' line for a missing file"
    assert refresh(files, content) is False, "still missing: nothing changed"


def test_no_files_is_no_rules_and_nothing_changed() -> None:
    files = RuleFiles()
    content = FakeContent()
    assert refresh(files, content) is False
    assert (files.header_rules, files.redirects, files.present) == ([], [], ())
    assert content.reads == []


def test_a_file_that_comes_back_is_read_and_present_again() -> None:
    content = FakeContent({"_redirects": REDIRECTS})
    files = RuleFiles()
    refresh(files, content)
    content.remove("_redirects")
    refresh(files, content)
    content.put("_redirects", "/x /y\n")

    assert refresh(files, content) is True
    assert redirects(files) == [("/x", "/y", 301, "_redirects:1")]
    assert files.present == ("_redirects",)


# --- limits and failures -----------------------------------------------------------------------


def test_a_file_larger_than_the_limit_is_not_read(caplog: pytest.LogCaptureFixture) -> None:
    content = FakeContent({"_redirects": REDIRECTS})
    files = RuleFiles("/srv/site")
    refresh(files, content)
    content.put("_redirects", REDIRECTS + "#" * MAX_RULE_FILE)

    assert refresh(files, content) is True

    assert content.reads == ["_redirects"], "only the first, small version was read"
    assert files.redirects == [], "refused whole: none of its rules"
    assert messages(caplog, logging.ERROR) == [
        f"/srv/site/_redirects: larger than {MAX_RULE_FILE} bytes, not read"]


def test_a_file_of_exactly_the_limit_is_read(caplog: pytest.LogCaptureFixture) -> None:
    text = "/a /b\n"
    content = FakeContent({"_redirects": text + "#" * (MAX_RULE_FILE - len(text))})
    files = RuleFiles()
    assert refresh(files, content) is True
    assert content.reads == ["_redirects"]
    assert redirects(files) == [("/a", "/b", 301, "_redirects:1")]
    assert messages(caplog, logging.ERROR) == []


@pytest.mark.parametrize("error", [DiskUnavailable("helper died"), FileChanged(),
                                   OSError(5, "Input/output error")],
                         ids=["unavailable", "changed", "oserror"])
@pytest.mark.parametrize("where", ["lookup", "read"])
def test_a_disk_error_keeps_the_rules_read_before(caplog: pytest.LogCaptureFixture,
                                                  error: Exception, where: str) -> None:
    content = FakeContent({"_headers": HEADERS, "_redirects": REDIRECTS})
    files = RuleFiles()
    refresh(files, content)
    before = redirects(files)
    content.put("_redirects", "/new /rules\n")
    content.put("_headers", "/*\n  X-New: 1\n")
    (content.failing if where == "lookup" else content.failing_reads)["_redirects"] = error
    caplog.clear()

    assert refresh(files, content) is True, "the other file's new version was read"

    assert redirects(files) == before
    assert sorted(files.present) == ["_headers", "_redirects"]
    assert header_rules(files) == [("/*", (("X-New", "1"),), "_headers:1")]
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("_redirects: not read now (")
    assert warnings[0].endswith("); keeping the rules read before")

    del (content.failing if where == "lookup" else content.failing_reads)["_redirects"]
    assert refresh(files, content) is True, "the version that failed is read once it can be"
    assert redirects(files) == [("/new", "/rules", 301, "_redirects:1")]


def test_bad_lines_are_logged_with_file_and_line_and_the_rest_stands(
        caplog: pytest.LogCaptureFixture) -> None:
    content = FakeContent({
        "_redirects": "/ok /fine\n/only-one-word\n/c /d 299\n",
        "_headers": "/*\n  X-Good: yes\n  not a header line\n",
    })
    files = RuleFiles("/srv/site")

    refresh(files, content)

    assert redirects(files) == [("/ok", "/fine", 301, "/srv/site/_redirects:1")]
    assert header_rules(files) == [("/*", (("X-Good", "yes"),), "/srv/site/_headers:1")]
    warnings = messages(caplog, logging.WARNING)
    assert any(w.startswith("/srv/site/_redirects:2: ") for w in warnings), warnings
    assert any(w.startswith("/srv/site/_redirects:3: ") for w in warnings), warnings
    assert any(w.startswith("/srv/site/_headers:3: ") for w in warnings), warnings
    assert len(warnings) == 3, warnings
    assert all(w.endswith(" (line skipped)") for w in warnings), warnings


def test_undecodable_bytes_do_not_stop_the_file() -> None:
    content = FakeContent({"_redirects": b"# caf\xe9\n/a /b\n"})
    files = RuleFiles()
    assert refresh(files, content) is True
    assert redirects(files) == [("/a", "/b", 301, "_redirects:2")]


# --- the real content layer ------------------------------------------------------------------


def test_the_files_are_read_through_the_real_content_layer(tmp_path: Path) -> None:
    (tmp_path / "_headers").write_text(HEADERS)
    (tmp_path / "_redirects").write_text(REDIRECTS)
    files = RuleFiles(str(tmp_path))

    async def scenario() -> tuple[bool, bool]:
        content = Content(InlineDisk(str(tmp_path)), 1 << 20, 64 << 10, max_entries=16)
        return await files.refresh(content), await files.refresh(content)

    first, second = asyncio.run(scenario())

    assert first is True
    assert second is False, "the same versions: nothing read again"
    assert [r.where for r in files.header_rules] == [f"{tmp_path}/_headers:1",
                                                     f"{tmp_path}/_headers:3"]
    assert [(r.pattern.text, r.to) for r in files.redirects] == [
        ("/old", "/new"), ("/go", "https://example.com/")]
    assert sorted(files.present) == ["_headers", "_redirects"]


def test_with_the_real_content_layer_a_missing_file_is_absent(tmp_path: Path) -> None:
    (tmp_path / "_redirects").write_text(REDIRECTS)
    files = RuleFiles(str(tmp_path))

    async def scenario() -> bool:
        content = Content(InlineDisk(str(tmp_path)), 1 << 20, 64 << 10, max_entries=16)
        return await files.refresh(content)

    assert asyncio.run(scenario()) is True
    assert files.present == ("_redirects",)
    assert files.header_rules == []


# --- when to look again ----------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The module's time.monotonic, set by the test (the event loop keeps the real one)."""
    now = [1000.0]
    monkeypatch.setattr(rule_files_watch, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_a_new_rule_files_is_due_at_once(clock: list[float]) -> None:
    assert RuleFiles().due(clock[0]) is True


def test_after_a_refresh_the_next_look_is_due_poll_every_seconds_later(
        clock: list[float]) -> None:
    files = RuleFiles()
    refresh(files, FakeContent())
    read_at = clock[0]

    assert files.due(read_at) is False
    assert files.due(read_at + POLL_EVERY - 0.01) is False
    assert files.due(read_at + POLL_EVERY) is True


def test_mark_makes_it_due_at_once_until_the_next_refresh(clock: list[float]) -> None:
    files = RuleFiles()
    refresh(files, FakeContent())
    files.mark()
    assert files.due(clock[0]) is True
    assert files.due(clock[0]) is True, "due stays true: only a refresh clears it"

    clock[0] += 1.0
    refresh(files, FakeContent())
    assert files.due(clock[0]) is False
    assert files.due(clock[0] + POLL_EVERY) is True
