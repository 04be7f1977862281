"""Fixtures: a document root in a temporary folder and a real server process serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Serve, ServerProcess, start_server


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>home</title><h1>home</h1>\n")
    (root / "style.css").write_text("body { color: #333; }\n")
    (root / "app.js").write_text("console.log('hi');\n")
    (root / "data.json").write_text('{"a": 1}\n')
    (root / "blob.bin").write_bytes(bytes(range(256)) * 64)
    sub = root / "docs"
    sub.mkdir()
    (sub / "index.html").write_text("<h1>docs</h1>\n")
    (sub / "page.txt").write_text("plain text\n")
    return root


@pytest.fixture
def serve() -> Iterator[Serve]:
    """A factory with the arguments of `start_server`: every server it starts is stopped when
    the test ends, whatever the test did (a failed assertion cannot leak a server process)."""
    started: list[ServerProcess] = []

    def start(root: Path | str | None, *args: str, **kwargs: Any) -> ServerProcess:
        srv = start_server(root, *args, **kwargs)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def server(docroot: Path, serve: Serve) -> ServerProcess:
    return serve(docroot, "--access-log", "-")
