"""The files the servers serve, written once per run: the cached files, and the many-files,
cold and large-file sets only when a workload of the run needs them. Deterministic bytes
(a seeded generator), incompressible like real media."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .workloads import COLD_LARGE, KB, MIB


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

