"""verify_dataset(): a whole validation set, batch by batch: would any prediction change?

Two phases over a ``Dataset`` (dataset.py, read lazily):

1. **oracle**: a seeded sample of ``oracle_samples`` samples goes through
   ``verify()`` (check.py): the float64 oracle, the original in the checked
   dtype, the folded eager model, the ONNX file on each provider; the full
   table, the rule, localization on failure. Per output it measures e_ref (the
   original's own error) and S (max |oracle|), which set the tolerance below.
2. **stream**: every sample, in batches of ``batch_size``, through the original
   in the checked dtype (the reference: eager for a PyTorch model, the original
   file on onnxruntime for an ONNX oracle) and the ONNX file on each provider
   (and the folded eager model with ``folded=True``). Each run is compared with
   the reference per sample i and output (tolerance.py, ``per_sample``):

       d_i = max |run_i - original_i|  <=  (K e_ref + floor(S) + e_ref) * max(1, s_i / S)

Over all samples, per run and output: max d_i, the 99th percentile of d_i,
the mean absolute error over all elements, the samples over the tolerance;
for classifier outputs ((N, classes), at least 2 classes) top-1 agreement with
the original (and the samples where it differs), top-5 overlap (at least 5
classes); with labels, the accuracy of the original and of each run on the
first classifier output. Only per-sample numbers are kept, so memory does not
grow with the images: one batch is in memory at a time.

Verdict (``DatasetReport.ok``): the oracle phase passes, no sample is over the
tolerance, and the thresholds given hold: ``min_agreement`` (top-1 agreement
of every run and classifier output), ``min_accuracy`` (each run's accuracy),
``max_accuracy_drop`` (the original's accuracy minus each run's).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from .check import DYNAMIC_BATCH_SIZES, check_inputs, check_providers, folded_eager, tf32_off, verify
from .dataset import Dataset, Skipped, open_dataset
from .inputs import InputError
from .labels import Labels, read_labels
from .metrics import topk_hits
from .oracle import TorchOracle, as_oracle
from .session import open_session, run_session
from .signature import OnnxSignature, read_onnx
from .stream_report import DatasetReport, StreamRow
from .tolerance import Tolerance

DEFAULT_ORACLE_SAMPLES = 64
MAX_BATCH = 32
BATCH_INPUT_BYTES = 32 * 2**20    # default batch: at most MAX_BATCH samples and this much input


class Progress(Protocol):
    def stage(self, description: str, total: int | None) -> None: ...
    def advance(self, samples: int) -> None: ...


class _Silent:
    def stage(self, description, total):
        pass

    def advance(self, samples):
        pass


def default_batch_size(sig: OnnxSignature, dataset: Dataset) -> int:
    """The file's own batch when it is fixed; else up to MAX_BATCH samples within BATCH_INPUT_BYTES of input."""
    if not sig.dynamic_batch:
        return int(sig.shapes[0][0])
    return int(max(1, min(MAX_BATCH, BATCH_INPUT_BYTES // max(1, dataset.sample_bytes))))


def verify_dataset(
    model: Any,
    onnx_path: str | os.PathLike,
    dataset: Dataset | str | os.PathLike,
    providers: Sequence[str] = ("cpu",),
    *,
    labels: Labels | str | os.PathLike | None = None,
    batch_size: int | None = None,
    oracle_samples: int = DEFAULT_ORACLE_SAMPLES,
    oracle_batch_sizes: Sequence[int] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    folded: bool = False,
    skip_bad: bool = False,
    min_agreement: float | None = None,
    min_accuracy: float | None = None,
    max_accuracy_drop: float | None = None,
    progress: Progress | None = None,
    sig: OnnxSignature | None = None,
) -> DatasetReport:
    """Check ``onnx_path`` against ``model`` (an nn.Module, an .onnx original or an Oracle) on every sample.

    ``dataset``: a Dataset, or what ``open_dataset`` takes (read for the ONNX
    file's inputs); ``labels``: Labels, or what ``read_labels`` takes; ``sig``:
    ``read_onnx(onnx_path)`` when the caller has read it already. See the
    module docstring. Bad input (a sample that cannot be read, without
    ``skip_bad``; labels out of range; a threshold with no classifier output)
    raises InputError; a failed check is a report with ``ok == False``.
    """
    sig = read_onnx(onnx_path) if sig is None else sig
    options = dict(batch_size=batch_size, oracle_samples=oracle_samples, oracle_batch_sizes=oracle_batch_sizes,
                   seed=seed, atol=atol, rtol=rtol, folded=folded, skip_bad=skip_bad, min_agreement=min_agreement,
                   min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop, progress=progress)
    if isinstance(dataset, Dataset):
        return _verify_dataset(model, onnx_path, sig, dataset, providers, labels, **options)
    with contextlib.closing(open_dataset(dataset, list(zip(sig.names, sig.shapes, sig.input_dtypes)))) as data:
        return _verify_dataset(model, onnx_path, sig, data, providers, labels, **options)


def _verify_dataset(model, onnx_path, sig: OnnxSignature, dataset: Dataset, providers, labels, *, batch_size,
                    oracle_samples, oracle_batch_sizes, seed, atol, rtol, folded, skip_bad, min_agreement,
                    min_accuracy, max_accuracy_drop, progress) -> DatasetReport:
    progress = progress or _Silent()
    oracle = as_oracle(model)
    if labels is not None and not isinstance(labels, Labels):
        labels = read_labels(labels, dataset.names)
    if oracle_samples < 1:
        raise InputError(f"oracle samples must be positive, got {oracle_samples}")
    batch = _batch_size(sig, dataset, batch_size)
    tol = Tolerance(atol=atol, rtol=rtol)
    short = "fp16" if sig.dtype == torch.float16 else "fp32"
    reference_run = f"original_{short}"

    # phase 1: the float64 oracle on a seeded sample
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), min(oracle_samples, len(dataset)), replace=False))
    progress.stage(f"float64 oracle on {len(chosen)} samples", None)
    kept, sample, skipped = dataset.read(chosen, skip_bad)
    if not kept:
        raise InputError(f"none of the {len(chosen)} samples drawn for the oracle could be read: {skipped[0].reason}")
    sizes = _oracle_sizes(sig, len(kept), oracle_batch_sizes)
    tensors = tuple(torch.from_numpy(x) for x in sample)
    check_providers(providers)      # before the fold, as verify() would
    check_inputs(oracle, sig, tensors)
    with tf32_off():     # folded once, here: verify() checks it on the oracle's sample, the stream on every sample
        fold = folded_eager(oracle, tensors, sig.dtype, short)
    oracle_report = verify(oracle, onnx_path, tensors, providers, atol=atol, rtol=rtol, batch_sizes=sizes, sig=sig,
                           folded=fold)
    report = DatasetReport(oracle=oracle_report, total=len(dataset), batch_size=batch, reference_run=reference_run,
                           oracle_indices=kept, oracle_names=[dataset.names[i] for i in kept],
                           rule=tol.describe_per_sample(sig.np_dtype, len(kept)),
                           thresholds={"min_agreement": min_agreement, "min_accuracy": min_accuracy,
                                       "max_accuracy_drop": max_accuracy_drop})
    if not sig.dynamic_batch and len(kept) > sig.shapes[0][0]:
        report.notes.append(f"the ONNX file's batch axis is fixed at {sig.shapes[0][0]}: the float64 oracle checked "
                            f"the first {sig.shapes[0][0]} of the {len(kept)} samples drawn")
    bounds = _bounds(oracle_report, reference_run)
    classifiers = [name for name, b in bounds.items() if b["classifier"]]
    if (labels is not None or min_agreement is not None or min_accuracy is not None
            or max_accuracy_drop is not None) and not classifiers:
        raise InputError("labels and the agreement/accuracy thresholds need a classifier output (N, classes); "
                         f"the model's outputs: {', '.join(bounds)}")
    label_output = classifiers[0] if labels is not None else None
    if labels is not None:
        _check_labels(labels, label_output, bounds[label_output]["classes"], dataset.names)

    # phase 2: every sample, batch by batch
    with tf32_off():
        reference = _eager(oracle, sig)
        runs = {f"onnx_{p}": _onnx_run(open_session(onnx_path, p)) for p in providers}
        if folded and fold.model is not None:
            runs[f"folded_{short}"] = _eager(TorchOracle(fold.model), sig)
        elif folded:
            report.notes.append(fold.note or f"folded_{short}: not run, the oracle is an ONNX graph "
                                             "(nothing to fold in PyTorch)")
        tallies = {(run, name): _Tally(run, name, bounds[name], tol, sig.np_dtype)
                   for run in runs for name in bounds}
        correct = {run: 0 for run in [reference_run, *runs]} if labels is not None else None
        timing = {"read": 0.0, **{r: 0.0 for r in runs}, reference_run: 0.0, "compare": 0.0}
        skipped_all = {s.index: s for s in skipped}
        progress.stage(f"{len(dataset)} samples, batch {batch}", len(dataset))
        start = time.perf_counter()
        for first in range(0, len(dataset), batch):
            t = time.perf_counter()
            indices = [i for i in range(first, min(first + batch, len(dataset))) if i not in skipped_all]
            idx, xs, bad = dataset.read(indices, skip_bad)
            skipped_all.update({s.index: s for s in bad})
            timing["read"] += time.perf_counter() - t
            if idx:
                _step(idx, _padded(xs, sig), list(bounds), reference, reference_run, runs, tallies, timing,
                      labels, correct, label_output)
            progress.advance(min(first + batch, len(dataset)) - first)
        wall = time.perf_counter() - start
    compared = len(dataset) - len(skipped_all)
    if compared == 0:
        raise InputError(f"no sample of {len(dataset)} could be read: {next(iter(skipped_all.values())).reason}")
    report.samples = compared
    report.skipped = sorted(skipped_all.values(), key=lambda s: s.index)
    report.rows = [t.row(dataset.names) for t in tallies.values()]
    report.timing = {**{k: round(v, 6) for k, v in timing.items()}, "wall": round(wall, 6)}
    if labels is not None:
        report.label_output, report.labels = label_output, labels.to_dict()
        report.accuracy = {run: c / compared for run, c in correct.items()}
    report.judge()
    return report


