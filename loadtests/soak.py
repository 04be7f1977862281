"""Soak run: minutes of mixed traffic against one flashsrv with a fixed cache budget.

    python loadtests/soak.py [--duration 300] [--connections 64] [--cache-bytes 32M]

Not part of CI (it takes minutes). It builds a data set in a temporary folder (2,000 small files
of 1-64 KB, 8 files of 3 MB that stream, a precompressed sibling, dotfiles), starts
`python -m flashsrv serve` with `--cache-bytes` fixed, and drives `wrk` with a Lua script that
mixes cached and uncached small files, large streamed files, byte ranges, conditional requests,
404s and 405s, in back-to-back segments of --segment seconds (so throughput is known per
segment). Every --sample seconds it records the server's RSS (main process + helpers, VmRSS from
/proc) and its open descriptors (/proc/PID/fd). It prints a table over time and checks at the end:

- RSS levelled off: the median RSS of the last third of the run is less than 10% above the
  median of the middle third (the first third is warm-up: caches filling);
- descriptors returned to baseline: a few seconds after wrk disconnects, the server holds no
  more sockets than before the load (every connection released); open regular files are the
  pathname cache's (it keeps descriptors open by design) and must stay within its bound;
- the server is alive, answered mostly 2xx/3xx/4xx as the mix expects, and no 5xx.

Exit status 0 when every check holds, 1 otherwise. Requires `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serverproc import stop_server

LISTEN_RE = re.compile(r"flashsrv listening on http://([^:]+):(\d+)")


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def fd_count(pid: int, kind: str | None = None) -> int:
    """Open descriptors of pid; kind "socket" counts sockets only, "file" regular files only."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    if kind is None:
        return len(names)
    n = 0
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (target.startswith("socket:") if kind == "socket" else target.startswith("/")):
            n += 1
    return n


