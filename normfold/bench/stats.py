"""Latency statistics over timed runs, and the paired ratio of two variants.

For n samples t_1..t_n (milliseconds) of one variant at batch size B:

    mean = (1/n) Σ t_i          std = sqrt((1/n) Σ (t_i - mean)²)   (population std)
    p_q  = the q-th percentile, linear interpolation between order statistics
           (numpy's default, as onnxruntime's benchmark helpers use)
    throughput = 1000 · B / mean      samples per second

Ratios are *paired*: the variants were measured interleaved, so round r of
variant a and round r of variant b saw the same machine load. The ratio a/b is
the median over rounds of median(a_r) / median(b_r); a load spike that slows a
whole round cancels in that round's ratio instead of biasing either variant.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(samples_ms: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100) of the samples."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    return float(np.percentile(values, q))


def summarize(samples_ms: Sequence[float], batch_size: int) -> LatencyStats:
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    mean = float(values.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
    return LatencyStats(
        n=int(values.size),
        mean_ms=mean,
        std_ms=float(values.std()),
        min_ms=float(values.min()),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        throughput_per_s=1000.0 * batch_size / mean,
    )


def paired_ratio(rounds_a: Sequence[Sequence[float]], rounds_b: Sequence[Sequence[float]]) -> float:
    """median_r( median(a_r) / median(b_r) ) over rounds measured side by side."""
    if len(rounds_a) != len(rounds_b) or not rounds_a:
        raise ValueError(f"paired ratio needs the same, non-zero number of rounds ({len(rounds_a)} vs {len(rounds_b)})")
    ratios = [np.median(a) / np.median(b) for a, b in zip(rounds_a, rounds_b)]
    return float(np.median(ratios))
