"""The benchmark harness works end to end: tiny run, flashsrv, nginx and the Python floor, a
table with ratios and CPU per request; the TLS rows (HTTP/1.1 over TLS, h2, handshakes).

No speed is asserted (speed is for `python -m loadtests.bench` to report, not for a test to judge);
only that the harness starts the servers, drives them with wrk, stops them cleanly and writes
the table.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmark is the package loadtests/bench, run as `python -m loadtests.bench` from here.
REPO = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "loadtests.bench"]
# The TLS rows need a certificate, which the bench makes with openssl (or skips them, saying so).
HAS_OPENSSL = shutil.which("openssl") is not None


def run_bench(out: Path, servers: str, workloads: str) -> str:
    """A quick run of 1 s per row; the results.md it wrote."""
    run = subprocess.run(
        [*BENCH, "--quick", "--servers", servers, "--workloads", workloads, "--duration", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return (out / "results.md").read_text()


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(workload, server) -> cells of every row of the cached and TLS workloads."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith(("cached", "TLS")):
            rows[(cells[0], cells[1])] = cells
    return rows


@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("nginx") is None,
                    reason="nginx is not installed (apt-get install nginx-light)")
def test_bench_quick_produces_a_table_with_ratios(tmp_path: Path) -> None:
    out = tmp_path / "results"
    tls = ["TLS cached 2 KB (HTTP/1.1)"] if HAS_OPENSSL else []
    text = run_bench(out, "nginx,floor,amped", "small,1mib" + (",tls-small" if tls else ""))
    rows = table_rows(text)
    for workload in ("cached 2 KB", "cached 1 MiB", *tls):
        nginx = rows[(workload, "nginx")]
        amped = rows[(workload, "flashsrv amped")]
        assert nginx[4] == "1.00x"
        assert re.fullmatch(r"\d+\.\d\dx", amped[4]), amped
        assert float(amped[2].replace(",", "")) > 0, amped  # it served requests
        assert amped[6] == "0", f"errors during the run: {amped}"
    # The floor runs the 2 KB row only, and says so.
    assert ("cached 1 MiB", "floor (bare uvloop+httptools)") not in rows
    assert "not run: cached 1 MiB" in text, text
    # CPU per request (µs, user and sys): all processes / main process, on every row. The
    # kernel counts in ticks (10 ms): in 1 s nginx's sendfile row may get no user tick at all.
    assert len(rows) == 5 + 2 * len(tls), rows
    for (workload, server), cells in rows.items():
        cpu = []
        for cell in cells[9:11]:
            m = re.fullmatch(r"(\d+\.\d) / (\d+\.\d)", cell)
            assert m and float(m[1]) >= float(m[2]), cells
            cpu.append((float(m[1]), float(m[2])))
        (user, main_user), (system, main_sys) = cpu
        assert user + system > 0, cells
        if server != "nginx":  # nginx's master process sleeps: its workers do the work
            assert main_user + main_sys > 0, cells
        if workload == "cached 2 KB":
            assert user > 0, cells
    floor_line = re.search(r"user CPU per 2 KB request, flashsrv amped / floor: (\d+\.\d\d) "
                           r"\(target ≤ 2\.0", text)
    assert floor_line and float(floor_line[1]) > 0, text
    if tls:  # the TLS row ran over TLS, with the ratio's target of issue 11
        assert "- nginx over TLS: TLSv1." in text and "- flashsrv amped over TLS: TLSv1." in text
        assert "issue 11: TLS cached 2 KB (HTTP/1.1), amped / nginx req/s:" in text, text
    assert "problem:" not in text, text
    data = json.loads((out / "results.json").read_text())
    assert all(r["user_us"] + r["sys_us"] > 0 for r in data["rows"]), data["rows"]


@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("nginx") is None,
                    reason="nginx is not installed (apt-get install nginx-light)")
@pytest.mark.skipif(not HAS_OPENSSL, reason="openssl is not installed (the bench's certificate)")
def test_bench_quick_tls_rows(tmp_path: Path) -> None:
    """1 MiB over TLS (MB/s), h2 with h2load (or a note saying why not), and handshakes/s:
    rows with ratios to nginx and CPU per request, and issue 11's lines under the table."""
    out = tmp_path / "results"
    text = run_bench(out, "nginx,amped", "tls-1mib,h2-small,tls-handshakes")
    rows = table_rows(text)
    big, h2 = "TLS cached 1 MiB (HTTP/1.1)", "TLS cached 2 KB (h2, h2load -c 16 -m 10)"
    handshakes = "TLS handshakes (new connection per 2 KB request)"
    for workload in (big, handshakes):
        nginx, amped = rows[(workload, "nginx")], rows[(workload, "flashsrv amped")]
        assert nginx[4] == "1.00x" and re.fullmatch(r"\d+\.\d\dx", amped[4]), (nginx, amped)
        assert float(nginx[2].replace(",", "")) > 0 and nginx[6] == "0", nginx
        assert re.fullmatch(r"\d+\.\d / \d+\.\d", amped[9]), amped  # CPU per request
    assert float(rows[(big, "flashsrv amped")][3].replace(",", "")) > 0  # MB/s: it sent data
    assert "req/s = full handshakes/s" in rows[(handshakes, "nginx")][-1]
    assert "issue 11: TLS cached 1 MiB (HTTP/1.1), amped / nginx MB/s:" in text, text
    assert "issue 11: TLS handshakes/s, amped / nginx:" in text, text
    if shutil.which("h2load") is None:
        assert "h2load not found" in text, text
    else:  # nginx speaks h2; flashsrv does once its ALPN offers h2, and the bench says which
        nginx = rows[(h2, "nginx")]
        assert float(nginx[2].replace(",", "")) > 0 and nginx[6] == "0", nginx
        assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", nginx[5]), nginx  # from h2load's log
        assert ((h2, "flashsrv amped") in rows
                or f"flashsrv amped, {h2}: skipped: its TLS port does not negotiate h2" in text)
    assert "problem:" not in text, text


@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed (apt-get install wrk)")
def test_bench_quick_large_file_row(tmp_path: Path) -> None:
    """The disk-bound large-file row: its own server start, probe columns and targets; without
    root or a cgroup io controller the bench says why it skipped the row instead."""
    out = tmp_path / "results"
    text = run_bench(out, "amped", "coldlarge")
    if "large-file workloads skipped" in text:
        return  # no slow disk here: the note says why, nothing is faked
    row = next(line for line in text.splitlines()
               if line.startswith("| disk-bound large files (8 MiB, slow disk) | flashsrv amped |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert float(cells[3].replace(",", "")) > 0, row  # cold MB/s: it sent file data
    assert re.fullmatch(r"\*\*probe \d+\.\d\d / \d+\.\d\d\*\*", cells[5]), row
    assert cells[6] == "0", f"errors during the run: {row}"
    assert "--helpers 8 --cache-bytes 1M" in cells[-1], row  # the notes
    assert "disk-bound large files, amped probe p99 ms:" in text, text
    assert "problem:" not in text, text


def test_h2_floor_reports_the_h2_librarys_cpu_per_request():
    """loadtests/h2_floor.py drives flashsrv's h2 server state with real h2 client frames:
    every request must be answered, or the number it prints would mean nothing."""
    run = subprocess.run([sys.executable, "loadtests/h2_floor.py", "--requests", "300"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    found = re.fullmatch(r"h2 library, server side: ([\d.]+) µs CPU per request \(at most "
                         r"([\d,]+) req/s on one core\), 10 streams at a time\n", run.stdout)
    assert found, run.stdout
    assert float(found[1]) > 0
