"""A short, bounded locust run against the real server: realistic users, zero failures.

The locust users check semantics (304 on revalidation, 206 with the right Content-Range and
bytes, 404 for missing paths), so this is a correctness test under concurrency, not a speed test.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import start_server

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"

# Looked up, not imported: importing locust monkey-patches sockets and threads (gevent) for the
# whole pytest process, after which other tests' threads and timeouts stop working.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (it is in the 'test' extra)", allow_module_level=True)


def _write_site(root: Path) -> None:
    # Loaded by path: `import site` would be the standard library's module.
    spec = importlib.util.spec_from_file_location("loadtest_site", LOCUSTFILE.with_name("site.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_site(root)


def test_locust_users_see_no_failures(tmp_path: Path) -> None:
    root = tmp_path / "site"
    _write_site(root)
    server = start_server(root, "--access-log", "off")
    prefix = tmp_path / "locust"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
             "-u", "20", "-r", "20", "-t", "5s", "-H", server.url, "--csv", str(prefix),
             "--exit-code-on-error", "1", "--only-summary", "--loglevel", "WARNING"],
            capture_output=True, text=True, timeout=90, cwd=tmp_path,
            env={**os.environ, "LOCUST_THINK_SCALE": "0.2"},
        )
    finally:
        rc = server.stop()
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = [f"{r['Name']}: {r['Error']} (x{r['Occurrences']})" for r in csv.DictReader(f)]
    assert failures == [], "\n".join(failures) + "\n" + run.stderr[-3000:]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0
    assert int(total["Request Count"]) > 100
    # Every kind of user got to do its thing within the run.
    for name in ("page", "asset", "304 If-None-Match", "206 seek", "404 expected"):
        assert name in rows and int(rows[name]["Request Count"]) > 0, f"no '{name}' requests"
    assert rc == 0, server.stderr_text()[-3000:]
