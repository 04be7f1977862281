"""Benchmark flashsrv's concurrency models against nginx (and granian, uvicorn+starlette).

    python loadtests/bench.py [--quick] [--out loadtests/results]

One command, one run, one table: every server is started in turn on the same files, pinned to
one CPU core while `wrk` runs on another, so that the numbers are ratios measured side by side
(nginx is the reference) rather than absolute speeds that only mean something on one machine.

Workloads (the Flash paper's comparison, on a small scale):

- cached: one file of 2 KB, 100 KB, 1 MiB or 20 MiB, requested over and over;
- many-files: random requests over a data set larger than flashsrv's `--cache-bytes` (in the
  kernel page cache, not in the server's own cache);
- disk-bound: files evicted from the page cache (posix_fadvise DONTNEED) and the disk made slow by
  the kernel (cgroup v1 blkio throttle or v2 io.max on the server's processes); one wrk fetches
  cold files while another fetches a cached small file: a server that blocks on the disk also
  stops serving what it has in memory;
- stall probe: while wrk fetches cold files, a probe fetches a cached small file every ~5 ms on a
  keep-alive connection; its p50/p99 latency shows whether the event loop stalls;
- disk-bound large files: 8 clients download whole cold 8 MiB files (a shuffled deck over 60
  files, so that no file is fetched twice while the run lasts) on keep-alive connections while the
  probe fetches the cached small file every 10 ms: cold MB/s and probe p50/p99. Each server gets
  its own start for this row, with the issue's settings (flashsrv `--helpers 8 --cache-bytes 1M`,
  slow disk 120 IOPS / 16 MiB/s, 8 s) unless --helpers, --cache-bytes, --throttle-iops,
  --throttle-bps or --duration say otherwise.

The floor: `loadtests/floor_server.py`, a bare uvloop + httptools server answering every request
with one constant 2 KB response, runs the cached 2 KB workload only. It is what no Python server
can beat on this machine; flashsrv's CPU per request is judged against it (a ratio that does not
move with the CPU the way the ratio to nginx does).

CPU per request, on every row without a probe: utime and stime (/proc/PID/stat) of every process
in the server's process group (nginx workers, flashsrv's helpers; and of the main process alone),
read before and after the load generator runs, divided by the requests it completed.

The slow disk needs root and a cgroup io controller; without them the disk-bound workloads are
skipped with a message, never faked (and never slowed down by a sleep in the server).

Results go to OUT/results.md (table, machine, date), OUT/results.json and OUT/results.png.
Every server is stopped (SIGTERM, then SIGKILL of its process group) even on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

from flashsrv.config import parse_size  # the server's own size syntax (64M, 1G) for its options

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
KB = 1000
MIB = 1024 * 1024

# Workloads in table order. "cached" ones request a single file.
CACHED = {"small": "/small.html", "medium": "/medium.jpg", "1mib": "/big.bin",
          "20mib": "/large.mp4"}
ALL_WORKLOADS = [*CACHED, "many", "disk", "stall", "coldlarge"]
THROTTLED = ("disk", "stall", "coldlarge")  # workloads that need the slow disk
WORKLOAD_TITLES = {
    "small": "cached 2 KB", "medium": "cached 100 KB", "1mib": "cached 1 MiB",
    "20mib": "cached 20 MiB", "many": "many files > cache", "disk": "disk-bound (slow disk)",
    "stall": "stall probe (cold fetches)",
    "coldlarge": "disk-bound large files (8 MiB, slow disk)",
}
# Connections per workload: enough to keep one server core busy; large files need fewer.
CONNECTIONS = {"small": 50, "medium": 50, "1mib": 16, "20mib": 8, "many": 50}
COLD_CONNECTIONS = 16
HOT_CONNECTIONS = 16
PROBE_INTERVAL = 0.005
DEFAULT_CACHE_BYTES = "16M"    # flashsrv --cache-bytes
DEFAULT_IOPS = 100             # slow disk of the disk-bound and stall rows
DEFAULT_BPS = 16 * MIB


@dataclass(frozen=True)
class ColdLarge:
    """The disk-bound large-file row: the scenario the issue's targets were measured in."""

    file_size: int = 8 * MIB
    files: int = 60          # 480 MiB: an 8 s run at 16 MiB/s reads about a quarter of it
    quick_files: int = 16    # --quick: runs of 1-2 s read at most ~32 MiB
    clients: int = 8
    seconds: float = 8.0     # unless --duration is given
    quick_seconds: float = 2.0
    probe_interval: float = 0.010
    iops: int = 120          # unless --throttle-iops / --throttle-bps are given
    bps: int = 16 * MIB
    helpers: int = 8         # flashsrv --helpers, unless --helpers is given
    cache_bytes: str = "1M"  # flashsrv --cache-bytes, unless --cache-bytes is given


