"""The two rewrites that fold no norm (normfold/fold/onnx/tidy.py): a Reshape whose target is computed
from shapes gets a stored one only where it is the same at every batch size, and Identity nodes go.
Each case: the ops left, the stored target, and the folded graph against a float64 evaluation of the
original at batch 1, 2 and 3 (the batch axis is symbolic in every case)."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import normfold

from ._graphs import Graph
from ._oracle import assert_equivalent, feeds_for

SHAPE_OPS = ("Shape", "Cast", "Slice", "Gather", "Unsqueeze", "Concat")


def _pooled(g: Graph) -> str:
    """(N, 8, 1, 1): a conv and a global pool, as before a classifier."""
    return g.op("GlobalAveragePool", [g.conv(g.x, 3, 8)])


def paddle_flatten():
    """paddle2onnx's flatten: Shape -> Cast(int32) -> Slice[0:1] -> Cast(int64) -> Concat with [8]."""
    g = Graph(("N", 3, 6, 6))
    y = _pooled(g)
    n = g.op("Cast", [g.op("Slice", [g.op("Cast", [g.op("Shape", [y])], to=TensorProto.INT32),
                                      g.const(np.array([0])), g.const(np.array([1])), g.const(np.array([0]))])],
             to=TensorProto.INT64)
    flat = g.op("Reshape", [y, g.op("Concat", [n, g.const(np.array([8]))], axis=0)])
    return g.build(g.op("MatMul", [flat, g.const(g.randn(8, 4))])), [0, 8]


def gather_flatten():
    """The TorchScript exporter's flatten: Shape -> Gather(0) -> Unsqueeze -> Concat with [-1]."""
    g = Graph(("N", 3, 6, 6))
    y = _pooled(g)
    n = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [y]), g.const(np.array(0))], axis=0), g.const(np.array([0]))])
    flat = g.op("Reshape", [y, g.op("Concat", [n, g.const(np.array([-1]))], axis=0)])
    return g.build(g.op("MatMul", [flat, g.const(g.randn(8, 4))])), [0, -1]


def shape_of_another_tensor():
    """The batch read off the input, not off the reshaped tensor: equal here, but not the same dim: left."""
    g = Graph(("N", 3, 6, 6))
    y = _pooled(g)
    n = g.op("Slice", [g.op("Shape", [g.x]), g.const(np.array([0])), g.const(np.array([1]))])
    return g.build(g.op("Reshape", [y, g.op("Concat", [n, g.const(np.array([8]))], axis=0)])), None


def batch_moved():
    """(N, 8, 1, 1) -> [8, N]: the batch written at another index, which a stored 0 cannot say: left."""
    g = Graph(("N", 3, 6, 6))
    y = _pooled(g)
    n = g.op("Slice", [g.op("Shape", [y]), g.const(np.array([0])), g.const(np.array([1]))])
    return g.build(g.op("Reshape", [y, g.op("Concat", [g.const(np.array([8])), n], axis=0)])), None


def unfollowed_op():
    """The batch passed through an op the rewrite does not follow (a Div by 1): left."""
    g = Graph(("N", 3, 6, 6))
    y = _pooled(g)
    n = g.op("Div", [g.op("Slice", [g.op("Shape", [y]), g.const(np.array([0])), g.const(np.array([1]))]),
                     g.const(np.array([1]))])
    return g.build(g.op("Reshape", [y, g.op("Concat", [n, g.const(np.array([8]))], axis=0)])), None


RESHAPES = {
    "paddle-flatten": paddle_flatten,
    "gather-unsqueeze-flatten": gather_flatten,
    "shape-of-another-tensor": shape_of_another_tensor,
    "batch-written-elsewhere": batch_moved,
    "unfollowed-op": unfollowed_op,
}


@pytest.mark.parametrize("name", list(RESHAPES))
def test_computed_reshape_target(name):
    model, stored = RESHAPES[name]()
    folded, _ = normfold.fold_onnx(model)
    onnx.checker.check_model(folded, full_check=True)
    (reshape,) = [n for n in folded.graph.node if n.op_type == "Reshape"]
    left = collections.Counter(n.op_type for n in folded.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    if stored is None:
        assert reshape.input[1] not in inits and left["Shape"] >= 1
    else:
        assert inits[reshape.input[1]].tolist() == stored
        assert not any(left[op] for op in SHAPE_OPS), left
    for batch in (1, 2, 3):
        assert_equivalent(model, folded, feeds_for(model, {"x": [batch, 3, 6, 6]}, seed=batch))


def test_identity_between_conv_and_bn_goes_and_the_bn_folds():
    g = Graph(("N", 3, 8, 8))
    y = g.bn(g.op("Identity", [g.conv(g.x, 3, 8, name="conv")]), 8, name="bn")
    model = g.build(g.op("Identity", [y], name="last"))
    folded, report = normfold.fold_onnx(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv"]
    assert [(f.norm, f.into) for f in report.folded] == [("bn", "conv")]
    assert [o.name for o in folded.graph.output] == [o.name for o in model.graph.output]  # the output keeps its name
    for batch in (1, 2):
        assert_equivalent(model, folded, feeds_for(model, {"x": [batch, 3, 8, 8]}, seed=batch))


def test_identity_of_a_graph_input_stays():
    """Its output is a graph output and its input a graph input: no node can take the output's name."""
    g = Graph(("N", 3, 8, 8))
    model = g.build(g.op("Identity", [g.x]), g.conv(g.x, 3, 4))
    folded, _ = normfold.fold_onnx(model)
    assert collections.Counter(n.op_type for n in folded.graph.node) == {"Identity": 1, "Conv": 1}
    assert_equivalent(model, folded, feeds_for(model, {"x": [2, 3, 8, 8]}))