@dataclass
class _Tally:
    """Running statistics of one run and output against the reference."""
    run: str
    output: str
    bound: dict
    tol: Tolerance
    np_dtype: np.dtype
    sample_max: list = field(default_factory=list)
    sum_abs: float = 0.0
    count: int = 0
    over: list = field(default_factory=list)
    agree: int = 0
    disagree: list = field(default_factory=list)
    top5_sum: float = 0.0

    def add(self, idx: list[int], ref: np.ndarray, got: np.ndarray) -> None:
        n = len(idx)
        if got.shape != ref.shape:
            raise InputError(f"{self.run}: output {self.output!r} has shape {list(got.shape)}, the original's "
                             f"{list(ref.shape)}")
        if ref.ndim == 0 or ref.shape[0] != n:
            raise InputError(f"output {self.output!r} has shape {list(ref.shape)}: no batch axis of {n} samples "
                             "to compare per sample")
        d = np.abs(got - ref).reshape(n, -1)
        d[~np.isfinite(d)] = np.inf
        per = d.max(1) if d.shape[1] else np.zeros(n)
        scales = np.abs(ref).reshape(n, -1).max(1) if d.shape[1] else np.zeros(n)
        allowed = self.tol.per_sample(self.bound["e_ref"], self.bound["scale"], scales, self.np_dtype)
        self.over += [idx[k] for k in np.flatnonzero(~(per <= allowed))]
        self.sample_max.append(per)
        self.sum_abs += float(d.sum())
        self.count += d.size
        if self.bound["classifier"]:
            same = topk_hits(ref, got, 1) == 1
            self.agree += int(same.sum())
            self.disagree += [idx[k] for k in np.flatnonzero(~same)]
            if self.bound["classes"] >= 5:
                self.top5_sum += float(topk_hits(ref, got, 5).sum() / 5)

    def row(self, names: list[str]) -> StreamRow:
        per = np.concatenate(self.sample_max) if self.sample_max else np.zeros(0)
        n = len(per)
        allowed = float(self.tol.per_sample(self.bound["e_ref"], self.bound["scale"], np.zeros(1), self.np_dtype)[0])
        classifier = self.bound["classifier"]
        return StreamRow(
            run=self.run, output=self.output, samples=n,
            max_abs=float(per.max()) if n else 0.0,
            p99_abs=float(np.percentile(per, 99)) if n else 0.0,
            mean_abs=self.sum_abs / self.count if self.count else 0.0,
            allowed=allowed,
            over=sorted(self.over), over_names=[names[i] for i in sorted(self.over)],
            top1_agree=self.agree if classifier else None,
            disagree=sorted(self.disagree), disagree_names=[names[i] for i in sorted(self.disagree)],
            top5=self.top5_sum / n if classifier and self.bound["classes"] >= 5 and n else None,
        )