COLD_LARGE = ColdLarge()


# --------------------------------------------------------------------------------------------
# Machine, tools, small utilities


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
        "wrk": _first_line(["wrk", "--version"]),
        "nginx": _first_line(["nginx", "-v"]),
        "flashsrv commit": commit or "unknown",
    }


def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


# --------------------------------------------------------------------------------------------
# Data sets


@dataclass
class Dataset:
    root: Path
    many: list[str] = field(default_factory=list)
    cold: list[str] = field(default_factory=list)
    coldlarge: list[str] = field(default_factory=list)

    def files(self, paths: list[str]) -> Iterator[Path]:
        for p in paths:
            yield self.root / p.lstrip("/")


def _write(path: Path, size: int, block: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        full, rest = divmod(size, len(block))
        for _ in range(full):
            f.write(block)
        f.write(block[:rest])


def make_dataset(base: Path, quick: bool, workloads: list[str]) -> Dataset:
    """Write the files; the many/cold/large sets only when a workload needs them."""
    root = base / "www"
    ds = Dataset(root)
    rng = random.Random(1999)
    block = rng.randbytes(MIB)  # incompressible, like real media
    html = (b"<!doctype html><title>bench</title>" + b"<p>flashsrv benchmark page</p>\n" * 80)
    _write(root / "small.html", 2 * KB, html.ljust(2 * KB, b"\n"))
    _write(root / "medium.jpg", 100 * KB, block)
    _write(root / "big.bin", MIB, block)
    _write(root / "large.mp4", 20 * MIB, block)
    # Each file of a set starts at a different offset of the block so that no two are equal.
    if "many" in workloads:
        n = 400 if quick else 2000  # 40 MB / 200 MB of 100 KB files, vs --cache-bytes 16M
        ds.many = [f"/many/m{i:04d}.jpg" for i in range(n)]
    if "disk" in workloads or "stall" in workloads:
        n = 400 if quick else 2000
        ds.cold = [f"/cold/c{i:04d}.jpg" for i in range(n)]
    for i, p in enumerate([*ds.many, *ds.cold]):
        off = (i * 4099) % (MIB - 100 * KB)
        _write(root / p.lstrip("/"), 100 * KB, block[off:off + 100 * KB])
    if "coldlarge" in workloads:
        n = COLD_LARGE.quick_files if quick else COLD_LARGE.files
        ds.coldlarge = [f"/coldlarge/l{i:02d}.bin" for i in range(n)]
        for p in ds.coldlarge:  # each one its own random bytes: no two files share a page
            data = rng.randbytes(COLD_LARGE.file_size)
            _write(root / p.lstrip("/"), len(data), data)
    os.sync()  # dirty pages cannot be evicted: flush them so DONTNEED really makes files cold
    return ds


def warm(paths: Iterator[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(MIB):
                pass


def evict(paths: Iterator[Path]) -> int:
    """Drop the files' pages from the page cache; returns how many still have pages there."""
    left = list(paths)
    for attempt in range(2):
        if attempt:
            os.sync()  # a dirty page or one under writeback is not dropped: flush, try again
        for p in left:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        left = [p for p in left if resident_pages(p)]
        if not left:
            break
    return len(left)


def resident_pages(path: Path) -> int:
    """Pages of `path` in the page cache, by mincore() over a mapping that is never touched.

    Not by a RWF_NOWAIT read: on a miss that read returns EAGAIN but starts readahead (measured
    here, kernel 6.18: 4 pages), from this process, outside the throttle, so the check itself
    would make the head of every file warm."""
    import ctypes
    import mmap

    size = path.stat().st_size
    if not size:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    # A private mapping (ACCESS_COPY) is writable for ctypes yet never writes to the file.
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        view = (ctypes.c_char * size).from_buffer(m)
        try:
            failed = libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size),
                                  vec)
        finally:
            del view  # the mapping cannot close while a ctypes view exports it
    if failed:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(b & 1 for b in vec)


# --------------------------------------------------------------------------------------------
# Slow disk: a cgroup read throttle on the server's processes


class Throttle:
    """A cgroup whose reads from one block device the kernel slows down (blkio or io.max)."""

    def __init__(self, path: Path, version: int, device: str) -> None:
        self.path, self.version, self.device = path, version, device

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    @classmethod
    def create(cls, data_dir: Path) -> tuple[Throttle | None, str]:
        """The throttle, or None and the reason why a slow disk is not possible here."""
        if os.geteuid() != 0:
            return None, "not root: cannot create a cgroup to slow the disk down"
        device = block_device_of(data_dir)
        if device is None:
            return None, f"{data_dir} is not on a block device (tmpfs/overlay?): use --data-dir"
        name = f"flashsrv-bench-{os.getpid()}"
        v1 = Path("/sys/fs/cgroup/blkio")
        if (v1 / "blkio.throttle.read_bps_device").exists():
            path = v1 / name
            path.mkdir(exist_ok=True)
            return cls(path, 1, device), "cgroup v1 blkio throttle"
        v2 = cgroup2_mount()
        if v2 is not None and "io" in (v2 / "cgroup.controllers").read_text().split():
            try:
                (v2 / "cgroup.subtree_control").write_text("+io")
                path = v2 / name
                path.mkdir(exist_ok=True)
            except OSError as e:
                return None, f"cgroup v2 io controller not usable: {e}"
            return cls(path, 2, device), "cgroup v2 io.max"
        return None, "no cgroup io controller (neither v1 blkio nor v2 io) on this machine"

    def limit(self, iops: int, bps: int) -> None:
        if self.version == 1:
            (self.path / "blkio.throttle.read_iops_device").write_text(f"{self.device} {iops}")
            (self.path / "blkio.throttle.read_bps_device").write_text(f"{self.device} {bps}")
        else:
            (self.path / "io.max").write_text(f"{self.device} riops={iops} rbps={bps}")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            if self.version == 1:
                (self.path / "blkio.throttle.read_iops_device").write_text(f"{self.device} 0")
                (self.path / "blkio.throttle.read_bps_device").write_text(f"{self.device} 0")
            else:
                (self.path / "io.max").write_text(f"{self.device} riops=max rbps=max")

    def reads(self) -> int:
        """Read operations the kernel has passed through the throttle so far."""
        name = "blkio.throttle.io_serviced" if self.version == 1 else "io.stat"
        with contextlib.suppress(OSError):
            for line in (self.path / name).read_text().splitlines():
                if self.version == 1 and line.startswith(self.device) and " Read " in line:
                    return int(line.split()[-1])
                if self.version == 2 and line.startswith(self.device):
                    kv = dict(x.split("=") for x in line.split()[1:])
                    return int(kv.get("rios", 0))
        return 0

    def remove(self) -> None:
        self.clear()
        parent = self.path.parent / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in self.procs.read_text().split():
                with contextlib.suppress(OSError):
                    parent.write_text(pid)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        log(f"could not remove cgroup {self.path}")


def block_device_of(path: Path) -> str | None:
    """'major:minor' of the whole disk holding `path` (throttles take disks, not partitions)."""
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if os.major(dev) == 0 or not sys_dev.exists():
        return None
    if (sys_dev / "partition").exists():
        return (sys_dev.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


def cgroup2_mount() -> Path | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return Path(parts[1])
    return None


# --------------------------------------------------------------------------------------------
# Servers


@dataclass
class ServerSpec:
    key: str          # name on the command line (--servers)
    label: str        # name in the table
    kind: str         # flashsrv | nginx | floor | granian | uvicorn
    workloads: list[str]
    model: str | None = None
    access_log: bool = False
    prefix: str = ""  # URL prefix under which the data set is served
    only_why: str = ""  # why it runs only `workloads`: a note when others are asked for


FULL = ALL_WORKLOADS
FLOOR = "floor (bare uvloop+httptools)"
SERVERS = [
    ServerSpec("nginx", "nginx", "nginx", FULL),
    ServerSpec("floor", FLOOR, "floor", ["small"],
               only_why="a constant 2 KB response, no files: loadtests/floor_server.py"),
    # Measured before any disk-bound run, whose evictions and writeback would tax its log file.
    ServerSpec("amped+log", "flashsrv amped, access log on", "flashsrv", ["small"],
               model="amped", access_log=True),
    ServerSpec("amped", "flashsrv amped", "flashsrv", FULL, model="amped"),
    ServerSpec("sped", "flashsrv sped", "flashsrv", FULL, model="sped"),
    ServerSpec("threads", "flashsrv threads", "flashsrv", FULL, model="threads"),
    ServerSpec("granian", "granian static", "granian", list(CACHED), prefix="/static"),
    ServerSpec("uvicorn", "uvicorn+starlette", "uvicorn", list(CACHED)),
]

NGINX_CONF = """\
{user}worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    types {{ text/html html; text/css css; image/jpeg jpg; video/mp4 mp4; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=10000 inactive=120s;
    open_file_cache_valid 120s;
    open_file_cache_min_uses 1;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
{temp_paths}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
}}
"""

GRANIAN_APP = '''\
"""Everything is a static file: the app only answers what the mount does not."""


async def app(scope, proto):
    proto.response_empty(404, [])
'''

STARLETTE_APP = '''\
import os

from starlette.staticfiles import StaticFiles

app = StaticFiles(directory=os.environ["BENCH_ROOT"])
'''


@dataclass
class Tools:
    peers_bin: list[Path]
    flashsrv_help: str | None  # `flashsrv serve --help`, or None when flashsrv is not usable
    cpus: tuple[int, int] | None  # (server core, load-generator core)

    def find(self, name: str) -> Path | None:
        for d in self.peers_bin:
            if (d / name).exists():
                return d / name
        found = shutil.which(name)
        return Path(found) if found else None


def discover_tools(peers_venv: Path | None) -> Tools:
    bins = [Path(peers_venv) / "bin"] if peers_venv else []
    bins.append(Path(sys.executable).parent)
    r = subprocess.run([sys.executable, "-m", "flashsrv", "serve", "--help"],
                       capture_output=True, text=True, cwd=REPO)
    help_text = r.stdout if r.returncode == 0 else None
    cpus = sorted(os.sched_getaffinity(0))
    pair = (cpus[0], cpus[1]) if len(cpus) >= 2 and shutil.which("taskset") else None
    return Tools(bins, help_text, pair)


def unavailable(spec: ServerSpec, tools: Tools) -> str | None:
    """Why this server cannot run here, or None."""
    if spec.kind == "flashsrv":
        if tools.flashsrv_help is None:
            return "flashsrv is not installed (pip install -e .)"
        if "--model" not in tools.flashsrv_help and spec.model != "amped":
            return "this flashsrv has no --model option yet"
    if spec.kind == "nginx" and not shutil.which("nginx"):
        return "nginx not found (apt-get install nginx-light)"
    if spec.kind == "floor":
        import importlib.util
        missing = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install -e .)"
    if spec.kind == "granian" and not tools.find("granian"):
        return "granian not found (pip install granian, or --peers-venv DIR)"
    if spec.kind == "uvicorn":
        uv = tools.find("uvicorn")
        if uv is None:
            return "uvicorn not found (pip install uvicorn starlette, or --peers-venv DIR)"
        ok = subprocess.run([str(uv.parent / "python"), "-c", "import starlette"],
                            capture_output=True).returncode == 0
        if not ok:
            return f"starlette is not installed next to {uv}"
    return None


@dataclass(frozen=True)
class CpuTimes:
    """utime and stime, in seconds, of a server's main process and of all its processes."""

    main_user: float = 0.0
    main_sys: float = 0.0
    user: float = 0.0
    sys: float = 0.0

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def total(self) -> float:
        return self.user + self.sys


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.spec.prefix}"

    def cpu_times(self) -> CpuTimes:
        """User and system CPU of the main process and of its whole process group (workers,
        helpers; the server is started in a session of its own), from /proc/PID/stat."""
        tick = os.sysconf("SC_CLK_TCK")
        main = (0, 0)
        user = system = 0
        for pid, stat in group_stats(self.proc.pid):
            if pid == self.proc.pid:
                main = (int(stat[11]), int(stat[12]))
            # + cutime, cstime: a helper that exited (and was reaped) during the run counts too
            user += int(stat[11]) + int(stat[13])
            system += int(stat[12]) + int(stat[14])
        return CpuTimes(main[0] / tick, main[1] / tick, user / tick, system / tick)

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


