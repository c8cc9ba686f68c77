"""Request latencies: the summary's percentiles and distribution are hdrh's own, counted fast."""

from __future__ import annotations

import random

import pytest

from dgaas_flow.campaign.stats import Latencies


@pytest.mark.parametrize("seed", range(6))
def test_buckets_are_what_hdrhs_log_iterator_gives(seed):
    rng = random.Random(seed)
    lat = Latencies()
    scale_ms = [0.01, 0.5, 4.0, 60.0, 3000.0, 4e6][seed]  # from below the first bucket to past the top
    lat.record([rng.expovariate(1 / scale_ms) for _ in range(rng.choice([1, 7, 300]))])
    expected = [(step.value_iterated_to, step.count_added_in_this_iter_step)
                for step in lat._hist.get_log_iterator(50, 1.25)]
    assert lat.buckets(50, 1.25) == expected
    assert sum(n for _, n in expected) == lat.count


@pytest.mark.parametrize("seed", range(6))
def test_percentiles_are_what_hdrh_gives(seed):
    rng = random.Random(seed)
    lat = Latencies()
    scale_ms = [0.01, 0.5, 4.0, 60.0, 3000.0, 4e6][seed]
    lat.record([rng.expovariate(1 / scale_ms) for _ in range(rng.choice([1, 2, 7, 300, 5000]))])
    qs = (0, 0.1, 50, 90, 95, 99, 99.9, 100)
    assert lat.percentiles(*qs) == [lat._hist.get_value_at_percentile(q) for q in qs]


def test_summary_of_known_latencies():
    lat = Latencies()
    lat.record([1.0] * 90 + [10.0] * 9 + [100.0])
    s = lat.summary()
    # at the histogram's precision: three significant digits
    assert (s["p50"], s["p95"], s["p99"], s["max"]) == pytest.approx((1.0, 10.0, 10.0, 100.0), rel=1e-3)
    assert s["mean"] == pytest.approx((90 * 1.0 + 9 * 10.0 + 100.0) / 100)
    assert sum(n for _, n in s["histogram"]) == 100
    uppers = [upper for upper, _ in s["histogram"]]
    assert uppers == sorted(uppers) and uppers[0] == 0.05 and uppers[-1] >= 100.0
    assert Latencies().summary()["histogram"] == [] and Latencies().summary()["p50"] is None
