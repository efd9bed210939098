"""Running statistics and the cached eval matrix stay in step: training steps,
state_dict round trips, dtype moves, in-place edits. Bad arguments and degenerate batches."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from normfold.nn import IterNorm, NORMS, Scaling, WSConv2d, ZCAWhitening, create_norm

from ._reference import EPS64, GROUPED, LAYERS, build, correlated, eval_forward_np, f64_tol, populated

SHAPE = (12, 8, 3, 3)
COV_LAYERS = sorted(n for n in GROUPED if n not in ("zca-wm", "iternorm"))  # running="cov"


def _eval(layer, x):
    with torch.no_grad():
        return layer.eval()(x).numpy()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_state_dict_round_trip_into_an_eval_layer(name):
    src = populated(name, SHAPE)
    dst = build(name, 8).double().eval()
    x = correlated(SHAPE, seed=31)
    before = _eval(dst, x)
    dst.load_state_dict(src.state_dict())
    assert "eval_matrix" not in src.state_dict()  # derived, not stored
    np.testing.assert_array_equal(_eval(dst, x), _eval(src, x))
    assert np.abs(before - _eval(dst, x)).max() > 0.1  # the load really changed the layer


@pytest.mark.parametrize("name", COV_LAYERS)
def test_eval_matrix_is_rederived_not_cast_after_double(name):
    """.float() then .double(): a cast would keep float32 rounding; a re-derivation is float64-exact."""
    layer = populated(name, SHAPE).float().double()
    assert layer.eval_matrix.dtype == torch.float64
    exact = layer.running_whitening()
    err = (layer.eval_matrix - exact).abs().max().item()
    assert err <= 1e3 * EPS64 * exact.abs().max().item()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float_and_double_agree_within_fp32(name):
    layer64 = populated(name, SHAPE)
    x = correlated(SHAPE, seed=32)
    y64 = _eval(layer64, x)
    y32 = _eval(copy.deepcopy(layer64).float(), x.float())
    # float32 storage of the inputs, buffers and map: a few thousand ulps of the output scale
    # (the whitening matrix amplifies relative rounding by its condition number).
    a = layer64.inference_affine()[0] if hasattr(layer64, "inference_affine") else torch.ones(1)
    cond = np.linalg.cond(a.numpy()) if a.dim() == 2 else 1.0
    assert np.abs(y32 - y64).max() <= 64 * np.finfo(np.float32).eps * cond * np.abs(y64).max()


@pytest.mark.parametrize("name", COV_LAYERS)
def test_eval_follows_training_steps_and_in_place_edits(name):
    layer = populated(name, SHAPE)
    x = correlated(SHAPE, seed=33)
    layer.train()
    with torch.no_grad():
        layer(correlated(SHAPE, seed=34))  # one more step: running_cov moved
    got = _eval(layer, x)
    assert np.abs(got - eval_forward_np(name, layer, x.numpy())).max() <= f64_tol(x.numpy(), got, layer)
    with torch.no_grad():
        layer.running_cov.mul_(4.0)  # edited in place while in eval mode
    got = _eval(layer, x)
    assert np.abs(got - eval_forward_np(name, layer, x.numpy())).max() <= f64_tol(x.numpy(), got, layer)


def test_changing_iternorm_T_rederives_the_eval_matrix():
    layer = populated("iternorm-cov", SHAPE)
    x = correlated(SHAPE, seed=37)
    before = _eval(layer, x)
    layer.T = 2
    got = _eval(layer, x)
    assert np.abs(got - before).max() > 1e-3
    assert np.abs(got - eval_forward_np("iternorm-cov", layer, x.numpy())).max() <= f64_tol(x.numpy(), got, layer)


def test_never_updated_layer_is_detectable():
    for name in sorted(NORMS):
        layer = create_norm(name, 8)
        if getattr(layer, "num_batches_tracked", None) is not None:
            assert int(layer.num_batches_tracked) == 0, name
            layer.train()(correlated((4, 8, 2, 2), dtype=torch.float32))
            assert int(layer.num_batches_tracked) == 1, name


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("batch", ["rank-deficient", "constant-channel"])
def test_degenerate_batches_stay_finite(name, batch):
    if batch == "rank-deficient":
        x = correlated((3, 8), seed=35, dtype=torch.float32)  # 3 samples, 8 channels in one group
    else:
        x = correlated((6, 8, 2, 2), seed=36, dtype=torch.float32)
        x[:, 2] = 5.0
    layer = build(name, 8, 8, rank=x.dim()).train()
    x.requires_grad_(True)
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    with torch.no_grad():
        assert torch.isfinite(layer.eval()(x)).all()


BAD = [
    ("group_size", lambda: ZCAWhitening(8, group_size=0), "group_size must be >= 1, got 0"),
    ("group_size-nondivisor", lambda: IterNorm(8, group_size=3), "group_size=3 does not divide num_features=8"),
    ("eps", lambda: Scaling(8, eps=0.0), "eps must be > 0, got 0.0"),
    ("eps-negative", lambda: ZCAWhitening(8, eps=-1e-5), "eps must be > 0, got -1e-05"),
    ("T", lambda: IterNorm(8, T=0), "T must be an integer >= 1, got 0"),
    ("momentum", lambda: create_norm("brn", 8, momentum=1.5), "momentum must be in \\[0, 1\\], got 1.5"),
    ("momentum-center", lambda: create_norm("center", 8, momentum=-0.1), "momentum must be in \\[0, 1\\], got -0.1"),
    ("running-pca", lambda: create_norm("pca", 8, running="wm"), "running must be one of \\('cov',\\), got 'wm'"),
    ("ws-eps", lambda: WSConv2d(3, 4, 3, eps=0), "WSConv2d: eps must be > 0"),
    ("factory", lambda: create_norm("batchnorm", 8), "unknown norm 'batchnorm'; valid names: bn, brn, center, cholesky"),
]


@pytest.mark.parametrize("what, make, message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_are_named(what, make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", sorted(set(NORMS) - {"bn", "gn", "in"}))
def test_wrong_channel_count_names_the_layer(name):
    layer = create_norm(name, 8)
    with pytest.raises(ValueError, match=f"{type(layer).__name__}.*got 6 channels"):
        layer(torch.randn(4, 6, 2, 2))
