"""onnxruntime's static quantizer, QDQ format, on an fp32 ONNX graph; what it left in float.

``quantize_qdq(model, reader, options)`` runs ``onnxruntime.quantization.quantize_static``
(QuantizeLinear/DequantizeLinear pairs around each quantized tensor, so the
file runs on any provider): weights s8, per output channel unless
``per_channel=False``; activations u8 (asymmetric) or s8 (symmetric); ranges
from the calibration reader by MinMax, Percentile or Entropy.
``calibration_cache``, a JSON file, holds the activation ranges: the first call
fills it, later calls with the same graph (another set of nodes excluded) skip
calibration.

Per-channel QDQ needs opset >= 13 (DequantizeLinear's ``axis``): an older
graph is converted first (``at_least_opset_13``); paddle2onnx writes opset
11/12, and quantizing those unconverted gives an invalid file.

Softmax stays float (``ALWAYS_FLOAT``): onnxruntime's quantizer fixes a
Softmax output's range to [0, 1], steps of 1/255, so a 1000-class softmax of
probabilities near 0.001 quantizes to all zeros (seen on Ultralytics' YOLOv8
classifier: top-1 agreement 0 %), and attention weights lose most of their
resolution.

Refused up front (``quantize_problem``): a graph already quantized (QDQ,
QLinear*, *Integer ops: its weights' meaning is fixed), an fp16 graph.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from .options import QuantOptions

QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd",
    "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QGemm",
    "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention", "MatMulNBits",
    "MatMulIntegerToFloat", "QLinearSoftmax", "QLinearAveragePool", "QLinearReduceMean", "QLinearWhere",
})
# Nodes whose arithmetic a user expects in INT8: listed by name when they stay float.
COMPUTE_ORDER = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ALWAYS_FLOAT = ("Softmax",)
COMPUTE_OPS = frozenset(COMPUTE_ORDER)
_CALIBRATION = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def quantize_problem(model: onnx.ModelProto, where: str) -> str | None:
    """Why ``model`` cannot be quantized (already quantized, not float32), or None."""
    found = collections.Counter(n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS)
    if found:
        ops = ", ".join(f"{op} {k}" for op, k in found.most_common())
        return (f"{where} is already quantized ({ops}): normfold quantizes a float32 graph and folds nothing "
                "that would change a quantized weight's meaning")
    f16 = onnx.TensorProto.FLOAT16
    halves = [i.name for i in model.graph.input if i.type.tensor_type.elem_type == f16] + \
             [t.name for t in model.graph.initializer if t.data_type == f16]
    if halves:
        return (f"{where} is float16 ({halves[0]!r}): quantize the float32 model (INT8 ranges are calibrated "
                "in float32)")
    return None


def at_least_opset_13(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at default-domain opset >= 13 (converted by onnx.version_converter when older)."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version >= 13:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, 13)


def quantize_qdq(model: onnx.ModelProto, reader, options: QuantOptions, *, exclude: Sequence[str] = (),
                 calibration_cache: str | os.PathLike | None = None) -> onnx.ModelProto:
    """The QDQ model onnxruntime's quantizer makes of ``model`` (opset >= 13); ``exclude``: node names
    kept in float; ``reader``: a CalibrationDataReader (unused when ``calibration_cache`` is filled)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = {"ActivationSymmetric": options.activations == "s8", "WeightSymmetric": True,
             "CalibStridedMinMax": 1}     # one batch at a time (calibration.py): memory stays flat
    if options.calibration == "percentile":
        extra["CalibPercentile"] = options.percentile
    with tempfile.TemporaryDirectory(prefix="normfold-quantize-") as tmp, _quiet_advice():
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        if reader is not None:
            reader.rewind()
        quantize_static(
            str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(options.op_types) if options.op_types else None,
            per_channel=options.per_channel, reduce_range=False,
            activation_type=QuantType.QUInt8 if options.activations == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude) + always_float(model) or None,
            calibrate_method=getattr(CalibrationMethod, _CALIBRATION[options.calibration]),
            extra_options=extra,
            calibration_cache_path=None if calibration_cache is None else str(calibration_cache))
        return onnx.load(str(dst))


@contextlib.contextmanager
def _quiet_advice():
    """onnxruntime's quantizer logs "Please consider pre-processing" at WARNING on the root logger for every
    call, and its histogram calibrators print progress to stdout: neither reaches normfold's report.
    Other warnings pass."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record):
            return "pre-processing" not in record.getMessage() and "pre-process" not in record.getMessage()

    root, drop = logging.getLogger(), _Drop()
    root.addFilter(drop)
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # the histogram calibrators print their progress
            yield
    finally:
        root.removeFilter(drop)


def always_float(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept float whatever the options (ALWAYS_FLOAT, see the module docstring)."""
    return [n.name for n in model.graph.node if n.op_type in ALWAYS_FLOAT]


def float_nodes(qdq: onnx.ModelProto) -> dict[str, list[str]]:
    """op type -> names of the nodes of ``qdq`` that compute in float: no input comes from a
    DequantizeLinear (shape and data-movement ops included; COMPUTE_OPS are what matters for speed)."""
    dequantized = {o for n in qdq.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out: dict[str, list[str]] = collections.defaultdict(list)
    for n in qdq.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or any(i in dequantized for i in n.input):
            continue
        out[n.op_type].append(n.name)
    return dict(out)


def dequantized_weights(qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
    """node name -> its weight (input 1) as the QDQ graph computes it: (q - zero_point) * scale, float64,
    for every Conv/ConvTranspose/Gemm/MatMul whose weight is a DequantizeLinear of an initializer."""
    from onnx import numpy_helper

    inits = {t.name: t for t in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    out = {}
    for n in qdq.graph.node:
        if n.op_type not in COMPUTE_OPS or len(n.input) < 2:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] \
            else np.zeros_like(scale)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        out[n.name] = (q - zero) * scale
    return out
