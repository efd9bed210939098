"""The float64 oracle's ConvTranspose (any group) against torch's conv_transpose in float64, and onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from normfold.verify.conv_transpose import conv_transpose
from normfold.verify.float64_graph import Float64Graph

# name: (rank, in channels, out channels, groups, kernel, stride, dilation, padding, output_padding, bias)
TORCH_CASES = {
    "2d-plain": (2, 4, 6, 1, 3, 1, 1, 0, 0, True),
    "2d-grouped-stride2-pad1-outpad1": (2, 4, 6, 2, 3, 2, 1, 1, 1, True),
    "2d-depthwise-stride2-dilated": (2, 6, 6, 6, 3, 2, 2, 2, 1, False),
    "2d-grouped-asymmetric-kernel": (2, 6, 9, 3, (2, 4), (3, 1), (1, 2), (1, 2), (2, 0), True),
    "1d-grouped-stride3": (1, 4, 8, 4, 5, 3, 1, 2, 2, True),
    "3d-grouped": (3, 4, 4, 2, 2, 2, 1, 1, 1, True),
}


def _tuple(v, rank):
    return tuple(v) if isinstance(v, tuple) else (v,) * rank


@pytest.mark.parametrize("case", TORCH_CASES.values(), ids=TORCH_CASES.keys())
def test_matches_torch_conv_transpose_in_float64(case):
    rank, c_in, c_out, groups, kernel, stride, dilation, padding, out_pad, bias = case
    kernel, stride, dilation, padding, out_pad = (_tuple(v, rank) for v in (kernel, stride, dilation, padding, out_pad))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, *[5, 4, 3][:rank], generator=gen, dtype=torch.float64)
    w = torch.randn(c_in, c_out // groups, *kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(c_out, generator=gen, dtype=torch.float64) if bias else None
    fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
          3: torch.nn.functional.conv_transpose3d}[rank]
    expected = fn(x, w, b, stride=stride, padding=padding, output_padding=out_pad, groups=groups,
                  dilation=dilation).numpy()

    got = conv_transpose(x.numpy(), w.numpy(), None if b is None else b.numpy(), strides=stride,
                         dilations=dilation, pads=padding * 2, output_padding=out_pad, group=groups)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()

    # The same through the oracle: a float32 graph, evaluated in float64 by onnx.reference with this op.
    node = helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if bias else []), ["y"], group=groups,
                            strides=list(stride), dilations=list(dilation), pads=list(padding) * 2,
                            output_padding=list(out_pad))
    inits = [numpy_helper.from_array(w.numpy().astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(b.numpy().astype(np.float32), "b"))
    model = _model([node], inits)
    [y] = Float64Graph(model).run([x.numpy()])
    expected32w = fn(x, w.float().double(), None if b is None else b.float().double(), stride=stride,
                     padding=padding, output_padding=out_pad, groups=groups, dilation=dilation).numpy()
    assert y.dtype == np.float64
    assert np.abs(y - expected32w).max() <= 1e-12 * np.abs(expected32w).max()


# name: attributes that set the output size another way than pads
SHAPE_CASES = {
    "output_shape": {"output_shape": [11, 9]},
    "output_shape-one-beyond-full": {"output_shape": [12, 10]},
    "same_upper": {"auto_pad": "SAME_UPPER"},
    "same_lower": {"auto_pad": "SAME_LOWER"},
    "valid": {"auto_pad": "VALID"},
}


@pytest.mark.parametrize("attrs", SHAPE_CASES.values(), ids=SHAPE_CASES.keys())
def test_output_size_attributes_match_onnxruntime(attrs):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=2, strides=[2, 2], **attrs)
    model = _model([node], [numpy_helper.from_array(w, "w")], TensorProto.FLOAT)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    [expected] = session.run(None, {"x": x})
    [got] = Float64Graph(model).run([x])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def _model(nodes, inits, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info("x", dtype, None)],
                              [helper.make_tensor_value_info("y", dtype, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
