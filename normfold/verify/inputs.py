"""Inputs to verify on: seeded random tensors, or real images/arrays from disk.

Sources (one input tensor, batch axis first):

* ``random_batch(shape, "normal", seed)``: standard normal, N(0, 1);
* ``random_batch(shape, "uniform", seed, low, high)``: uniform in [low, high);
* ``random_input(shape, dtype, seed)``: the example input of one model input,
  by its dtype: floats N(0, 1) (torch's generator: ``torch.randn`` with that
  seed), integers and bools 0 or 1 (an index valid on any axis of two or more);
* ``dataset.load_samples(path)``: every sample of a dataset on disk in one batch.

``normalize(x, mean, std)`` applies per-channel (x - mean) / std, the usual
image preprocessing; it is applied after loading or drawing.

``batch_of(x, b)`` gives a batch of b rows: the first b rows of x; when x has
fewer, the missing rows are earlier rows with a seeded permutation of their
last axis, so no two rows are identical and the value distribution stays
that of the given rows (a batch check with identical rows misses bugs that mix
samples).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class InputError(ValueError):
    """The inputs cannot be built: an unreadable file, a shape that does not fit."""


def random_batch(shape: Sequence[int], distribution: str = "normal", seed: int = 0,
                 low: float = 0.0, high: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        return rng.standard_normal(tuple(shape)).astype(np.float32)
    if distribution == "uniform":
        if not high > low:
            raise InputError(f"uniform range must have low < high, got [{low}, {high})")
        return rng.uniform(low, high, tuple(shape)).astype(np.float32)
    raise InputError(f"unknown distribution {distribution!r}; choose normal or uniform")


def random_input(shape: Sequence[int], dtype=np.float32, seed: int = 0) -> np.ndarray:
    """A seeded input of ``dtype`` (see the module docstring): what the command line feeds a model input."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
        return np.random.default_rng(seed).integers(0, 2, tuple(shape)).astype(dtype)
    import torch

    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).numpy().astype(dtype, copy=False)


def normalize(x: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Per-channel (x - mean) / std along axis 1; one value applies to every channel."""
    if mean is None and std is None:
        return x
    channels = x.shape[1] if x.ndim > 1 else 1
    m = _per_channel(mean, 0.0, channels, "--mean")
    s = _per_channel(std, 1.0, channels, "--std")
    if np.any(s == 0):
        raise InputError("--std must not contain 0")
    shape = (1, channels) + (1,) * (x.ndim - 2)
    return ((x - m.reshape(shape)) / s.reshape(shape)).astype(np.float32)


def batch_of(x: np.ndarray, b: int, seed: int = 0) -> np.ndarray:
    """A batch of ``b`` rows from ``x`` (see the module docstring)."""
    if len(x) >= b:
        return x[:b]
    rng = np.random.default_rng(seed)
    rows = list(x)
    while len(rows) < b:
        row = x[len(rows) % len(x)]
        rows.append(row[..., rng.permutation(row.shape[-1])] if row.ndim else row)
    return np.stack(rows)


def _per_channel(values, default: float, channels: int, flag: str) -> np.ndarray:
    if values is None:
        return np.full(channels, default)
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return np.full(channels, float(v.reshape(-1)[0]))
    if v.size != channels:
        raise InputError(f"{flag} has {v.size} values, the input has {channels} channels")
    return v
