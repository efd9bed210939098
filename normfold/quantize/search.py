"""Which nodes hurt, and the fewest to keep in float so that the gate holds.

**Sensitivity** (``node_errors``): onnxruntime's ``qdq_loss_debug`` runs the
fp32 and the QDQ graphs on the same calibration samples with every
activation exposed and pairs them. For each quantized node's output tensor t:

    local SQNR  = SQNR(t before its QuantizeLinear, t after its DequantizeLinear)
                  the noise this tensor's own quantization adds;
    model SQNR  = SQNR(t in the fp32 graph, t in the QDQ graph)
                  the noise accumulated from the input up to t;
    weight SQNR = SQNR(W, dequantized W) for a node with a quantized weight;

    SQNR(a, b) = 20 log10(||a|| / ||a - b||)  dB.

A node's error is the lowest of its local and weight SQNR: what quantizing
that node itself costs, not what it inherits. Worst (lowest) first.

**Search** (``fewest_float``): with nodes ranked worst first, try keeping the
first k in float for k = 1, 2, 4, ... until the gate holds, then bisect
between the last failing and the first passing k. Each try is a quantization
(calibration reused from a cache) and an evaluation on the user's data.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx


@dataclass
class NodeError:
    node: str
    op: str
    sqnr_db: float                # min(local, weight): what quantizing this node costs
    local_sqnr_db: float | None
    weight_sqnr_db: float | None
    model_sqnr_db: float | None   # accumulated from the input (fp32 graph vs QDQ graph)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def node_errors(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, reader) -> list[NodeError]:
    """Per quantized node of ``qdq_model``, its errors on ``reader``'s samples, worst first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, compute_activation_error, compute_weight_error, create_activation_matching,
        create_weight_matching, modify_model_output_intermediate_tensors)

    from .qdq import float_nodes

    with tempfile.TemporaryDirectory(prefix="normfold-sqnr-") as tmp:
        paths = {k: Path(tmp) / f"{k}.onnx" for k in ("float", "qdq", "float_aug", "qdq_aug")}
        onnx.save(float_model, paths["float"])
        onnx.save(qdq_model, paths["qdq"])
        modify_model_output_intermediate_tensors(str(paths["float"]), str(paths["float_aug"]))
        modify_model_output_intermediate_tensors(str(paths["qdq"]), str(paths["qdq_aug"]))
        float_acts = collect_activations(str(paths["float_aug"]), reader)
        qdq_acts = collect_activations(str(paths["qdq_aug"]), reader)
        activation = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
        weight = compute_weight_error(create_weight_matching(str(paths["float"]), str(paths["qdq"])),
                                      err_func=_weight_sqnr)

    stays_float = {name for names in float_nodes(qdq_model).values() for name in names}
    quantized = {n.name for n in qdq_model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                 and n.name not in stays_float}       # the quantizer drops a Relu after a Conv: not a node to keep
    out = []
    for n in float_model.graph.node:
        if n.name not in quantized or not n.output:
            continue
        act = activation.get(n.output[0], {})
        local, model = act.get("qdq_err"), act.get("xmodel_err")
        w = weight.get(n.input[1]) if len(n.input) > 1 else None
        known = [v for v in (local, w) if v is not None]
        if not known:
            continue
        out.append(NodeError(n.name, n.op_type, float(min(known)), _f(local), _f(w), _f(model)))
    out.sort(key=lambda e: e.sqnr_db)
    return out


def _weight_sqnr(a, b) -> float:
    """qdq_loss_debug's SQNR, on weights of any rank (its own takes len() of a 0-d scalar weight)."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return compute_signal_to_quantization_noice_ratio(np.atleast_1d(a), np.atleast_1d(b))


def _f(v) -> float | None:
    return None if v is None else float(v)


@dataclass
class Trial:
    what: str                     # "+ only Conv quantized", "+ 4 kept float"
    kept_float: int               # nodes kept in float by name
    ok: bool
    score: float | None           # the gate's quantity (accuracy drop or agreement) at this k
    detail: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def fewest_float(ranked: Sequence[str], attempt: Callable[[list[str]], tuple[bool, float | None, str]],
                 limit: int | None = None) -> tuple[int | None, list[Trial]]:
    """The smallest k with ``attempt(ranked[:k])`` passing (doubling, then bisection), or None when even
    ``min(limit, len(ranked))`` does not; and every trial made, in order."""
    trials: list[Trial] = []
    top = len(ranked) if limit is None else min(limit, len(ranked))
    seen: dict[int, bool] = {}

    def run(k: int) -> bool:
        if k not in seen:
            ok, score, detail = attempt(list(ranked[:k]))
            seen[k] = ok
            trials.append(Trial(f"+ {k} kept float", k, ok, score, detail))
        return seen[k]

    lo, k = 0, 1
    while k < top and not run(k):
        lo, k = k, k * 2
    if k >= top:
        k = top
        if top == 0 or not run(top):
            return None, trials
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(mid):
            hi = mid
        else:
            lo = mid
    return hi, trials
