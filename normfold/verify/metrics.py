"""Error statistics of one output against the float64 oracle."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorStats:
    max_abs: float       # max |got - oracle|
    max_rel: float       # max_abs / max |oracle|
    mean_abs: float
    cosine: float        # <got, oracle> / (|got| |oracle|), 1.0 for two zero tensors
    scale: float         # max |oracle|

    @classmethod
    def of(cls, oracle: np.ndarray, got: np.ndarray) -> "ErrorStats":
        ref = np.asarray(oracle, dtype=np.float64).ravel()
        out = np.asarray(got, dtype=np.float64).ravel()
        if ref.shape != out.shape:
            raise ValueError(f"output has {out.size} values, the oracle has {ref.size}")
        diff = np.abs(out - ref)
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        max_abs = float(diff.max()) if diff.size else 0.0
        norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
        cosine = float(ref @ out / norms) if norms > 0 else float(np.array_equal(ref, out))
        return cls(
            max_abs=max_abs,
            max_rel=max_abs / scale if scale > 0 else max_abs,
            mean_abs=float(diff.mean()) if diff.size else 0.0,
            cosine=cosine,
            scale=scale,
        )
