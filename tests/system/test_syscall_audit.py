"""Syscall audit: what the event loop's thread actually asks the kernel while every slow path runs.

test_never_waits.py measures that the loop does not wait; this audit shows why, call by call.
strace follows only the server's main thread (`-p PID`, no `-f`): the helpers are separate
processes whose job is to wait, and other threads of the main process (the log writers) may
wait too; only the loop thread must never. While it is traced, the workloads of
test_never_waits.py run to completion one after another, with a probe on the hot file, and then
every traced call is checked against ALLOWED below, a table of calls that cannot wait and why.
A call that is not in it fails the test with its strace line, so a new blocking call cannot
slip in unnoticed. Two runs:

- on tests/slow_fs.py (FUSE): no path calls at all, and no descriptor of a file of the mount in
  any call, not even one passed by a helper (the kernel forwards reads, fstat and even close to
  the FUSE daemon and waits for its answer), except a `preadv2(..., RWF_NOWAIT)` that fails at
  once with EOPNOTSUPP (a probe);
- on a local ext4 folder whose large files are evicted from the page cache before each
  workload: reads of files only as `preadv2(..., RWF_NOWAIT)`, fstat of held descriptors, and
  each `sendfile` only over pages that the latest `mincore` over them, on a read-only shared
  mapping of the same descriptor, showed resident.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import HotProbe, assert_no_leaks, fuse_mount, wait_until
from test_never_waits import (
    HOT,
    HOT_BODY,
    SLOW_FS,
    WORKLOADS,
    Clients,
    Served,
    build_site,
    serving,
)

pytestmark = pytest.mark.slow

# The audit counts calls, not time: a short delay lets every workload run to its end (whole
# 8 MiB files included) so that each path is traced to its last call. Still FUSE: reads without
# waiting are refused (EOPNOTSUPP), and every operation goes through the daemon.
AUDIT_DELAY = 0.02
RESULTS_PER_WORKLOAD = 4  # complete responses each workload must produce while traced
WORKLOAD_TIMEOUT = 30.0
PAGE = os.sysconf("SC_PAGE_SIZE")
STRACE = ("strace", "-qq", "-y", "-v", "-tt", "-s", "48", "-e", "trace=all")

# --- parsing strace output -------------------------------------------------------------------

LINE_RE = re.compile(r"^(?:\d\d:\d\d:\d\d\.\d+ )?(?P<rest>.*)$")
CALL_RE = re.compile(r"^(?P<name>[a-z_0-9]+)\((?P<args>.*)\)\s+=\s+(?P<ret>.*)$")
FD_RE = re.compile(r"^(?P<fd>-?\d+)<(?P<target>.*)>$")


@dataclass
class Call:
    """One complete system call of the traced thread."""

    line: str  # as strace printed it (an interrupted call: both halves, joined)
    name: str
    args: list[str]
    ret: str

    def fd(self, index: int = 0) -> tuple[int, str] | None:
        """(descriptor, what strace -y says it is) of argument index, if it is a descriptor."""
        if index >= len(self.args):
            return None
        m = FD_RE.match(self.args[index])
        return (int(m.group("fd")), m.group("target")) if m else None

    @property
    def errno(self) -> str | None:
        m = re.match(r"-1 ([A-Z0-9_]+)", self.ret)
        return m.group(1) if m else None

    def number(self) -> int:
        """The return value as an integer (a descriptor's number for calls that make one)."""
        return int(re.match(r"-?(0x[0-9a-f]+|\d+)", self.ret).group(0), 0)


def split_args(text: str) -> list[str]:
    """Top-level arguments of a strace call: commas inside quotes, brackets, braces and -y
    annotations (`12</a,b>`) do not split."""
    args, depth, start, i = [], 0, 0, 0
    quoted = False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "([{" or (c == "<" and i and text[i - 1].isdigit()):
            depth += 1
        elif c in ")]}>" and depth:
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    tail = text[start:].strip()
    if tail:
        args.append(tail)
    return args


def parse_strace(text: str) -> tuple[list[Call], list[str]]:
    """(complete calls, lines that are not calls and not signal or exit notes). A call that a
    signal interrupted is printed as `name(args <unfinished ...>` ... `<... name resumed>rest`;
    the halves are joined. The call in progress when strace detached (`<detached ...>`) is
    kept, with "?" for its return value."""
    calls: list[Call] = []
    odd: list[str] = []
    pending: dict[str, str] = {}
    for raw in text.splitlines():
        line = LINE_RE.match(raw).group("rest")
        if not line or line.startswith(("---", "+++")):
            continue
        if line.endswith("<unfinished ...>"):
            name = line.partition("(")[0]
            pending[name] = line[: -len("<unfinished ...>")].rstrip()
            continue
        m = re.match(r"^<\.\.\. (?P<name>[a-z_0-9]+) resumed>(?P<rest>.*)$", line)
        if m:
            line = pending.pop(m.group("name"), m.group("name") + "(") + m.group("rest")
        if line.endswith("<detached ...>"):
            # In progress when strace let go: checked with what it has (no return value).
            name, _, args = line[: -len("<detached ...>")].partition("(")
            calls.append(Call(raw, name, split_args(args.rstrip().rstrip(",")), "?"))
            continue
        call = CALL_RE.match(line)
        if call is None:
            odd.append(raw)
            continue
        calls.append(Call(raw, call.group("name"), split_args(call.group("args")),
                          call.group("ret")))
    return calls, odd


# --- what may be called, and why it cannot wait ----------------------------------------------

# Calls that name a path: the kernel walks directories for them (and may read them from disk),
# so the loop thread must make none. newfstatat/statx with an empty path are fstat: see FSTAT.
PATH_CALLS = frozenset({
    "open", "openat", "openat2", "creat", "stat", "lstat", "access", "faccessat", "faccessat2",
    "getdents", "getdents64", "readlink", "readlinkat", "mkdir", "mkdirat", "rmdir", "unlink",
    "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
    "chdir", "chroot", "execve", "execveat", "truncate", "chmod", "fchmodat", "chown",
    "lchown", "fchownat", "utimensat", "utimes", "statfs", "mknod", "mknodat", "inotify_add_watch",
    "name_to_handle_at", "getxattr", "lgetxattr", "listxattr", "setxattr", "removexattr",
})
STAT_AT = frozenset({"newfstatat", "fstatat64", "statx"})
FSTAT = frozenset({"fstat", "fstat64"})
# Calls on a file's descriptor that may wait for its filesystem (data, metadata, or a close that
# FUSE forwards as FLUSH and waits for).
FILE_CALLS = frozenset({
    "read", "pread64", "readv", "preadv", "preadv2", "sendfile", "sendfile64",
    "copy_file_range", "splice", "lseek", "fadvise64", "readahead", "fsync", "fdatasync",
    "syncfs", "flock", "fallocate", "ftruncate", "fgetxattr", "flistxattr", "fstatfs",
    "close", "mmap", "write", "writev", "pwrite64", "pwritev", "pwritev2", *FSTAT, *STAT_AT,
})


def _any(call: Call) -> str | None:
    return None


def _nohang(call: Call) -> str | None:
    return None if "WNOHANG" in " ".join(call.args) else "waits for a child without WNOHANG"


def _thread_only(call: Call) -> str | None:
    # A new process (vfork, posix_spawn) would wait for the child's exec, which reads the disk.
    return None if "CLONE_THREAD" in " ".join(call.args) else "starts a process"


def _no_lock_wait(call: Call) -> str | None:
    return None if not any(w in " ".join(call.args) for w in ("SETLKW", "F_OFD_SETLKW")) \
        else "waits for a file lock"


def _not_std_streams(call: Call) -> str | None:
    fd = call.fd(0)
    if fd and fd[0] in (1, 2):
        return "writes to stdout/stderr, a pipe its reader may stop draining (logs have a thread)"
    return None


Rule = Callable[[Call], "str | None"]


def _rows(names: str, why: str, rule: Rule = _any) -> dict[str, tuple[str, Rule]]:
    return dict.fromkeys(names.split(), (why, rule))


# name -> (why it cannot make the loop wait, an extra rule: a reason to refuse this call or None).
# Calls on descriptors of files are checked first, by FILE_CALLS and Audit.file_call.
ALLOWED: dict[str, tuple[str, Rule]] = {
    **_rows("epoll_wait epoll_pwait epoll_pwait2",
            "the loop's one intended wait: readiness of sockets, pipes and timers"),
    **_rows("epoll_ctl", "registers a descriptor with the loop; no I/O"),
    **_rows("io_uring_enter", "libuv (>= 1.45) batches its epoll_ctl calls through io_uring; "
                              "flashsrv uses none of libuv's file operations"),
    **_rows("accept accept4", "the listening socket is non-blocking"),
    **_rows("read readv recvfrom", "non-blocking sockets, pipes, eventfds and the inotify "
                                   "descriptor (its events are in memory; helpers add the "
                                   "watches, which take a path)"),
    **_rows("write writev", "non-blocking sockets, pipes and eventfds", _not_std_streams),
    **_rows("recvmsg sendmsg", "non-blocking socket pairs with the helpers (results, jobs, "
                               "passed descriptors)"),
    **_rows("sendto", "non-blocking sockets: clients and helper jobs"),
    **_rows("close", "sockets, pipes and anonymous descriptors: no filesystem behind them"),
    **_rows("shutdown setsockopt getsockopt getsockname getpeername",
            "socket state and addresses: memory only"),
    **_rows("socketpair pipe2 eventfd2 dup dup3", "new descriptors of memory-only objects "
                                                  "(a new helper's channel, wake-ups)"),
    **_rows("timerfd_create timerfd_settime timerfd_gettime", "timers: memory only"),
    **_rows("fcntl", "descriptor flags (not lock waits)", _no_lock_wait),
    **_rows("ioctl", "socket queries (FIONBIO, FIONREAD)"),
    **_rows("mmap munmap mremap madvise mprotect brk",
            "anonymous memory (file mappings: FILE_CALLS)"),
    **_rows("mincore", "asks which pages of a mapping are resident; touches none"),
    **_rows("futex", "the GIL and locks shared with the log threads, held for bytecode only, "
                     "never across I/O"),
    **_rows("wait4 waitid", "reaps exited helpers, only with WNOHANG", _nohang),
    **_rows("kill tgkill", "signals a helper or a thread; does not wait for it"),
    **_rows("clone clone3", "starts a thread: memory only", _thread_only),
    **_rows("rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack", "signal bookkeeping"),
    **_rows("restart_syscall", "resumes the interrupted epoll wait"),
    **_rows("getpid gettid getppid getuid geteuid", "process identity"),
    **_rows("clock_gettime clock_getres gettimeofday", "clocks (normally not even a syscall)"),
    **_rows("getrandom", "the entropy pool is ready long after boot"),
    **_rows("getrusage prlimit64 sched_getaffinity uname", "counters, limits, identity"),
    **_rows("sched_yield", "gives up the CPU, not for I/O"),
    **_rows("exit exit_group", "the thread or process ends"),
}


@dataclass
class Audit:
    """Checks calls of the loop thread in order. `fuse` is the FUSE mount point (none for a
    local run): no descriptor of it may appear at all. Files elsewhere follow file_call, which
    checks every sendfile against the mincore calls before it."""

    fuse: str | None
    violations: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # addr -> (fd, target, length): read-only shared file mappings that are alive
    mappings: dict[int, tuple[int, str, int]] = field(default_factory=dict)
    # (fd, target) -> {page index: resident} from the latest mincore over that page
    resident: dict[tuple[int, str], dict[int, bool]] = field(default_factory=dict)
    fuse_fd_re: re.Pattern[str] | None = field(init=False, default=None)

    def refuse(self, call: Call, why: str, detail: str = "") -> None:
        """Record a call that may wait: why (the same for every call of a kind), the line."""
        more = f"\n      ({detail})" if detail else ""
        self.violations.append(f"{why}:\n    {call.line}{more}")

    def __post_init__(self) -> None:
        # A descriptor of the mount anywhere in a line (an argument, a result, one passed in a
        # message from a helper): strace -y prints it as N</mount/...>.
        self.fuse_fd_re = None if self.fuse is None else \
            re.compile(r"\d<" + re.escape(self.fuse.rstrip("/")) + r"[/>]")

    def check(self, call: Call) -> None:
        self.counts[call.name] = self.counts.get(call.name, 0) + 1
        name = call.name
        if self.fuse_fd_re is not None and self.fuse_fd_re.search(call.line):
            if name == "preadv2" and "RWF_NOWAIT" in call.args[-1] and \
                    call.errno == "EOPNOTSUPP":
                return None  # the probe: FUSE refuses at once
            return self.refuse(call, f"{name} with a descriptor of a file of the FUSE mount "
                                     "(its daemon answers reads, fstat and even close: the "
                                     "loop would wait)")
        if name in PATH_CALLS:
            return self.refuse(call, "a path lookup in the loop")
        if name in STAT_AT:
            path = call.args[1] if len(call.args) > 1 else ""
            if path != '""' or "AT_EMPTY_PATH" not in " ".join(call.args[2:]):
                return self.refuse(call, "a path lookup in the loop")
        fd = call.fd(1 if name in ("sendfile", "sendfile64") else 0)
        if name == "mmap" and len(call.args) > 4:
            fd = call.fd(4)
        if fd is not None and fd[1].startswith("/") and name in FILE_CALLS:
            return self.file_call(call, *fd)
        if name in STAT_AT or name in FSTAT:
            return None  # fstat of a socket or pipe
        if name == "mincore":
            return self.note_mincore(call)
        if name == "munmap":
            self.mappings.pop(int(call.args[0], 16), None)
        entry = ALLOWED.get(name)
        if entry is None:
            return self.refuse(call, f"{name} is not in the table of calls that cannot wait")
        why = entry[1](call)
        if why:
            self.refuse(call, why)
        return None

    def file_call(self, call: Call, fd: int, target: str) -> None:
        """A call on a descriptor of a file (strace -y printed a path)."""
        name = call.name
        if name == "preadv2":
            if "RWF_NOWAIT" not in call.args[-1]:
                return self.refuse(call, "a file read that may wait (no RWF_NOWAIT)")
            return None
        if name in STAT_AT or name in FSTAT:
            return None  # fstat of a held descriptor on a local disk: the inode is in memory
        if name == "close":
            self.resident.pop((fd, target), None)
            return None
        if name == "mmap":
            return self.note_mmap(call, fd, target)
        if name in ("sendfile", "sendfile64"):
            return self.check_sendfile(call, fd, target)
        return self.refuse(call, f"{name} on a file may wait for the disk")

    def note_mmap(self, call: Call, fd: int, target: str) -> None:
        a = call.args
        if a[0] != "NULL" or a[2] != "PROT_READ" or a[3] != "MAP_SHARED" or a[5] != "0":
            return self.refuse(call, "a file mapping that is not read-only, shared, from 0")
        if call.errno is None:
            self.mappings[call.number()] = (fd, target, int(a[1]))
        return None

    def note_mincore(self, call: Call) -> None:
        if call.errno is not None:
            return None
        addr, vector = int(call.args[0], 16), call.args[2]
        for base, (fd, target, length) in self.mappings.items():
            if base <= addr < base + length:
                first = (addr - base) // PAGE
                pages = self.resident.setdefault((fd, target), {})
                for i, flag in enumerate(re.findall(r"\d+", vector)):
                    pages[first + i] = bool(int(flag) & 1)
                return None
        return None  # a mapping that is not a file's: nothing to learn

    def check_sendfile(self, call: Call, fd: int, target: str) -> None:
        m = re.match(r"\[(\d+)\]", call.args[2])
        if m is None:
            return self.refuse(call, "sendfile without an explicit offset")
        offset, count = int(m.group(1)), int(call.args[3])
        pages = self.resident.get((fd, target), {})
        missing = [p for p in range(offset // PAGE, (offset + count - 1) // PAGE + 1)
                   if not pages.get(p)]
        if missing:
            return self.refuse(call, "sendfile over pages that no mincore on a mapping of this "
                                     "descriptor showed resident first",
                               f"{len(missing)} such pages, the first: {missing[0]}")
        return None


def audit(text: str, fuse: str | None) -> Audit:
    calls, odd = parse_strace(text)
    result = Audit(fuse)
    for call in calls:
        try:
            result.check(call)
        except (IndexError, ValueError, AttributeError) as exc:
            result.refuse(call, "a call the audit could not read", repr(exc))
    result.violations += [f"a line that is not a call:\n    {line}" for line in odd]
    return result


# --- tracing a server while the workloads run ------------------------------------------------


def tracer_of(pid: int) -> int:
    """The pid tracing pid (0: none), from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
    except (FileNotFoundError, StopIteration):
        return 0


@contextlib.contextmanager
def traced(pid: int, out: Path) -> Iterator[None]:
    """strace on the main thread of pid (no -f) for the duration of the block, into out."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (tests/run installs it with apt)")
    proc = subprocess.Popen([*STRACE, "-p", str(pid), "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: tracer_of(pid) == proc.pid or proc.poll() is not None, 10)
        if tracer_of(pid) != proc.pid:
            proc.kill()
            err = proc.communicate()[1]
            if "Operation not permitted" in err:
                pytest.skip(f"strace may not attach here: {err.strip()}")
            pytest.fail(f"strace did not attach to {pid}: {err.strip()}")
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # detaches; the server runs on
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def libc_resident_fraction(path: Path) -> float:
    """How much of a file is in the page cache, by mincore on a mapping never touched."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    size = path.stat().st_size
    pages = (size + PAGE - 1) // PAGE
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        vec = (ctypes.c_ubyte * pages)()
        try:
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec) / pages


def evict_big_files(root: Path) -> None:
    """Drop the large files' pages from the page cache (they were synced after writing, so
    they are clean and can go), and check with mincore that they went."""
    for path in root.rglob("*.bin"):
        # A helper's read-ahead of the previous workload may still be bringing pages in: ask
        # again for up to a second before calling the eviction failed.
        for _ in range(10):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            left = libc_resident_fraction(path)
            if left < 0.05:
                break
            time.sleep(0.1)
        assert left < 0.05, f"{path}: {left:.0%} still resident after POSIX_FADV_DONTNEED"


def trace_workloads(served: Served, backing: Path, out: Path, evict: bool) -> list[str]:
    """Every workload of test_never_waits.py, one after another until each has completed
    RESULTS_PER_WORKLOAD responses, with a probe on the hot file, while strace follows the
    loop thread into out. Returns what kept the run from covering a workload."""
    problems = []
    with traced(served.server.proc.pid, out), \
            HotProbe(served.server, HOT, HOT_BODY, interval=0.05) as probe:
        for workload in WORKLOADS.values():
            if evict:
                evict_big_files(backing)
            if workload.prepare is not None:
                workload.prepare(served.server, backing)
            workload.results = []
            with Clients(served.server, workload) as clients:
                wait_until(lambda w=workload: len(w.results) >= RESULTS_PER_WORKLOAD,
                           WORKLOAD_TIMEOUT, interval=0.05)
            if len(workload.results) < RESULTS_PER_WORKLOAD:
                problems.append(f"{workload.name}: {len(workload.results)} responses in "
                                f"{WORKLOAD_TIMEOUT} s ({clients.errors[:2]})")
            for result in workload.results:
                try:
                    workload.check(result)
                except AssertionError as exc:
                    problems.append(f"{workload.name}: wrong response: {exc}")
    problems += [f"hot probe: {e}" for e in probe.errors[:3]]
    return problems


# Calls newer than the strace here, which prints them by number (451 on x86_64 and aarch64).
UNNAMED = {"syscall_0x1c3": "cachestat(2)"}


def report(result: Audit, per_reason: int = 3) -> str:
    """The violations grouped by reason, a few example lines each."""
    groups: dict[str, list[str]] = {}
    for v in result.violations:
        why, _, line = v.partition(":\n")
        for number, name in UNNAMED.items():
            why = why.replace(number, f"{number} ({name})")
        groups.setdefault(why, []).append(line)
    return "\n".join(f"{why} ({len(lines)} calls), e.g.:\n" + "\n".join(lines[:per_reason])
                     for why, lines in groups.items())


def leaks(served: Served) -> list[str]:
    """assert_no_leaks as a list of problems, reported after the audit's own findings."""
    try:
        assert_no_leaks(served.server, served.admin, served.socket_baseline)
    except AssertionError as exc:
        return [f"leak: {exc}"]
    return []


@pytest.fixture(scope="module")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site of test_never_waits.py in a local folder, written through to the disk."""
    root = tmp_path_factory.mktemp("audit") / "site"
    build_site(root)
    os.sync()  # dirty pages cannot be evicted
    return root


@pytest.mark.slow
def test_loop_thread_makes_no_call_on_a_fuse_file(backing: Path, tmp_path: Path):
    mountpoint = tmp_path / "mnt"
    with fuse_mount(SLOW_FS, backing, mountpoint, "--delay", str(AUDIT_DELAY),
                    "--delay-under", "/many=0", log=tmp_path / "slow_fs.log"), \
            serving(mountpoint, "--compress") as served:
        problems = trace_workloads(served, backing, tmp_path / "strace.txt", evict=False)
        problems += leaks(served)
    result = audit((tmp_path / "strace.txt").read_text(errors="replace"),
                   fuse=os.path.realpath(mountpoint))
    assert result.counts.get("recvmsg", 0) > 0, f"no helper results traced: {result.counts}"
    if result.violations:
        pytest.fail(f"{len(result.violations)} calls of the loop thread may wait for FUSE:\n"
                    f"{report(result)}", pytrace=False)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def fs_type(path: Path) -> str:
    """The type of the filesystem holding path (the longest mount point above it)."""
    best, kind = "", "?"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
                best, kind = point, fields[fields.index("-") + 1]
    return kind


@pytest.mark.slow
def test_loop_thread_reads_local_files_only_without_waiting(backing: Path, tmp_path: Path):
    if fs_type(backing) in ("tmpfs", "ramfs"):
        pytest.skip(f"{backing} is on {fs_type(backing)}: nothing to evict, no disk to wait for")
    with serving(backing, "--compress") as served:
        problems = trace_workloads(served, backing, tmp_path / "strace.txt", evict=True)
        problems += leaks(served)
    result = audit((tmp_path / "strace.txt").read_text(errors="replace"), fuse=None)
    if result.violations:
        pytest.fail(f"{len(result.violations)} calls of the loop thread may wait for the disk:\n"
                    f"{report(result)}", pytrace=False)
    for needed in ("sendfile", "mincore", "preadv2"):  # or the audit proved little
        assert result.counts.get(needed, 0) > 0, f"no {needed} traced: {result.counts}"
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --- the parser and the rules themselves (no server) -----------------------------------------


def test_interrupted_calls_are_joined_and_annotations_kept_whole():
    text = (
        "10:00:00.000001 epoll_pwait(4<anon_inode:[eventpoll]>,  <unfinished ...>\n"
        "10:00:00.000002 --- SIGCHLD {si_signo=SIGCHLD} ---\n"
        "10:00:00.000003 <... epoll_pwait resumed>[], 1024, 5, NULL, 8) = 0\n"
        '10:00:00.000004 read(7</srv/a,b>c.txt>, "x) = 1", 10) = 1\n'
        "10:00:00.000005 wait4(-1,  <detached ...>\n"
    )
    calls, odd = parse_strace(text)
    assert [c.name for c in calls] == ["epoll_pwait", "read", "wait4"]
    assert calls[0].args[1:] == ["[]", "1024", "5", "NULL", "8"]
    assert calls[1].fd(0) == (7, "/srv/a,b>c.txt")
    assert calls[1].args[1:] == ['"x) = 1"', "10"]
    assert calls[2].args == ["-1"] and calls[2].ret == "?" and odd == []


def test_sendfile_must_follow_a_mincore_that_saw_every_page():
    base = 0x7F0000000000
    lines = [
        f"mmap(NULL, 65536, PROT_READ, MAP_SHARED, 9</d/big.bin>, 0) = {base:#x}",
        f"mincore({base:#x}, 16384, [1, 1, 1, 1]) = 0",
        "sendfile(5<socket:[1]>, 9</d/big.bin>, [0] => [16384], 16384) = 16384",
        "sendfile(5<socket:[1]>, 9</d/big.bin>, [16384], 4096) = -1 EAGAIN (Resource temporarily"
        " unavailable)",
        f"mincore({base + 16384:#x}, 8192, [1, 0]) = 0",
        "sendfile(5<socket:[1]>, 9</d/big.bin>, [16384] => [20480], 4096) = 4096",
        "sendfile(5<socket:[1]>, 9</d/big.bin>, [20480], 4096) = 4096",
        'preadv2(9</d/big.bin>, [{iov_base="", iov_len=4096}], 1, 0, RWF_NOWAIT) = 4096',
        'pread64(9</d/big.bin>, "", 4096, 0) = 4096',
        'newfstatat(9</d/big.bin>, "", {st_mode=S_IFREG|0644}, AT_EMPTY_PATH) = 0',
        'newfstatat(AT_FDCWD, "/d/big.bin", {st_mode=S_IFREG|0644}, 0) = 0',
        "close(9</d/big.bin>) = 0",
    ]
    result = audit("\n".join(lines), fuse=None)
    refused = [v.partition(":\n    ")[2].partition("\n")[0] for v in result.violations]
    assert refused == [lines[3], lines[6], lines[8], lines[10]], report(result)


def test_no_fuse_descriptor_may_appear_but_in_the_nowait_probe():
    lines = [
        'preadv2(9</mnt/x/a.bin>, [{iov_base=0x1, iov_len=1}], 1, 0, RWF_NOWAIT) = -1 EOPNOTSUPP'
        " (Operation not supported)",
        'newfstatat(9</mnt/x/a.bin>, "", {st_mode=S_IFREG|0644}, AT_EMPTY_PATH) = 0',
        "close(9</mnt/x/a.bin>) = 0",
        "close(10</mnt/xy/other>) = 0",
        "clock_nanosleep(CLOCK_MONOTONIC, 0, {tv_sec=0, tv_nsec=1000}, NULL) = 0",
        "write(2<pipe:[5]>, \"log line\\n\", 9) = 9",
        "recvmsg(13<socket:[7]>, {msg_control=[{cmsg_len=20, cmsg_level=SOL_SOCKET, "
        "cmsg_type=SCM_RIGHTS, cmsg_data=[21</mnt/x/b.bin>]}], msg_flags=0}, 0) = 40",
    ]
    result = audit("\n".join(lines), fuse="/mnt/x")
    refused = [v.partition(":\n    ")[2] for v in result.violations]
    assert refused == [lines[1], lines[2], lines[4], lines[5], lines[6]], report(result)
