"""The data a recalibration streams: re-iterable batches of input tensors.

Recalibration reads the data once per pass, so it takes a *re-iterable*
source: ``as_batches(data, batch_size)`` returns a function that, each time it
is called, yields ``(batch of input 0, batch of input 1, ...)`` tuples of
tensors. ``data`` is a tensor or array (one input, split along axis 0), a
tuple/list of them (several inputs, split alike), a ``normfold.verify.Dataset``
(the reader behind ``verify --inputs``: folder, glob or .npz, ``--resize``,
``--mean``/``--std``; one batch in memory at a time), or such a function itself.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .errors import RecalibrationError

DEFAULT_BATCH = 32
Batches = Callable[[], Iterable[tuple[torch.Tensor, ...]]]


def as_batches(data, batch_size: int | None = None) -> Batches:
    """A function yielding the batches of ``data`` anew on every call (see the module docstring)."""
    size = batch_size or DEFAULT_BATCH
    if size < 1:
        raise RecalibrationError(f"batch size must be positive, got {size}")
    from normfold.verify.dataset import Dataset

    if isinstance(data, Dataset):
        return lambda: _dataset_batches(data, size)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        data = (data,)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data):
        tensors = tuple(torch.as_tensor(t) for t in data)
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise RecalibrationError(f"the inputs have different numbers of samples: {[len(t) for t in tensors]}")
        return lambda: (tuple(t[i:i + size] for t in tensors) for i in range(0, n, size))
    if callable(data):
        return data
    raise RecalibrationError(f"cannot read batches from {type(data).__name__}: give a tensor, a tuple of tensors, "
                             "a normfold.verify.Dataset or a function returning batches")


def _dataset_batches(data, size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    from normfold.verify import InputError

    for start in range(0, len(data), size):
        try:
            _, arrays, _ = data.read(range(start, min(start + size, len(data))))
        except InputError as exc:
            raise RecalibrationError(str(exc)) from exc
        yield tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
