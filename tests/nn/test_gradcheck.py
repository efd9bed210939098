"""Backward: torch.autograd.gradcheck in float64 on small inputs, every layer, train and eval."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from normfold.nn import LayerNorm2d, WSConv2d

from ._reference import LAYERS, build, correlated, randomize_affine

SHAPE = (5, 4, 2, 2)


def _params(module):
    return [p for p in module.parameters()]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradcheck(name, mode):
    layer = randomize_affine(build(name, 4, 2)).double()
    layer.momentum = 0.0  # gradcheck calls forward many times: keep the running statistics fixed
    layer.train(mode == "train")
    if name == "brn":
        # r and d carry no gradient by design; clipped to constants (r = 1, d = 0) the
        # numerical Jacobian agrees. The no-grad path itself is tested below.
        layer.r_max, layer.d_max = 1.0, 0.0
    x = correlated(SHAPE, seed=11).requires_grad_(True)
    params = _params(layer)

    def f(inp, *ps):
        return layer(inp)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize(
    "name, make",
    [
        ("ln2d", lambda: LayerNorm2d(4)),
        ("wsconv", lambda: WSConv2d(4, 3, 3, padding=1)),
    ],
)
def test_gradcheck_per_sample_and_weight_standardized(name, make):
    module = randomize_affine(make()).double()
    x = correlated(SHAPE, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp, *ps: module(inp), (x, *_params(module)), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_batchrenorm_has_no_gradient_through_r_and_d():
    """With r and d treated as constants, d y / d x equals r times batch norm's gradient."""
    brn = build("brn", 4).double().train()
    with torch.no_grad():
        brn.running_var.fill_(4.0)  # sigma_run = 2: r = sigma_B / 2 inside the clip range
        brn.running_mean.fill_(0.5)
    brn.momentum = 0.0
    bn = nn.BatchNorm2d(4, affine=False).double().train()
    x = correlated(SHAPE, seed=13)
    g = torch.randn(SHAPE, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (brn(xa) * g).sum().backward()
    (bn(xb) * g).sum().backward()
    sigma_b = torch.sqrt(x.transpose(0, 1).reshape(4, -1).var(1, unbiased=False) + brn.eps)
    r = (sigma_b / torch.sqrt(torch.tensor(4.0, dtype=torch.float64) + brn.eps)).clamp(1 / brn.r_max, brn.r_max)
    torch.testing.assert_close(xa.grad, xb.grad * r.reshape(1, -1, 1, 1), rtol=1e-10, atol=1e-12)
