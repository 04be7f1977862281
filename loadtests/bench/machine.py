"""The machine the numbers come from: its description for the results (CPU, kernel, tool
versions, commit), how busy its CPUs are (other people's work skews ratios), and the harness's
log line on stderr."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def machine_info() -> dict[str, str]:
    """What the numbers came from: they mean nothing without it."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": first_line(["wrk", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "flashsrv commit": commit or "unknown",
    }


def first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpu_times(cpus: list[int]) -> tuple[float, float]:
    """(busy, total) jiffies of the given CPUs, from /proc/stat."""
    busy = total = 0.0
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                v = [float(x) for x in vals[:8]]
                total += sum(v)
                busy += sum(v) - v[3] - v[4]  # minus idle and iowait
    return busy, total


def other_load(cpus: list[int], seconds: float = 1.0) -> float:
    """CPU used on `cpus` (in cores) while we run nothing: other people's work skews ratios."""
    b0, t0 = cpu_times(cpus)
    time.sleep(seconds)
    b1, t1 = cpu_times(cpus)
    return (b1 - b0) / (t1 - t0) * len(cpus) if t1 > t0 else 0.0


def wait_until_quiet(cpus: list[int], limit: float, threshold: float = 0.15) -> float:
    """Wait up to `limit` seconds for the benchmark's CPUs to be idle; returns the load seen."""
    deadline = time.monotonic() + limit
    load = other_load(cpus, 0.5)
    while load > threshold and time.monotonic() < deadline:
        log(f"machine busy: {load:.0%} of a core used by other processes; waiting")
        time.sleep(2)
        load = other_load(cpus, 0.5)
    return load


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
