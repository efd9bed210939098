"""Bias correction: with the quantized weights and the corrected bias, each layer's mean output over the
calibration data is the float layer's (exact for 1x1 convs and Gemm, whose inputs have no padded border)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from normfold.quantize import QuantOptions
from normfold.quantize.bias_correction import correct_biases
from normfold.quantize.calibration import DatasetReader
from normfold.quantize.qdq import dequantized_weights, quantize_qdq
from normfold.verify import open_dataset

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((8, 4, 1, 1)) * np.array([1, 3, 0.2, 8])[None, :, None, None]
B1 = RNG.standard_normal(8)
W2 = RNG.standard_normal((6, 8, 1, 1))          # no bias: correction adds one
WG = RNG.standard_normal((5, 6))                # Gemm, transB=1


def _model() -> onnx.ModelProto:
    init = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in
            (("w1", W1), ("b1", B1), ("w2", W2), ("wg", WG))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wg"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_corrected_layers_have_the_float_mean_output(tmp_path):
    x = (RNG.uniform(0, 1, (32, 4, 5, 5)) + np.array([2.0, -1, 0.5, 0])[None, :, None, None]).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    data = open_dataset(tmp_path / "cal.npz", [("x", ["n", 4, 5, 5])])
    reader = DatasetReader(data, range(32), 8, ["x"])
    options = QuantOptions(per_channel=False)            # per tensor: a large weight error to correct
    model = _model()
    before = model.SerializeToString()
    qdq = quantize_qdq(model, reader, options)
    corrected, changes = correct_biases(model, qdq, reader)
    assert model.SerializeToString() == before                   # the input model is not edited
    assert {c.node for c in changes} == {"conv1", "conv2", "gemm"}
    weights = dequantized_weights(qdq)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in corrected.graph.initializer}
    bias = {n.name: inits[n.input[2]] for n in corrected.graph.node if len(n.input) > 2 and n.input[2]}

    def conv1x1(w, v):
        return np.einsum("oc,nchw->nohw", w[:, :, 0, 0], v)

    x64 = x.astype(np.float64)
    c1 = conv1x1(W1, x64) + B1[None, :, None, None]
    r1 = np.maximum(c1, 0)
    c2 = conv1x1(W2, r1)
    f = c2.mean(axis=(2, 3))
    for name, w, v, float_out in (("conv1", weights["conv1"], x64, c1), ("conv2", weights["conv2"], r1, c2)):
        quantized = conv1x1(w, v) + bias[name][None, :, None, None]
        float_mean, q_mean = float_out.mean(axis=(0, 2, 3)), quantized.mean(axis=(0, 2, 3))
        plain = conv1x1(w, v) + (B1[None, :, None, None] if name == "conv1" else 0)     # uncorrected
        assert np.abs(q_mean - float_mean).max() < 1e-5 * np.abs(float_mean).max()
        assert np.abs(plain.mean(axis=(0, 2, 3)) - float_mean).max() > 1e-3    # there was a shift to correct
    g = f @ weights["gemm"].T + bias["gemm"]
    assert np.abs(g.mean(axis=0) - (f @ WG.T).mean(axis=0)).max() < 1e-5 * np.abs(f @ WG.T).max()

