"""Small ONNX files written with onnx.helper (no exporter): what a third party might hand over."""
from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

C_IN, C_OUT = 3, 4
EPS = 1e-3


def conv_bn_relu(shape=("n", C_IN, 8, 8), opset: int = 18, seed: int = 0, elem=TensorProto.FLOAT,
                 tail: list | None = None, extra_inputs: int = 0):
    """x -> Conv(3x3, pad 1) -> BatchNormalization -> Relu [-> ``tail`` nodes] -> y, with real statistics.

    Returns (ModelProto, params) where params holds the float32 weights for an independent float64 check.
    """
    rng = np.random.default_rng(seed)
    p = {
        "w": rng.standard_normal((C_OUT, C_IN, 3, 3)).astype(np.float32) * 0.3,
        "b": rng.standard_normal(C_OUT).astype(np.float32) * 0.1,
        "gamma": rng.uniform(0.5, 1.5, C_OUT).astype(np.float32),
        "beta": rng.standard_normal(C_OUT).astype(np.float32) * 0.1,
        "mean": rng.standard_normal(C_OUT).astype(np.float32) * 0.3,
        "var": rng.uniform(0.2, 2.0, C_OUT).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv_out", "gamma", "beta", "mean", "var"], ["bn_out"],
                         name="bn", epsilon=EPS),
        helper.make_node("Relu", ["bn_out"], ["relu_out" if tail else "y"], name="relu"),
    ] + (tail or [])
    out_shape = [shape[0], C_OUT, *shape[2:]]
    inputs = [helper.make_tensor_value_info("x", elem, list(shape))]
    inputs += [helper.make_tensor_value_info(f"x{i}", elem, list(shape)) for i in range(1, extra_inputs + 1)]
    graph = helper.make_graph(nodes, "conv_bn_relu", inputs, [helper.make_tensor_value_info("y", elem, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in p.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model, p


def conv_bn_relu_float64(p: dict, x: torch.Tensor) -> np.ndarray:
    """The graph of ``conv_bn_relu`` computed by torch in float64 (no tail)."""
    t = {k: torch.from_numpy(v).double() for k, v in p.items()}
    y = torch.nn.functional.conv2d(x.double(), t["w"], t["b"], padding=1)
    eps = float(np.float32(EPS))   # the attribute is a float32: the graph's epsilon is that value
    y = torch.nn.functional.batch_norm(y, t["mean"], t["var"], t["gamma"], t["beta"], False, 0.0, eps)
    return y.relu().numpy()


def to_float16(model):
    """The same graph in float16: initializers, inputs and outputs (value_info dropped)."""
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for v in [*model.graph.input, *model.graph.output]:
        v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del model.graph.value_info[:]
    return model
