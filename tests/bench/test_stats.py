"""Latency statistics and the paired ratio, against independent computations."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from normfold.bench.stats import paired_ratio, percentile, summarize


def _linear_percentile(values, q):
    """Textbook linear interpolation between order statistics (rank (n-1)q/100)."""
    xs = sorted(values)
    rank = (len(xs) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_summarize_matches_textbook_formulas(n):
    rng = random.Random(n)
    samples = [rng.lognormvariate(1.0, 0.5) for _ in range(n)]
    s = summarize(samples, batch_size=8)
    assert s.n == n
    assert s.mean_ms == pytest.approx(statistics.fmean(samples))
    assert s.std_ms == pytest.approx(statistics.pstdev(samples), abs=1e-12)
    assert s.min_ms == min(samples)
    for q, got in ((50, s.p50_ms), (90, s.p90_ms), (99, s.p99_ms)):
        assert got == pytest.approx(_linear_percentile(samples, q))
    assert s.throughput_per_s == pytest.approx(8 * 1000 / statistics.fmean(samples))


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="no latency samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="no latency samples"):
        summarize([], 1)


def test_paired_ratio_cancels_a_load_spike_that_hits_one_round():
    # a is truly 0.8x of b; round 1 runs 5x slower for both (machine busy).
    load = [1.0, 5.0, 1.0, 1.1]
    b = [[10.0 * f, 10.2 * f] for f in load]
    a = [[8.0 * f, 8.16 * f] for f in load]
    assert paired_ratio(a, b) == pytest.approx(0.8)


def test_paired_ratio_beats_unpaired_when_load_drifts():
    # The load drifts up from round to round (x1 to x3). Within every round a's median run is 0.9x b's;
    # a has one slow run (a hiccup) per round, b one fast run. Pooled over the rounds, the unpaired
    # median, mean and min ratios each say a is the slower (with a steady load the pooled median would
    # be 0.9 too: the drift is what misleads it); only the ratio paired round by round is 0.9.
    load = [1.0, 1.2, 1.5, 2.0, 3.0]
    a = [[9.0 * f * k for k in (0.95, 1.0, 1.6)] for f in load]
    b = [[10.0 * f * k for k in (0.8, 1.0, 1.05)] for f in load]
    pooled_a, pooled_b = [t for r in a for t in r], [t for r in b for t in r]
    unpaired = {"median": statistics.median(pooled_a) / statistics.median(pooled_b),
                "mean": statistics.fmean(pooled_a) / statistics.fmean(pooled_b),
                "min": min(pooled_a) / min(pooled_b)}
    assert all(ratio > 1.05 for ratio in unpaired.values()), unpaired
    assert paired_ratio(a, b) == pytest.approx(0.9)


def test_paired_ratio_needs_matching_rounds():
    with pytest.raises(ValueError, match="same"):
        paired_ratio([[1.0]], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="same"):
        paired_ratio([], [])
