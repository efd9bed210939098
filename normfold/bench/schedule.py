"""Interleaved measurement: every variant runs in every round, in rotating order.

Timing variant A for a minute and then variant B for a minute compares two
different machines whenever the load changes in between. Here round r runs a
short burst of each variant, starting with variant r mod n, so each variant
goes first equally often and all of them see the same load, round by round.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

Runner = Callable[[], object]


def round_robin(n_variants: int, rounds: int) -> list[list[int]]:
    """Visiting order per round: round r is (r, r+1, ..., r+n-1) mod n."""
    if n_variants < 1 or rounds < 1:
        raise ValueError(f"need at least one variant and one round, got {n_variants} and {rounds}")
    return [[(r + k) % n_variants for k in range(n_variants)] for r in range(rounds)]


def warm_up(runner: Runner, runs: int, clock: Callable[[], int] = time.perf_counter_ns) -> float:
    """Run ``runs`` times untimed except the first; return the first run in ms.

    The first run at a new input shape pays for allocations and, on CUDA, the
    cuDNN convolution algorithm search; it is reported, never mixed into the
    steady-state samples.
    """
    start = clock()
    runner()
    first_ms = (clock() - start) / 1e6
    for _ in range(runs - 1):
        runner()
    return first_ms


def measure_interleaved(
    runners: Sequence[Runner],
    rounds: int,
    runs_per_round: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> list[list[list[float]]]:
    """samples[v][r] = the ``runs_per_round`` latencies (ms) of runner v in round r."""
    if runs_per_round < 1:
        raise ValueError(f"runs_per_round must be >= 1, got {runs_per_round}")
    samples: list[list[list[float]]] = [[] for _ in runners]
    for order in round_robin(len(runners), rounds):
        for v in order:
            run, burst = runners[v], []
            for _ in range(runs_per_round):
                start = clock()
                run()
                burst.append((clock() - start) / 1e6)
            samples[v].append(burst)
    return samples
