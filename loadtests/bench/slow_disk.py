"""A slow disk, made by the kernel: files evicted from the page cache, and a cgroup whose reads
from the data set's block device are throttled (cgroup v1 blkio or v2 io.max). Never a sleep in
a server: without root or a cgroup io controller, `Throttle.create` says why and returns None."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .machine import log


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
        self._set_limits(iops, bps)

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self._set_limits(None, None)

    def _set_limits(self, iops: int | None, bps: int | None) -> None:
        """Read IOPS and bytes/s of the device; None is no limit (0 in v1, "max" in v2)."""
        if self.version == 1:
            for name, value in (("read_iops_device", iops), ("read_bps_device", bps)):
                (self.path / f"blkio.throttle.{name}").write_text(
                    f"{self.device} {0 if value is None else value}")
        else:
            riops, rbps = ("max" if v is None else v for v in (iops, bps))
            (self.path / "io.max").write_text(f"{self.device} riops={riops} rbps={rbps}")

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
