"""bake_weights: computed weights become constants, on the copy only."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from normfold.nn import WSConv2d
from normfold.nn.bake import bake_weights

from ..conftest import assert_equivalent_outputs

CASES = {
    "weight_norm": lambda: parametrizations.weight_norm(nn.Conv2d(4, 6, 3)),
    "spectral_norm": lambda: parametrizations.spectral_norm(nn.Conv2d(4, 6, 3)),
    "wsconv": lambda: WSConv2d(4, 6, 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_baking_a_copy_keeps_the_original_working_and_equal(name):
    torch.manual_seed(0)
    model = nn.Sequential(CASES[name](), nn.ReLU()).eval()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        before = model(x)
        baked = bake_weights(copy.deepcopy(model))
        assert type(baked[0]) is nn.Conv2d and not parametrize.is_parametrized(baked[0])
        assert type(model[0]) is not nn.Conv2d  # the original still computes its weight
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
        baked_out = baked(x).double().numpy()
    assert_equivalent_outputs(model, baked_out, x)


def test_baked_weight_keeps_requires_grad():
    conv = bake_weights(parametrizations.weight_norm(nn.Conv2d(2, 2, 1)))
    assert isinstance(conv.weight, nn.Parameter) and conv.weight.requires_grad
