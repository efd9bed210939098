"""Already quantized graphs (normfold/fold/onnx/quantized.py): no fold changes what a quantized weight
means. A norm next to a layer whose weight comes from a DequantizeLinear is refused with that reason,
the report says the graph is quantized, and the folded file computes what the original does; a float
layer beside the quantized ones still folds."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

import normfold

from ._graphs import Graph
from ._oracle import feeds_for, run32


def _quantized_weight(g, cout, cin, k, name):
    """An int8 weight with a per-tensor scale, dequantized in the graph (QDQ)."""
    q = g.const(g.rng.integers(-127, 128, (cout, cin, k, k)).astype(np.int8), name=f"{name}_q", cast=False)
    return g.op("DequantizeLinear", [q, g.const(np.array(0.02, np.float32), cast=False),
                                     g.const(np.array(0, np.int8), cast=False)], name=f"{name}_dq")


def qdq_conv_then_batchnorm():
    g = Graph((2, 3, 6, 6), opset=17)
    y = g.op("Conv", [g.x, _quantized_weight(g, 4, 3, 3, "w"), g.const(g.randn(4))], name="qconv",
             pads=[1] * 4, kernel_shape=[3, 3])
    return (g.build(g.bn(y, 4, name="bn_q")), "bn_q",
            "the weight 'w_dq_out' of qconv is quantized (it is the output of w_dq, DequantizeLinear)")


def scale_before_qdq_conv():
    g = Graph((2, 3, 6, 6), opset=17)
    y = g.op("Mul", [g.x, g.const(g.rng.uniform(0.5, 2, (3, 1, 1)))], name="scale")
    y = g.op("Conv", [y, _quantized_weight(g, 4, 3, 1, "w"), g.const(g.randn(4))], name="qconv", kernel_shape=[1, 1])
    return g.build(y), "scale", "the weight 'w_dq_out' of qconv is quantized"


def transposed_qdq_matmul():
    """DequantizeLinear -> Transpose -> MatMul, as exporters write a Linear's weight."""
    g = Graph((3, 6), opset=17)
    q = g.const(g.rng.integers(-127, 128, (5, 6)).astype(np.int8), name="w_q", cast=False)
    w = g.op("DequantizeLinear", [q, g.const(np.array(0.05, np.float32), cast=False)], name="w_dq")
    y = g.op("MatMul", [g.x, g.op("Transpose", [w], perm=[1, 0])], name="qlinear")
    return g.build(g.bn(y, 5, name="bn_lin")), "bn_lin", "is quantized (it is the output of w_dq, DequantizeLinear)"


@pytest.mark.parametrize("build", [qdq_conv_then_batchnorm, scale_before_qdq_conv, transposed_qdq_matmul],
                         ids=["conv-batchnorm", "scale-conv-forward", "transposed-matmul-batchnorm"])
def test_a_norm_next_to_a_quantized_weight_is_refused(build):
    model, site, reason = build()
    folded, report = normfold.fold_onnx(model)
    onnx.checker.check_model(folded, full_check=True)
    assert report.folded == []
    assert [s.norm for s in report.skipped] == [site]
    why = report.skipped[0].reason
    assert reason in why and "a fold would change what its stored integers mean" in why
    assert any("the graph is already quantized (DequantizeLinear 1)" in w for w in report.warnings)
    before = collections.Counter(n.op_type for n in model.graph.node)
    assert collections.Counter(n.op_type for n in folded.graph.node) == before   # the DequantizeLinear stays
    stored = {t.name: t for t in folded.graph.initializer}
    assert onnx.TensorProto.INT8 in {t.data_type for t in stored.values()}
    feeds = feeds_for(model)
    for a, b in zip(run32(model, feeds), run32(folded, feeds)):
        np.testing.assert_array_equal(a, b)   # onnxruntime: the same computation


def test_a_float_layer_beside_quantized_ones_still_folds():
    g = Graph((2, 3, 6, 6), opset=17)
    y = g.op("Conv", [g.x, _quantized_weight(g, 4, 3, 3, "w")], name="qconv", pads=[1] * 4, kernel_shape=[3, 3])
    y = g.bn(g.conv(g.op("Relu", [y]), 4, 4, name="fconv"), 4, name="bn_f")
    model = g.build(y)
    folded, report = normfold.fold_onnx(model)
    assert [(f.norm, f.into) for f in report.folded] == [("bn_f", "fconv")] and not report.skipped
    assert any("already quantized" in w for w in report.warnings)
    feeds = feeds_for(model)
    for a, b in zip(run32(model, feeds), run32(folded, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))


def test_a_float_graph_has_no_quantization_warning():
    g = Graph((2, 3, 6, 6))
    _, report = normfold.fold_onnx(g.build(g.bn(g.conv(g.x, 3, 4), 4)))
    assert not any("quantized" in w for w in report.warnings)
