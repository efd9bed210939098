"""The norm-free twin: no foldable norm left, every other parameter unchanged."""
from __future__ import annotations

import copy

import torch
from torch import nn

from normfold.bench import norm_free_twin
from normfold.nn import is_norm

from ._models import SAMPLE_SHAPE, tiny

NORM_INDICES = ("1", "4", "7")


def test_twin_has_no_norm_layers_and_names_each_replacement():
    twin, report = norm_free_twin(tiny())
    assert not any(is_norm(m) for m in twin.modules())
    assert sorted(report.replaced) == sorted(NORM_INDICES)
    assert report.kept == []


def test_twin_keeps_every_non_norm_parameter_and_leaves_the_model_alone():
    model = tiny()
    before = copy.deepcopy(model.state_dict())
    twin, _ = norm_free_twin(model)
    original = model.state_dict()
    non_norm = {k: v for k, v in original.items() if k.split(".")[0] not in NORM_INDICES}
    assert set(twin.state_dict()) == set(non_norm)
    for k, v in non_norm.items():
        assert torch.equal(twin.state_dict()[k], v), k
    assert all(torch.equal(before[k], original[k]) for k in before)
    assert all(is_norm(model[int(i)]) for i in NORM_INDICES)


def test_twin_computes_the_network_without_its_norms():
    model = tiny()
    stripped = nn.Sequential(*(copy.deepcopy(m) for i, m in enumerate(model) if str(i) not in NORM_INDICES)).eval()
    twin, _ = norm_free_twin(model)
    x = torch.randn(2, *SAMPLE_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), stripped(x), rtol=0, atol=0)


def test_per_sample_norms_stay_with_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    twin, report = norm_free_twin(model)
    assert report.replaced == ["3"]
    assert [name for name, _ in report.kept] == ["1"]
    assert "GroupNorm" in report.kept[0][1] and "each sample" in report.kept[0][1]
    assert isinstance(twin[1], nn.GroupNorm) and isinstance(twin[3], nn.Identity)


def test_nested_norms_are_replaced_in_their_parent():
    inner = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    model = nn.Sequential(inner, nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))).eval()
    twin, report = norm_free_twin(model)
    assert sorted(report.replaced) == ["0.1", "2.1"]
    assert isinstance(twin[0][1], nn.Identity) and isinstance(twin[2][1], nn.Identity)
    assert isinstance(model[0][1], nn.BatchNorm2d)
