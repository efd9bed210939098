"""What a recalibration did, per layer: the frozen statistics' distance to the population ones it wrote.

``RecalibrationReport.layers`` holds, per recalibrated layer in execution
order, the health of its *old* statistics against the *new* ones (each layer's
data taken with the layers before it already recalibrated: ``health.py``'s
mean shift, variance ratio and matrix distance), so it reads as "how far off
the frozen statistics were". ``health`` is the health report for the data as
given (the model as it was, one pass); ``unreached`` lists layers the data never ran
through (left as they were).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .health import LayerHealth


@dataclass
class HealthReport:
    """Every norm layer's frozen statistics against the data's (one pass over the model as it is)."""
    layers: list[LayerHealth]
    samples: int
    unreached: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # "layer: why", not measured

    @property
    def far(self) -> list[LayerHealth]:
        return [h for h in self.layers if h.far]

    def lines(self) -> list[str]:
        out = [f"statistics health on {self.samples} samples: {len(self.far)} of {len(self.layers)} norm layers "
               f"far off (mean shift in data std, var = frozen/data variance; [worst channels])"]
        out += [f"  {h.line()}" for h in self.layers]
        out += [f"  {path}: not reached by the data" for path in self.unreached]
        out += [f"  skipped {why}" for why in self.skipped]
        return out

    def to_dict(self) -> dict:
        return {"samples": self.samples, "far": len(self.far), "layers": [h.to_dict() for h in self.layers],
                "unreached": list(self.unreached), "skipped": list(self.skipped)}


@dataclass
class RecalibrationReport:
    layers: list[LayerHealth]           # old statistics against the new, per recalibrated layer
    health: HealthReport                # the model as it was, on the data
    passes: int
    samples: int
    unreached: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # "layer: why", left as it was
    accuracy: dict | None = None    # with labels: {"labels": source, "before": top-1, "after": top-1}

    def lines(self) -> list[str]:
        out = [f"recalibrated {_count(len(self.layers), 'norm layer')} on {self.samples} samples in "
               f"{_count(self.passes, 'pass', 'passes')} "
               "(old statistics against the new: mean shift in data std, var = old/new; [worst channels])"]
        out += [f"  {h.line()}" for h in self.layers]
        out += [f"  {path}: not reached by the data, left as it was" for path in self.unreached]
        out += [f"  skipped {why}" for why in self.skipped]
        if self.accuracy is not None:
            a = self.accuracy
            out.append(f"top-1 on the data ({a['labels']}): {a['before']:.2%} before, {a['after']:.2%} after")
        return out

    def to_dict(self) -> dict:
        return {"samples": self.samples, "passes": self.passes, "accuracy": self.accuracy,
                "layers": [h.to_dict() for h in self.layers],
                "unreached": list(self.unreached), "skipped": list(self.skipped),
                "health_before": self.health.to_dict()}


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
