"""A Prometheus histogram of durations: fixed buckets, cumulative counts in the text format.

Plain counters bumped by the loop (no locks: one process, one thread), rendered by the admin
endpoint. No I/O here.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: from well below one loop turn to what a client would call a stall.
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Counts of observations per bucket (upper bound inclusive), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def samples(self) -> dict[str, int | float]:
        """The exposition's samples by what follows the metric's name: cumulative `le` buckets,
        then _sum and _count (so histograms of several workers add up sample by sample)."""
        out: dict[str, int | float] = {}
        running = 0
        for bound, count in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            running += count
            out[f'_bucket{{le="{bound}"}}'] = running
        out["_sum"] = self.total
        out["_count"] = self.count
        return out
