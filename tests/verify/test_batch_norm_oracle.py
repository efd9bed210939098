"""The float64 oracle evaluates BatchNormalization in inference mode at every opset, momentum attribute or not
(onnx.reference used the batch's statistics for BatchNormalization-9..13 with momentum, as Paddle exports it)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from normfold.verify.float64_graph import Float64Graph

EPS = 1e-3


def bn_model(opset: int, attributes: dict):
    rng = np.random.default_rng(opset)
    stats = {"scale": rng.uniform(0.5, 1.5, 4), "bias": rng.standard_normal(4), "mean": rng.standard_normal(4),
             "var": rng.uniform(0.2, 2.0, 4)}
    node = helper.make_node("BatchNormalization", ["x", *stats], ["y"], epsilon=EPS, **attributes)
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 3, 5])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in stats.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    onnx.checker.check_model(model)
    return model, {k: v.astype(np.float32).astype(np.float64) for k, v in stats.items()}


@pytest.mark.parametrize("opset, attributes", [
    (9, {"momentum": 0.9}), (11, {"momentum": 0.9}), (11, {}), (13, {"momentum": 0.99}), (15, {"momentum": 0.9}),
    (6, {"is_test": 1, "momentum": 0.9}),
], ids=["bn9-momentum", "bn11-momentum", "bn11", "bn13-momentum", "bn15", "bn6-is-test"])
def test_one_output_batch_norm_uses_the_running_statistics(opset, attributes):
    model, s = bn_model(opset, attributes)
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 5)).astype(np.float32)
    [y] = Float64Graph(model).run([x])
    c = (slice(None), None, None)
    eps = float(np.float32(EPS))
    expected = s["scale"][c] * (x - s["mean"][c]) / np.sqrt(s["var"][c] + eps) + s["bias"][c]
    assert np.abs(y - expected).max() <= 1e-12 * np.abs(expected).max()
