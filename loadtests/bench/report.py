"""The report of a run: the markdown table (ratios to nginx, CPU per request, probe latency),
the issues' performance targets checked against this run's ratios (issue 4, issue 10's CPU
per request against the Python floor, issue 11's TLS rows), and the files written (results.md,
results.json and the chart). Reads rows; never measures anything."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from .chart import write_chart
from .measure import Row
from .servers import FLOOR
from .workloads import (
    BY_BYTES,
    COLD_LARGE,
    MIB,
    WORKLOAD_TITLES,
    cold_large_seconds,
    cold_large_throttle,
    server_args,
)


def ratio_column(rows: list[Row]) -> dict[int, str]:
    """'x nginx' for every row whose workload nginx also ran (req/s; MB/s for big files)."""
    ref = {r.workload: r for r in rows if r.server == "nginx"}
    by_bytes = {WORKLOAD_TITLES[w] for w in BY_BYTES}
    out: dict[int, str] = {}
    for i, r in enumerate(rows):
        base = ref.get(r.workload)
        if base is None or r.probe_p99_ms is not None:
            out[i] = "—"
            continue
        num, den = (r.mbps, base.mbps) if r.workload in by_bytes else (r.rps, base.rps)
        out[i] = f"{num / den:.2f}x" if den else "—"
    return out


def markdown_table(rows: list[Row]) -> str:
    ratios = ratio_column(rows)
    lines = [
        "| workload | server | req/s | MB/s | x nginx | latency p50 / p99 (ms) | errors "
        "| server CPU | wrk CPU | user µs/req all / main | sys µs/req all / main | notes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for i, r in enumerate(rows):
        if r.probe_p50_ms is not None:
            lat = f"**probe {r.probe_p50_ms:.2f} / {r.probe_p99_ms:.2f}**"
        else:
            lat = f"{r.p50_ms:.2f} / {r.p99_ms:.2f}"
        lines.append(
            f"| {r.workload} | {r.server} | {r.rps:,.{1 if r.rps < 10 else 0}f} | {r.mbps:,.1f} "
            f"| {ratios[i]} | {lat} "
            f"| {r.errors} | {r.server_cpu:.0%} | {r.wrk_cpu:.0%} "
            f"| {_per_request(r.user_us, r.main_user_us)} "
            f"| {_per_request(r.sys_us, r.main_sys_us)} | {r.note} |")
    return "\n".join(lines)


def _per_request(total: float | None, main: float | None) -> str:
    return "—" if total is None or main is None else f"{total:.1f} / {main:.1f}"


def targets(rows: list[Row]) -> list[str]:
    """The issue's performance targets, checked against this run's ratios."""
    def get(workload: str, server: str) -> Row | None:
        return next((r for r in rows if r.workload == WORKLOAD_TITLES[workload]
                     and r.server == server), None)

    out = []

    def check(text: str, value: float | None, goal: float, at_most: bool = False) -> None:
        if value is not None:
            met = value <= goal if at_most else value >= goal
            mark = "met" if met else "NOT met"
            out.append(f"- {text}: {value:.2f} (target {'≤' if at_most else '≥'} {goal}: "
                       f"{mark})")

    def ratio(w: str, a: str, b: str, metric: str = "rps",
              inverse: bool = False) -> float | None:
        """`metric` of server a / of server b in workload w (b / a when `inverse`)."""
        x, y = get(w, a), get(w, b)
        if not x or not y:
            return None
        num, den = getattr(x, metric), getattr(y, metric)
        if inverse:
            num, den = den, num
        return num / den if num is not None and den else None

    amped = "flashsrv amped"
    check("cached 2 KB, amped / nginx req/s", ratio("small", amped, "nginx"), 0.8)
    check("cached 2 KB, amped / granian req/s", ratio("small", amped, "granian static"), 2.5)
    check("cached 2 KB, amped / uvicorn+starlette req/s",
          ratio("small", amped, "uvicorn+starlette"), 20)
    check("cached 1 MiB, amped / nginx MB/s", ratio("1mib", amped, "nginx", "mbps"), 0.7)
    check("cached 20 MiB, amped / nginx MB/s", ratio("20mib", amped, "nginx", "mbps"), 0.7)
    check("cached 2 KB, access log on / off req/s",
          ratio("small", "flashsrv amped, access log on", amped), 0.75)
    check("disk-bound, amped / sped req/s", ratio("disk", amped, "flashsrv sped"), 2)
    check("stall probe p99, sped / amped",
          ratio("stall", amped, "flashsrv sped", "probe_p99_ms", inverse=True), 10)
    large = get("coldlarge", amped)
    check("disk-bound large files, amped probe p99 ms", large.probe_p99_ms if large else None, 20,
          at_most=True)
    check("disk-bound large files, probe p99 sped / amped",
          ratio("coldlarge", amped, "flashsrv sped", "probe_p99_ms", inverse=True), 10)
    check("disk-bound large files, amped / sped cold MB/s",
          ratio("coldlarge", amped, "flashsrv sped", "mbps"), 0.9)
    # Issue 10: CPU per request against the Python floor (same run, same core), and nginx.
    small, floor = get("small", amped), get("small", FLOOR)
    if small and floor and small.sys_us is not None and floor.sys_us is not None:
        sys_ratio = ratio("small", amped, FLOOR, "sys_us")
        out.append(f"- issue 10: CPU per 2 KB request (all processes), µs user + sys: floor "
                   f"{floor.user_us:.1f} + {floor.sys_us:.1f}, amped {small.user_us:.1f} + "
                   f"{small.sys_us:.1f}; sys CPU amped / floor: "
                   + (f"{sys_ratio:.2f}" if sys_ratio is not None else "—"))
    check(f"issue 10: user CPU per 2 KB request, {amped} / floor",
          ratio("small", amped, FLOOR, "user_us"), 2.0, at_most=True)
    check("issue 10: cached 2 KB, amped / nginx req/s", ratio("small", amped, "nginx"), 1.0)
    check("issue 10: cached 100 KB, amped / nginx req/s", ratio("medium", amped, "nginx"), 0.9)
    check("issue 10: many files > cache, amped / nginx req/s", ratio("many", amped, "nginx"),
          0.9)
    check("issue 11: TLS cached 2 KB (HTTP/1.1), amped / nginx req/s",
          ratio("tls-small", amped, "nginx"), 0.7)
    check("issue 11: TLS cached 1 MiB (HTTP/1.1), amped / nginx MB/s",
          ratio("tls-1mib", amped, "nginx", "mbps"), 0.7)
    check(f"issue 11: {WORKLOAD_TITLES['h2-small']}, amped / nginx req/s",
          ratio("h2-small", amped, "nginx"), 0.5)
    handshakes = ratio("tls-handshakes", amped, "nginx")
    if handshakes is not None:
        out.append(f"- issue 11: TLS handshakes/s, amped / nginx: {handshakes:.2f} (reported, "
                   "no target)")
    return out


def cold_large_settings(args: argparse.Namespace) -> str:
    srv, (iops, bps) = server_args(args, "coldlarge"), cold_large_throttle(args)
    return (f"Disk-bound large files: {COLD_LARGE.clients} clients downloading whole cold "
            f"{COLD_LARGE.file_size // MIB} MiB files for {cold_large_seconds(args):g} s, probe "
            f"every {COLD_LARGE.probe_interval * 1000:g} ms, slow disk {iops} read IOPS / "
            f"{bps / MIB:g} MiB/s, flashsrv `--helpers {srv.helpers} --cache-bytes "
            f"{srv.cache_bytes}` (a server start of its own for this row); cold MB/s is body "
            "bytes received over the run's seconds, req/s is whole files per second.")


def write_results(out: Path, rows: list[Row], info: dict[str, str], notes: list[str],
                  args: argparse.Namespace) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    machine = ", ".join(f"{k}: {v}" for k, v in info.items())
    checks = targets(rows)
    chart_note = write_chart(rows, out / "results.png")
    if chart_note:
        notes = [*notes, chart_note]
    cmd = "python -m loadtests.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = "\n".join([
        f"# flashsrv benchmark, {info['date']}", "",
        f"Machine: {machine}.", "",
        f"Command: `{cmd.strip()}`; wrk duration {args.duration:g} s per run, "
        f"`--cache-bytes {args.cache_bytes}` for flashsrv, slow disk "
        f"{args.throttle_iops} read IOPS / {args.throttle_bps / MIB:g} MiB/s.", "",
        *([cold_large_settings(args), ""] if any(
            r.workload == WORKLOAD_TITLES["coldlarge"] for r in rows) else []),
        table, "",
        *(["Targets (issue 4; issues 10 and 11 where they say so):", "", *checks, ""]
          if checks else []),
        *(["Notes:", "", *[f"- {n}" for n in notes], ""] if notes else []),
        "![benchmark chart](results.png)" if not chart_note else "",
    ])
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(
        {"machine": info, "rows": [asdict(r) for r in rows], "notes": notes,
         "targets": checks}, indent=2))
    return text
