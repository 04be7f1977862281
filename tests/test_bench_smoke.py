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