def hard_limit() -> int:
    return min(10_000 * 8, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def make_site(base: Path, rng: random.Random) -> list[str]:
    """The data set; returns the paths the Lua script picks from."""
    root = base / "www"
    root.mkdir()
    paths = []
    block = rng.randbytes(64 * 1024)
    for i in range(2000):
        d = root / f"d{i % 20}"
        d.mkdir(exist_ok=True)
        size = rng.randint(1024, 64 * 1024)
        (d / f"f{i}.html").write_bytes(block[:size])
        paths.append(f"/d{i % 20}/f{i}.html")
    for i in range(8):
        (root / f"large{i}.bin").write_bytes(block * 48)  # 3 MiB: streamed, never cached whole
    (root / "style.css").write_text("body { color: #333; }\n" * 200)
    import gzip

    (root / "style.css.gz").write_bytes(gzip.compress((root / "style.css").read_bytes()))
    (root / ".secret").write_text("never served\n")
    (root / "index.html").write_text("<h1>soak</h1>\n")
    return paths


LUA = r"""
local small = {%(small)s}
local n = #small
local counter = 0
request = function()
  counter = counter + 1
  local r = math.random(1000)
  local headers = {}
  local path
  local method = "GET"
  if r <= 600 then            -- hot set: the first 200 files, in the cache after warm-up
    path = small[math.random(200)]
  elseif r <= 850 then        -- the whole set: larger than the cache budget, LRU churn
    path = small[math.random(n)]
  elseif r <= 880 then        -- large files streamed in chunks
    path = "/large" .. math.random(0, 7) .. ".bin"
  elseif r <= 920 then        -- byte ranges
    path = small[math.random(n)]
    headers["Range"] = "bytes=0-99,200-299"
  elseif r <= 950 then        -- conditional
    path = small[math.random(200)]
    headers["If-Modified-Since"] = "Thu, 01 Jan 2037 00:00:00 GMT"
  elseif r <= 970 then
    path = "/style.css"
    headers["Accept-Encoding"] = "gzip"
  elseif r <= 990 then
    path = "/missing/" .. counter .. ".html"
  elseif r <= 995 then
    path = "/.secret"
  else
    method = "DELETE"
    path = "/index.html"
  end
  return wrk.format(method, path, headers)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d errors_status=%%d errors_connect=%%d "
    .. "errors_read=%%d errors_timeout=%%d p50_ms=%%.2f p99_ms=%%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def start(root: Path, cache: str, extra: list[str]) -> tuple[subprocess.Popen, str, int]:
    cmd = [sys.executable, "-m", "flashsrv", "serve", str(root), "--host", "127.0.0.1",
           "--port", "0", "--cache-bytes", cache, "--access-log", "off", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def drain():
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in lines:
            m = LISTEN_RE.search(line)
            if m:
                proc.stderr_lines = lines  # type: ignore[attr-defined]
                return proc, m.group(1), int(m.group(2))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"flashsrv did not start: {''.join(lines)}")


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"RESULT (.*)", out.stdout)
    if not m:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    result = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    result["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    result["seconds"] = seconds
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=300, help="seconds of load (default 300)")
    ap.add_argument("--segment", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--cache-bytes", default="32M")
    ap.add_argument("--helpers", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("soak: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    base = Path(tempfile.mkdtemp(prefix="flashsrv-soak-"))
    proc = None
    try:
        paths = make_site(base, random.Random(7))
        script = base / "mix.lua"
        script.write_text(LUA % {"small": ", ".join(f'"{p}"' for p in paths)})
        proc, host, port = start(base / "www", args.cache_bytes,
                                 ["--helpers", str(args.helpers)])
        url = f"http://{host}:{port}"
        pid = proc.pid
        subprocess.run(["wrk", "-t", "1", "-c", "1", "-d", "1s", url + "/index.html"],
                       capture_output=True, timeout=30)
        time.sleep(1.5)
        baseline_fds = fd_count(pid)
        baseline_sockets = fd_count(pid, "socket")
        baseline_rss = rss_kib(pid) + sum(rss_kib(c) for c in children(pid))

        samples: list[tuple[float, int, int, int]] = []  # (t, main rss, total rss, fds)
        stop = threading.Event()
        t0 = time.monotonic()

        def sampler():
            while not stop.is_set():
                main_rss = rss_kib(pid)
                total = main_rss + sum(rss_kib(c) for c in children(pid))
                samples.append((time.monotonic() - t0, main_rss, total, fd_count(pid)))
                stop.wait(args.sample)

        threading.Thread(target=sampler, daemon=True).start()
        segments = []
        while time.monotonic() - t0 < args.duration:
            seconds = max(1, min(args.segment, int(args.duration - (time.monotonic() - t0))))
            result = run_wrk(url, script, args.connections, seconds)
            result["end"] = time.monotonic() - t0
            segments.append(result)
            if proc.poll() is not None:
                break
        stop.set()
        time.sleep(3)  # connections closed by wrk; the server releases them
        after_fds = fd_count(pid)
        after_sockets = fd_count(pid, "socket")
        after_files = fd_count(pid, "file")
        alive = proc.poll() is None

        print(f"\nflashsrv soak: {args.duration} s, {args.connections} connections, "
              f"--cache-bytes {args.cache_bytes}, --helpers {args.helpers}, "
              f"{len(paths)} small files + 8 x 3 MiB\n")
        print("|   t (s) | req/s   | p50 ms | p99 ms | non-2xx/3xx | main RSS MiB | "
              "total RSS MiB | fds   |")
        print("|--------:|--------:|-------:|-------:|------------:|-------------:|"
              "--------------:|------:|")
        for seg in segments:
            near = min(samples, key=lambda s, e=seg["end"]: abs(s[0] - e))
            print(f"| {seg['end']:7.0f} | {seg['requests'] / seg['seconds']:7.0f} | "
                  f"{seg['p50_ms']:6.2f} | {seg['p99_ms']:6.2f} | {seg['non2xx']:11.0f} | "
                  f"{near[1] / 1024:12.1f} | {near[2] / 1024:13.1f} | {near[3]:5d} |")
        n = len(samples)
        middle = [s[2] for s in samples[n // 3: 2 * n // 3]]
        last = [s[2] for s in samples[2 * n // 3:]]
        growth = statistics.median(last) / statistics.median(middle) - 1 if middle else 0.0
        total_requests = sum(s["requests"] for s in segments)
        socket_errors = sum(s["errors_connect"] + s["errors_read"] + s["errors_timeout"]
                            for s in segments)
        print(f"\nrequests: {total_requests:.0f} in {len(segments)} segments; socket errors: "
              f"{socket_errors:.0f}; RSS baseline {baseline_rss / 1024:.1f} MiB, "
              f"first sample {samples[0][2] / 1024:.1f} MiB, "
              f"last {samples[-1][2] / 1024:.1f} MiB; median growth last third vs middle "
              f"third: {growth * 100:+.1f}%")
        print(f"descriptors: baseline {baseline_fds} ({baseline_sockets} sockets), peak "
              f"{max(s[3] for s in samples)}, after disconnect {after_fds} ({after_sockets} "
              f"sockets, {after_files} open files held by the path cache)")
        checks = {
            "server alive": alive,
            "RSS levelled off (< 10% growth, last vs middle third)": growth < 0.10,
            # Connections: every socket of the load is released. Files: the pathname cache
            # keeps descriptors open by design (bounded by its entry count, fd limit / 8).
            "socket descriptors back to baseline": 0 <= after_sockets <= baseline_sockets,
            "open files bounded by the path cache": after_files <= max(64, hard_limit() // 8),
            "no socket errors": socket_errors == 0,
        }
        # The mix has ~3% 404/403/405 by design; wrk counts all of them as non-2xx/3xx.
        for name, ok in checks.items():
            print(f"  [{'ok' if ok else 'FAIL'}] {name}")
        return 0 if all(checks.values()) else 1
    finally:
        stop_server(proc, base)


if __name__ == "__main__":
    sys.exit(main())
