"""torchvision-style FrozenBatchNorm2d folds through a by-name adapter, without importing torchvision."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import normfold
from normfold.nn import inference_affine, is_norm, register_norm

from ..conftest import assert_equivalent_outputs, run_eager


class FrozenBatchNorm2d(nn.Module):
    """The forward of torchvision.ops.misc.FrozenBatchNorm2d (torchvision 0.2x), written out."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + bias


FrozenBatchNorm2d.__module__ = "torchvision.ops.misc"  # what the by-name adapter matches


def _frozen(num_features: int) -> FrozenBatchNorm2d:
    gen = torch.Generator().manual_seed(0)
    bn = FrozenBatchNorm2d(num_features)
    for name, lo, hi in (("weight", 0.5, 1.5), ("bias", -0.3, 0.3), ("running_mean", -1, 1), ("running_var", 0.2, 3)):
        getattr(bn, name).copy_(torch.empty(num_features).uniform_(lo, hi, generator=gen))
    return bn


def test_frozen_batchnorm_map_matches_its_forward():
    bn = _frozen(6)
    assert is_norm(bn)
    a, c = inference_affine(bn)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    expected = bn.double()(x)
    got = a.reshape(1, -1, 1, 1) * x + c.reshape(1, -1, 1, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_conv_frozen_batchnorm_folds_exactly():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), _frozen(6), nn.ReLU()).eval()
    x = torch.randn(2, 3, 5, 5)
    result = normfold.fold(model, x)
    assert [(f.norm, f.into) for f in result.report.folded] == [("1", "0")]
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_register_norm_rejects_a_name_without_a_module_path():
    with pytest.raises(TypeError, match="dotted class name"):
        register_norm("FrozenBatchNorm2d", lambda m: None)
