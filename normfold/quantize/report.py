"""What `normfold quantize` did and measured. Not an equivalence claim: agreement, accuracy, errors, latency.

One ``Step`` per configuration measured, each adding one thing to the one
before: onnxruntime's quantizer as it comes (MinMax calibration), the chosen
calibration, cross-layer equalization, bias correction, nodes kept in float by
the search. The last step is the file written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .evaluate import Evaluation
from .search import NodeError, Trial


@dataclass
class Step:
    name: str
    evaluation: Evaluation
    float_nodes: list[str] = field(default_factory=list)   # Conv/Gemm/MatMul left in float

    def to_dict(self) -> dict:
        return {"name": self.name, "float_nodes": list(self.float_nodes), **self.evaluation.to_dict()}


@dataclass
class Gate:
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None

    @property
    def given(self) -> bool:
        return self.max_accuracy_drop is not None or self.min_agreement is not None

    def check(self, e: Evaluation) -> tuple[bool, float | None, str]:
        """(passes, the gate's quantity, why) for one evaluation."""
        problems, value = [], None
        if self.max_accuracy_drop is not None:
            value = e.drop
            if e.drop > self.max_accuracy_drop + 1e-12:
                problems.append(f"accuracy drop {e.drop:.4f} > {self.max_accuracy_drop:g}")
        if self.min_agreement is not None:
            value = e.agreement if value is None else value
            if e.agreement < self.min_agreement - 1e-12:
                problems.append(f"agreement {e.agreement:.4f} < {self.min_agreement:g}")
        return not problems, value, "; ".join(problems) or "gate holds"

    def to_dict(self) -> dict:
        return {"max_accuracy_drop": self.max_accuracy_drop, "min_agreement": self.min_agreement}


@dataclass
class QuantReport:
    model: str
    input_shape: list[int]
    options: dict
    data: dict                                  # calibration / evaluation sources, data-free or not
    fold: dict                                  # the fold's report (FoldReport.to_dict)
    fold_verified: bool                         # the folded fp32 file passed normfold verify
    gate: Gate
    steps: list[Step] = field(default_factory=list)
    equalization: dict | None = None            # equalize.EqualizeReport.to_dict()
    equalization_fp32_change: float | None = None   # max |equalized - folded| / max |folded| on calibration data
    absorbed: list = field(default_factory=list)    # high-bias absorption: one dict per pair that absorbed
    bias_changes: list = field(default_factory=list)  # BiasChange
    node_errors: list[NodeError] = field(default_factory=list)
    search: list[Trial] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    quantized_op_types: list[str] | None = None     # the search left every other op type in float
    float_ops: dict = field(default_factory=dict)   # op type -> nodes onnxruntime left in float (final file)
    latency: list = field(default_factory=list)     # bench Ratio dicts
    latency_notes: list[str] = field(default_factory=list)
    verdict: str = ""

    @property
    def final(self) -> Step:
        return self.steps[-1]

    @property
    def ok(self) -> bool:
        return self.fold_verified and (not self.gate.given or self.gate.check(self.final.evaluation)[0])

    def to_dict(self) -> dict:
        return {
            "schema": "normfold.quantize/1", "model": self.model, "input_shape": self.input_shape,
            "options": self.options, "data": self.data, "fold": self.fold, "fold_verified": self.fold_verified,
            "gate": self.gate.to_dict(), "ok": self.ok, "verdict": self.verdict,
            "steps": [s.to_dict() for s in self.steps],
            "equalization": self.equalization, "equalization_fp32_change": self.equalization_fp32_change,
            "high_bias_absorbed": list(self.absorbed),
            "bias_correction": [b.to_dict() for b in self.bias_changes],
            "node_errors": [e.to_dict() for e in self.node_errors],
            "search": [t.to_dict() for t in self.search], "kept_float": list(self.kept_float),
            "quantized_op_types": self.quantized_op_types,
            "float_ops": self.float_ops, "latency": list(self.latency), "latency_notes": list(self.latency_notes),
        }

    def lines(self, worst: int = 8) -> list[str]:
        out = [f"model      {self.model}   input {','.join(map(str, self.input_shape))}",
               f"fold       {len(self.fold.get('folded', []))} folded, {len(self.fold.get('skipped', []))} skipped; "
               f"folded fp32 file {'verified' if self.fold_verified else 'FAILED verify'} against the float64 oracle",
               f"data       {self.data.get('summary', '')}"]
        out.append(f"{'step':<28} {'agreement':>9} {'fp32':>8} {'int8':>8} {'drop':>8} {'min SQNR':>9} "
                   f"{'float':>5}   (fp32/int8/drop: the metric's mean; float: Conv/Gemm/MatMul left in float)")
        for s in self.steps:
            e = s.evaluation
            sq = min((o.sqnr_db for o in e.outputs), default=math.nan)
            out.append(f"{s.name:<28} {_pct(e.agreement):>9} {_pct(e.fp32_score):>8} {_pct(e.int8_score):>8} "
                       f"{_pct(e.drop, signed=True):>8} {sq:>7.1f}dB {len(s.float_nodes):>5}")
        for o in self.final.evaluation.outputs:
            out.append(f"  output {o.name}: agreement {_pct(o.agreement)}, max abs {o.max_abs:.3g}, "
                       f"p99 abs {o.p99_abs:.3g}, SQNR {o.sqnr_db:.1f} dB")
        if self.equalization is not None:
            pairs, refused = len(self.equalization.get("pairs", [])), len(self.equalization.get("refused", []))
            change = "" if self.equalization_fp32_change is None else \
                f"; fp32 outputs moved {self.equalization_fp32_change:.2g} of their range"
            absorbed = f", high bias absorbed in {len(self.absorbed)}" if self.absorbed else ""
            out.append(f"equalize   {pairs} pairs equalized{absorbed}, {refused} refused{change}")
            for r in self.equalization.get("refused", [])[:3]:
                out.append(f"  refused {r['node']}: {r['reason']}")
        if self.bias_changes:
            worst_b = max(self.bias_changes, key=lambda b: b.max_shift)
            out.append(f"bias       {len(self.bias_changes)} layers corrected; largest shift {worst_b.max_shift:.3g} "
                       f"in {worst_b.node}")
        if self.node_errors:
            out.append("worst nodes (SQNR of their own quantization, dB): " + ", ".join(
                f"{e.node} ({e.op}) {e.sqnr_db:.1f}" for e in self.node_errors[:worst]))
        if self.search:
            out.append("search     " + "; ".join(f"{t.what.removeprefix('+ ')}: {'pass' if t.ok else 'fail'}"
                                                  for t in self.search))
        if self.quantized_op_types:
            out.append(f"quantized  only {', '.join(self.quantized_op_types)}: every other op type stays float")
        if self.kept_float:
            shown = ", ".join(self.kept_float[:12]) + (f" and {len(self.kept_float) - 12} more"
                                                      if len(self.kept_float) > 12 else "")
            out.append(f"kept float {len(self.kept_float)} nodes, worst first: {shown}")
        left = {op: len(v) for op, v in self.float_ops.items() if op in ("Conv", "ConvTranspose", "Gemm", "MatMul")}
        if left:
            out.append("float ops  " + ", ".join(f"{op} {k}" for op, k in left.items())
                       + " (kept in float, or not quantized by onnxruntime)")
        for r in self.latency:   # each file against int8: latency_ratio = t(file) / t(int8) = int8's speedup
            speed = r["latency_ratio"]
            how = f"{speed:.2f}x faster than" if speed >= 1 else f"{1 / speed:.2f}x slower than"
            out.append(f"latency    batch {r['batch_size']}: int8 {how} {r['numerator']} (onnxruntime "
                       f"{r['provider']}, ORT_ENABLE_{r['optimization'].upper()}, median of paired rounds)")
        out += [f"  {n}" for n in self.latency_notes]
        out.append(self.verdict)
        return out


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.2f}%" if signed else f"{100 * v:.2f}%"
