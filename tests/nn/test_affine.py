"""inference_affine against the eval forward; per-sample norms refused with a reason."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normfold.nn import LayerNorm2d, NotFoldableError, create_norm, inference_affine, is_norm

from ._reference import DIAGONAL, EPS64, GROUPED, channel_matrix, correlated, from_channel_matrix, populated

C = 16
RANK_SHAPES = {2: (48, C), 3: (6, C, 5), 4: (4, C, 3, 3), 5: (2, C, 3, 2, 2)}
CASES = [(name, g) for name in sorted(GROUPED) for g in (1, 4, 16, C * 2)] + [(name, None) for name in sorted(DIAGONAL)]


def _apply_np(a: np.ndarray, c: np.ndarray, x: np.ndarray) -> np.ndarray:
    xm = channel_matrix(x)
    y = (a[:, None] * xm if a.ndim == 1 else a @ xm) + c[:, None]
    return from_channel_matrix(y, x.shape)


@pytest.mark.parametrize("rank", sorted(RANK_SHAPES))
@pytest.mark.parametrize("name, group_size", CASES, ids=[f"{n}-g{g}" for n, g in CASES])
def test_inference_affine_matches_eval_forward(name, group_size, rank):
    shape = RANK_SHAPES[rank]
    layer = populated(name, shape, group_size=group_size or 4)
    a, c = inference_affine(layer)
    assert a.dtype == c.dtype == torch.float64
    assert a.shape in ((C,), (C, C)) and c.shape == (C,)
    x = correlated(shape, seed=21)
    with torch.no_grad():
        y = layer(x).numpy()
    expected = _apply_np(a.numpy(), c.numpy(), x.numpy())
    scale = np.abs(a.numpy()).max() * np.abs(x.numpy()).max() + np.abs(c.numpy()).max()
    assert np.abs(y - expected).max() <= 1e3 * EPS64 * scale


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_group_size_c_or_more_is_one_block_and_one_is_diagonal(name):
    one = inference_affine(populated(name, (48, 8), group_size=64))[0]
    assert np.abs(one.numpy()[4:, :4]).max() > 0  # a single group mixes all channels
    diag = inference_affine(populated(name, (48, 8), group_size=1))[0].numpy()
    assert np.count_nonzero(diag - np.diag(np.diag(diag))) == 0


@pytest.mark.parametrize(
    "name, make",
    [
        ("layernorm", lambda: nn.LayerNorm(8)),
        ("layernorm2d", lambda: LayerNorm2d(8)),
        ("groupnorm", lambda: nn.GroupNorm(2, 8)),
        ("instancenorm", lambda: nn.InstanceNorm2d(8)),
        ("batchnorm-no-stats", lambda: nn.BatchNorm2d(8, track_running_stats=False)),
        ("factory-gn", lambda: create_norm("gn", 8)),
        ("factory-ln", lambda: create_norm("ln", 8)),
        ("factory-in", lambda: create_norm("in", 8)),
    ],
)
def test_per_sample_norms_are_recognised_but_not_foldable(name, make):
    module = make()
    assert is_norm(module)
    with pytest.raises(NotFoldableError, match="not foldable: .*(each sample|no running statistics)"):
        inference_affine(module)


def test_layernorm2d_matches_formula_over_channels():
    ln = LayerNorm2d(8).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
    x = correlated((3, 8, 4, 5), seed=22)
    xn = x.numpy()
    mu, var = xn.mean(1, keepdims=True), xn.var(1, keepdims=True)
    expected = (xn - mu) / np.sqrt(var + ln.eps) * ln.weight.detach().numpy()[:, None, None] + ln.bias.detach().numpy()[:, None, None]
    with torch.no_grad():
        np.testing.assert_allclose(ln(x).numpy(), expected, rtol=0, atol=1e3 * EPS64 * np.abs(expected).max())


def test_groupnorm_factory_picks_a_divisor():
    for c, groups in ((64, 32), (48, 24), (24, 24), (7, 7), (96, 32)):
        assert create_norm("gn", c).num_groups == groups