def server_command(spec: ServerSpec, tools: Tools, ds: Dataset, work: Path, port: int,
                   args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if spec.kind == "flashsrv":
        cmd = [sys.executable, "-m", "flashsrv", "serve", str(ds.root), "--host", "127.0.0.1",
               "--port", str(port), "--cache-bytes", args.cache_bytes]
        if "--model" in (tools.flashsrv_help or ""):
            cmd += ["--model", spec.model or "amped"]
        if args.helpers:
            cmd += ["--helpers", str(args.helpers)]
        cmd += ["--access-log", str(work / f"access-{spec.key}.log") if spec.access_log
                else "off"]
        return cmd, env
    if spec.kind == "nginx":
        conf = work / f"nginx-{port}"
        conf.mkdir()
        (conf / "nginx.conf").write_text(nginx_conf(conf, ds.root, port))
        return ["nginx", "-p", str(conf), "-c", "nginx.conf", "-g", "daemon off;"], env
    if spec.kind == "floor":  # the same body size as the cached small file
        size = (ds.root / CACHED["small"].lstrip("/")).stat().st_size
        return [sys.executable, str(Path(__file__).resolve().parent / "floor_server.py"),
                "--port", str(port), "--body-bytes", str(size)], env
    if spec.kind == "granian":
        (work / "bench_granian_app.py").write_text(GRANIAN_APP)
        return [str(tools.find("granian")), "--interface", "rsgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--runtime-threads", "1", "--no-ws",
                "--log-level", "warning", "--static-path-route", "/static",
                "--static-path-mount", str(ds.root), "--working-dir", str(work),
                "bench_granian_app:app"], env
    uv = tools.find("uvicorn")
    assert uv is not None
    (work / "bench_starlette_app.py").write_text(STARLETTE_APP)
    env["BENCH_ROOT"] = str(ds.root)
    return [str(uv.parent / "python"), "-m", "uvicorn", "--host", "127.0.0.1",
            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--app-dir", str(work),
            "bench_starlette_app:app"], env


def nginx_conf(prefix: Path, root: Path, port: int) -> str:
    # Temp paths of the compiled-in modules, so that nginx never needs /var/lib/nginx.
    configure = _first_line(["sh", "-c", "nginx -V 2>&1 | grep configure"])
    temp = ["    client_body_temp_path {d}/body;"]
    for mod in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{mod}_module" not in configure:
            temp.append(f"    {mod}_temp_path {{d}}/{mod};")
    user = ""
    if os.geteuid() == 0:  # as root, workers would switch to "nobody" and lose the files
        import pwd
        user = f"user {pwd.getpwuid(0).pw_name};\n"
    return NGINX_CONF.format(user=user, dir=prefix, port=port, root=root,
                             temp_paths="\n".join(temp).format(d=prefix))


def start_server(spec: ServerSpec, tools: Tools, ds: Dataset, work: Path,
                 args: argparse.Namespace, throttle: Throttle | None) -> Running:
    port = free_port()
    cmd, env = server_command(spec, tools, ds, work, port, args)
    if tools.cpus:
        cmd = ["taskset", "-c", str(tools.cpus[0]), *cmd]
    if throttle is not None:
        # The wrapper shell joins the cgroup and then execs the server: the server and every
        # helper it starts are in the cgroup from their first instruction on.
        cmd = ["sh", "-c", f'echo $$ > {shlex.quote(str(throttle.procs))} && exec "$@"',
               "sh", *cmd]
    log_path = work / f"server-{spec.key}.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=work,
                                start_new_session=True)
    running = Running(spec, proc, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.label} exited with {proc.returncode}:\n"
                               f"{running.log_tail()}")
        with contextlib.suppress(OSError):
            if http_get(port, spec.prefix + CACHED["small"], timeout=2)[0] == 200:
                return running
        time.sleep(0.1)
    stop_server(running)
    raise RuntimeError(f"{spec.label} did not answer within 30 s:\n{running.log_tail()}")


