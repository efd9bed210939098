"""Norms across channel-preserving layout ops (normfold/fold/onnx/through.py): the map moves to the
layer's side of a Flatten/Squeeze/Unsqueeze/Reshape/Transpose that provably carries the channel axis
whole, and is refused with the reason where the shapes do not prove it."""
from __future__ import annotations

import numpy as np
import pytest

from ._graphs import Graph
from .test_sites import Case, check_case


def _ints(g, values):
    return g.const(np.array(values, dtype=np.int64), cast=False)


def se_flatten_batchnorm1d(batch):
    """Squeeze-excitation with BatchNorm1d: Conv 1x1 on (N, C, 1, 1) -> Flatten -> BatchNormalization on (N, C)."""
    def build():
        g = Graph((batch, 8, 1, 1))
        y = g.op("Flatten", [g.conv(g.x, 8, 4, k=1, pads=0, name="fc1")], name="flat")
        y = g.op("Relu", [g.bn(y, 4, name="bn1d")])
        return Case(g.build(y), {"Conv": 1, "Flatten": 1, "Relu": 1}, {"conv-backward"})
    return build


def squeeze_then_batchnorm():
    g = Graph((2, 6, 1, 1), opset=13)
    y = g.op("Squeeze", [g.conv(g.x, 6, 6, k=1, pads=0), _ints(g, [2, 3])])
    return Case(g.build(g.bn(y, 6)), {"Conv": 1, "Squeeze": 1}, {"conv-backward"})


def reshape_then_affine():
    """Reshape (N, C, 1, 1) -> (N, C) with a constant target [0, -1], then a per-channel Mul and Add."""
    g = Graph(("batch", 5, 1, 1))
    y = g.op("Reshape", [g.conv(g.x, 5, 5, k=1, pads=0), _ints(g, [0, -1])])
    y = g.op("Add", [g.op("Mul", [y, g.const(g.randn(5))]), g.const(g.randn(5))])
    return Case(g.build(g.op("Relu", [y])), {"Conv": 1, "Reshape": 1, "Relu": 1}, {"conv-backward"})


def transpose_then_last_axis_scale():
    """NCHW -> NHWC, then a constant of shape (C,): the channels, now the last axis."""
    g = Graph((2, 3, 4, 5))
    y = g.op("Transpose", [g.conv(g.x, 3, 6)], perm=[0, 2, 3, 1])
    y = g.op("Mul", [y, g.const(g.randn(6))])
    return Case(g.build(y), {"Conv": 1, "Transpose": 1}, {"conv-backward"})


def gemm_unsqueeze_batchnorm():
    """Gemm (N, C) -> Unsqueeze to (N, C, 1, 1) -> BatchNormalization: into the Gemm's output features."""
    g = Graph((3, 6), opset=13)
    y = g.op("Gemm", [g.x, g.const(g.randn(5, 6)), g.const(g.randn(5))], transB=1)
    y = g.op("Unsqueeze", [y, _ints(g, [2, 3])])
    return Case(g.build(g.bn(y, 5)), {"Gemm": 1, "Unsqueeze": 1}, {"gemm-backward"})


def batchnorm_flatten_gemm():
    """A classifier head: BatchNormalization on (N, C, 1, 1) -> Flatten -> Gemm: forward, into the Gemm."""
    g = Graph((2, 4, 1, 1))
    y = g.op("Flatten", [g.bn(g.x, 4)])
    y = g.op("Gemm", [y, g.const(g.randn(3, 4)), g.const(g.randn(3))], transB=1)
    return Case(g.build(y), {"Flatten": 1, "Gemm": 1}, {"gemm-forward"})


