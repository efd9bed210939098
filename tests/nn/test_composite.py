"""Composites (a norm followed by parts of its own) and the by-name registries, on timm's real classes."""
from __future__ import annotations

import pytest
import torch
from timm import layers
from torch import nn

from normfold.nn import NotFoldableError, inference_affine, is_norm
from normfold.nn.composite import SplitError, is_composite, register_composite, split


def _populated(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        module.running_mean.uniform_(-1, 1)
        module.running_var.uniform_(0.5, 2)
        if isinstance(module.weight, nn.Parameter):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-1, 1)
    return module.eval()


MAKERS = {
    "BatchNormAct2d": lambda: layers.BatchNormAct2d(6, act_layer=nn.SiLU, drop_layer=lambda: nn.Dropout(0.1)),
    "SyncBatchNormAct": lambda: layers.convert_sync_batchnorm(layers.BatchNormAct2d(6, act_layer=nn.SiLU)),
    "FrozenBatchNormAct2d": lambda: layers.freeze_batch_norm_2d(layers.BatchNormAct2d(6, act_layer=nn.SiLU)),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_split_computes_the_modules_forward_and_shares_its_statistics(name):
    module = _populated(MAKERS[name]())
    assert is_composite(module) and is_norm(module)
    parts = split(module)
    assert list(parts._modules)[:1] == ["norm"] and isinstance(parts[-1], nn.SiLU)
    assert parts.norm.running_var.data_ptr() == module.running_var.data_ptr()
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64) * 3
    with torch.no_grad():
        torch.testing.assert_close(parts.double()(x.clone()), module.double()(x.clone()), rtol=1e-12, atol=1e-12)
    with pytest.raises(NotFoldableError, match="is a norm followed by parts of its own"):
        inference_affine(module)


def test_a_missing_part_raises_split_error_naming_it():
    module = layers.BatchNormAct2d(4)
    del module.act
    with pytest.raises(SplitError, match="cannot split BatchNormAct2d into a norm and the rest: it has no 'act' submodule"):
        split(module)


@pytest.mark.parametrize("key, fn, message", [
    ("BatchNormAct2d", lambda m: m, "not a dotted class name"),
    (3, lambda m: m, "expected an nn.Module subclass or its dotted name"),
    (nn.ReLU, "not callable", "splitter for ReLU is not callable"),
])
def test_register_composite_validates_its_arguments(key, fn, message):
    with pytest.raises(TypeError, match=message):
        register_composite(key, fn)


@pytest.mark.parametrize("make, reason", [
    (lambda: layers.GroupNormAct(8, num_groups=2), "GroupNormAct is a GroupNorm"),
    (lambda: layers.LayerNormAct(8), "LayerNormAct is a LayerNorm"),
    (lambda: layers.RmsNorm(8), "RmsNorm normalizes with statistics of each sample"),
    (lambda: nn.RMSNorm(8), "RMSNorm normalizes with statistics of each sample"),
])
def test_per_sample_norms_by_class_and_by_name_are_recognised_not_foldable(make, reason):
    module = make()
    assert is_norm(module)
    with pytest.raises(NotFoldableError, match=reason):
        inference_affine(module)
