"""Inputs to verify on: seeded random tensors, or real images/arrays from disk.

Sources (one input tensor, batch axis first):

* ``random_batch(shape, "normal", seed)``: standard normal, N(0, 1);
* ``random_batch(shape, "uniform", seed, low, high)``: uniform in [low, high);
* ``load_samples(path)``: a directory of .png/.jpg/.jpeg/.npy files (sorted by
  name; an image becomes C×H×W float in [0, 1], an .npy file is one sample or
  a batch), or an .npz whose arrays (sorted by key) are samples or batches.

``normalize(x, mean, std)`` applies per-channel (x - mean) / std, the usual
image preprocessing; it is applied after loading or drawing.

``batch_of(x, b)`` gives a batch of b rows: the first b rows of x; when x has
fewer, the missing rows are earlier rows with a seeded permutation of their
last axis, so no two rows are identical and the value distribution stays
that of the given rows (a batch check with identical rows misses bugs that mix
samples).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)


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


def load_samples(path: str | Path, rank: int) -> np.ndarray:
    """All samples under ``path`` as one float32 batch of ``rank`` axes.

    An array with ``rank - 1`` axes is one sample, one with ``rank`` axes a batch.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"--inputs {path} does not exist")
    if path.is_file():
        if path.suffix != ".npz":
            raise InputError(f"--inputs {path}: expected a directory or an .npz file")
        return _stack(_load_npz(path), rank, str(path))
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    usable = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES]
    if not usable:
        raise InputError(f"--inputs {path} holds no .png/.jpg/.npy files")
    return _stack([(p.name, _load_file(p)) for p in usable], rank, str(path))


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


def _load_file(p: Path) -> np.ndarray:
    try:
        if p.suffix.lower() in ARRAY_SUFFIXES:
            return np.load(p, allow_pickle=False)
        return _load_image(p)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {p}: {type(exc).__name__}: {exc}") from exc


def _load_image(p: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as img:
        arr = np.asarray(img.convert("L" if img.mode in ("L", "I", "I;16", "1") else "RGB"))
    arr = arr.astype(np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _load_npz(p: Path) -> list[tuple[str, np.ndarray]]:
    try:
        with np.load(p, allow_pickle=False) as data:
            return [(f"{p.name}[{k}]", data[k]) for k in sorted(data.files)]
    except Exception as exc:
        raise InputError(f"cannot read {p}: {type(exc).__name__}: {exc}") from exc


def _stack(named: list[tuple[str, np.ndarray]], rank: int, where: str) -> np.ndarray:
    """Samples and batches to one batch; every sample must have the same shape."""
    if not named:
        raise InputError(f"{where} holds no arrays")
    rows, shape, first = [], None, None
    for name, a in named:
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{name} has dtype {a.dtype}, not numbers")
        if a.ndim not in (rank - 1, rank):
            raise InputError(
                f"{name} has shape {a.shape}; the model input has {rank} axes, so expected "
                f"a sample of {rank - 1} axes or a batch of {rank}"
            )
        batch = a[None] if a.ndim == rank - 1 else a
        if shape is None:
            shape, first = batch.shape[1:], name
        elif batch.shape[1:] != shape:
            raise InputError(f"{name} has sample shape {batch.shape[1:]}, {first} has {shape}")
        rows.append(batch.astype(np.float32))
    return np.concatenate(rows)
