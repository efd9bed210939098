"""Calibration data for onnxruntime's quantizer, streamed from a ``normfold.verify.Dataset``.

``DatasetReader`` is an ``onnxruntime.quantization.CalibrationDataReader``:
``get_next()`` reads the next batch of the chosen samples from disk (one batch
in memory at a time) as ``{input name: float32 array}``; ``rewind()`` starts
over. ``len(reader)`` counts batches and ``set_range(start, end)`` limits the reader
to batches [start, end): onnxruntime's quantizer, given
``CalibStridedMinMax=1``, then calibrates one batch at a time (its histogram
calibrators otherwise keep every activation of every batch in memory: 7.7 GB
for 64 lines of PP-OCR's recognizer). ``calibration_indices`` picks which samples: all when there are at most
``limit``, else ``limit`` of them evenly spaced (deterministic, and every part
of a sorted folder is represented).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def calibration_indices(n: int, limit: int) -> list[int]:
    """All of range(n) when n <= limit, else ``limit`` evenly spaced indices."""
    if n <= limit:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


class DatasetReader:
    """Batches of ``indices`` of ``dataset`` for the inputs ``names``, as onnxruntime's calibrators read them."""

    def __init__(self, dataset, indices: Sequence[int], batch_size: int, names: Sequence[str]):
        self.dataset, self.indices, self.batch_size, self.names = dataset, list(indices), batch_size, list(names)
        self._next, self._end = 0, len(self.indices)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        chunk = self.indices[self._next:min(self._next + self.batch_size, self._end)]
        self._next += len(chunk)
        _, arrays, _ = self.dataset.read(chunk)
        return {name: np.ascontiguousarray(a) for name, a in zip(self.names, arrays)}

    def rewind(self) -> None:
        self._next, self._end = 0, len(self.indices)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only batches [start_index, end_index) (onnxruntime's strided calibration)."""
        self._next = start_index * self.batch_size
        self._end = min(end_index * self.batch_size, len(self.indices))

    def __iter__(self):
        return self.batches()

    def batches(self):
        """Every batch once, from the start: {input name: array}."""
        self.rewind()
        while (batch := self.get_next()) is not None:
            yield batch
        self.rewind()

    def __len__(self) -> int:
        """Batches, as onnxruntime's strided calibration counts them (``samples``: the samples)."""
        return -(-len(self.indices) // self.batch_size)

    @property
    def samples(self) -> int:
        return len(self.indices)

