"""One workload against one running server, into one row of the table: the load generators it
needs (and the probe), the server's CPU time around them, the slow disk for the cold rows, and
notes on anything that skews the numbers (other processes, files still resident, a server that
died)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

from .dataset import Dataset, warm
from .load_generators import Probe, Wrk
from .machine import cpu_times, log
from .servers import CpuTimes, Running, Tools
from .slow_disk import Throttle, evict
from .workloads import (
    CACHED,
    COLD_LARGE,
    CONNECTIONS,
    HOT_CONNECTIONS,
    MIB,
    PROBE_INTERVAL,
    TLS,
    WORKLOAD_TITLES,
    cold_large_seconds,
    cold_large_throttle,
    server_args,
)

# One load generator of a run: (paths, connections, mode), mode as in load_generators.Wrk.
Load = tuple[list[str], int, str]


class Skipped(Exception):
    """A workload this server cannot run (the message says why): a note, not a row."""


@dataclass
class Row:
    workload: str
    server: str
    rps: float = 0.0
    mbps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    server_cpu: float = 0.0
    wrk_cpu: float = 0.0
    note: str = ""
    probe_p50_ms: float | None = None
    probe_p99_ms: float | None = None
    requests: int = 0  # responses completed
    started: int = 0   # bulk loader: requests sent (files taken from the deck)
    # Server CPU per completed request (µs; utime, stime): all its processes, and the main one.
    user_us: float | None = None
    sys_us: float | None = None
    main_user_us: float | None = None
    main_sys_us: float | None = None

    def cpu_per_request(self, used: CpuTimes) -> None:
        if self.requests:
            self.main_user_us, self.main_sys_us, self.user_us, self.sys_us = (
                t * 1e6 / self.requests for t in astuple(used))


class Bench:
    """Measures workloads for one run; holds its rows and the problems seen on the way."""

    def __init__(self, args: argparse.Namespace, tools: Tools, ds: Dataset, work: Path,
                 throttle: Throttle | None) -> None:
        self.args, self.tools, self.ds, self.work, self.throttle = (
            args, tools, ds, work, throttle)
        self.rows: list[Row] = []
        self.problems: list[str] = []

    def measure(self, srv: Running, workload: str) -> Row:
        """One row; raises Skipped when this server cannot run the workload."""
        ds = self.ds
        if workload in CACHED:
            return self._cached(srv, workload, CACHED[workload],
                                "bulk" if workload in ("1mib", "20mib") else "single")
        if workload in TLS:
            cached, mode = TLS[workload]
            alpn = srv.tls.alpn if srv.tls else None
            if mode == "h2" and alpn != "h2":
                raise Skipped(f"its TLS port does not negotiate h2 (ALPN chose {alpn or 'none'} "
                              "of h2, http/1.1)")
            row = self._cached(srv, workload, CACHED[cached], mode)
            if mode == "https-close":
                row.note = "; ".join(filter(None, [
                    "req/s = full handshakes/s (no session resumption)", row.note]))
            return row
        if workload == "many":
            warm(ds.files(ds.many))
            load = (ds.many, CONNECTIONS["many"], "random")
            self._warm_up(srv, *load)
            return self._run(srv, workload, [load])
        if workload in ("disk", "stall"):
            return self._cold(srv, workload)
        if workload == "coldlarge":
            return self._cold_large(srv)
        raise ValueError(workload)

    def _cached(self, srv: Running, workload: str, path: str, mode: str) -> Row:
        """One cached file requested over and over, after the warm-up."""
        load = ([path], CONNECTIONS[workload], mode)
        self._warm_up(srv, *load)
        return self._run(srv, workload, [load])

    def _warm_up(self, srv: Running, paths: list[str], connections: int, mode: str) -> None:
        """The same load, unmeasured, for --warmup seconds: the servers' own caches (nginx's
        open_file_cache, flashsrv's path and data caches) start each measured run warm."""
        if self.args.warmup:
            Wrk(self.tools, self.work, srv, paths, connections, self.args.warmup, mode).result()

    def _run(self, srv: Running, workload: str,
             loads: list[Load], probe: bool = False,
             start: int = 0, seconds: float | None = None,
             probe_interval: float = PROBE_INTERVAL) -> Row:
        secs = self.args.duration if seconds is None else seconds
        cores = list(self.tools.cpus or sorted(os.sched_getaffinity(0)))
        busy0 = cpu_times(cores)
        cpu0, t0 = srv.cpu_times(), time.monotonic()
        gens = [Wrk(self.tools, self.work, srv, paths, conns, secs, mode, start)
                for paths, conns, mode in loads]
        prober = None
        if probe:
            prober = Probe(srv.port, srv.spec.prefix + CACHED["small"], secs, probe_interval)
            prober.start()
        results = [g.result() for g in gens]
        if prober:
            prober.join(secs + 60)
        elapsed = time.monotonic() - t0
        busy1 = cpu_times(cores)
        used = srv.cpu_times() - cpu0
        row = Row(WORKLOAD_TITLES[workload], srv.spec.label,
                  rps=sum(r.rps for r in results), mbps=sum(r.mbps for r in results),
                  p50_ms=results[0].p50_ms, p99_ms=results[0].p99_ms,
                  errors=sum(r.errors for r in results),
                  server_cpu=used.total / elapsed, wrk_cpu=sum(r.cpu for r in results),
                  requests=sum(r.requests for r in results),
                  started=sum(r.started for r in results))
        if not prober:  # with a probe, its requests and the files still in flight are not
            row.cpu_per_request(used)  # counted: CPU per request would mean nothing
        if len(results) > 1:
            row.note = " + ".join(f"{r.rps:,.0f}" for r in results) + " req/s (cold + hot)"
        if prober:
            row.probe_p50_ms, row.probe_p99_ms = prober.percentile(50), prober.percentile(99)
            slow = sum(1 for x in prober.latencies if x > 0.1)
            row.note = (f"probe: {len(prober.latencies)} requests, {slow} over 100 ms, max "
                        f"{prober.percentile(100):.1f} ms")
            if prober.error:
                row.note += f"; probe error: {prober.error}"
                self.problems.append(f"{srv.spec.label}, {workload}: probe {prober.error}")
        if busy1[1] > busy0[1]:
            used = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * len(cores)
            other = used - row.server_cpu - row.wrk_cpu
            if other > 0.15:
                row.note = (row.note + "; " if row.note else "") + (
                    f"other processes used ~{other:.0%} of a core during this run")
        if srv.proc.poll() is not None:
            self.problems.append(f"{srv.spec.label} died during '{workload}' "
                                 f"(exit {srv.proc.returncode}):\n{srv.log_tail()}")
        return row

    def _slow_disk(self, paths: list[str], iops: int, bps: int, run: Callable[[], Row]) -> Row:
        """Evict `paths`, throttle the server's reads, run; the row notes the disk reads."""
        assert self.throttle is not None
        left = evict(self.ds.files(paths))
        if left:
            log(f"warning: {left} cold files still resident after POSIX_FADV_DONTNEED")
        reads0 = self.throttle.reads()
        self.throttle.limit(iops, bps)
        try:
            row = run()
        finally:
            self.throttle.clear()
        reads = self.throttle.reads() - reads0
        row.note += f"; {reads} throttled disk reads"
        if left:
            row.note += f"; {left} files were still resident at the start"
        return row

    def _cold(self, srv: Running, workload: str) -> Row:
        ds, a = self.ds, self.args
        start = 0 if workload == "disk" else len(ds.cold) // 2
        cold: Load = (ds.cold, a.cold_connections, "walk")
        loads: list[Load]
        if workload == "disk":
            loads = [cold, ([CACHED["small"]], HOT_CONNECTIONS, "single")]
        else:
            loads = [cold]
        return self._slow_disk(ds.cold, a.throttle_iops, a.throttle_bps, lambda: self._run(
            srv, workload, loads, probe=workload == "stall", start=start))

    def _cold_large(self, srv: Running) -> Row:
        """8 clients download whole cold 8 MiB files while the probe fetches the hot one."""
        ds, cl = self.ds, COLD_LARGE
        iops, bps = cold_large_throttle(self.args)
        row = self._slow_disk(ds.coldlarge, iops, bps, lambda: self._run(
            srv, "coldlarge", [(ds.coldlarge, cl.clients, "bulk")], probe=True,
            seconds=cold_large_seconds(self.args), probe_interval=cl.probe_interval))
        row.note += (f"; files complete {row.requests}, started {row.started} "
                     f"(of {len(ds.coldlarge)}); "
                     f"disk {iops} IOPS / {bps / MIB:g} MiB/s")
        if srv.spec.kind == "flashsrv":
            srv_args = server_args(self.args, "coldlarge")
            row.note += f"; --helpers {srv_args.helpers} --cache-bytes {srv_args.cache_bytes}"
        if row.started > len(ds.coldlarge):
            row.note += "; files were fetched twice: not all cold"
        return row
