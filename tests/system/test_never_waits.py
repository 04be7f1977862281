"""The event loop never waits for the disk: a hot file stays fast while every slow path runs.

The site is served from tests/slow_fs.py, a FUSE mirror on which every operation (lookup, open,
read, readdir, ...) takes DELAY seconds. For each kind of request that needs the disk (cold small
files with precompressed siblings, cold large files whole and in single and multipart ranges,
on-the-fly compression, a directory listing, the single-page-app fallback, the 404 page, a file
changed on disk and revalidated) client threads keep such requests going for WINDOW seconds
while a probe fetches a hot file from memory every 10 ms on its own keep-alive connection. If
the loop made one call that waits for the filesystem, every probe due meanwhile would be late by
up to DELAY: the probe's p99 and the server's own loop-lag gauge must both stay under 50 ms.
A workload over a limit runs once more and fails if it is over again: a loop that waits for this
filesystem is late by about DELAY in every run, while a lone 60 ms hiccup (seen once in CI on
this shared VM, then not in five reruns) is the host's scheduler.

The same workloads with `--model sped` (the loop calls the disk itself) must stall the probe by
at least 300 ms: the proof that this test can fail. Every window ends by checking that nothing
leaked (connections, socket descriptors, never-awaited coroutines, tracebacks).

Lookups in one folder are serialised by the kernel on this mount (libfuse 2 does not ask for
parallel directory operations), so the large and the changed files each have a folder of their
own, and their lookups happen before the window. test_syscall_audit.py reuses the site and the
workloads below under strace.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import (
    HotProbe,
    LagSampler,
    ResponseReader,
    ServerProcess,
    abort_connection,
    admin_address,
    assert_no_leaks,
    connect,
    decompress,
    fetch,
    fuse_mount,
    memory_answers,
    read_until_eof,
    request_bytes,
    scrape_metrics,
    socket_fd_count,
    split_response,
    start_server,
    wait_until,
)

pytestmark = pytest.mark.slow

SLOW_FS = Path(__file__).resolve().parents[1] / "slow_fs.py"
# Seconds every operation of the slow filesystem takes. A request makes 10 to 30 of them (path
# walks component by component, open, read, the precompressed siblings), so at slow_fs's default
# of 0.3 s not one response of these workloads completed within a window, and the loop's part
# after the disk has answered (sending, assembling ranges, rendering the listing) went unprobed.
# At 0.1 s most complete, and one wait of the loop still costs twice the 50 ms bound.
DELAY = 0.1
SPED_STALL = 0.3  # what sped must show: a lookup waits for several operations in the loop
# The listing folder's own delay: listing it costs one lookup per entry (5,000 of them), which at
# DELAY would take over 8 minutes; at 0.2 ms it takes a second or two of a helper's time.
LISTING_DELAY = 0.0002
WINDOW = 3.0  # seconds each workload runs while the probe measures
CLIENTS = 4  # client threads per workload (the server has 4 helpers by default)
# sped serves one request at a time, each stalling the loop for a second or more: one client and
# a shorter window show that as well, and end sooner.
SPED_WINDOW, SPED_CLIENTS = 1.0, 1
PROBE_P99 = 0.05
LAG_MAX = 0.05
MiB = 1 << 20

HOT = "/hot.txt"
HOT_BODY = b"hot file, always served from memory\n" * 28  # about 1 KiB
INDEX = b"<!doctype html><title>app</title><div id=app></div>\n"
NOT_FOUND = b"<!doctype html><title>404</title><h1>no such page</h1>\n"
SMALL, BIG, COMPRESSIBLE, CHANGED, LISTED = 120, 4, 40, 2, 5000
# The whole-file workload reads big files 0 to BIG - 1 to their ends; the range workloads read
# files BIG to 2 * BIG - 1, so that they find their bytes cold.
WHOLE, RANGED = range(BIG), range(BIG, 2 * BIG)
BIG_SIZE = 8 * MiB
SERVE_ARGS = ("--admin-port", "0", "--listing", "--fallback", "index.html", "--access-log", "off")


def big_bytes(i: int, offset: int = 0, size: int = BIG_SIZE) -> bytes:
    """The bytes of big file i from offset: byte k is (k + i) % 251, so any range can be
    checked without keeping the file."""
    start = (offset + i) % 251
    return (bytes(range(251)) * (size // 251 + 2))[start:start + size]


def small_bytes(i: int, variant: str = "") -> bytes:
    return f"/* small file {i}{variant} */\n".encode() * 120  # about 3 KiB


def compressible_bytes(i: int) -> bytes:
    return b"".join(f"function f{i}_{k}() {{ return {k}; }}\n".encode() for k in range(2500))


def changed_bytes(i: int, version: int) -> bytes:
    return f"file {i}, version {version}\n".encode() * (version + 1)


def big_path(i: int) -> str:
    return f"/big/{i}/big.bin"


def changed_path(i: int) -> str:
    return f"/changed/{i}/page.txt"


def build_site(root: Path) -> None:
    """The document root every workload below reads (on the slow mount or a local folder)."""
    files: dict[str, bytes] = {HOT: HOT_BODY, "/index.html": INDEX, "/404.html": NOT_FOUND}
    for i in range(SMALL):
        files[f"/small/s{i}.css"] = small_bytes(i)
        if i % 2:  # precompressed siblings (their bytes are not really compressed: no matter)
            files[f"/small/s{i}.css.gz"] = small_bytes(i, ".gz")
            files[f"/small/s{i}.css.br"] = small_bytes(i, ".br")
    files.update({big_path(i): big_bytes(i) for i in (*WHOLE, *RANGED)})
    files.update({f"/comp/c{i}.js": compressible_bytes(i) for i in range(COMPRESSIBLE)})
    files.update({changed_path(i): changed_bytes(i, 0) for i in range(CHANGED)})
    files.update({f"/many/entry-{i:05}.txt": b"x" for i in range(LISTED)})
    for name, data in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# --- workloads -------------------------------------------------------------------------------


@dataclass
class Result:
    """One response a workload client read to its end."""

    n: int
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Workload:
    """Requests that need the disk: request(n) is the n-th (path, headers); check(result)
    raises AssertionError when a complete response is wrong; prepare(server, root) runs before
    the window (root: the backing folder); window: how long it runs while probed."""

    name: str
    request: Callable[[int], tuple[str, dict[str, str]]]
    check: Callable[[Result], None]
    prepare: Callable[[ServerProcess, Path], None] | None = None
    window: float = WINDOW
    results: list[Result] = field(default_factory=list)


def _expect(r: Result, status: int, body: bytes | None = None) -> None:
    """Raises AssertionError (with a short message: bodies are large) unless r matches."""
    if r.status != status:
        raise AssertionError(f"request {r.n}: {r.status}, not {status}: {r.body[:120]!r}")
    if body is not None and r.body != body:
        raise AssertionError(f"request {r.n}: wrong body ({len(r.body)} bytes, not "
                             f"{len(body)}): {r.body[:80]!r}")


def _require(condition: bool, r: Result) -> None:
    if not condition:
        raise AssertionError(f"request {r.n}: {r.status} {r.headers} {r.body[:120]!r}")


def _small(n: int) -> tuple[str, dict[str, str]]:
    return f"/small/s{n % SMALL}.css", ({"Accept-Encoding": "br, gzip"} if n % 4 < 2 else {})


def _check_small(r: Result) -> None:
    i = r.n % SMALL
    coding = r.headers.get("content-encoding")
    if coding and i % 2 == 0:  # no sibling: compressed on the fly (--compress)
        _expect(r, 200)
        _require(decompress(coding, r.body) == small_bytes(i), r)
    else:
        _expect(r, 200, small_bytes(i, {"br": ".br", "gzip": ".gz", None: ""}[coding]))


# The two range workloads read different parts of the same files, so each finds its bytes cold.
RANGE_AREA = (4 * MiB, 6 * MiB)
MULTI_RANGES = ((6 * MiB, 6 * MiB + 99), (7 * MiB, 7 * MiB + 4095), (BIG_SIZE - 1000, BIG_SIZE - 1))


def _range_start(n: int) -> int:
    return RANGE_AREA[0] + (n * 127_001) % (RANGE_AREA[1] - RANGE_AREA[0] - 65_536)


def _single_range(n: int) -> tuple[str, dict[str, str]]:
    start = _range_start(n)
    return big_path(RANGED[n % BIG]), {"Range": f"bytes={start}-{start + 65_535}"}


def _check_single_range(r: Result) -> None:
    _expect(r, 206, big_bytes(RANGED[r.n % BIG], _range_start(r.n), 65_536))


def _multi_range(n: int) -> tuple[str, dict[str, str]]:
    spec = ",".join(f"{a}-{b}" for a, b in MULTI_RANGES)
    return big_path(RANGED[n % BIG]), {"Range": f"bytes={spec}"}


def _check_multi_range(r: Result) -> None:
    _expect(r, 206)
    _require(r.headers.get("content-type", "").startswith("multipart/byteranges"), r)
    for a, b in MULTI_RANGES:
        _require(big_bytes(RANGED[r.n % BIG], a, b - a + 1) in r.body, r)


def _check_compressed(r: Result) -> None:
    _expect(r, 200)
    _require(r.headers.get("content-encoding") == "gzip"
             and gzip.decompress(r.body) == compressible_bytes(r.n % COMPRESSIBLE), r)


def _check_listing(r: Result) -> None:
    _expect(r, 200)
    _require(b"entry-00000.txt" in r.body and f"entry-{LISTED - 1:05}.txt".encode() in r.body, r)


def fetch_all(server: ServerProcess, paths: list[str], method: str = "GET") -> None:
    """Requests for paths, all at once (each path's lookup in a helper of its own)."""
    threads = [threading.Thread(target=fetch, args=(server, path),
                                kwargs={"method": method, "timeout": 30.0})
               for path in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def _prepare_lookups(paths: list[str]) -> Callable[[ServerProcess, Path], None]:
    """Look the big files up (HEAD) before the window: a lookup costs as much as a small file's,
    so the window is spent where large files differ, reading cold data (the mount drops a
    file's cached pages at each open, so each server starts with them cold)."""
    return lambda server, root: fetch_all(server, paths, method="HEAD")


def _prepare_changed(server: ServerProcess, root: Path) -> None:
    """Look every file up once (now cached and trusted), then write a new version of each."""
    fetch_all(server, [changed_path(i) for i in range(CHANGED)])
    for i in range(CHANGED):
        path = root / changed_path(i).lstrip("/")
        version = int(path.read_bytes().split(b"\n")[0].rpartition(b" ")[2])
        path.write_bytes(changed_bytes(i, version + 1))


def _check_changed(r: Result) -> None:
    _expect(r, 200)
    version = int(r.body.split(b"\n")[0].rpartition(b" ")[2])
    _expect(r, 200, changed_bytes(r.n % CHANGED, version))  # one version, whole


WORKLOADS = {w.name: w for w in (
    Workload("cold-small-files", _small, _check_small),
    # Long enough for the whole 8 MiB files to arrive (8 to 10 s here), ends included.
    Workload("cold-large-files", lambda n: (big_path(WHOLE[n % BIG]), {}),
             lambda r: _expect(r, 200, big_bytes(WHOLE[r.n % BIG])),
             prepare=_prepare_lookups([big_path(i) for i in WHOLE]),
             window=11.0),
    Workload("single-ranges", _single_range, _check_single_range,
             prepare=_prepare_lookups([big_path(i) for i in RANGED])),
    Workload("multipart-ranges", _multi_range, _check_multi_range),
    Workload("compress", lambda n: (f"/comp/c{n % COMPRESSIBLE}.js", {"Accept-Encoding": "gzip"}),
             _check_compressed),
    Workload("listing", lambda n: ("/many/", {}), _check_listing),
    Workload("fallback", lambda n: (f"/app/route-{n}", {"Accept": "text/html"}),
             lambda r: _expect(r, 200, INDEX)),
    Workload("error-page", lambda n: (f"/missing-{n}.html", {}),
             lambda r: _expect(r, 404, NOT_FOUND)),
    Workload("changed-file", lambda n: (changed_path(n % CHANGED), {}), _check_changed,
             prepare=_prepare_changed),
)}

# What one test runs on one server: workloads in turn, each in a window of its own (the three
# large-file workloads share a server to save its start).
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cold-small-files": (("cold-small-files",), ()),
    "large-files": (("cold-large-files", "single-ranges", "multipart-ranges"), ()),
    "compress": (("compress",), ("--compress",)),
    "listing": (("listing",), ()),
    "fallback": (("fallback",), ()),
    "error-page": (("error-page",), ()),
    "changed-file": (("changed-file",), ()),
}


class Clients:
    """Threads that each send the workload's next request on a fresh connection and read the
    response to its end, until stopped; stop() resets the connections still open."""

    def __init__(self, server: ServerProcess, workload: Workload, clients: int = CLIENTS) -> None:
        self.server = server
        self.workload = workload
        self.numbers = itertools.count()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self.stopping.is_set():
            n = next(self.numbers)
            path, headers = self.workload.request(n)
            try:
                sock = connect(self.server, timeout=30)
            except OSError as exc:
                self.errors.append(f"connect: {exc}")
                return
            with self.lock:
                if self.stopping.is_set():  # stop() has reset the others already
                    sock.close()
                    return
                self.open.add(sock)
            try:
                sock.sendall(request_bytes(self.server, path, headers=headers, close=True))
                data = read_until_eof(sock, timeout=30, limit=1 << 30)
                if self.stopping.is_set():
                    return  # cut short by stop(): incomplete on purpose
                status, head, body = split_response(data, path)
                self.workload.results.append(Result(n, status, head, body))
            except TimeoutError:
                self.errors.append(f"{path}: no response within 30 s")
            except (OSError, AssertionError) as exc:
                if not self.stopping.is_set():
                    self.errors.append(f"{path}: {exc}")
            finally:
                with self.lock:
                    self.open.discard(sock)
                sock.close()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            for sock in list(self.open):
                abort_connection(sock)
        for t in self.threads:
            t.join(30)


# --- servers on the slow mount ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(backing, mountpoint): the site, mirrored by slow_fs.py with DELAY per operation."""
    base = tmp_path_factory.mktemp("never_waits")
    backing = base / "backing"
    build_site(backing)
    mountpoint = base / "mnt"
    with fuse_mount(SLOW_FS, backing, mountpoint, "--delay", str(DELAY),
                    "--delay-under", f"/many={LISTING_DELAY}", log=base / "slow_fs.log"):
        yield backing, mountpoint


@dataclass
class Served:
    """A server, its hot file warm, and what the leak check compares with."""

    server: ServerProcess
    admin: tuple[str, int]
    socket_baseline: int


def warm_hot_file(served: Served, meanwhile: threading.Thread | None = None,
                  timeout: float = 30.0) -> None:
    """Fetch the hot file until a fetch is answered at once from memory (counted so, in under
    50 ms), and keep fetching it every 100 ms while `meanwhile` runs: an entry nobody asks for
    goes stale within a second, and the probe must find it fresh."""
    deadline = time.monotonic() + timeout
    with connect(served.server, timeout=timeout) as s:
        reader = ResponseReader(s)
        while time.monotonic() < deadline:
            before = memory_answers(scrape_metrics(served.admin))
            started = time.monotonic()
            s.sendall(request_bytes(served.server, HOT))
            resp = reader.read()
            took = time.monotonic() - started
            assert (resp.status, resp.body) == (200, HOT_BODY), f"hot file: {resp.status}"
            hit = memory_answers(scrape_metrics(served.admin)) > before
            if meanwhile is not None and meanwhile.is_alive():
                time.sleep(0.1)
            elif hit and took < 0.05:
                return
    pytest.fail(f"the hot file was not served from memory within {timeout} s")


@pytest.fixture(scope="module")
def stopping(slow_site: tuple[Path, Path]) -> Iterator[list[ServerProcess]]:
    """Servers told to stop (SIGTERM) but not waited for: a shutdown waits for helpers that
    are deep in slow operations, and may as well overlap the next test. All are reaped here,
    before the mount goes."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        status = server.stop()
        assert status == 0 and "Traceback" not in server.stderr_text(), \
            f"exit status {status} after SIGTERM:\n{server.stderr_text()[-3000:]}"


@contextlib.contextmanager
def serving(root: Path, *args: str, stop_later: list[ServerProcess] | None = None
            ) -> Iterator[Served]:
    """A server on root with SERVE_ARGS + args, its hot file warm, no client connected; stopped
    afterwards (or only told to, with stop_later)."""
    server = start_server(root, *SERVE_ARGS, *args)
    try:
        admin = admin_address(server)
        served = Served(server, admin, 0)
        warm_hot_file(served)
        assert wait_until(lambda: scrape_metrics(admin)["flashsrv_open_connections"] == 0, 5)
        served.socket_baseline = socket_fd_count(server.proc.pid)
        yield served
    finally:
        if stop_later is None:
            server.stop()
        else:
            server.proc.send_signal(signal.SIGTERM)
            stop_later.append(server)


def prepare(served: Served, workload: Workload, backing: Path) -> None:
    """The workload's preparation, if any, while the hot file is kept warm."""
    if workload.prepare is None:
        warm_hot_file(served)
        return
    preparing = threading.Thread(target=workload.prepare, args=(served.server, backing))
    preparing.start()
    warm_hot_file(served, meanwhile=preparing)
    preparing.join(60)


def run_under_probe(served: Served, workload: Workload, backing: Path,
                    window: float | None = None, clients: int = CLIENTS, warm: bool = True
                    ) -> tuple[HotProbe, LagSampler, Clients]:
    """The workload, prepared, for its window (then its connections reset) while the probe
    fetches the hot file and the loop lag is sampled; the hot file is warmed first (unless
    not warm)."""
    workload.results = []
    if warm:
        prepare(served, workload, backing)
    elif workload.prepare is not None:
        workload.prepare(served.server, backing)
    with LagSampler(served.admin) as lag, HotProbe(served.server, HOT, HOT_BODY) as probe:
        with Clients(served.server, workload, clients) as running:
            time.sleep(workload.window if window is None else window)
        time.sleep(0.3)  # the server handles the resets of the cut connections while probed
    return probe, lag, running


def verdicts(served: Served, workload: Workload, clients: Clients) -> list[str]:
    """What went wrong besides timing: wrong responses, client errors, leaks."""
    problems = [f"client error: {e}" for e in clients.errors[:5]]
    for result in workload.results:
        try:
            workload.check(result)
        except AssertionError as exc:
            problems.append(f"wrong response: {exc}")
    try:
        assert_no_leaks(served.server, served.admin, served.socket_baseline)
    except AssertionError as exc:
        problems.append(f"leak: {exc}")
    return [f"{workload.name} ({len(workload.results)} responses complete): {p}"
            for p in problems]


def timing_problems(name: str, probe: HotProbe, lag: LagSampler) -> list[str]:
    """What says the loop waited during a workload: the hot file's p99, the loop's lag."""
    problems = []
    if probe.p99() >= PROBE_P99:
        problems.append(f"{name}: the hot file waited: {probe.summary()}; the loop "
                        f"lagged at most {lag.max_lag():.3f} s meanwhile")
    if lag.max_lag() >= LAG_MAX:
        problems.append(f"{name}: the loop lagged {lag.max_lag():.3f} s ({lag.gauge()})")
    return problems


@pytest.mark.parametrize("group", list(GROUPS))
def test_slow_disk_work_never_delays_a_hot_file(slow_site: tuple[Path, Path],
                                                stopping: list[ServerProcess], group: str):
    backing, mountpoint = slow_site
    names, args = GROUPS[group]
    problems = []
    with serving(mountpoint, *args, stop_later=stopping) as served:
        for name in names:
            workload = WORKLOADS[name]
            for attempt in (1, 2):
                probe, lag, clients = run_under_probe(served, workload, backing)
                wrong = verdicts(served, workload, clients)
                wrong += [f"{name}: probe error {e}" for e in probe.errors[:3]]
                late = timing_problems(name, probe, lag)
                # A loop that waits for the disk waits in every run (SPED: 0.3-1.5 s each
                # time); one stall just over the limit that does not come back is this shared
                # VM's scheduler. So only a stall seen in two runs in a row fails the test.
                if wrong or not late or attempt == 2:
                    problems += wrong + late
                    break
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_the_probe_sees_a_loop_that_waits(slow_site: tuple[Path, Path],
                                         stopping: list[ServerProcess]):
    """With --model sped the loop itself waits for each lookup: the probe must see stalls of at
    least SPED_STALL in each of these workloads, or the test above could not fail. (The hot file
    is warm for the first only: in sped its revalidation stalls the loop too, which is fair.)"""
    backing, mountpoint = slow_site
    problems = []
    with serving(mountpoint, "--model", "sped", stop_later=stopping) as served:
        for i, name in enumerate(("cold-small-files", "error-page")):
            workload = WORKLOADS[name]
            probe, lag, clients = run_under_probe(served, workload, backing, SPED_WINDOW,
                                                  SPED_CLIENTS, warm=i == 0)
            problems += verdicts(served, workload, clients)
            if probe.max() < SPED_STALL:
                problems.append(f"{name}: sped did not stall the probe: {probe.summary()}; "
                                f"loop lag {lag.max_lag():.3f} s")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
