"""The latency budget decision, on synthetic latency samples (no timing)."""
from __future__ import annotations

import pytest

from normfold.bench.report import Measurement, check_budget
from normfold.bench.stats import summarize


def _measurement(variant, kind, samples, batch=1):
    rounds = [samples[i:i + 2] for i in range(0, len(samples), 2)]
    return Measurement(variant, kind, "cpu", "all", batch, summarize(samples, batch), samples[0], rounds)


# 11 samples 0..10 ms, shuffled: the q-th percentile is exactly q/10 ms.
RAMP = [float(i) for i in (7, 2, 10, 0, 5, 9, 1, 4, 8, 3, 6)]


@pytest.mark.parametrize("budget,q,ok", [
    (9.0, 90, True),       # exactly at the percentile: within budget
    (8.999, 90, False),
    (5.5, 50, True),
    (5.5, 90, False),      # same budget, stricter percentile
    (1e9, 99, True),
    (1e-9, 10, False),
])
def test_budget_compares_the_requested_percentile(budget, q, ok):
    result = check_budget([_measurement("folded", "folded", RAMP)], budget, q)
    assert result.ok is ok
    assert len(result.checks) == 1
    assert result.checks[0].value_ms == pytest.approx(q / 10)


def test_budget_applies_to_deployable_variants_only():
    slow = [1000.0] * 10
    fast = [1.0] * 10
    ms = [
        _measurement("unfolded", "unfolded", slow),
        _measurement("twin", "twin", slow),
        _measurement("folded", "folded", fast),
        _measurement("mine", "file", fast),
    ]
    result = check_budget(ms, 2.0, 90)
    assert result.ok
    assert sorted(c.variant for c in result.checks) == ["folded", "mine"]
    ms.append(_measurement("other", "file", slow))
    result = check_budget(ms, 2.0, 90)
    assert not result.ok
    assert [c.variant for c in result.checks if c.value_ms > 2.0] == ["other"]
    assert "OVER other" in "\n".join(result.lines())


def test_budget_with_nothing_to_check_fails():
    result = check_budget([_measurement("twin", "twin", RAMP)], 1e9, 90)
    assert not result.ok
    assert result.lines() == ["no measurement to check the budget against"]


@pytest.mark.parametrize("budget,q", [(0.0, 90), (-1.0, 90), (10.0, 0), (10.0, 100.5)])
def test_budget_rejects_bad_arguments(budget, q):
    with pytest.raises(ValueError):
        check_budget([_measurement("folded", "folded", RAMP)], budget, q)
