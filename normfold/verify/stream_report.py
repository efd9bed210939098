"""The report of a whole-dataset check: the oracle phase's table, one row per (run, output) over every sample.

Numbers are plain (JSON keeps floats and ints); samples are given by index
into the dataset and by name. ``p99_abs`` is the 99th percentile over samples
of each sample's max abs error (99 % of the samples are within it);
``mean_abs`` is over every element of every sample.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .dataset import Skipped
from .report import VerifyReport, _Null, _pct, _plain

SHOWN = 10   # sample names printed per line; the JSON has all of them


@dataclass(frozen=True)
class StreamRow:
    run: str
    output: str
    samples: int
    max_abs: float
    p99_abs: float
    mean_abs: float
    allowed: float                     # the tolerance for a sample whose outputs are within the oracle's scale
    over: list[int]                    # samples over their tolerance
    over_names: list[str]
    top1_agree: int | None             # classifier outputs: samples whose argmax is the original's
    disagree: list[int]
    disagree_names: list[str]
    top5: float | None                 # mean |top5(run) ∩ top5(original)| / 5

    @property
    def ok(self) -> bool:
        return not self.over

    @property
    def agreement(self) -> float | None:
        return None if self.top1_agree is None or not self.samples else self.top1_agree / self.samples

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok, "agreement": self.agreement}


@dataclass
class DatasetReport:
    oracle: VerifyReport
    total: int = 0                     # samples in the dataset
    samples: int = 0                   # samples compared (total minus skipped)
    batch_size: int = 0
    rows: list[StreamRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    oracle_indices: list[int] = field(default_factory=list)
    oracle_names: list[str] = field(default_factory=list)
    rule: str = ""
    thresholds: dict = field(default_factory=dict)
    reference_run: str = ""
    label_output: str | None = None
    labels: dict | None = None
    accuracy: dict | None = None       # run -> accuracy, the reference run included
    timing: dict = field(default_factory=dict)   # seconds per stage, and the wall time of the stream
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.oracle.ok and not self.failures

    def judge(self) -> None:
        """Fill ``failures``: samples over the tolerance, thresholds not met."""
        out = []
        if not self.oracle.ok:
            out.append(f"the float64 oracle check failed on the {len(self.oracle_indices)} samples drawn")
        for r in self.rows:
            if r.over:
                out.append(f"{r.run} {r.output}: {len(r.over)} of {r.samples} samples over the tolerance")
        t = self.thresholds
        if t.get("min_agreement") is not None:
            for r in self.rows:
                if r.agreement is not None and r.agreement < t["min_agreement"]:
                    out.append(f"{r.run} {r.output}: top-1 agreement {r.agreement:.4f} ({len(r.disagree)} of "
                               f"{r.samples} differ) < --min-agreement {t['min_agreement']:g}")
        for run, acc in (self.accuracy or {}).items():
            if run == self.reference_run:
                continue
            if t.get("min_accuracy") is not None and acc < t["min_accuracy"]:
                out.append(f"{run}: accuracy {acc:.4f} < --min-accuracy {t['min_accuracy']:g}")
            drop = self.accuracy[self.reference_run] - acc
            if t.get("max_accuracy_drop") is not None and drop > t["max_accuracy_drop"]:
                out.append(f"{run}: accuracy {acc:.4f} is {drop:.4f} below {self.reference_run}'s "
                           f"> --max-accuracy-drop {t['max_accuracy_drop']:g}")
        self.failures = out

    def samples_per_s(self) -> float:
        wall = self.timing.get("wall", 0.0)
        return self.total / wall if wall > 0 else 0.0

    def to_dict(self) -> dict:
        return _plain({
            "ok": self.ok, "samples": self.samples, "total": self.total, "batch_size": self.batch_size,
            "rule": self.rule, "rows": [r.to_dict() for r in self.rows],
            "skipped": [asdict(s) for s in self.skipped],
            "oracle_samples": {"indices": self.oracle_indices, "names": self.oracle_names},
            "reference": self.reference_run, "label_output": self.label_output, "labels": self.labels,
            "accuracy": self.accuracy,
            "accuracy_difference": None if self.accuracy is None else {
                run: acc - self.accuracy[self.reference_run] for run, acc in self.accuracy.items()
                if run != self.reference_run},
            "thresholds": self.thresholds, "timing": self.timing, "samples_per_s": self.samples_per_s(),
            "failures": self.failures, "notes": self.notes,
        })

    def table(self):
        from rich.table import Table

        t = Table(title=f"normfold verify: every sample ({self.samples} of {self.total}) against "
                        f"{self.reference_run or 'the original'}", title_justify="left")
        for name in ("run", "output", "samples", "max abs", "p99 abs", "mean abs", "allowed", "over",
                     "top1 agree", "top5", "verdict"):
            t.add_column(name, justify="left" if name in ("run", "output", "verdict") else "right", no_wrap=True)
        for r in self.rows:
            agree = "-" if r.top1_agree is None else f"{r.top1_agree}/{r.samples}"
            t.add_row(r.run, r.output, str(r.samples), f"{r.max_abs:.3g}", f"{r.p99_abs:.3g}", f"{r.mean_abs:.3g}",
                      f"{r.allowed:.3g}", str(len(r.over)), agree, _pct(r.top5),
                      "ok" if r.ok else "FAIL", style=None if r.ok else "bold red")
        return t

    def summary(self) -> list[str]:
        out = [self.rule]
        for r in self.rows:
            if r.over:
                out.append(f"{r.run} {r.output}: over the tolerance: {_names(r.over_names)}")
            if r.disagree:
                out.append(f"{r.run} {r.output}: top-1 differs from {self.reference_run} on {len(r.disagree)}: "
                           f"{_names(r.disagree_names)}")
        if self.accuracy is not None:
            ref = self.accuracy[self.reference_run]
            parts = [f"{self.reference_run} {100 * ref:.2f}%"] + [
                f"{run} {100 * acc:.2f}% ({100 * (acc - ref):+.2f} pp)"
                for run, acc in self.accuracy.items() if run != self.reference_run]
            out.append(f"accuracy on {self.samples} samples ({self.label_output}; labels {self.labels['source']}): "
                       + ", ".join(parts))
        for s in self.skipped:
            out.append(f"skipped {s.name}: {s.reason}")
        out += self.notes
        timing = ", ".join(f"{k} {v:.2f} s" for k, v in self.timing.items() if k != "wall")
        out.append(f"{self.total} samples in {self.timing.get('wall', 0.0):.1f} s "
                   f"({self.samples_per_s():.1f} samples/s, batch {self.batch_size}): {timing}")
        out.append("PASS" if self.ok else "FAIL: " + "; ".join(self.failures))
        return out

    def lines(self, width: int = 160) -> list[str]:
        """Both tables and the verdict as plain text."""
        from rich.console import Console

        console = Console(width=width, record=True, color_system=None, force_terminal=False, file=_Null())
        console.print(self.oracle.table())
        text = console.export_text().rstrip("\n").splitlines() + self.oracle.summary()[:-1]
        console.print(self.table())
        return text + console.export_text().rstrip("\n").splitlines() + self.summary()

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" ... and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
