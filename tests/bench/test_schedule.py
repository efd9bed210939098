"""The interleaving order, checked on fake runners and a fake clock."""
from __future__ import annotations

import itertools
from collections import Counter

import pytest

from normfold.bench.schedule import measure_interleaved, round_robin, warm_up


@pytest.mark.parametrize("n,rounds", [(1, 3), (3, 6), (4, 5)])
def test_round_robin_runs_every_variant_once_per_round_rotating_the_start(n, rounds):
    order = round_robin(n, rounds)
    assert len(order) == rounds
    for r, visit in enumerate(order):
        assert sorted(visit) == list(range(n))
        assert visit[0] == r % n
    firsts = Counter(v[0] for v in order)
    assert max(firsts.values()) - min(firsts.values(), default=0) <= 1


def test_round_robin_rejects_empty():
    with pytest.raises(ValueError):
        round_robin(0, 3)
    with pytest.raises(ValueError):
        round_robin(2, 0)


class FakeClock:
    """Each run of variant v advances time by durations[v] ms; record call order."""

    def __init__(self, durations_ms):
        self.now, self.calls, self.durations = 0, [], durations_ms

    def clock(self):
        return self.now

    def runner(self, v):
        def run():
            self.calls.append(v)
            self.now += int(self.durations[v] * 1e6)
        return run


def test_measure_interleaved_calls_variants_in_round_robin_bursts():
    fake = FakeClock([1.0, 2.0, 3.0])
    samples = measure_interleaved([fake.runner(v) for v in range(3)], rounds=4, runs_per_round=2, clock=fake.clock)
    expected = list(itertools.chain.from_iterable([v, v] for visit in round_robin(3, 4) for v in visit))
    assert fake.calls == expected
    assert [len(s) for s in samples] == [4, 4, 4]
    for v, dur in enumerate((1.0, 2.0, 3.0)):
        assert all(burst == [dur, dur] for burst in samples[v])


def test_warm_up_times_only_the_first_run():
    fake = FakeClock([4.0])
    assert warm_up(fake.runner(0), runs=5, clock=fake.clock) == 4.0
    assert fake.calls == [0] * 5


def test_measure_interleaved_rejects_zero_runs():
    with pytest.raises(ValueError, match="runs_per_round"):
        measure_interleaved([lambda: None], rounds=1, runs_per_round=0)