def _step(idx, xs, out_names, reference, reference_run, runs, tallies, timing, labels, correct, label_output):
    """One batch: the ONNX runs first (after reading, not right after eager torch, whose OpenMP threads
    spin-wait on the cores for a while after each op: measured on 2 cores, an onnxruntime batch run right
    after an eager batch took 10-34 % longer than one right after another onnxruntime batch, four trials), then the eager
    runs and the reference, then the comparison."""
    n = len(idx)
    outputs = {}
    for run, fn in runs.items():
        t = time.perf_counter()
        outputs[run] = fn(xs)
        timing[run] += time.perf_counter() - t
    t = time.perf_counter()
    ref = [r[:n] for r in reference(xs)]
    timing[reference_run] += time.perf_counter() - t
    t = time.perf_counter()
    if len(ref) != len(out_names):
        raise InputError(f"{reference_run}: {len(ref)} outputs, the oracle phase saw {len(out_names)}")
    for run, outs in outputs.items():
        if len(outs) != len(ref):
            raise InputError(f"{run}: {len(outs)} outputs, the original has {len(ref)}")
        for name, r, g in zip(out_names, ref, outs):
            tallies[(run, name)].add(idx, r, np.asarray(g[:n], dtype=np.float64))
    if labels is not None:
        k = out_names.index(label_output)
        y = labels.values[idx]
        correct[reference_run] += int((ref[k].argmax(1) == y).sum())
        for run, outs in outputs.items():
            correct[run] += int((np.asarray(outs[k][:n]).argmax(1) == y).sum())
    timing["compare"] += time.perf_counter() - t


