"""The grouped product whitening layers export to (Reshape into groups, MatMul, Reshape back) is read
off its ops instead of probed (normfold/fold/onnx/region.py). Each named variant is folded twice: as
read, and with the read turned off, so that the map is extracted and proven by the random probes.
Where the read applies, both give the same weights; where it does not (a reshape tied to one batch
size, a product that is not per channel group), the probed outcome stands. Both folded graphs are
checked against a float64 evaluation of the original at batch 1 and 2."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import normfold
from normfold.fold.onnx import region

from ._graphs import Graph
from ._oracle import assert_equivalent, feeds_for

C, H, W = 8, 4, 4


def _product(g: Graph, target, weight, back=(-1, C, H, W)) -> onnx.ModelProto:
    y = g.op("Reshape", [g.conv(g.x, 3, C), g.const(np.array(target), cast=False)])
    y = g.op("MatMul", [g.const(weight), y])
    return g.build(g.op("Relu", [g.op("Reshape", [y, g.const(np.array(back), cast=False)])]))


def _case(target, weight_shape, back=(-1, C, H, W), read=True):
    def build():
        g = Graph(("N", 3, H, W))
        return _product(g, target, g.randn(*weight_shape, scale=0.4), back), read
    return build


VARIANTS = {
    "one-group": _case((-1, 1, C, H * W), (1, C, C)),
    "two-groups-one-matrix": _case((-1, 2, C // 2, H * W), (1, 1, C // 2, C // 2)),
    "four-groups-a-matrix-each": _case((0, 4, C // 4, H * W), (4, C // 4, C // 4)),
    "three-dim-grouping": _case((-1, C, H * W), (C, C)),
    "matrix-without-lead-dims": _case((-1, 2, C // 2, H * W), (C // 2, C // 2)),
    # not read: the batch written as 2 (the region cannot run at batch 1), a matrix per sample
    "batch-written-as-2": _case((2, 2, C // 2, H * W), (1, 2, C // 2, C // 2), read=False),
    "a-matrix-per-sample": _case((-1, 2, C // 2, H * W), (2, 2, C // 2, C // 2), read=False),
}


def _fold(model, monkeypatch, read: bool):
    with monkeypatch.context() as m:
        if not read:
            m.setattr(region, "_grouped_product", lambda *a: None)
        return normfold.fold_onnx(model)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_read_equals_the_probed_map(name, monkeypatch):
    model, readable = VARIANTS[name]()
    calls = []
    original = region._grouped_product
    monkeypatch.setattr(region, "_grouped_product", lambda *a: calls.append(original(*a)) or calls[-1])
    read, read_report = normfold.fold_onnx(model)
    monkeypatch.undo()
    probed, probed_report = _fold(model, monkeypatch, read=False)
    assert (bool(calls) and all(a is not None for a in calls)) == readable
    assert [(f.norm, f.into) for f in read_report.folded] == [(f.norm, f.into) for f in probed_report.folded]
    assert [s.norm for s in read_report.skipped] == [s.norm for s in probed_report.skipped]
    weights = {t.name: numpy_helper.to_array(t) for t in probed.graph.initializer}
    for t in read.graph.initializer:
        np.testing.assert_allclose(numpy_helper.to_array(t), weights[t.name], rtol=1e-6, atol=1e-7)
    for folded in (read, probed):
        for batch in (1, 2):
            shape = [batch, 3, H, W]
            if name == "batch-written-as-2" and batch == 1:
                continue  # the original itself cannot run at batch 1
            assert_equivalent(model, folded, feeds_for(model, {"x": shape}, seed=batch))
    if readable:
        assert [n.op_type for n in read.graph.node] == ["Conv", "Relu"]
