"""The original .onnx file on onnxruntime in its own dtype: the oracle when no float64 evaluation exists.

A graph with ops of a custom domain (com.microsoft FusedConv, FusedGemm,
QuickGelu, DynamicQuantizeLSTM, ...) or ops onnx.reference does not implement
cannot be evaluated in float64 here: onnx.reference does not know them, and
onnxruntime has no float64 Conv on CPU and runs its contrib ops in float32.
The ground truth is then the original file itself, on onnxruntime's CPU
provider in its dtype (float32, or float16 for a float16 file), with graph
optimizations off (ORT_DISABLE_ALL: every node its own kernel, as written).

The original's own error (``e_ref`` in tolerance.py) is then its *spread*: how
far other runs of the same original, in the same dtype, land from that truth:

  * the file at ORT_ENABLE_ALL: onnxruntime fuses Conv+BatchNormalization (in
    float32, the fold normfold does in float64), Conv+Add/Mul, Conv+activation,
    and sums in other orders;
  * the file at ORT_DISABLE_ALL with every float input moved by one ulp of its
    dtype (``np.nextafter``, in a seeded random direction per element): the
    rounding a fold introduces in a weight, W' = A W cast once, is a relative
    change of that size.

      e_ref = max over those runs of max |run - truth|        (per output)

Measured where both oracles exist (the PP-OCR files at tests/fold_onnx's
shapes, batch 1): the spread is 1.4x (det, rec) to 5.1x (cls) the original's
float32 error against float64, so the rule's allowance is of the size it has
with the float64 oracle, a little larger.

The rule is tolerance.py's: a checked file passes when max |checked - truth|
<= K e_ref + floor. What a pass is worth: the fold moves the outputs no more
than K times what fusing, re-ordering sums and one rounding of the input move
the original's own outputs, plus 64 float32 ulps of the output scale (the
floor). That is weaker than the float64 oracle's claim: the truth carries
the original's own rounding error, which this check cannot see, and a fold
error below K times the spread passes unseen. A wrong fold of the size
tolerance.py measures (a weight off by 1e-3 relative, ~10^4 e_ref) is still far
outside; tests/verify/test_float32_oracle.py checks one.
"""
from __future__ import annotations

import copy
from typing import Iterable, Sequence

import numpy as np
import onnx

from .session import ORT_DTYPES, open_session, run_session

PERTURB_SEED = 0
SPREAD_RUNS = ("ORT_ENABLE_ALL", "input moved by one ulp")


def with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs the tensors ``names`` (``proto`` is not modified)."""
    if not names:
        return proto
    probe = copy.deepcopy(proto)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.add(name=name)
    return probe


class Float32Graph:
    """``run``: the file on onnxruntime CPU at ORT_DISABLE_ALL (the truth); ``spread``: per output, the run of
    SPREAD_RUNS farthest from it. Outputs (or the tensors ``names``) come back as float64 arrays."""

    def __init__(self, proto: onnx.ModelProto, where: str, path=None):
        self.proto, self.where, self.path = proto, where, path   # path: the file, opened as it is (> 2 GB)
        self._sessions: dict[tuple, object] = {}

    def run(self, inputs: Iterable[np.ndarray], names: list[str] | None = None, provider: str = "cpu",
            optimization: str = "disable") -> list[np.ndarray]:
        session = self._session(tuple(names or ()), provider, optimization)
        return [np.asarray(v, dtype=np.float64) for v in run_session(session, tuple(inputs), names or None)]

    def spread(self, inputs: Iterable[np.ndarray], names: list[str] | None = None,
               provider: str = "cpu") -> list[np.ndarray]:
        declared = self._session(tuple(names or ()), "cpu", "disable").get_inputs()
        inputs = tuple(np.asarray(x).astype(ORT_DTYPES.get(meta.type, np.asarray(x).dtype), copy=False)
                       for meta, x in zip(declared, inputs))
        truth = self.run(inputs, names)
        runs = [self.run(inputs, names, provider, "all"), self.run(one_ulp_away(inputs), names, provider)]
        return [max(candidates, key=lambda r: _max_abs(r, t)) for t, *candidates in zip(truth, *runs)]

    def _session(self, names: tuple[str, ...], provider: str, optimization: str):
        key = (names, provider, optimization)
        if key not in self._sessions:
            model = self.path if self.path and not names else with_outputs(self.proto, names).SerializeToString()
            self._sessions[key] = open_session(model, provider, optimization=optimization, where=self.where)
        return self._sessions[key]


def one_ulp_away(inputs: Sequence[np.ndarray], seed: int = PERTURB_SEED) -> tuple[np.ndarray, ...]:
    """Each float input moved by one ulp of its dtype, up or down at random (seeded); others as they are."""
    rng = np.random.default_rng(seed)
    moved = []
    for x in inputs:
        if np.issubdtype(x.dtype, np.floating):
            towards = np.where(rng.random(x.shape) < 0.5, -np.inf, np.inf).astype(x.dtype)
            x = np.nextafter(x, towards)
        moved.append(x)
    return tuple(moved)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape or not np.issubdtype(a.dtype, np.floating):
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    return float(np.nanmax(d)) if d.size else 0.0
