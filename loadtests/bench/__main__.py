"""Benchmark flashsrv's concurrency models against nginx (and granian, uvicorn+starlette).

    python -m loadtests.bench [--quick] [--servers ...] [--workloads ...] [--out DIR]

The command line and the run: which servers and workloads, in what order, each server started
(twice when the large-file row runs: it has settings of its own), measured, and stopped even on
Ctrl-C, SIGTERM or an error; then the report. What is measured and how: see __init__.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from flashsrv.config import parse_size  # the server's own size syntax (64M, 1G) for its options

from .dataset import make_dataset
from .machine import log, machine_info, wait_until_quiet
from .measure import Bench, Skipped
from .report import write_results
from .servers import (
    SERVERS,
    Certificate,
    Running,
    discover_tools,
    make_certificate,
    start_server,
    stop_server,
    tls_unavailable,
    unavailable,
)
from .slow_disk import Throttle
from .workloads import (
    ALL_WORKLOADS,
    COLD_CONNECTIONS,
    COLD_LARGE,
    DEFAULT_BPS,
    DEFAULT_CACHE_BYTES,
    DEFAULT_IOPS,
    MIB,
    THROTTLED,
    TLS,
    WORKLOAD_TITLES,
    server_args,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench",
                                description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~1 minute run with short wrk runs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.add_argument("--servers", default=",".join(s.key for s in SERVERS),
                   help="comma-separated subset of: " + ",".join(s.key for s in SERVERS))
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                   help="comma-separated subset of: " + ",".join(ALL_WORKLOADS))
    p.add_argument("--duration", type=float, help="seconds per wrk run (10; --quick: 1; "
                   f"large-file row: {COLD_LARGE.seconds:g}, --quick: "
                   f"{COLD_LARGE.quick_seconds:g})")
    p.add_argument("--warmup", type=float,
                   help="seconds of warm-up before each cached and many-files run (2; 0 with "
                        "--quick)")
    # Defaults of None are filled in below: the large-file row keeps its own settings (the
    # issue's) unless the option is given.
    p.add_argument("--cache-bytes", help=f"flashsrv --cache-bytes ({DEFAULT_CACHE_BYTES}; "
                   f"large-file row: {COLD_LARGE.cache_bytes})")
    p.add_argument("--helpers", type=int, help="flashsrv --helpers (default: its own; "
                   f"large-file row: {COLD_LARGE.helpers})")
    p.add_argument("--throttle-iops", type=int, help=f"slow disk: read IOPS ({DEFAULT_IOPS}; "
                   f"large-file row: {COLD_LARGE.iops})")
    p.add_argument("--throttle-bps", type=parse_size, help="slow disk: read bytes/s "
                   f"({DEFAULT_BPS // MIB}M; large-file row: {COLD_LARGE.bps // MIB}M)")
    p.add_argument("--cold-connections", type=int, default=COLD_CONNECTIONS,
                   help="connections fetching cold files in the disk-bound and stall runs")
    p.add_argument("--data-dir", type=Path, help="where to create the data (on a real disk)")
    p.add_argument("--peers-venv", type=Path, help="venv holding granian/uvicorn/starlette")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--idle-wait", type=float,
                   help="seconds (in all) to wait for other processes to leave the CPUs "
                        "alone before starting each server (120; --quick: 0)")
    args = p.parse_args(argv)
    args.given = {k for k in ("duration", "cache_bytes", "helpers", "throttle_iops",
                              "throttle_bps") if getattr(args, k) is not None}
    if args.cache_bytes is None:
        args.cache_bytes = DEFAULT_CACHE_BYTES
    if args.throttle_iops is None:
        args.throttle_iops = DEFAULT_IOPS
    if args.throttle_bps is None:
        args.throttle_bps = DEFAULT_BPS
    if args.duration is None:
        args.duration = 1.0 if args.quick else 10.0
    if args.idle_wait is None:
        args.idle_wait = 0.0 if args.quick else 120.0
    if args.warmup is None:
        args.warmup = 0.0 if args.quick else 2.0
    return args


def _tls_setup(work: Path, workloads: list[str],
               notes: list[str]) -> tuple[Certificate | None, list[str]]:
    """The run's certificate when a TLS row is asked for, and the workloads that can run: no
    TLS rows without a certificate, no h2 row without h2load."""
    if not set(TLS) & set(workloads):
        return None, workloads
    certificate, why = make_certificate(work)
    if certificate is None:
        notes.append(f"TLS rows skipped: {why}")
        return None, [w for w in workloads if w not in TLS]
    notes.append(f"TLS certificate: {why}")
    if "h2-small" in workloads and not shutil.which("h2load"):
        notes.append(f"{WORKLOAD_TITLES['h2-small']} skipped: h2load not found "
                     "(apt-get install nghttp2-client)")
        workloads = [w for w in workloads if w != "h2-small"]
    return certificate, workloads


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up servers on SIGTERM too
    wanted = args.servers.split(",")
    workloads = [w for w in ALL_WORKLOADS if w in args.workloads.split(",")]
    unknown = set(wanted) - {s.key for s in SERVERS}
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (apt-get install wrk)")
    tools = discover_tools(args.peers_venv)
    notes: list[str] = []
    if tools.cpus:
        os.sched_setaffinity(0, {tools.cpus[1]})  # the harness and its probe: load-gen core
        notes.append(f"server pinned to CPU {tools.cpus[0]}, wrk and probe to CPU "
                     f"{tools.cpus[1]} (taskset)")
    else:
        notes.append("fewer than 2 CPUs (or no taskset): server and wrk share the CPU")
    info = machine_info()
    work = Path(tempfile.mkdtemp(prefix="flashsrv-bench-", dir=args.data_dir))
    throttle: Throttle | None = None
    bench: Bench | None = None
    running: Running | None = None
    no_tls: list[str] = []  # servers the TLS rows are not run for
    try:
        if set(THROTTLED) & set(workloads):  # before the data: no large files for nothing
            throttle, why = Throttle.create(work)
            if throttle is None:
                msg = f"disk-bound, stall and large-file workloads skipped: {why}"
                log(msg)
                notes.append(msg)
                workloads = [w for w in workloads if w not in THROTTLED]
            else:
                notes.append(f"slow disk: {why} on device {throttle.device} ({throttle.path})")
        certificate, workloads = _tls_setup(work, workloads, notes)
        log(f"creating data sets in {work}")
        ds = make_dataset(work, args.quick, workloads)
        bench = Bench(args, tools, ds, work, throttle)
        for spec in SERVERS:
            if spec.key not in wanted:
                continue
            todo = [w for w in workloads if w in spec.workloads]
            skipped = [WORKLOAD_TITLES[w] for w in workloads if w not in spec.workloads]
            if spec.only_why and skipped:
                only = ", ".join(WORKLOAD_TITLES[w] for w in spec.workloads)
                notes.append(f"{spec.label} runs only {only} ({spec.only_why}); not run: "
                             + ", ".join(skipped))
            elif any(w in TLS and w not in spec.workloads for w in workloads):
                no_tls.append(spec.label)
            why_not = unavailable(spec, tools)
            if todo and why_not:
                log(f"{spec.label}: skipped: {why_not}")
                notes.append(f"{spec.label} skipped: {why_not}")
                continue
            why_not = tls_unavailable(spec, tools)
            if why_not and any(w in TLS for w in todo):
                notes.append(f"{spec.label}: TLS rows skipped: {why_not}")
                todo = [w for w in todo if w not in TLS]
            if not todo:
                continue
            # The large-file row gets a server start of its own: its flashsrv settings differ
            # (--helpers, --cache-bytes) and every server meets it fresh.
            for phase in ([w for w in todo if w != "coldlarge"],
                          [w for w in todo if w == "coldlarge"]):
                if not phase:
                    continue
                if args.idle_wait > 0:
                    t_wait = time.monotonic()
                    load = wait_until_quiet(
                        list(tools.cpus or sorted(os.sched_getaffinity(0))), args.idle_wait)
                    args.idle_wait -= time.monotonic() - t_wait  # one budget for the run
                    if load > 0.15:
                        notes.append(f"before {spec.label}: the machine was busy ({load:.0%} "
                                     "of a core used by other processes): its numbers are "
                                     "skewed")
                log(f"{spec.label}: starting")
                running = start_server(spec, tools, ds, work, server_args(args, phase[0]),
                                       throttle,
                                       certificate if set(TLS) & set(phase) else None)
                if running.tls:
                    notes.append(f"{spec.label} over TLS: {running.tls}")
                try:
                    for w in phase:
                        try:
                            row = bench.measure(running, w)
                        except Skipped as e:
                            log(f"{spec.label}, {WORKLOAD_TITLES[w]}: skipped: {e}")
                            notes.append(f"{spec.label}, {WORKLOAD_TITLES[w]}: skipped: {e}")
                            continue
                        bench.rows.append(row)
                        log(f"{spec.label:32} {row.workload:28} {row.rps:>10,.0f} req/s "
                            f"{row.mbps:>9,.1f} MB/s  errors {row.errors}  "
                            f"cpu {row.server_cpu:.0%}/{row.wrk_cpu:.0%}  µs/req user "
                            f"{row.user_us or 0:.1f} sys {row.sys_us or 0:.1f}")
                        if running.proc.poll() is not None:
                            break
                finally:
                    for problem in stop_server(running):
                        bench.problems.append(f"{spec.label}: {problem}")
                    running = None
    except KeyboardInterrupt:
        log("interrupted: stopping")
        return 130
    finally:
        if running is not None:
            stop_server(running, grace=5)
        if throttle is not None:
            throttle.remove()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if no_tls:
        notes.append("TLS rows: nginx and flashsrv amped only; not run for "
                     + ", ".join(no_tls))
    rows = bench.rows if bench else []
    problems = bench.problems if bench else []
    notes += [f"problem: {p}" for p in problems]
    # Ordered for reading: workload first, then the servers in the order of SERVERS.
    order = {s.label: i for i, s in enumerate(SERVERS)}
    wl = {t: i for i, t in enumerate(WORKLOAD_TITLES.values())}
    rows.sort(key=lambda r: (wl[r.workload], order[r.server]))
    text = write_results(args.out, rows, info, notes, args)
    print(text)
    log(f"results in {args.out}/results.md, results.json, results.png")
    return 0



if __name__ == "__main__":
    sys.exit(main())
