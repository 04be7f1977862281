"""Kernel change events: files in watched directories are trusted until inotify reports a
change, and are then served new at once; what inotify cannot see keeps stat revalidation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support import Serve, ServerProcess, admin_address, get, scrape_metrics, wait_until


@pytest.fixture
def served(tmp_path: Path, serve: Serve) -> tuple[ServerProcess, Path]:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "page.txt").write_text("v1\n")
    (root / "data").mkdir()
    (root / "data" / "target.txt").write_text("t1\n")
    os.symlink("data/target.txt", root / "link.txt")
    return serve(root, "--admin-port", "0", "--access-log", "off"), root


def metric(server: ServerProcess, name: str) -> float:
    return scrape_metrics(admin_address(server)).get(name, 0.0)


def until_watched(server: ServerProcess, path: str) -> None:
    """Request path until its entry rests on a watch (no revalidation for a second)."""
    def quiet() -> bool:
        before = metric(server, "flashsrv_revalidations_total")
        for _ in range(12):
            assert get(server, path).status == 200
            time.sleep(0.1)
        return metric(server, "flashsrv_revalidations_total") == before

    assert wait_until(quiet, timeout=10, interval=0), "the entry is still revalidated by stat"


def test_watched_file_is_not_revalidated_and_a_change_is_seen_at_once(served):
    server, root = served
    until_watched(server, "/docs/page.txt")
    assert metric(server, "flashsrv_watched_directories") >= 2  # the root and docs/
    (root / "docs" / "page.txt").write_text("v2, longer\n")
    assert wait_until(lambda: get(server, "/docs/page.txt").body == b"v2, longer\n",
                      timeout=0.3, interval=0.02)
    assert metric(server, "flashsrv_change_events_total") >= 1


def test_a_directory_replaced_by_rename_is_served_new(served):
    server, root = served
    until_watched(server, "/docs/page.txt")
    new = root / "docs.new"
    new.mkdir()
    (new / "page.txt").write_text("deployed\n")
    os.rename(root / "docs", root / "docs.old")
    os.rename(new, root / "docs")
    assert wait_until(lambda: get(server, "/docs/page.txt").body == b"deployed\n",
                      timeout=0.3, interval=0.02)


def test_a_file_behind_a_symbolic_link_keeps_stat_revalidation(served):
    server, root = served
    assert get(server, "/link.txt").body == b"t1\n"
    time.sleep(0.3)
    (root / "data" / "target.txt").write_text("t2, changed\n")
    # No watch covers the link's target: the change is found by revalidation within ~1 s.
    assert wait_until(lambda: get(server, "/link.txt").body == b"t2, changed\n",
                      timeout=3, interval=0.1)
