"""An independent float64 evaluation of an ONNX graph, and the equivalence check of the tests.

The oracle is the *original* graph evaluated in float64 by onnx's reference
evaluator (ConvTranspose by torch's own conv_transpose in float64: the
reference implementation rejects groups > 1). A folded graph passes when its
float32 onnxruntime (CPU) output is at most K times as far from the oracle as
the original's own float32 onnxruntime output, plus a floor of a few float32
ulps of the output scale: the rule of tests/conftest.py.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from ..conftest import FLOOR_ULPS, K

FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


class ConvTranspose(OpRun):
    """ConvTranspose in float64 by torch (the evaluator takes an op's implementation by class name)."""

    op_domain = ""

    def _run(self, x, w, b=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             output_padding=None, output_shape=None, pads=None, strides=None):
        dims = x.ndim - 2
        if output_shape is not None or (auto_pad not in (None, "NOTSET", b"NOTSET")):
            raise NotImplementedError("the test oracle takes explicit pads only")
        pads = list(pads or [0] * 2 * dims)
        if pads[:dims] != pads[dims:]:
            raise NotImplementedError("the test oracle takes symmetric pads only")
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[dims]
        y = fn(torch.from_numpy(np.array(x, np.float64)), torch.from_numpy(np.array(w, np.float64)),
               None if b is None else torch.from_numpy(np.array(b, np.float64)),
               stride=list(strides or [1] * dims), padding=pads[:dims],
               output_padding=list(output_padding or [0] * dims), groups=group or 1,
               dilation=list(dilations or [1] * dims))
        return (y.numpy(),)


def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float64: float tensors, declared types and Cast targets widened."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for t in g.initializer:
        if t.data_type in FLOATS:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in FLOATS:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if node.op_type == "Cast" and a.name == "to" and a.i in FLOATS:
                a.i = onnx.TensorProto.DOUBLE
    for vi in [*g.input, *g.output]:
        if vi.type.tensor_type.elem_type in FLOATS:
            vi.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    del g.value_info[:]
    return out


def run64(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ref = ReferenceEvaluator(float64_model(model), new_ops=[ConvTranspose])
    return [np.asarray(y, np.float64) for y in ref.run(None, {k: v.astype(np.float64) for k, v in feeds.items()})]


def run32(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    cast = {k: v.astype(np.float16 if "float16" in types[k] else np.float32) for k, v in feeds.items()}
    return [np.asarray(y, np.float64) for y in sess.run(None, cast)]


def feeds_for(model: onnx.ModelProto, shapes: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {t.name for t in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        dims = (shapes or {}).get(inp.name) or [d.dim_value if d.dim_value > 0 else 2 for d in inp.type.tensor_type.shape.dim]
        out[inp.name] = rng.standard_normal(dims)
    return out


def error_ratios(original: onnx.ModelProto, candidate: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[float]:
    """Per output: max |candidate (float32, onnxruntime) - oracle| over the budget the original's own
    float32 error allows (K * e_ref + floor); <= 1 passes."""
    oracle = run64(original, feeds)
    reference = run32(original, feeds)
    outputs = run32(candidate, feeds)
    assert len(outputs) == len(oracle)
    ratios = []
    for i, (o, r, c) in enumerate(zip(oracle, reference, outputs)):
        if c.shape != o.shape:
            ratios.append(float("inf"))
            continue
        scale = float(np.abs(o).max())
        eps = float(np.finfo(np.float16 if _is_half(original, i) else np.float32).eps)
        allowed = K * float(np.abs(r - o).max()) + max(FLOOR_ULPS * float(np.finfo(np.float32).eps), eps) * scale
        err = float(np.abs(c - o).max())
        ratios.append(err / allowed if allowed else (0.0 if err == 0 else float("inf")))
    return ratios


def assert_equivalent(original: onnx.ModelProto, folded: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[float]:
    """Each output of ``folded`` within the fp32 budget of ``original`` around the float64 oracle."""
    ratios = error_ratios(original, folded, feeds)
    for i, ratio in enumerate(ratios):
        assert ratio <= 1.0, f"output {i}: error {ratio:.3g} times the fp32 budget"
    return ratios


def _is_half(model: onnx.ModelProto, i: int) -> bool:
    return model.graph.output[i].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
