"""Shared weights and biases (normfold/fold/onnx/copies.py): each consumer that takes a fold gets its
own folded copy, one that does not keeps the original, the added bytes are in the report, and a copy
beyond the bound is refused with the sizes."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

import normfold
from normfold.fold.onnx import copies

from ._graphs import Graph
from ._oracle import assert_equivalent, feeds_for


def _shared(norm_b: bool, shared_bias: bool = False, cout: int = 4, k: int = 3):
    """x -> conv_a(w) -> bn -> ; x -> conv_b(w) [-> bn] -> ; added. ``w`` (and the bias) one initializer."""
    g = Graph((2, 3, 6, 6))
    w = g.const(g.randn(cout, 3, k, k, scale=0.3), name="w")
    bias = [g.const(g.randn(cout, scale=0.1), name="b")] if shared_bias else []
    a = g.op("Conv", [g.x, w, *bias], name="conv_a", pads=[k // 2] * 4, kernel_shape=[k, k])
    b = g.op("Conv", [g.x, w, *bias], name="conv_b", pads=[k // 2] * 4, kernel_shape=[k, k])
    b = g.bn(b, cout, name="bn_b") if norm_b else g.op("Relu", [b])
    return g.build(g.op("Add", [g.bn(a, cout, name="bn_a"), b]))


def _initializers(model):
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("shared_bias", [False, True], ids=["weight", "weight-and-bias"])
def test_both_consumers_fold_each_with_its_own_copy(shared_bias):
    model = _shared(norm_b=True, shared_bias=shared_bias)
    before = model.SerializeToString()
    folded, report = normfold.fold_onnx(model)
    assert model.SerializeToString() == before
    onnx.checker.check_model(folded, full_check=True)
    assert sorted((f.norm, f.into) for f in report.folded) == [("bn_a", "conv_a"), ("bn_b", "conv_b")]
    assert not report.skipped
    ops = collections.Counter(n.op_type for n in folded.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Conv"] == 2
    weights = _initializers(folded)
    convs = {n.name: n for n in folded.graph.node if n.op_type == "Conv"}
    assert convs["conv_a"].input[1] != convs["conv_b"].input[1] and "w" not in weights   # the original is gone
    # two copies where there was one: the model grows by one weight (and one bias)
    w_bytes = 4 * 3 * 3 * 3 * 4
    assert report.added_bytes == w_bytes + (4 * 4 if shared_bias else 0)
    assert sum("its own copy of the weight 'w' shared with" in f.note for f in report.folded) == 1
    assert report.to_dict()["added_bytes"] == report.added_bytes
    assert_equivalent(model, folded, feeds_for(model))


def test_a_consumer_without_a_norm_keeps_the_original():
    model = _shared(norm_b=False, shared_bias=True)
    folded, report = normfold.fold_onnx(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [(f.norm, f.into) for f in report.folded] == [("bn_a", "conv_a")]
    original = _initializers(model)
    weights = _initializers(folded)
    convs = {n.name: n for n in folded.graph.node if n.op_type == "Conv"}
    assert convs["conv_b"].input[1:] == ["w", "b"]
    np.testing.assert_array_equal(weights["w"], original["w"])   # unchanged, for conv_b
    assert convs["conv_a"].input[1] not in ("w",) and convs["conv_a"].input[2] != "b"
    assert report.added_bytes == 4 * 3 * 3 * 3 * 4 + 4 * 4     # conv_a's weight and bias copies
    assert_equivalent(model, folded, feeds_for(model))


def test_copies_beyond_the_bound_are_refused_with_the_sizes(monkeypatch):
    monkeypatch.setattr(copies, "FLOOR", 100)   # below one copy of the 432-byte weight
    model = _shared(norm_b=True)
    folded, report = normfold.fold_onnx(model)
    reasons = [s.reason for s in report.skipped]
    assert len(reasons) == 2 and report.folded == [] and report.added_bytes == 0
    for reason in reasons:
        assert "is shared with" in reason and "the copies would add" in reason and "more than the" in reason
    ops = collections.Counter(n.op_type for n in folded.graph.node)
    assert ops["BatchNormalization"] == 2
    before, after = _initializers(model), _initializers(folded)
    assert before.keys() == after.keys()
    assert all(before[k].dtype == after[k].dtype and before[k].tobytes() == after[k].tobytes() for k in before)
    assert_equivalent(model, folded, feeds_for(model))


def test_a_shared_weight_of_a_forward_fold():
    """x -> scale -> conv_a(w), x -> conv_b(w): the scale folds forward into conv_a's own copy."""
    g = Graph((2, 3, 6, 6))
    w = g.const(g.randn(4, 3, 1, 1), name="w")
    y = g.op("Mul", [g.x, g.const(g.rng.uniform(0.5, 2, (3, 1, 1)))], name="scale")
    a = g.op("Conv", [y, w], name="conv_a", kernel_shape=[1, 1])
    b = g.op("Conv", [g.x, w], name="conv_b", kernel_shape=[1, 1])
    model = g.build(g.op("Add", [a, b]))
    folded, report = normfold.fold_onnx(model)
    assert [(f.norm, f.into, f.direction) for f in report.folded] == [("scale", "conv_a", "forward")]
    assert report.added_bytes == 4 * 3 * 4
    assert_equivalent(model, folded, feeds_for(model))
