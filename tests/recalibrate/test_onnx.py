"""recalibrate_onnx(): BatchNormalization statistics from the node inputs, layer by layer, in BN-depth passes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from normfold.recalibrate import RecalibrationError, onnx_health, recalibrate_onnx

EPS = 1e-5


def bn_graph(seed=0):
    """x -> Conv1x1 -> a -> BN1 -> Relu -> Conv1x1 -> BN2 -> y;  a -> BN3 -> z (BN3 reads BN1's mean and
    var initializers too). Returns (model, params)."""
    rng = np.random.default_rng(seed)
    f = np.float32
    p = {"w1": rng.standard_normal((4, 3, 1, 1)).astype(f), "b1": rng.standard_normal(4).astype(f),
         "w2": rng.standard_normal((4, 4, 1, 1)).astype(f),
         "g": rng.uniform(0.5, 1.5, 4).astype(f), "beta": rng.standard_normal(4).astype(f),
         "m1": rng.standard_normal(4).astype(f), "v1": rng.uniform(0.3, 3, 4).astype(f),
         "m2": rng.standard_normal(4).astype(f), "v2": rng.uniform(0.3, 3, 4).astype(f)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1"),
        helper.make_node("BatchNormalization", ["a", "g", "beta", "m1", "v1"], ["bn1_out"], name="bn1", epsilon=EPS),
        helper.make_node("Relu", ["bn1_out"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "g", "beta", "m2", "v2"], ["y"], name="bn2", epsilon=EPS),
        helper.make_node("BatchNormalization", ["a", "g", "beta", "m1", "v1"], ["z"], name="bn3", epsilon=EPS),
    ]
    graph = helper.make_graph(nodes, "bns", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5, 5])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", 4, 5, 5]) for o in "yz"],
                              [numpy_helper.from_array(v, k) for k, v in p.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), p


def _stats(h):
    cols = np.moveaxis(h, 1, 0).reshape(h.shape[1], -1)
    return cols.mean(1), cols.var(1, ddof=1)


def _expected(p, x):
    """Computed here in float64: BN1 and BN3 from conv1's output, BN2 from conv2 after the recalibrated BN1."""
    d = {k: v.astype(np.float64) for k, v in p.items()}
    a = np.einsum("oc,nchw->nohw", d["w1"][:, :, 0, 0], x) + d["b1"][None, :, None, None]
    m1, v1 = _stats(a)
    bn1 = (a - m1[None, :, None, None]) / np.sqrt(v1 + EPS)[None, :, None, None] * d["g"][None, :, None, None] \
        + d["beta"][None, :, None, None]
    c2 = np.einsum("oc,nchw->nohw", d["w2"][:, :, 0, 0], np.maximum(bn1, 0))
    m2, v2 = _stats(c2)
    return {"bn1": (m1, v1), "bn2": (m2, v2), "bn3": (m1, v1)}


def _bn_stats(model, name):
    node = next(n for n in model.graph.node if n.name == name)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return inits[node.input[3]], inits[node.input[4]]


@pytest.mark.parametrize("batch", [3, 30])
def test_batch_norm_statistics_equal_the_direct_computation(batch):
    model, p = bn_graph()
    x = (np.random.default_rng(1).standard_normal((30, 3, 5, 5)) * 2 + 1).astype(np.float32)
    original = model.SerializeToString()
    new, report = recalibrate_onnx(model, x, batch_size=batch)
    assert model.SerializeToString() == original         # the input graph is not modified
    onnx.checker.check_model(new)
    assert report.passes == 2                            # BN depth: {bn1, bn3}, then bn2
    for name, (mean, var) in _expected(p, x.astype(np.float64)).items():
        got_mean, got_var = _bn_stats(new, name)
        # onnxruntime computes the activations in float32; they are merged in float64
        np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-5 * np.abs(mean).max(), err_msg=name)
        np.testing.assert_allclose(got_var, var, rtol=1e-5, err_msg=name)
    assert all(not h.far for h in onnx_health(new, x).layers)
    assert onnx_health(model, x).far


def test_a_graph_without_batch_norm_statistics_is_refused():
    model, _ = bn_graph()
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            node.attribute.append(helper.make_attribute("training_mode", 1))
    with pytest.raises(RecalibrationError, match="no BatchNormalization node .* training mode"):
        recalibrate_onnx(model, np.zeros((2, 3, 5, 5), np.float32))


def test_a_training_mode_node_is_skipped_and_keeps_the_initializers_it_shares():
    model, p = bn_graph()
    bn3 = next(n for n in model.graph.node if n.name == "bn3")
    bn3.attribute.append(helper.make_attribute("training_mode", 1))
    bn3.output.extend(["z_mean", "z_var"])          # training mode has the running statistics as outputs
    x = np.random.default_rng(1).standard_normal((12, 3, 5, 5)).astype(np.float32)
    new, report = recalibrate_onnx(model, x)
    assert [h.layer for h in report.layers] == ["bn1", "bn2"]
    assert report.skipped == ["bn3: in training mode (normalizes with batch statistics)"]
    np.testing.assert_array_equal(_bn_stats(new, "bn3")[0], p["m1"])        # bn3 still reads the old m1
    mean, _ = _expected(p, x.astype(np.float64))["bn1"]
    np.testing.assert_allclose(_bn_stats(new, "bn1")[0], mean, rtol=1e-5, atol=1e-5 * np.abs(mean).max())