def stop_server(running: Running, grace: float = 15.0) -> list[str]:
    """SIGTERM (nginx: SIGQUIT), then SIGKILL; returns problems seen while stopping."""
    problems: list[str] = []
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT if running.spec.kind == "nginx" else signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            problems.append(f"did not exit within {grace:.0f} s of SIGTERM: killed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.returncode not in (0, -signal.SIGTERM) and not problems:
        problems.append(f"exit status {proc.returncode} after SIGTERM")
    time.sleep(0.3)
    left = [p for p in pids_in_group(proc.pid) if p != proc.pid]
    if left:
        problems.append(f"processes left after it exited: {left}: killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return problems


def group_stats(pgid: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, fields of /proc/PID/stat after the command name) of every process in `pgid`:
    fields[0] is the state, [2] the process group, [11:15] utime, stime, cutime, cstime."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    yield int(d.name), fields


def pids_in_group(pgid: int) -> list[int]:
    return [pid for pid, fields in group_stats(pgid) if fields[0] != "Z"]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


# --------------------------------------------------------------------------------------------
# Load generation: wrk with a small Lua script, and the stall probe


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
    """One wrk process, pinned to the load-generator core; results parsed from its Lua hook."""

    def __init__(self, tools: Tools, work: Path, srv: Running, paths: list[str],
                 connections: int, seconds: float, mode: str = "single", start: int = 0) -> None:
        script = work / f"wrk-{time.monotonic_ns()}.lua"
        lua = WRK_DONE
        url = srv.base + paths[0]
        if mode != "single":
            listed = ",".join(f'"{srv.spec.prefix}{p}"' for p in paths)
            lua = (WRK_PATHS.replace("%PATHS%", listed).replace("%START%", str(start))
                   .replace("%SEED%", str(start + 7))
                   .replace("%RANDOM%", "true" if mode == "random" else "false")) + lua
        script.write_text(lua)
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(script), url]
        if mode == "bulk":
            # wrk reads 8 KiB per recv(): for MiB-sized bodies it, not the server, is the limit.
            cmd = [sys.executable, __file__, "--bulk-loader", str(srv.port),
                   ",".join(srv.spec.prefix + p for p in paths), str(connections), str(seconds)]
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
        for line in text.splitlines():
            if line.startswith("WRKJSON "):
                d = json.loads(line[8:])
                seconds = d["duration_us"] / 1e6
                return WrkResult(
                    requests=int(d["requests"]), bytes=int(d["bytes"]), seconds=seconds,
                    errors=int(d["connect"] + d["read"] + d["write"] + d["status"]
                               + d["timeout"]),
                    p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000,
                    cpu=(usage.ru_utime + usage.ru_stime) / seconds if seconds else 0.0,
                    started=int(d.get("started", 0)))
        raise RuntimeError(f"wrk failed (exit {self.proc.returncode}):\n{text[-2000:]}")


class _BulkConn:
    """One keep-alive connection of the bulk loader: a tiny HTTP/1.1 response state machine."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.head = b""
        self.left = -1        # body bytes (Content-Length) or chunk bytes still expected
        self.chunked = False
        self.line = b""       # partial chunk-size line
        self.trailer = False  # after the last chunk: waiting for the final empty line
        self.sent = 0.0

    def send(self, request: bytes) -> None:
        self.sent = time.monotonic()
        self.sock.sendall(request)

    def feed(self, data: memoryview) -> bool:
        """Consume received bytes; True when the response is complete."""
        if self.left < 0 and not self.chunked:
            before = len(self.head)
            self.head += bytes(data[:16384])  # copy the head only, never the body
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    raise ValueError("bulk loader: response head too large")
                return False
            head, rest = self.head[:end], data[end + 4 - before:]
            self.head = b""
            if not head.startswith(b"HTTP/1.1 2"):
                raise ValueError(f"bulk loader: unexpected response {head[:100]!r}")
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.left = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked, self.left = True, 0
            if self.left < 0:
                raise ValueError("bulk loader: response without Content-Length")
            return self.feed(rest) if len(rest) or not self.chunked else False
        if not self.chunked:
            self.left -= len(data)
            if self.left <= 0:
                self.left = -1
                return True
            return False
        return self._feed_chunked(data)

    def _feed_chunked(self, data: memoryview) -> bool:
        i, n = 0, len(data)
        while i < n:
            if self.left > 0:
                take = min(self.left, n - i)
                self.left -= take
                i += take
                continue
            j = bytes(data[i:min(n, i + 64)]).find(b"\n")
            if j < 0:
                self.line += bytes(data[i:min(n, i + 64)])
                i = min(n, i + 64)
                continue
            line = (self.line + bytes(data[i:i + j])).strip()
            self.line = b""
            i += j + 1
            if self.trailer:
                if not line:
                    self.chunked, self.trailer, self.left = False, False, -1
                    return True
            elif line:
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.trailer = True
                self.left = size
        return False


def bulk_loader(port: int, paths: list[str], connections: int, seconds: float) -> None:
    """A load generator for large bodies: epoll plus recv_into a 4 MiB buffer (no parsing of
    the body), so that one core can absorb what the server sends. Prints wrk's JSON line.

    With several paths every request takes the next one from a shuffled deck (the same order
    for every server): no file is asked for twice before all of them were, so cold stays cold."""
    import selectors

    requests = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths]
    rng = random.Random(1999)
    deck: list[bytes] = []
    started = 0

    def next_request() -> bytes:
        nonlocal started
        if not deck:
            deck.extend(rng.sample(requests, len(requests)))
        started += 1
        return deck.pop()

    buf = memoryview(bytearray(4 * MIB))
    sel = selectors.DefaultSelector()
    conns = [_BulkConn(port) for _ in range(connections)]
    t0 = time.monotonic()
    end = t0 + seconds
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
        c.send(next_request())
    done, received, errors, lat = 0, 0, 0, []
    while (now := time.monotonic()) < end:
        for key, _ in sel.select(min(0.5, end - now)):
            c = key.data
            try:
                n = c.sock.recv_into(buf)
                if n == 0:
                    raise ConnectionError("closed by the server")
                received += n
                if c.feed(buf[:n]):
                    done += 1
                    lat.append(time.monotonic() - c.sent)
                    c.send(next_request())
            except (OSError, ValueError):
                errors += 1
                sel.unregister(c.sock)
                c.sock.close()
                c.__init__(port)
                sel.register(c.sock, selectors.EVENT_READ, c)
                c.send(next_request())
    elapsed = time.monotonic() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else 0.0

    print("WRKJSON " + json.dumps({
        "requests": done, "bytes": received, "duration_us": elapsed * 1e6, "connect": 0,
        "read": errors, "write": 0, "status": 0, "timeout": 0, "p50_us": pct(0.5),
        "p99_us": pct(0.99), "max_us": pct(1.0), "started": started}), flush=True)


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


# --------------------------------------------------------------------------------------------
# Running the workloads


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
    def __init__(self, args: argparse.Namespace, tools: Tools, ds: Dataset, work: Path,
                 throttle: Throttle | None) -> None:
        self.args, self.tools, self.ds, self.work, self.throttle = (
            args, tools, ds, work, throttle)
        self.rows: list[Row] = []
        self.problems: list[str] = []

    def measure(self, srv: Running, workload: str) -> Row:
        a, ds = self.args, self.ds
        if workload in CACHED:
            paths = [CACHED[workload]]
            mode = "bulk" if workload in ("1mib", "20mib") else "single"
            if a.warmup:
                Wrk(self.tools, self.work, srv, paths, CONNECTIONS[workload],
                    a.warmup, mode).result()
            return self._run(srv, workload, [(paths, CONNECTIONS[workload], mode)])
        if workload == "many":
            warm(ds.files(ds.many))
            return self._run(srv, workload, [(ds.many, CONNECTIONS["many"], "random")])
        if workload in ("disk", "stall"):
            return self._cold(srv, workload)
        if workload == "coldlarge":
            return self._cold_large(srv)
        raise ValueError(workload)

    def _run(self, srv: Running, workload: str,
             loads: list[tuple[list[str], int, str]], probe: bool = False,
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
        cold = (ds.cold, a.cold_connections, "walk")
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


# --------------------------------------------------------------------------------------------
# Reporting


def ratio_column(rows: list[Row]) -> dict[int, str]:
    """'x nginx' for every row whose workload nginx also ran (req/s; MB/s for big files)."""
    ref = {r.workload: r for r in rows if r.server == "nginx"}
    out: dict[int, str] = {}
    for i, r in enumerate(rows):
        base = ref.get(r.workload)
        if base is None or r.probe_p99_ms is not None:
            out[i] = "—"
            continue
        big = r.workload in (WORKLOAD_TITLES["1mib"], WORKLOAD_TITLES["20mib"])
        num, den = (r.mbps, base.mbps) if big else (r.rps, base.rps)
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
    return out


def write_chart(rows: list[Row], path: Path) -> str | None:
    """A 2x2 PNG: cached req/s, large-file MB/s, many/disk req/s, probe latency."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install -e '.[bench]')"
    servers = list(dict.fromkeys(r.server for r in rows))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(servers)}
    panels = [
        ("Cached small files (req/s, log scale)", ["small", "medium"], "rps", True),
        ("Cached large files (MB/s)", ["1mib", "20mib"], "mbps", False),
        ("Beyond the cache (req/s, log scale)", ["many", "disk"], "rps", True),
        ("Probe latency (ms, log scale)", ["stall", "coldlarge"], "probe", True),
    ]
    probe_names = {"stall": "stall", "coldlarge": "8 MiB cold"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for ax, (title, workloads, metric, logy) in zip(axes.flat, panels, strict=True):
        titles = [WORKLOAD_TITLES[w] for w in workloads]
        # (label on the axis, workload title, Row attribute)
        groups = [(t, t, metric) for t in titles]
        if metric == "probe":  # p50 and p99 of each probe row that ran (stall when none did)
            ran = [w for w in workloads if any(r.workload == WORKLOAD_TITLES[w] for r in rows)]
            groups = [(f"{probe_names[w]} {q}", WORKLOAD_TITLES[w], f"probe_{q}_ms")
                      for w in ran or workloads[:1] for q in ("p50", "p99")]
        present = [s for s in servers if any(r.server == s and r.workload in titles
                                             for r in rows)]
        width = 0.8 / max(1, len(present))
        for k, server in enumerate(present):
            values = []
            for _, workload, attr in groups:
                r = next((r for r in rows if r.server == server and r.workload == workload),
                         None)
                values.append((getattr(r, attr) if r else None) or 0)
            xs = [i + k * width for i in range(len(groups))]
            ax.bar(xs, values, width, label=server, color=colors[server])
        ax.set_xticks([i + width * (len(present) - 1) / 2 for i in range(len(groups))],
                      [g[0] for g in groups])
        ax.set_title(title)
        if logy:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in servers]
    fig.legend(handles, servers, loc="lower center", ncol=min(4, len(servers)), fontsize=9)
    fig.suptitle("flashsrv vs nginx and peers (server on one core, load generator on another)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


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
    cmd = "python loadtests/bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = "\n".join([
        f"# flashsrv benchmark, {info['date']}", "",
        f"Machine: {machine}.", "",
        f"Command: `{cmd.strip()}`; wrk duration {args.duration:g} s per run, "
        f"`--cache-bytes {args.cache_bytes}` for flashsrv, slow disk "
        f"{args.throttle_iops} read IOPS / {args.throttle_bps / MIB:g} MiB/s.", "",
        *([cold_large_settings(args), ""] if any(
            r.workload == WORKLOAD_TITLES["coldlarge"] for r in rows) else []),
        table, "",
        *(["Targets (issue 4; issue 10 where it says so):", "", *checks, ""] if checks else []),
        *(["Notes:", "", *[f"- {n}" for n in notes], ""] if notes else []),
        "![benchmark chart](results.png)" if not chart_note else "",
    ])
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(
        {"machine": info, "rows": [asdict(r) for r in rows], "notes": notes,
         "targets": checks}, indent=2))
    return text


