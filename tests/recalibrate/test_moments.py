"""ChannelMoments: the exact population moments over all batches, whatever the batch size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from normfold.recalibrate import ChannelMoments


def _data(seed=0):
    """(37, 6, 5, 3): channel means near 1e4 with std near 1 (sum(x^2) - n mu^2 would cancel badly)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((6, 6))
    x = np.einsum("dc,nchw->ndhw", mix, rng.standard_normal((37, 6, 5, 3))) + 1e4 * rng.uniform(0.5, 1.5, (1, 6, 1, 1))
    return x


def _direct(x, group_size):
    cols = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)       # (C, positions)
    mean = cols.mean(axis=1)
    groups = cols.reshape(-1, group_size, cols.shape[1])
    cov = np.stack([np.cov(g, ddof=1).reshape(group_size, group_size) for g in groups])
    return mean, cov


@pytest.mark.parametrize("group_size", [1, 3, 6])
@pytest.mark.parametrize("batch", [1, 5, 37])
def test_streamed_moments_equal_the_direct_float64_ones(group_size, batch):
    x = _data()
    m = ChannelMoments(6, group_size)
    for i in range(0, len(x), batch):
        m.update(torch.from_numpy(x[i:i + batch]))
    mean, cov = _direct(x, group_size)
    assert m.count == 37 * 5 * 3
    np.testing.assert_allclose(m.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(m.covariance(unbiased=True).numpy(), cov, rtol=1e-10, atol=1e-10 * np.abs(cov).max())
    biased = cov * (m.count - 1) / m.count
    np.testing.assert_allclose(m.variance(unbiased=False).numpy(),
                               np.concatenate([np.diagonal(c) for c in biased]), rtol=1e-10)
