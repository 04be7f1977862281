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
from support import Serve, tls_files

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


def run_users(tmp_path: Path, url: str, env: dict[str, str], users: int = 20,
              seconds: int = 5) -> tuple[subprocess.CompletedProcess, dict[str, dict[str, str]],
                                         list[str]]:
    """A headless locust run of the locustfile against url: (the run, its stats rows by name,
    its failures as text)."""
    prefix = tmp_path / "locust"
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
         "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "-H", url, "--csv",
         str(prefix), "--exit-code-on-error", "1", "--only-summary", "--loglevel", "WARNING"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
        env={**os.environ, "LOCUST_THINK_SCALE": "0.2", **env},
    )
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = [f"{r['Name']}: {r['Error']} (x{r['Occurrences']})" for r in csv.DictReader(f)]
    return run, rows, failures


def assert_every_user_succeeded(run: subprocess.CompletedProcess,
                                rows: dict[str, dict[str, str]], failures: list[str]) -> None:
    assert failures == [], "\n".join(failures) + "\n" + run.stderr[-3000:]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0
    assert int(total["Request Count"]) > 100
    # Every kind of user got to do its thing within the run.
    for name in ("page", "asset", "304 If-None-Match", "206 seek", "404 expected"):
        assert name in rows and int(rows[name]["Request Count"]) > 0, f"no '{name}' requests"


def test_locust_users_see_no_failures(tmp_path: Path, serve: Serve) -> None:
    root = tmp_path / "site"
    _write_site(root)
    server = serve(root, "--access-log", "off")
    run, rows, failures = run_users(tmp_path, server.url, {})
    rc = server.stop()
    assert_every_user_succeeded(run, rows, failures)
    assert rc == 0, server.stderr_text()[-3000:]


def test_locust_users_over_https_see_no_failures(tmp_path: Path, serve: Serve) -> None:
    """The same users over TLS, checking the certificate against the test CA (SSL_CERT_FILE);
    a short run trusting another CA fails every request, so the check is really made."""
    root = tmp_path / "site"
    _write_site(root)
    certs = tls_files(tmp_path / "certs")
    server = serve(root, *certs.args, "--access-log", "off", https=True)
    url = server.over_tls(certs.client_context()).url
    assert url.startswith("https://")
    stranger = tls_files(tmp_path / "stranger")
    (tmp_path / "distrust").mkdir()
    run, rows, failures = run_users(tmp_path / "distrust", url,
                                    {"SSL_CERT_FILE": str(stranger.ca_file)}, users=2, seconds=2)
    assert run.returncode != 0 and failures, "a certificate from an unknown CA was accepted"
    assert int(rows["Aggregated"]["Request Count"]) == int(rows["Aggregated"]["Failure Count"])

    run, rows, failures = run_users(tmp_path, url, {"SSL_CERT_FILE": str(certs.ca_file)})
    rc = server.stop()
    assert_every_user_succeeded(run, rows, failures)
    assert rc == 0, server.stderr_text()[-3000:]