# --------------------------------------------------------------------------------------------
# Main


def server_args(args: argparse.Namespace, workload: str) -> argparse.Namespace:
    """The settings a server is started with for `workload` (the large-file row has its own)."""
    if workload != "coldlarge":
        return args
    return argparse.Namespace(**{
        **vars(args),
        "helpers": args.helpers if "helpers" in args.given else COLD_LARGE.helpers,
        "cache_bytes": (args.cache_bytes if "cache_bytes" in args.given
                        else COLD_LARGE.cache_bytes)})


def cold_large_throttle(args: argparse.Namespace) -> tuple[int, int]:
    """(read IOPS, read bytes/s) of the slow disk in the large-file row."""
    given = {"throttle_iops", "throttle_bps"} & args.given
    if given:  # one of them given: the slow disk of the command line, as for the other rows
        return args.throttle_iops, args.throttle_bps
    return COLD_LARGE.iops, COLD_LARGE.bps


def cold_large_seconds(args: argparse.Namespace) -> float:
    if "duration" in args.given:
        return args.duration
    return COLD_LARGE.quick_seconds if args.quick else COLD_LARGE.seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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
    p.add_argument("--warmup", type=float, help="seconds of warm-up per cached run (2; 0.5)")
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


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bulk-loader"]:  # internal: the large-file load generator process
        port, paths, conns, secs = argv[1:5]
        bulk_loader(int(port), paths.split(","), int(conns), float(secs))
        return 0
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
            if not todo:
                continue
            why_not = unavailable(spec, tools)
            if why_not:
                log(f"{spec.label}: skipped: {why_not}")
                notes.append(f"{spec.label} skipped: {why_not}")
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
                                       throttle)
                try:
                    for w in phase:
                        row = bench.measure(running, w)
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
