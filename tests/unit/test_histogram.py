"""flashsrv.histogram: durations in Prometheus histogram buckets."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from flashsrv.histogram import DEFAULT_BUCKETS, Histogram


def exposition(histogram: Histogram) -> tuple[dict[str, int], float, int]:
    """Bucket counts by `le`, the sum and the count, read back from the samples."""
    samples = histogram.samples()
    buckets = {key.split('le="')[1].split('"')[0]: int(value)
               for key, value in samples.items() if key.startswith("_bucket")}
    return buckets, samples["_sum"], int(samples["_count"])


def test_samples_are_the_buckets_in_order_then_sum_and_count():
    assert list(Histogram((0.1, 1.0)).samples()) == [
        '_bucket{le="0.1"}', '_bucket{le="1.0"}', '_bucket{le="+Inf"}', "_sum", "_count"]


def test_buckets_are_cumulative_and_inf_equals_count():
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 2.0, 3.0):
        histogram.observe(seconds)
    buckets, total, count = exposition(histogram)
    assert buckets == {"0.1": 2, "1.0": 3, "+Inf": 5}
    assert count == 5 and math.isclose(total, 5.65)


def test_an_observation_on_a_bound_counts_in_that_bucket():
    histogram = Histogram()
    histogram.observe(DEFAULT_BUCKETS[0])
    buckets, _, _ = exposition(histogram)
    assert buckets[str(DEFAULT_BUCKETS[0])] == 1


def test_empty_histogram_has_zero_everywhere():
    buckets, total, count = exposition(Histogram())
    assert set(buckets.values()) == {0} and len(buckets) == len(DEFAULT_BUCKETS) + 1
    assert total == 0 and count == 0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_each_bucket_counts_the_observations_up_to_its_bound(observations):
    histogram = Histogram()
    for seconds in observations:
        histogram.observe(seconds)
    buckets, total, count = exposition(histogram)
    for bound in DEFAULT_BUCKETS:
        assert buckets[str(bound)] == sum(1 for s in observations if s <= bound)
    assert buckets["+Inf"] == count == len(observations)
    assert math.isclose(total, sum(observations), rel_tol=1e-6, abs_tol=1e-6)
