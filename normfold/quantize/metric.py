"""What "accuracy" means for a model: top-1 on a classifier, agreement with fp32, or the user's function.

A metric maps one batch to one score per sample, higher is better; a gate
applies to the mean over the set.

* ``top1(k)``: output k is classifier-shaped, (N, classes); score 1 where its
  argmax is the sample's label (an integer class index).
* ``load_metric("path.py:function")``: the user's ``function(outputs, labels)``,
  given per batch the model's output arrays (numpy, in output order) and the
  batch's labels as given (strings from a CSV, class indices from a folder
  layout), returning one score per sample. Text recognition is one: CTC-decode
  ``outputs[0]`` with the model's character list, compare with the label
  (scripts/ocr_metric.py).

Agreement with fp32 needs no labels (``prediction_kind``): a classifier output
(N, K) agrees where its argmax is fp32's (1 or 0 per sample); for a sequence
output (N, T, K) a sample's agreement is the fraction of its T positions whose
argmax is fp32's (a CTC line may read the same with a blank moved, so "every
position" would be too strict a test of the line). Other outputs
(dense maps, boxes) have no discrete prediction: their errors and SQNR are
reported, and a gate on them needs a metric with labels.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from normfold.verify.labels import class_index

from .options import QuantizeError


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[list[np.ndarray], Sequence], Sequence[float]]

    def score(self, outputs: list[np.ndarray], labels: Sequence) -> np.ndarray:
        """One float score per sample of the batch, or QuantizeError naming the metric."""
        try:
            scores = self.fn(outputs, labels)
        except QuantizeError:
            raise
        except Exception as exc:
            raise QuantizeError(f"metric {self.name} raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        try:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise QuantizeError(f"metric {self.name} returned {type(scores).__name__}, not numbers") from exc
        if scores.size != len(labels):
            raise QuantizeError(f"metric {self.name} returned {scores.size} scores for a batch of {len(labels)} "
                                "samples (one score per sample)")
        if not np.all(np.isfinite(scores)):
            raise QuantizeError(f"metric {self.name} returned a NaN or infinite score")
        return scores


def top1(output: int = 0, name: str | None = None) -> Metric:
    """Top-1 accuracy of classifier output ``output`` against integer class labels."""
    def fn(outputs, labels):
        logits = outputs[output]
        values = np.asarray(labels)
        if not np.issubdtype(values.dtype, np.integer):
            values = np.array([_class(v) for v in labels], dtype=np.int64)
        if values.size and values.max() >= logits.shape[1]:
            raise QuantizeError(f"label {int(values.max())} is out of range for output {output} with "
                                f"{logits.shape[1]} classes")
        return (np.argmax(logits, axis=1) == values).astype(np.float64)

    return Metric(name or f"top-1 (output {output})", fn)


def _class(value) -> int:
    index = class_index(str(value))
    if index < 0:
        raise QuantizeError(f"label {value!r} is not a class index: top-1 needs integer labels "
                            "(give --metric path.py:function for other labels)")
    return index


def load_metric(spec: str) -> Metric:
    """``path.py:function``, imported now (QuantizeError naming the file when it does not import)."""
    if ":" not in spec or not spec.rsplit(":", 1)[0].endswith(".py"):
        raise QuantizeError(f"--metric {spec!r}: expected path/to/file.py:function")
    path_text, name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise QuantizeError(f"--metric {spec}: {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_normfold_metric_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise QuantizeError(f"--metric {spec}: importing {path} raised {type(exc).__name__}: {first}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise QuantizeError(f"--metric {spec}: {path} has no callable {name!r}")
    return Metric(spec, fn)


def prediction_kind(shape: Sequence) -> str | None:
    """'classifier' for (N, K), 'sequence' for (N, T, K) with K >= 2 classes, else None."""
    if len(shape) == 2 and isinstance(shape[1], int) and shape[1] >= 2:
        return "classifier"
    if len(shape) == 3 and isinstance(shape[2], int) and shape[2] >= 2:
        return "sequence"
    return None


def agrees(kind: str, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per sample, how much of ``got``'s discrete prediction equals ``ref``'s, in [0, 1] (module docstring)."""
    same = np.argmax(ref, axis=-1) == np.argmax(got, axis=-1)
    return (same if kind == "classifier" else same.mean(axis=1)).astype(np.float64)
