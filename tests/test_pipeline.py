"""End to end: fold -> export -> onnxruntime equals the float64 oracle within the fp32 budget."""
from __future__ import annotations

import collections

import onnx
import pytest
import torch
from torch import nn

import normfold
from normfold.nn import Centering, IterNorm

from .conftest import assert_equivalent_outputs, populate_stats, run_eager, run_onnx


def _conv(norm):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(8, 4, 1))


def _linear(norm):
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), norm, nn.ReLU(), nn.Linear(16, 5))


CASES = {  # name: (factory, input shape, module name of the norm)
    "conv-bn": (lambda: _conv(nn.BatchNorm2d(8)), (2, 3, 4, 4), "1"),
    "conv-centering": (lambda: _conv(Centering(8)), (2, 3, 4, 4), "1"),
    "conv-iternorm": (lambda: _conv(IterNorm(8, group_size=4, T=5)), (2, 3, 4, 4), "1"),
    "linear-bn": (lambda: _linear(nn.BatchNorm1d(16)), (2, 3, 4, 4), "2"),
}


@pytest.mark.parametrize("case", CASES)
def test_fold_equals_unfolded_eager_and_on_onnxruntime(case, tmp_onnx):
    factory, shape, norm = CASES[case]
    torch.manual_seed(0)
    model = populate_stats(factory(), (16, *shape[1:]))
    x = torch.randn(shape)

    result = normfold.fold(model, x)
    assert [f.norm for f in result.report.folded] == [norm], result.report.lines()
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, Centering, IterNorm)) for m in result.model.modules())
    assert_equivalent_outputs(model, run_eager(result.model, x), x)

    exported = normfold.export(model, x, tmp_onnx)
    assert "BatchNormalization" not in exported.op_counts and "MatMul" not in exported.op_counts
    for batch in (1, 3):  # the batch axis stays dynamic
        xb = torch.randn(batch, *shape[1:])
        assert_equivalent_outputs(model, run_onnx(tmp_onnx, xb), xb)


def test_fold_leaves_the_callers_model_alone():
    model = populate_stats(_conv(nn.BatchNorm2d(8)), (16, 3, 4, 4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = normfold.fold(model, torch.randn(2, 3, 4, 4))
    assert model.training and result.model.training is False
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model[1], nn.BatchNorm2d)


def test_report_is_json_ready_and_names_skips():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8), nn.GroupNorm(2, 8)).eval()
    report = normfold.fold(model, torch.randn(2, 3, 6, 6)).report
    d = report.to_dict()
    assert d["folded"] == []
    reasons = {s["norm"]: s["reason"] for s in d["skipped"]}
    assert set(reasons) == {"2", "3"}
    assert "ReLU" in reasons["2"] or "not a Conv/Linear" in reasons["2"]
    assert "each sample" in reasons["3"]


@pytest.fixture(scope="module")
def default_model_export(tmp_path_factory):
    from normfold import zoo

    model = zoo.build(zoo.DEFAULT)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("default") / "model.onnx"
    return model, x, normfold.export(model, x, path)


def test_default_model_folds_every_norm_and_no_norm_op_remains(default_model_export):
    model, x, result = default_model_export
    norms = [n for n, m in model.named_modules() if isinstance(m, IterNorm)]
    assert len(norms) == 20
    assert sorted(f.norm for f in result.fold_report.folded) == sorted(norms)
    ops = collections.Counter(n.op_type for n in onnx.load(result.path).graph.node)
    assert ops == collections.Counter(result.op_counts)
    assert not {"BatchNormalization", "MatMul", "Sub"} & set(ops)
    assert ops["Conv"] == 20


def test_default_model_statistics_are_not_initial(default_model_export):
    model, _, _ = default_model_export
    norm = model.layer2[0].bn1
    assert norm.num_batches_tracked > 0
    assert not torch.allclose(norm.running_wm, torch.eye(norm.group_size).expand_as(norm.running_wm))
    assert norm.running_mean.abs().max() > 0


def test_default_model_verifies_against_the_oracle(default_model_export):
    model, x, result = default_model_export
    report = normfold.verify(model, result.path, x)
    assert report.ok, "\n".join(report.lines())
    # the same conclusion from the independent helper in conftest
    assert_equivalent_outputs(model, run_onnx(result.path, x), x)


def test_verify_fails_on_a_wrong_onnx_file(default_model_export, tmp_path):
    model, x, result = default_model_export
    proto = onnx.load(result.path)
    conv_weight = next(i for i in proto.graph.initializer if len(i.dims) == 4)
    w = onnx.numpy_helper.to_array(conv_weight).copy()
    w.flat[0] += 0.1 * abs(w).max()
    conv_weight.CopyFrom(onnx.numpy_helper.from_array(w, conv_weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, broken)
    report = normfold.verify(model, broken, x)
    assert not report.ok
