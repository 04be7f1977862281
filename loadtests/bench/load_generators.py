"""The load generators, on the load-generator core: wrk (with a small Lua script that prints its
result as one JSON line; over https too), the bulk loader for large bodies (bulk_loader.py, run
as a program of its own that prints the same line), h2load for HTTP/2 (its summary and per-request
log parsed), and the probe that times a cached small file while the others run. Each one reports
what it measured; none of them judges it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .servers import Running, Tools
from .workloads import H2_STREAMS, PROBE_INTERVAL

BULK_LOADER = Path(__file__).resolve().with_name("bulk_loader.py")


WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %.0f, "bytes": %.0f, "duration_us": %.0f, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f, ' ..
    '"p50_us": %.0f, "p99_us": %.0f, "max_us": %.0f}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""

WRK_PATHS = r"""
local paths = {%PATHS%}
local n = #paths
local i = %START%
function init(args)
  math.randomseed(%SEED%)
end
function request()
  local p
  if %RANDOM% then
    p = paths[math.random(n)]
  else
    p = paths[(i % n) + 1]
    i = i + 1
  end
  return wrk.format("GET", p)
end
"""


@dataclass
class WrkResult:
    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu: float = 0.0  # share of its core the load generator used
    started: int = 0  # bulk loader: requests started (files picked from the deck)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


class Wrk:
    """One load-generator process, pinned to the load-generator core: wrk (results from its Lua
    hook), or for `mode` "bulk" the bulk loader, for "h2" h2load.

    Modes: "single" (one path), "walk" and "random" (a list of paths, in turn or at random),
    "bulk" (large bodies), "https" (one path over TLS, keep-alive), "https-close" (one path over
    TLS, `Connection: close`: a new connection and a full handshake per request; wrk resumes no
    session), "h2" (one path over TLS with h2, `connections` connections of H2_STREAMS streams).
    """

    def __init__(self, tools: Tools, work: Path, srv: Running, paths: list[str],
                 connections: int, seconds: float, mode: str = "single", start: int = 0) -> None:
        stamp = time.monotonic_ns()
        self.h2_log = work / f"h2load-{stamp}.log" if mode == "h2" else None
        if mode == "bulk":
            # wrk reads 8 KiB per recv(): for MiB-sized bodies it, not the server, is the limit.
            cmd = [sys.executable, str(BULK_LOADER), str(srv.port),
                   ",".join(srv.spec.prefix + p for p in paths), str(connections), str(seconds)]
        elif self.h2_log is not None:
            cmd = ["h2load", "-t1", f"-c{connections}", f"-m{H2_STREAMS}",
                   f"-D{max(1, round(seconds * 1000))}ms", "--npn-list=h2",
                   f"--log-file={self.h2_log}", srv.url(paths[0], tls=True)]
        else:
            script = work / f"wrk-{stamp}.lua"
            lua = WRK_DONE
            if mode in ("walk", "random"):
                listed = ",".join(f'"{srv.spec.prefix}{p}"' for p in paths)
                lua = (WRK_PATHS.replace("%PATHS%", listed).replace("%START%", str(start))
                       .replace("%SEED%", str(start + 7))
                       .replace("%RANDOM%", "true" if mode == "random" else "false")) + lua
            script.write_text(lua)
            cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                   "--timeout", "10s", "-s", str(script),
                   *(["-H", "Connection: close"] if mode == "https-close" else []),
                   srv.url(paths[0], tls=mode.startswith("https"))]
        if tools.cpus:
            cmd = ["taskset", "-c", str(tools.cpus[1]), *cmd]
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 (closed in result())
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT)
        self.timeout = seconds + 60

    def result(self) -> WrkResult:
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("wrk did not finish in time")
                time.sleep(0.05)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                self.proc.wait()
        self.out.seek(0)
        text = self.out.read().decode(errors="replace")
        self.out.close()
        cpu = usage.ru_utime + usage.ru_stime
        if self.h2_log is not None:
            return _h2load_result(text, self.h2_log, cpu, self.proc.returncode)
        for line in text.splitlines():
            if line.startswith("WRKJSON "):
                d = json.loads(line[8:])
                seconds = d["duration_us"] / 1e6
                return WrkResult(
                    requests=int(d["requests"]), bytes=int(d["bytes"]), seconds=seconds,
                    errors=int(d["connect"] + d["read"] + d["write"] + d["status"]
                               + d["timeout"]),
                    p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000,
                    cpu=cpu / seconds if seconds else 0.0,
                    started=int(d.get("started", 0)))
        raise RuntimeError(f"wrk failed (exit {self.proc.returncode}):\n{text[-2000:]}")


H2LOAD_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s),", re.M)
# "failed" counts every request that did not succeed: errors, timeouts and 4xx/5xx statuses.
H2LOAD_REQUESTS = re.compile(r"^requests: .* (\d+) succeeded, (\d+) failed,", re.M)
H2LOAD_TRAFFIC = re.compile(r"^traffic: \S+ \((\d+)\) total", re.M)


def _h2load_result(text: str, log_path: Path, cpu: float, returncode: int | None) -> WrkResult:
    """h2load's summary (requests, bytes, seconds, errors) and its per-request log (start,
    status, microseconds to the end of the response: the latency percentiles)."""
    finished, counts = H2LOAD_FINISHED.search(text), H2LOAD_REQUESTS.search(text)
    traffic = H2LOAD_TRAFFIC.search(text)
    if not (finished and counts and traffic) or "Application protocol: h2" not in text:
        raise RuntimeError(f"h2load failed (exit {returncode}):\n{text[-2000:]}")
    seconds = float(finished[1]) / {"us": 1e6, "ms": 1e3, "s": 1.0}[finished[2]]
    succeeded, failed = int(counts[1]), int(counts[2])
    latencies = sorted(int(cols[2]) for line in log_path.read_text().splitlines()
                       if len(cols := line.split("\t")) >= 3 and cols[1] != "-1")

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000 \
            if latencies else 0.0

    return WrkResult(requests=succeeded, bytes=int(traffic[1]), seconds=seconds,
                     errors=failed,
                     p50_ms=pct(0.5), p99_ms=pct(0.99), cpu=cpu / seconds if seconds else 0.0)



class Probe(threading.Thread):
    """Fetches one cached small file every `interval` seconds on one keep-alive connection."""

    def __init__(self, port: int, path: str, seconds: float,
                 interval: float = PROBE_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.seconds, self.interval = port, path, seconds, interval
        self.latencies: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        req = f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                end = time.monotonic() + self.seconds
                nxt = time.monotonic()
                buf = b""
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    s.sendall(req)
                    buf = _read_response(s, buf)
                    self.latencies.append(time.monotonic() - t0)
                    nxt += self.interval
                    time.sleep(max(0.0, nxt - time.monotonic()))
                    nxt = max(nxt, time.monotonic() - self.interval)
        except (OSError, ValueError) as e:
            self.error = f"{type(e).__name__}: {e}"

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q / 100 * len(data)))] * 1000


def _read_response(s: socket.socket, buf: bytes) -> bytes:
    """Read one Content-Length framed response; returns the bytes after it."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ValueError("connection closed by the server")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if not head.startswith(b"HTTP/1.1 200") or length is None:
        raise ValueError(f"unexpected probe response: {head[:200]!r}")
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ValueError("connection closed mid-body")
        rest += chunk
    return rest[length:]