def nhwc_affine_transpose_padded_conv():
    """NHWC input normalized on its last axis, transposed to NCHW, then a zero-padded conv: forward, with
    the input shift x - nu placed after the Transpose, on the conv's side."""
    g = Graph((2, 5, 5, 3))
    y = g.op("Div", [g.op("Sub", [g.x, g.const(g.randn(3))]), g.const(g.rng.uniform(0.5, 2, 3))])
    y = g.op("Transpose", [y], perm=[0, 3, 1, 2])
    return Case(g.build(g.conv(y, 3, 4)), {"Transpose": 1, "Sub": 1, "Conv": 1}, {"conv-forward"},
                notes=("zero padding: input shift x - nu",))


def flatten_of_positions_refused():
    """Flatten of (N, C, 2, 2): the BatchNormalization's 12 features mix channels and positions."""
    g = Graph((2, 3, 2, 2))
    y = g.op("Flatten", [g.conv(g.x, 3, 3, k=1, pads=0, name="conv")], name="flat")
    return Case(g.build(g.bn(y, 12)), {"Conv": 1, "Flatten": 1, "BatchNormalization": 1},
                skipped=("the norm acts on axis 1 of the [2, 12] output of flat (Flatten), and no axis of its "
                         "[2, 3, 2, 2] input carries those channels whole",))


def reshape_splitting_channels_refused():
    """(N, 8, 1, 1) -> (N, 2, 4), a scale of shape (4,): it acts on half a channel index."""
    g = Graph((2, 8, 1, 1))
    y = g.op("Reshape", [g.conv(g.x, 8, 8, k=1, pads=0), _ints(g, [2, 2, 4])], name="split")
    y = g.op("Mul", [y, g.const(g.randn(4))])
    return Case(g.build(y), {"Conv": 1, "Reshape": 1, "Mul": 1},
                skipped=("the norm acts on axis 2 of the [2, 2, 4] output of split (Reshape), and no axis of its "
                         "[2, 8, 1, 1] input carries those channels whole",))


def flatten_read_twice_refused():
    """The flattened tensor also feeds a Relu: a fold into the conv would change what the Relu reads."""
    g = Graph((2, 4, 1, 1))
    flat = g.op("Flatten", [g.conv(g.x, 4, 4, k=1, pads=0)], name="flat")
    return Case(g.build(g.bn(flat, 4), g.op("Relu", [flat])),
                {"Conv": 1, "Flatten": 1, "BatchNormalization": 1, "Relu": 1},
                skipped=("its input comes from flat (Flatten), not a Conv",))


CASES = {
    "se-flatten-batchnorm1d": se_flatten_batchnorm1d(2),
    "se-flatten-batchnorm1d-batch-1": se_flatten_batchnorm1d(1),
    "squeeze-batchnorm": squeeze_then_batchnorm,
    "reshape-mul-add-symbolic-batch": reshape_then_affine,
    "transpose-nhwc-scale": transpose_then_last_axis_scale,
    "gemm-unsqueeze-batchnorm": gemm_unsqueeze_batchnorm,
    "batchnorm-flatten-gemm-forward": batchnorm_flatten_gemm,
    "nhwc-affine-transpose-padded-conv-forward": nhwc_affine_transpose_padded_conv,
    "flatten-of-positions-refused": flatten_of_positions_refused,
    "reshape-splitting-channels-refused": reshape_splitting_channels_refused,
    "flatten-read-twice-refused": flatten_read_twice_refused,
}


@pytest.mark.parametrize("name", CASES)
def test_across_layout(name):
    check_case(CASES[name]())


def test_matmul_bias_across_a_reshape():
    """MatMul (N, L, C) -> Reshape to (N*L, C) -> a per-feature scale and shift: into the MatMul, the
    shift as an Add after it, before the Reshape."""
    g = Graph((2, 3, 6))
    y = g.op("MatMul", [g.x, g.const(g.randn(6, 5))])
    y = g.op("Reshape", [y, _ints(g, [6, 5])])
    y = g.op("Add", [g.op("Mul", [y, g.const(g.randn(5))]), g.const(g.randn(5))])
    check_case(Case(g.build(y), {"MatMul": 1, "Add": 1, "Reshape": 1}, {"matmul-backward"}))
