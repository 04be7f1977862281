"""The benchmark harness works end to end: tiny run, flashsrv and nginx, a table with ratios.

No speed is asserted (speed is for loadtests/bench.py to report, not for a test to judge);
only that the harness starts both servers, drives them with wrk, stops them cleanly and writes
the table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "loadtests" / "bench.py"


@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("nginx") is None,
                    reason="nginx is not installed (apt-get install nginx-light)")
def test_bench_quick_produces_a_table_with_ratios(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--servers", "nginx,amped",
         "--workloads", "small,1mib", "--duration", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = (out / "results.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("cached"):
            rows[(cells[0], cells[1])] = cells
    for workload in ("cached 2 KB", "cached 1 MiB"):
        nginx = rows[(workload, "nginx")]
        amped = rows[(workload, "flashsrv amped")]
        assert nginx[4] == "1.00x"
        assert re.fullmatch(r"\d+\.\d\dx", amped[4]), amped
        assert float(amped[2].replace(",", "")) > 0, amped  # it served requests
        assert amped[6] == "0", f"errors during the run: {amped}"
    assert "problem:" not in text, text
    assert (out / "results.json").exists()


@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed (apt-get install wrk)")
def test_bench_quick_large_file_row(tmp_path: Path) -> None:
    """The disk-bound large-file row: its own server start, probe columns and targets; without
    root or a cgroup io controller the bench says why it skipped the row instead."""
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--servers", "amped", "--workloads",
         "coldlarge", "--duration", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = (out / "results.md").read_text()
    if "large-file workloads skipped" in text:
        return  # no slow disk here: the note says why, nothing is faked
    row = next(line for line in text.splitlines()
               if line.startswith("| disk-bound large files (8 MiB, slow disk) | flashsrv amped |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert float(cells[3].replace(",", "")) > 0, row  # cold MB/s: it sent file data
    assert re.fullmatch(r"\*\*probe \d+\.\d\d / \d+\.\d\d\*\*", cells[5]), row
    assert cells[6] == "0", f"errors during the run: {row}"
    assert "--helpers 8 --cache-bytes 1M" in cells[9], row
    assert "disk-bound large files, amped probe p99 ms:" in text, text
    assert "problem:" not in text, text
