"""The verification report: one row per (run, output), a verdict, JSON with plain numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .metrics import ErrorStats


@dataclass(frozen=True)
class RunCheck:
    run: str                  # "eager_fp32" (the reference), "onnx_cpu", ...
    output: str
    stats: ErrorStats
    allowed: float | None     # None for the fp32 reference run, which sets the scale
    ok: bool

    @property
    def min_tolerance(self) -> float:
        """The smallest atol that would have passed this row."""
        return self.stats.max_abs


@dataclass
class VerifyReport:
    checks: list[RunCheck] = field(default_factory=list)
    rule: str = ""
    environment: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[RunCheck]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "rule": self.rule,
            "environment": self.environment,
            "checks": [
                {"run": c.run, "output": c.output, "allowed": c.allowed, "ok": c.ok, **asdict(c.stats)}
                for c in self.checks
            ],
        }

    def lines(self) -> list[str]:
        head = f"{'run':<12} {'output':<10} {'max_abs':>10} {'max_rel':>10} {'cosine':>12} {'allowed':>10}  verdict"
        rows = [head]
        for c in self.checks:
            allowed = "(ref)" if c.allowed is None else f"{c.allowed:.3g}"
            verdict = "ok" if c.ok else f"FAIL (would pass with atol >= {c.min_tolerance:.3g})"
            rows.append(
                f"{c.run:<12} {c.output:<10} {c.stats.max_abs:>10.3g} {c.stats.max_rel:>10.3g} "
                f"{c.stats.cosine:>12.9f} {allowed:>10}  {verdict}"
            )
        rows.append(f"rule: {self.rule}")
        return rows
