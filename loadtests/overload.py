"""Offered load past saturation: does throughput hold (well-conditioned) or collapse?

    python loadtests/overload.py [--levels 10,50,200,1000,4000] [--seconds 10]

Not part of CI. Builds a "cold many-files" data set larger than flashsrv's file cache (by
default 3,000 files of 16-48 KB, about 96 MB, against --cache-bytes 16M), starts flashsrv with
`--helpers 2`, and runs `wrk` with a Lua script requesting random files at each connection count
in turn. For each level it prints requests/s, p50/p99 latency, the share of 503s (the server
shedding load: bounded helper queue) and socket errors, and the server's RSS.

What to look for (SEDA's "well-conditioned service"): past the knee, requests/s stays near its
peak (the script's check: every level above the peak keeps at least 50% of the peak rate) and
latency grows with the queue of connections rather than exploding; overload shows up as quick
503s with Retry-After instead of timeouts. Exit status 0 when throughput does not collapse.
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serverproc import stop_server

LISTEN_RE = re.compile(r"flashsrv listening on http://([^:]+):(\d+)")

LUA = r"""
local n = %(count)d
local status_503 = 0
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
init = function(args)
  math.randomseed(os.time() + math.random(100000))
end
request = function()
  return wrk.format("GET", "/f" .. math.random(0, n - 1) .. ".bin")
end
response = function(status, headers, body)
  if status == 503 then status_503 = status_503 + 1 end
end
done = function(summary, latency, requests)
  local total503 = 0
  for _, t in ipairs(threads) do total503 = total503 + (t:get("status_503") or 0) end
  io.write(string.format("RESULT requests=%%d connect=%%d read=%%d write=%%d timeout=%%d "
    .. "p50_ms=%%.2f p99_ms=%%.2f s503=%%d\n", summary.requests, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, total503))
end
"""


def rss_mib(pid: int) -> float:
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="10,50,200,1000,4000")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--cache-bytes", default="16M")
    ap.add_argument("--helpers", type=int, default=2)
    ap.add_argument("--helper-queue", type=int, default=None,
                    help="pass --helper-queue to flashsrv (default: its own default)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("overload: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    levels = [int(x) for x in args.levels.split(",")]

    base = Path(tempfile.mkdtemp(prefix="flashsrv-overload-"))
    proc = None
    try:
        rng = random.Random(3)
        root = base / "www"
        root.mkdir()
        block = rng.randbytes(48 * 1024)
        total = 0
        for i in range(args.files):
            size = rng.randint(16 * 1024, 48 * 1024)
            (root / f"f{i}.bin").write_bytes(block[:size])
            total += size
        script = base / "cold.lua"
        script.write_text(LUA % {"count": args.files})
        cmd = [sys.executable, "-m", "flashsrv", "serve", str(root), "--host", "127.0.0.1",
               "--port", "0", "--cache-bytes", args.cache_bytes, "--helpers", str(args.helpers),
               "--max-connections", "20000", "--access-log", "off"]
        if args.helper_queue:
            cmd += ["--helper-queue", str(args.helper_queue)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),
                         daemon=True).start()
        deadline = time.monotonic() + 15
        m = None
        while m is None and time.monotonic() < deadline:
            m = next((x for x in map(LISTEN_RE.search, list(lines)) if x), None)
            time.sleep(0.05)
        if m is None:
            raise SystemExit(f"flashsrv did not start: {''.join(lines)}")
        url = f"http://{m.group(1)}:{m.group(2)}"

        rows = []
        for conns in levels:
            threads = min(2, conns)
            out = subprocess.run(
                ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{args.seconds}s",
                 "--timeout", "10s", "-s", str(script), url],
                capture_output=True, text=True, timeout=args.seconds + 120)
            r = re.search(r"RESULT (.*)", out.stdout)
            if not r:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            res = {k: float(v) for k, v in (kv.split("=") for kv in r.group(1).split())}
            res["conns"] = conns
            res["rps"] = res["requests"] / args.seconds
            res["ok_rps"] = (res["requests"] - res["s503"]) / args.seconds
            res["rss"] = rss_mib(proc.pid)
            rows.append(res)
            if proc.poll() is not None:
                print("overload: the server died", file=sys.stderr)
                break
            time.sleep(2)

        print(f"\nflashsrv overload: {args.files} files ({total / 2**20:.0f} MiB) vs "
              f"--cache-bytes {args.cache_bytes}, --helpers {args.helpers}, "
              f"wrk {args.seconds} s per level\n")
        print("| connections | req/s  | 200 req/s | 503 share | p50 ms  | p99 ms  | "
              "socket errors | RSS MiB |")
        print("|------------:|-------:|----------:|----------:|--------:|--------:|"
              "--------------:|--------:|")
        for res in rows:
            errors = res["connect"] + res["read"] + res["write"] + res["timeout"]
            share = res["s503"] / res["requests"] if res["requests"] else 0.0
            print(f"| {res['conns']:11.0f} | {res['rps']:6.0f} | {res['ok_rps']:9.0f} | "
                  f"{share:9.1%} | {res['p50_ms']:7.2f} | {res['p99_ms']:7.2f} | "
                  f"{errors:13.0f} | {res['rss']:7.1f} |")
        peak_at = max(range(len(rows)), key=lambda i: rows[i]["rps"])
        peak = rows[peak_at]["rps"]
        after = rows[peak_at + 1:]
        held = all(r["rps"] >= 0.5 * peak for r in after)
        print(f"\npeak {peak:.0f} req/s at {rows[peak_at]['conns']:.0f} connections; "
              f"levels above it keep >= 50% of the peak: {'yes' if held else 'NO'}")
        return 0 if held and proc.poll() is None else 1
    finally:
        stop_server(proc, base)


if __name__ == "__main__":
    sys.exit(main())
