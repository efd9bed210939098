"""The equivalence check of the ONNX fold tests (and scripts/onnx_peers.py).

The oracle is the *original* graph evaluated in float64 by normfold.verify's
ONNX oracle (onnx.reference on a float64 copy; its own ConvTranspose for
groups > 1): code the fold pass does not share. A folded graph passes when its
float32 onnxruntime (CPU) output is at most K times as far from the oracle as
the original's own float32 onnxruntime output, plus a floor of a few float32
ulps of the output scale: the rule of tests/conftest.py.
"""
from __future__ import annotations

import numpy as np
import onnx

from normfold.verify.float64_graph import Float64Graph

from ..conftest import FLOOR_ULPS, K


def run64(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    graph = Float64Graph(model)
    return graph.run([feeds[name] for name in graph.input_names])


def run32(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    cast = {k: v.astype(np.float16 if "float16" in types[k] else np.float32) if v.dtype.kind == "f" else v
            for k, v in feeds.items()}
    return [np.asarray(y, np.float64) for y in sess.run(None, cast)]


def feeds_for(model: onnx.ModelProto, shapes: dict | None = None, seed: int = 0,
              values: dict | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs: floats N(0, 1) (as float64), integers 0 or 1 in the input's own type; ``values``: a
    fixed value per input name (silero-vad's sample rate), broadcast to its shape."""
    rng = np.random.default_rng(seed)
    weights = {t.name for t in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        dims = (shapes or {}).get(inp.name)
        if dims is None:
            dims = [d.dim_value if d.dim_value > 0 else 2 for d in inp.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        if inp.name in (values or {}):
            out[inp.name] = np.full(dims, values[inp.name], dtype=dtype)
        elif dtype.kind == "f":
            out[inp.name] = rng.standard_normal(dims)
        else:
            out[inp.name] = rng.integers(0, 2, dims).astype(dtype)
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
