"""Real files no one wrote for this test: PaddleOCR's models shipped on PyPI (rapidocr-onnxruntime),
and normfold's own whitening model exported unfolded by torch's exporter. Each is folded, checked
by onnx.checker, and compared with a float64 evaluation of the original at two batch sizes."""
from __future__ import annotations

import collections

import onnx
import pytest
import torch

import normfold
from normfold import zoo

from . import third_party
from ._oracle import assert_equivalent, feeds_for

NORM_OPS = ("BatchNormalization", "Mul", "Add", "Sub", "Div")


def _counts(model):
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("name", ["ppocr-cls", "ppocr-det"])
def test_third_party_file_folds_and_stays_equivalent(name):
    try:
        src = third_party.path(name)
    except third_party.Unavailable as exc:
        pytest.skip(f"{name}: {exc}")
    model = onnx.load(src)
    data = model.graph.input[0].name
    shape = list(third_party.SHAPES[name])
    folded, report = normfold.fold_onnx(src, input_shapes={data: shape})
    onnx.checker.check_model(folded, full_check=True)
    before, after = _counts(model), _counts(folded)
    assert after["BatchNormalization"] == 0 < before["BatchNormalization"]
    assert after["Conv"] == before["Conv"] and after["ConvTranspose"] == before["ConvTranspose"]
    removed = sum(before[op] - after[op] for op in NORM_OPS)
    shifts = sum("input shift" in f.note for f in report.folded)
    assert removed == len({f.norm for f in report.folded}) - shifts  # one node per folded site, less a Sub per shift
    for f in report.folded:
        assert f.into in {n.name for n in folded.graph.node}
    for batch in (1, 2):
        assert_equivalent(model, folded, feeds_for(model, {data: [batch, *shape[1:]]}, seed=batch))


def test_own_whitening_export_folds_completely(tmp_path):
    """IterNorm exports to Sub / Reshape / MatMul / Reshape / Mul / Add after each conv: all of it folds."""
    model = zoo.build("resnet18-iternorm", small=True)
    path = tmp_path / "iternorm.onnx"
    normfold.export(model, torch.randn(1, 3, 32, 32), path, fold=False)
    original = onnx.load(path)
    folded, report = normfold.fold_onnx(path)
    onnx.checker.check_model(folded, full_check=True)
    before, after = _counts(original), _counts(folded)
    assert before["MatMul"] == 20 and after["MatMul"] == 0 and after["Sub"] == 0 and after["Mul"] == 0
    assert after["Add"] == 8 and after["Reshape"] == 1   # the residual adds and the flatten stay
    assert sum(f.norm.count(",") == 2 for f in report.folded) == 20 and not report.skipped
    for batch in (1, 3):
        assert_equivalent(original, folded, feeds_for(original, {"x": [batch, 3, 32, 32]}, seed=batch))
