"""The fp32 and INT8 files on the same samples, streamed: agreement, accuracy, errors, SQNR per output.

Not an equivalence check: INT8 changes numbers by design. Per output, over
every sample: top-1 (or sequence) agreement with fp32 where the output has a
discrete prediction (metric.prediction_kind), the max and 99th percentile of
each sample's max |int8 - fp32|, and the signal-to-quantization-noise ratio

    SQNR = 10 log10( sum fp32^2 / sum (int8 - fp32)^2 )   dB, over all elements.

With labels, the metric's mean score of each file (its "accuracy"). One batch
is in memory at a time; only per-sample numbers are kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .metric import Metric, agrees, prediction_kind


@dataclass
class OutputErrors:
    name: str
    kind: str | None                     # "classifier", "sequence" or None (no discrete prediction)
    agreement: float | None
    max_abs: float
    p99_abs: float
    sqnr_db: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Evaluation:
    samples: int
    outputs: list[OutputErrors]
    metric: str | None = None
    fp32_score: float | None = None
    int8_score: float | None = None
    changed: list[str] = field(default_factory=list)      # samples whose first prediction changed (at most 20)

    @property
    def drop(self) -> float | None:
        return None if self.fp32_score is None else self.fp32_score - self.int8_score

    @property
    def agreement(self) -> float | None:
        """The lowest agreement over the outputs that have one."""
        values = [o.agreement for o in self.outputs if o.agreement is not None]
        return min(values) if values else None

    def to_dict(self) -> dict:
        return {"samples": self.samples, "metric": self.metric, "fp32_score": self.fp32_score,
                "int8_score": self.int8_score, "drop": self.drop, "agreement": self.agreement,
                "outputs": [o.to_dict() for o in self.outputs], "changed": list(self.changed)}


class Evaluator:
    """Runs the fp32 session once per batch and caches nothing but per-sample numbers; ``__call__``
    evaluates one INT8 session against it over ``indices`` of ``dataset``."""

    def __init__(self, fp32_session, dataset, indices: Sequence[int], batch_size: int,
                 labels=None, metric: Metric | None = None, progress=None):
        self.fp32, self.dataset, self.indices = fp32_session, dataset, list(indices)
        self.batch_size, self.labels, self.metric = batch_size, labels, metric
        self.progress = progress
        self.names = [o.name for o in fp32_session.get_outputs()]
        self._fp32_score: float | None = None

    def batches(self):
        for start in range(0, len(self.indices), self.batch_size):
            chunk = self.indices[start:start + self.batch_size]
            _, arrays, _ = self.dataset.read(chunk)
            yield chunk, arrays

    def __call__(self, int8_session, description: str = "evaluating") -> Evaluation:
        from normfold.verify.session import run_session

        n_out = len(self.names)
        per_sample = [[] for _ in range(n_out)]
        energy, noise = np.zeros(n_out), np.zeros(n_out)
        agree: list[list[np.ndarray]] = [[] for _ in range(n_out)]
        kinds: list[str | None] = [None] * n_out
        scores_fp32, scores_int8, changed = [], [], []
        if self.progress is not None:
            self.progress.stage(description, len(self.indices))
        for chunk, arrays in self.batches():
            ref = [np.asarray(o, dtype=np.float64) for o in run_session(self.fp32, arrays)]
            got = [np.asarray(o, dtype=np.float64) for o in run_session(int8_session, arrays)]
            for k, (r, g) in enumerate(zip(ref, got)):
                diff = np.abs(g - r).reshape(len(chunk), -1)
                per_sample[k].append(diff.max(axis=1) if diff.size else np.zeros(len(chunk)))
                energy[k] += float(np.sum(r * r))
                noise[k] += float(np.sum((g - r) ** 2))
                kinds[k] = prediction_kind(r.shape)
                if kinds[k] is not None:
                    same = agrees(kinds[k], r, g)
                    agree[k].append(same)
                    if k == next(i for i, kd in enumerate(kinds) if kd is not None):
                        changed += [self.dataset.names[i] for i, s in zip(chunk, same) if s < 1]
            if self.labels is not None and self.metric is not None:
                batch_labels = [self.labels[i] for i in chunk]
                if self._fp32_score is None:
                    scores_fp32.append(self.metric.score([np.asarray(o) for o in ref], batch_labels))
                scores_int8.append(self.metric.score([np.asarray(o) for o in got], batch_labels))
            if self.progress is not None:
                self.progress.advance(len(chunk))
        if scores_fp32:
            self._fp32_score = float(np.mean(np.concatenate(scores_fp32)))
        outputs = []
        for k, name in enumerate(self.names):
            d = np.concatenate(per_sample[k])
            outputs.append(OutputErrors(
                name, kinds[k], float(np.mean(np.concatenate(agree[k]))) if agree[k] else None,
                float(d.max()), float(np.percentile(d, 99)), sqnr(energy[k], noise[k])))
        return Evaluation(len(self.indices), outputs, self.metric.name if self.metric else None,
                          self._fp32_score if scores_int8 else None,
                          float(np.mean(np.concatenate(scores_int8))) if scores_int8 else None, changed[:20])


def sqnr(energy: float, noise: float) -> float:
    """10 log10(energy / noise) in dB; inf where there is no noise."""
    if noise <= 0:
        return math.inf
    if energy <= 0:
        return -math.inf
    return 10.0 * math.log10(energy / noise)
