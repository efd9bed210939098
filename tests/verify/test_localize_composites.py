"""Localization where a norm was folded out of a norm+activation module (timm's BatchNormAct2d).

The composite's own output is after its activation; the conv that absorbed
its norm outputs the value before it. Comparing the two would blame a faithful
fold: such a site has no counterpart in the original and is not a candidate.
A wrong weight further on is still found and named.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from normfold import export
from normfold.verify import verify

from .conftest import perturbed


class StemActNet(nn.Module):
    def __init__(self):
        from timm.layers import BatchNormAct2d

        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = BatchNormAct2d(8, act_layer=nn.ReLU)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.bn2(self.conv2(self.bn1(self.stem(x))))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    torch.manual_seed(0)
    model = StemActNet()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.3, 2.0)
            bn.weight.uniform_(0.7, 1.3)
            bn.bias.normal_(0, 0.1)
    model.bn1.num_batches_tracked.fill_(10)
    model.bn2.num_batches_tracked.fill_(10)
    model.eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("composite") / "model.onnx"
    result = export(model, x, path)
    assert {(f.norm, f.into) for f in result.fold_report.folded} == {("bn1", "stem"), ("bn2", "conv2")}
    return model, x, path


def test_a_faithful_fold_out_of_a_composite_passes(folded):
    model, x, path = folded
    assert verify(model, path, x).ok


def test_a_wrong_weight_after_the_composite_is_named_not_the_composite(folded, tmp_path):
    model, x, path = folded
    bad = perturbed(path, tmp_path / "bad.onnx", "conv2.weight", 1.001)
    report = verify(model, bad, x)
    assert not report.ok
    [where] = report.localization
    assert (where.kind, where.module, where.fold_site) == ("onnx node", "conv2", "bn2 -> conv2")


def test_a_wrong_fold_in_the_eager_model_is_named_at_its_layer(folded, wrong_fold):
    model, x, path = folded
    wrong_fold("conv2.weight", 0, 1.01)
    report = verify(model, path, x)
    assert {c.run for c in report.failures()} == {"folded_fp32"}
    sites = [d for d in report.localization if d.kind == "fold site"]
    assert [(d.module, d.reference) for d in sites] == [("conv2", "bn2")]