def _eager(oracle, sig: OnnxSignature):
    """An oracle's model in the checked dtype, as a function of a batch: eager (its cast copy, made once),
    or the original file on onnxruntime."""
    return lambda xs: oracle.reference(xs, sig.np_dtype)


def _onnx_run(session):
    return lambda xs: run_session(session, xs)


def _check_labels(labels: Labels, output: str, classes: int, names: list[str]) -> None:
    """Every label is a class of ``output`` (checked before the stream, not after the batches before it)."""
    bad = np.flatnonzero(labels.values >= classes)
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{labels.source}: sample {names[i]!r} has label {labels.values[i]}, the output "
                         f"{output!r} has {classes} classes")


def _bounds(report, reference_run: str) -> dict[str, dict]:
    """Per output, from the oracle phase's reference rows: e_ref, S = max|oracle|, whether it is a classifier
    and its class count."""
    bounds: dict[str, dict] = {}
    for c in report.checks:
        if c.run != reference_run:
            continue
        b = bounds.setdefault(c.output, {"e_ref": 0.0, "scale": 0.0, "classifier": c.stats.top1 is not None,
                                         "classes": c.stats.classes})
        b["e_ref"] = max(b["e_ref"], c.ref_error)
        b["scale"] = max(b["scale"], c.stats.scale)
    return bounds


def _batch_size(sig: OnnxSignature, dataset: Dataset, requested: int | None) -> int:
    if requested is None:
        return default_batch_size(sig, dataset)
    if requested < 1:
        raise InputError(f"--batch-size must be positive, got {requested}")
    if not sig.dynamic_batch and requested != sig.shapes[0][0]:
        raise InputError(f"the ONNX file's batch axis is fixed at {sig.shapes[0][0]}; --batch-size {requested} "
                         "cannot feed it")
    return requested


def _oracle_sizes(sig: OnnxSignature, m: int, requested) -> tuple[int, ...] | None:
    """The batch sizes the float64 oracle runs at: those requested (or the defaults) and, with a dynamic
    batch, ``m``, so that every drawn sample is checked; None for a fixed batch: the file's own."""
    if not sig.dynamic_batch:
        return tuple(requested) if requested is not None else None
    return tuple(sorted({*(requested if requested is not None else DYNAMIC_BATCH_SIZES), m}))


def _padded(xs: tuple[np.ndarray, ...], sig: OnnxSignature) -> tuple[np.ndarray, ...]:
    """A fixed-batch file takes exactly its batch: repeat the last sample (its outputs are dropped)."""
    if sig.dynamic_batch:
        return xs
    b = sig.shapes[0][0]
    return tuple(np.concatenate([x, np.repeat(x[-1:], b - len(x), axis=0)]) if len(x) < b else x for x in xs)


__all__ = ["DEFAULT_ORACLE_SAMPLES", "DatasetReport", "Progress", "Skipped", "StreamRow", "default_batch_size",
           "verify_dataset"]
