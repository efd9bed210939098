"""Already quantized graphs: the pass changes no quantized weight, and says so.

A quantized weight is stored as integers ``q`` with a scale ``s`` and zero
point ``z``; the layer reads ``DequantizeLinear(q, s, z) = s (q - z)`` (QDQ
format) or takes ``q`` itself (QLinearConv, QLinearMatMul, ConvInteger,
MatMulInteger and onnxruntime's contrib ops). Folding a norm into it would
need new integers on a new grid (a requantization, with its own error): no
longer an exact fold, and it changes what the stored integers mean. So:

* a Conv/Gemm/MatMul whose weight or bias comes from a DequantizeLinear is no
  layer to fold into: the site is refused with that reason;
* the integer ops are no layers the rules know, so a norm next to them is
  refused as next to any other op;
* float constants the graph keeps outside the quantized layers still fold.

``summary`` names the quantization ops of a graph for the report's warning.
"""
from __future__ import annotations

import collections

import onnx_ir as ir

from . import layout
from .graph import label

DEQUANTIZE = ("DequantizeLinear",)
PASSING = (*layout.OPS, "Cast")  # ops between a DequantizeLinear and the weight that keep its values
QUANTIZATION_OPS = (
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger",
    # onnxruntime's com.microsoft contrib ops
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "DynamicQuantizeLSTM", "QOrderedMatMul", "MatMulNBits",
)


def dequantized(what: str, value: ir.Value, node: ir.Node) -> str | None:
    """Why the ``what`` of ``node`` cannot take a fold because it is quantized, or None."""
    producer = value.producer()
    while producer is not None and producer.op_type in PASSING and producer.inputs and producer.inputs[0] is not None:
        producer = producer.inputs[0].producer()  # DequantizeLinear -> Transpose -> weight, as exporters write it
    if producer is None or producer.op_type not in DEQUANTIZE:
        return None
    return (f"the {what} {value.name!r} of {label(node)} is quantized (it is the output of {label(producer)}, "
            f"{producer.op_type}): a fold would change what its stored integers mean, so it is left as it is")


def summary(graph: ir.Graph) -> str | None:
    """A warning naming the quantization ops of ``graph`` (subgraphs included), or None without any."""
    ops = collections.Counter(n.op_type for n in graph.all_nodes() if n.op_type in QUANTIZATION_OPS)
    if not ops:
        return None
    listed = ", ".join(f"{k} {v}" for k, v in ops.most_common())
    return (f"the graph is already quantized ({listed}): the fold changed no quantized weight; a norm next to a "
            "layer with quantized weights is skipped with that reason, float layers fold as usual")
