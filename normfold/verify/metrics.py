"""Error statistics of one output against the float64 oracle.

With d = |got - oracle| over all elements:

    max_abs  = max d                  the number the verdict uses
    max_rel  = max d / max|oracle|    scale-free, comparable across outputs
    mean_abs = mean d
    p99_abs  = 99th percentile of d   max_abs without its single worst element
    cosine   = <got, oracle> / (|got| |oracle|)   (1.0 for two zero tensors)

For classifier outputs (rank 2, (N, classes) with at least 2 classes), also
``classes`` and:

    top1 = fraction of rows whose argmax equals the oracle's
    top5 = mean over rows of |top5(got) ∩ top5(oracle)| / 5   (at least 5 classes)

where topk(x) ranks a row by value, a tie going to the lower class index (as
argmax; a NaN ranks first, as argmax takes it), so the numbers are the same
wherever they are computed (``topk_hits``, used here and by the stream).
The top-k numbers are informational: near-ties legitimately swap under fp32
rounding, so the verdict never rests on them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorStats:
    max_abs: float
    max_rel: float
    mean_abs: float
    p99_abs: float
    cosine: float
    scale: float                 # max |oracle|
    top1: float | None = None
    top5: float | None = None
    classes: int | None = None   # a classifier output's class count

    @classmethod
    def of(cls, oracle: np.ndarray, got: np.ndarray) -> "ErrorStats":
        ref = np.asarray(oracle, dtype=np.float64)
        out = np.asarray(got, dtype=np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output has shape {out.shape}, the oracle has shape {ref.shape}")
        r, o = ref.ravel(), out.ravel()
        diff = np.abs(o - r)
        if not np.isfinite(diff).all():
            diff = np.where(np.isfinite(diff), diff, np.inf)
        scale = float(np.abs(r).max()) if r.size else 0.0
        max_abs = float(diff.max()) if diff.size else 0.0
        norms = float(np.linalg.norm(r) * np.linalg.norm(o))
        cosine = float(r @ o / norms) if norms > 0 and np.isfinite(norms) else float(np.array_equal(r, o))
        top1, top5 = _topk_agreement(ref, out)
        return cls(
            max_abs=max_abs,
            max_rel=max_abs / scale if scale > 0 else max_abs,
            mean_abs=float(diff.mean()) if diff.size else 0.0,
            p99_abs=float(np.percentile(diff, 99)) if diff.size else 0.0,
            cosine=cosine,
            scale=scale,
            top1=top1,
            top5=top5,
            classes=int(ref.shape[1]) if top1 is not None else None,
        )


def _topk_agreement(ref: np.ndarray, out: np.ndarray) -> tuple[float | None, float | None]:
    if ref.ndim != 2 or ref.shape[0] == 0 or ref.shape[1] < 2:
        return None, None
    top1 = float(np.mean(topk_hits(ref, out, 1)))
    return top1, float(np.mean(topk_hits(ref, out, 5)) / 5) if ref.shape[1] >= 5 else None


def topk(x: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``x`` (N, classes), the indices of its ``k`` largest values, largest first; a tie goes to
    the lower index and a NaN ranks above any number, so ``topk(x, 1)[:, 0] == x.argmax(1)``."""
    nan = np.isnan(x)
    return np.lexsort((np.where(nan, 0.0, -x), ~nan), axis=1)[:, :k]    # NaN first, then by value; ties keep index order


def topk_hits(ref: np.ndarray, got: np.ndarray, k: int) -> np.ndarray:
    """Per row, |topk(ref) ∩ topk(got)| (an int in 0..k): for k = 1, whether the argmaxes agree."""
    a, b = topk(ref, k), topk(got, k)
    return (a[:, :, None] == b[:, None, :]).any(-1).sum(1)
