"""The verification report: one row per (run, batch, output), a verdict, JSON with plain numbers."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .metrics import ErrorStats


@dataclass(frozen=True)
class RunCheck:
    run: str                  # "original_fp32" (the reference), "folded_fp32", "onnx_cpu", ...
    output: str
    stats: ErrorStats
    allowed: float | None     # None for the reference run, which sets the scale
    ok: bool
    batch: int | None = None
    ref_error: float = 0.0    # the reference run's max abs error on this output
    min_passing: dict | None = None   # on failure: the smallest atol / rtol / k that would pass

    @property
    def min_tolerance(self) -> float:
        """The smallest atol that would have passed this row."""
        return self.stats.max_abs

    def verdict(self) -> str:
        if self.allowed is None:
            return "reference"
        if self.ok:
            return "ok"
        m = self.min_passing or {"atol": self.stats.max_abs}
        parts = [f"atol >= {m['atol']:.3g}"]
        if "rtol" in m:
            parts.append(f"rtol >= {m['rtol']:.3g}")
        if "k" in m and math.isfinite(m["k"]):
            parts.append(f"k >= {m['k']:.3g}")
        return "FAIL: would pass with " + " or ".join(parts)

    def to_dict(self) -> dict:
        return {
            "run": self.run, "batch": self.batch, "output": self.output, "ok": self.ok,
            "allowed": self.allowed, "ref_error": self.ref_error, **asdict(self.stats),
            "min_passing": self.min_passing,
        }


@dataclass
class VerifyReport:
    checks: list[RunCheck] = field(default_factory=list)
    rule: str = ""
    oracle: str = "float64"        # the dtype the ground truth is computed in (float32: onnx.reference could not)
    claim: str | None = None       # with a float32 oracle, what a pass is worth
    environment: dict = field(default_factory=dict)
    localization: list = field(default_factory=list)   # Divergence objects
    notes: list[str] = field(default_factory=list)     # e.g. "localization: no fold site diverges"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[RunCheck]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return _plain({
            "ok": self.ok,
            "oracle": self.oracle,
            "claim": self.claim,
            "rule": self.rule,
            "environment": self.environment,
            "checks": [c.to_dict() for c in self.checks],
            "localization": [asdict(d) | {"message": d.describe()} for d in self.localization],
            "notes": self.notes,
        })

    def table(self):
        """A rich Table, one row per check."""
        from rich.table import Table

        t = Table(title=f"normfold verify: errors against the {self.oracle} oracle", title_justify="left")
        for name, justify in [("run", "left"), ("batch", "right"), ("output", "left"), ("max abs", "right"),
                              ("max rel", "right"), ("mean abs", "right"), ("p99 abs", "right"),
                              ("cosine", "right"), ("top1", "right"), ("top5", "right"),
                              ("allowed", "right"), ("verdict", "left")]:
            t.add_column(name, justify=justify, no_wrap=name != "verdict")
        for c in self.checks:
            s = c.stats
            t.add_row(
                c.run, "" if c.batch is None else str(c.batch), c.output,
                f"{s.max_abs:.3g}", f"{s.max_rel:.3g}", f"{s.mean_abs:.3g}", f"{s.p99_abs:.3g}",
                f"{s.cosine:.9f}", _pct(s.top1), _pct(s.top5),
                "-" if c.allowed is None else f"{c.allowed:.3g}",
                c.verdict(), style=None if c.ok else "bold red",
            )
        return t

    def lines(self, width: int = 160) -> list[str]:
        """The table and the verdict as plain text (no colour)."""
        from rich.console import Console

        console = Console(width=width, record=True, color_system=None, force_terminal=False, file=_Null())
        console.print(self.table())
        return console.export_text().rstrip("\n").splitlines() + self.summary()

    def summary(self) -> list[str]:
        out = [f"rule: {self.rule}"] + ([f"claim: {self.claim}"] if self.claim else [])
        out += [d.describe() for d in self.localization]
        out += self.notes
        fails = self.failures()
        out.append("PASS" if not fails else f"FAIL: {len(fails)} of {len(self.checks)} checks over the tolerance")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _plain(obj):
    """JSON-safe: plain floats/ints/strings; inf and nan become strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):   # numpy scalars
        return _plain(obj.item())
    return obj


class _Null:
    def write(self, _):
        pass

    def flush(self):
        pass
