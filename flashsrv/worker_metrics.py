"""Metrics across workers: a board of shared memory on which each worker publishes its samples,
so that whichever worker a scrape reaches answers for the whole server.

With `--workers N` the supervisor maps, before it forks, one anonymous shared region (no file
and no descriptor: nothing a reader could wait on) with one slot per worker; a worker's slot is
its place among the listening sockets, and it is that slot's only writer. A worker publishes
from its periodic tick (every PUBLISH_EVERY) and again right before it answers a scrape; the
scraped worker then reads every slot, sums counters and histograms (cumulative buckets add up
bucket by bucket) and reports each gauge once per worker with a `worker` label. Reads and writes
are memory copies: no system call, no lock, no waiting for another process.

A slot holds two buffers and the number of the complete one. The writer fills the other buffer
under a sequence number that is odd while it writes (a seqlock), then makes it the current one;
a reader keeps its copy of the current buffer only if the sequence number did not move and the
CRC matches (which also catches what a weakly ordered CPU could let through). A worker killed in
the middle of a write thus leaves its last complete snapshot readable.

Counters stay monotonic across a respawn: a new worker takes its predecessor's slot and its last
snapshot as `base`, which every publish adds to the worker's own counters and histograms. Only
what the dead worker counted after its last publish (PUBLISH_EVERY at most) is lost; gauges start
afresh (until the new worker's first publish the slot still shows its predecessor's).

The admin endpoint collects the samples; this module stores, merges and renders them. No loop,
no sockets, no disk.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zlib import crc32

Value = int | float
# A family's samples by what follows the metric's name: "" (no labels), '{status="200"}',
# '_bucket{le="0.5"}', "_sum", "_count".
Samples = dict[str, Value]
# What a slot carries: the numbers, by metric name (names, types and help come from the code).
Values = dict[str, Samples]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: its Prometheus type ("counter", "gauge" or "histogram"), help and samples."""

    kind: str
    help: str
    samples: Samples


# Metric name -> family, in the order of the exposition.
Snapshot = dict[str, Family]

# A slot starts with the number (0 or 1) of its complete buffer.
CURRENT = struct.Struct("<Q")
# A buffer starts with its sequence number (odd while written), payload length and CRC-32.
BUFFER_HEAD = struct.Struct("<QII")
# A worker's values are about 3 KB of JSON; this leaves room for a sample of every status code.
PAYLOAD_BYTES = 32 << 10
BUFFER_BYTES = BUFFER_HEAD.size + PAYLOAD_BYTES
SLOT_BYTES = CURRENT.size + 2 * BUFFER_BYTES
# Seconds between a worker's publishes from its tick (a few hundred microseconds of its loop
# each); a scrape sees the other workers that much behind at most, and itself up to date.
PUBLISH_EVERY = 1.0
# Copies a reader makes before it gives up on a slot: one fails only if the writer finishes a
# publish and starts the next during the copy.
READ_ATTEMPTS = 8


class MetricsBoard:
    """One slot per worker, in memory the supervisor shares with every worker it forks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.memory = mmap.mmap(-1, workers * SLOT_BYTES,
                                flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)

    def write(self, index: int, payload: bytes) -> None:
        """Make payload slot index's snapshot (only that slot's worker calls this)."""
        if len(payload) > PAYLOAD_BYTES:
            raise ValueError(f"{len(payload)} bytes of metrics exceed a slot ({PAYLOAD_BYTES})")
        slot = index * SLOT_BYTES
        target = 1 - CURRENT.unpack_from(self.memory, slot)[0]
        at = slot + CURRENT.size + target * BUFFER_BYTES
        seq = (BUFFER_HEAD.unpack_from(self.memory, at)[0] + 1) | 1  # odd, also after a crash
        checksum = crc32(payload)
        BUFFER_HEAD.pack_into(self.memory, at, seq, len(payload), checksum)
        start = at + BUFFER_HEAD.size
        self.memory[start:start + len(payload)] = payload
        BUFFER_HEAD.pack_into(self.memory, at, seq + 1, len(payload), checksum)
        CURRENT.pack_into(self.memory, slot, target)

    def read(self, index: int) -> bytes | None:
        """Slot index's last complete snapshot; None before its first one."""
        slot = index * SLOT_BYTES
        for _ in range(READ_ATTEMPTS):
            at = slot + CURRENT.size + CURRENT.unpack_from(self.memory, slot)[0] * BUFFER_BYTES
            seq, length, checksum = BUFFER_HEAD.unpack_from(self.memory, at)
            if seq == 0:
                return None
            start = at + BUFFER_HEAD.size
            payload = self.memory[start:start + min(length, PAYLOAD_BYTES)]
            if (seq % 2 == 0 and BUFFER_HEAD.unpack_from(self.memory, at)[0] == seq
                    and crc32(payload) == checksum):
                return payload
        return None

    def publish(self, index: int, values: Values) -> None:
        self.write(index, json.dumps(values, separators=(",", ":")).encode())

    def values(self, index: int) -> Values:
        """Slot index's last published values ({} before the first)."""
        payload = self.read(index)
        return {} if payload is None else json.loads(payload)

    def all_values(self) -> list[Values]:
        """Every worker's values, in slot order (the `worker` label is the slot's number)."""
        return [self.values(index) for index in range(self.workers)]


class MetricsSlot:
    """A worker's slot; base: the counters its predecessors in that slot had published."""

    def __init__(self, board: MetricsBoard, index: int) -> None:
        self.board = board
        self.index = index
        self.base = board.values(index)

    def publish(self, families: Snapshot) -> None:
        """Write this worker's samples, its counters and histograms continuing base's."""
        self.board.publish(self.index, {
            name: family.samples if family.kind == "gauge"
            else summed((family.samples, self.base.get(name, {})))
            for name, family in families.items()})


def summed(many: Iterable[Samples]) -> Samples:
    """Sample-wise sums (a label set missing from one map counts as 0 there)."""
    total: Samples = {}
    for samples in many:
        for key, value in samples.items():
            total[key] = total.get(key, 0) + value
    return total


def render(families: Snapshot, workers: Sequence[Values] | None = None) -> str:
    """The Prometheus text. families (this process's metrics) give the names, types, help lines
    and order. Without workers their own samples are the answer (one main process); with every
    worker's values, counters and histograms are summed over the workers and each gauge is
    reported once per worker, labelled with its slot number."""
    lines: list[str] = []
    for name, family in families.items():
        lines += [f"# HELP {name} {family.help}", f"# TYPE {name} {family.kind}"]
        rows: Iterable[tuple[str, Value]]
        if workers is None:
            rows = family.samples.items()
        elif family.kind == "gauge":
            rows = [(with_worker(labels, index), value)
                    for index, values in enumerate(workers)
                    for labels, value in values.get(name, {}).items()]
        else:
            rows = summed(values.get(name, {}) for values in workers).items()
        lines += [f"{name}{suffix} {number(value)}" for suffix, value in rows]
    return "\n".join(lines) + "\n"


def with_worker(labels: str, index: int) -> str:
    """A gauge's label set ("" or '{a="b"}') with the worker's label first."""
    return f'{{worker="{index}"' + ("}" if not labels else "," + labels[1:])


def number(value: Value) -> str:
    """Floats to the microsecond (their sums carry noise past that), integers as they are."""
    return str(round(value, 6)) if isinstance(value, float) else str(value)
