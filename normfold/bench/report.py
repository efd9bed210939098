"""What a benchmark measured: per-setting statistics, ratios, the latency budget.

One *setting* is (provider, optimization level, batch size). Within a setting
the variants were measured interleaved (see ``schedule``), so their ratios are
paired round by round (see ``stats.paired_ratio``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .stats import LatencyStats, paired_ratio, percentile

SCHEMA = "normfold.bench/1"
RATIO_PAIRS = (("folded", "unfolded"), ("folded", "twin"))
# Variants a latency budget applies to: what one would deploy.
BUDGETED_KINDS = ("folded", "file")


@dataclass
class Measurement:
    variant: str
    kind: str
    provider: str
    optimization: str
    batch_size: int
    stats: LatencyStats
    first_run_ms: float                    # first run at this shape (allocations, cuDNN search)
    rounds: list[list[float]]              # latencies per round, ms; kept out of JSON

    @property
    def setting(self) -> tuple[str, str, int]:
        return self.provider, self.optimization, self.batch_size

    def to_dict(self) -> dict:
        return {"variant": self.variant, "kind": self.kind, "provider": self.provider,
                "optimization": self.optimization, "batch_size": self.batch_size,
                "first_run_ms": self.first_run_ms, **self.stats.to_dict()}

    def samples(self) -> list[float]:
        return [t for burst in self.rounds for t in burst]


@dataclass
class SessionTiming:
    variant: str
    provider: str
    optimization: str
    create_ms: list[float]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.create_ms))

    def to_dict(self) -> dict:
        return {"variant": self.variant, "provider": self.provider, "optimization": self.optimization,
                "create_ms": list(self.create_ms), "create_ms_median": self.median_ms}


@dataclass(frozen=True)
class Ratio:
    provider: str
    optimization: str
    batch_size: int
    numerator: str
    denominator: str
    latency_ratio: float       # paired median; < 1 means the numerator is faster

    @property
    def speedup(self) -> float:
        return 1.0 / self.latency_ratio

    def to_dict(self) -> dict:
        return {"provider": self.provider, "optimization": self.optimization, "batch_size": self.batch_size,
                "numerator": self.numerator, "denominator": self.denominator,
                "latency_ratio": self.latency_ratio, "speedup": self.speedup}

    def line(self) -> str:
        faster = f"{self.speedup:.2f}x faster" if self.speedup >= 1 else f"{self.latency_ratio:.2f}x slower"
        return (f"{self.provider}/{self.optimization}/b{self.batch_size}: "
                f"{self.numerator}/{self.denominator} = {self.latency_ratio:.3f} ({faster})")


@dataclass(frozen=True)
class BudgetCheck:
    variant: str
    provider: str
    optimization: str
    batch_size: int
    value_ms: float

    def to_dict(self, budget_ms: float) -> dict:
        return {"variant": self.variant, "provider": self.provider, "optimization": self.optimization,
                "batch_size": self.batch_size, "value_ms": self.value_ms, "ok": self.value_ms <= budget_ms}


@dataclass
class Budget:
    budget_ms: float
    percentile: float
    checks: list[BudgetCheck]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.value_ms <= self.budget_ms for c in self.checks)

    def to_dict(self) -> dict:
        return {"budget_ms": self.budget_ms, "percentile": self.percentile, "ok": self.ok,
                "checks": [c.to_dict(self.budget_ms) for c in self.checks]}

    def lines(self) -> list[str]:
        out = []
        for c in self.checks:
            mark = "ok  " if c.value_ms <= self.budget_ms else "OVER"
            out.append(f"{mark} {c.variant} {c.provider}/{c.optimization}/b{c.batch_size}: "
                       f"p{self.percentile:g} {c.value_ms:.3f} ms vs budget {self.budget_ms:g} ms")
        if not self.checks:
            out.append("no measurement to check the budget against")
        return out


def check_budget(measurements: Iterable[Measurement], budget_ms: float, q: float = 90.0) -> Budget:
    """The q-th percentile latency of every deployable variant against ``budget_ms``.

    Deployable: the folded model and any ONNX file given; the unfolded baseline
    and the twin are references, not candidates. Every measured setting counts.
    """
    if not budget_ms > 0:
        raise ValueError(f"budget must be a positive number of milliseconds, got {budget_ms}")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    checks = [BudgetCheck(m.variant, m.provider, m.optimization, m.batch_size, percentile(m.samples(), q))
              for m in measurements if m.kind in BUDGETED_KINDS]
    return Budget(budget_ms, q, checks)


def ratios(measurements: list[Measurement]) -> list[Ratio]:
    """folded/unfolded and folded/twin, and every ONNX file given against the first one,
    for every setting where both were measured."""
    by_key = {(m.setting, m.kind): m for m in measurements if m.kind != "file"}
    settings = sorted({m.setting for m in measurements}, key=lambda s: (s[0], s[1], s[2]))
    out = []
    for setting in settings:
        pairs = [(by_key.get((setting, num)), by_key.get((setting, den))) for num, den in RATIO_PAIRS]
        files = [m for m in measurements if m.kind == "file" and m.setting == setting]
        pairs += [(f, files[0]) for f in files[1:]]
        for a, b in pairs:
            if a is not None and b is not None:
                out.append(Ratio(*setting, a.variant, b.variant, paired_ratio(a.rounds, b.rounds)))
    return out


@dataclass
class BenchReport:
    model: str
    sample_shape: tuple[int, ...]
    variants: list                         # Variant
    config: dict                           # thread counts, rounds, session options ...
    environment: dict
    measurements: list[Measurement] = field(default_factory=list)
    sessions: list[SessionTiming] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)   # {"what": ..., "reason": ...}
    fold: dict | None = None
    twin: dict | None = None
    budget: Budget | None = None

    def ratios(self) -> list[Ratio]:
        return ratios(self.measurements)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "sample_shape": list(self.sample_shape),
            "environment": self.environment,
            "config": self.config,
            "variants": [v.to_dict() for v in self.variants],
            "sessions": [s.to_dict() for s in self.sessions],
            "results": [m.to_dict() for m in self.measurements],
            "ratios": [r.to_dict() for r in self.ratios()],
            "skipped": list(self.skipped),
            "fold": self.fold,
            "twin": self.twin,
            "budget": None if self.budget is None else self.budget.to_dict(),
        }

    def tables(self):
        """rich Tables: latency per setting and variant, then session creation."""
        from rich.table import Table

        create = {(s.variant, s.provider, s.optimization): s.median_ms for s in self.sessions}
        lat = Table(title=f"{self.model}: latency (ms), input (B, {', '.join(map(str, self.sample_shape))})")
        for col in ("provider", "opt", "batch", "variant", "p50", "p90", "p99", "mean", "std", "samples/s", "first run"):
            lat.add_column(col, justify="left" if col in ("provider", "opt", "variant") else "right")
        for m in self.measurements:
            s = m.stats
            lat.add_row(m.provider, m.optimization, str(m.batch_size), m.variant,
                        *(f"{v:.3f}" for v in (s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.std_ms)),
                        f"{s.throughput_per_s:.1f}", f"{m.first_run_ms:.1f}")
        sess = Table(title="session creation (ms, median)")
        for col in ("provider", "opt", "variant", "create"):
            sess.add_column(col, justify="right" if col == "create" else "left")
        for (variant, provider, opt), ms in create.items():
            sess.add_row(provider, opt, variant, f"{ms:.1f}")
        return lat, sess
