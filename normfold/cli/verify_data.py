"""`normfold verify --inputs DATA`: the check over a whole validation set (normfold.verify.verify_dataset).

--inputs is a directory of images/.npy (sub-folders too), a glob, or an .npz
(for several model inputs: one array per input name, or one folder per input).
It is read lazily, in batches of --batch-size; headers are checked before any
work (unreadable files, mixed sizes without --resize, shapes the model does not
take, labels naming missing samples: exit 2 naming the file). The float64
oracle runs on --oracle-samples samples drawn with --seed and sets the
tolerance; every sample then compares the ONNX file on onnxruntime (and the
folded eager model with --folded) with the original in the file's dtype.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    check_paths,
    model_accepts,
    output,
    positive_int,
    positive_ints,
    write_json_atomic,
)

DATA_FLAGS = ("labels", "batch_size", "oracle_samples", "resize", "skip_bad", "folded", "min_agreement",
              "min_accuracy", "max_accuracy_drop")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    values = positive_ints(text, "H,W: two positive integers")
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W: two positive integers, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a validation set (with --inputs)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   metavar="N", help="samples per batch (default: the file's fixed batch, else up to 32 "
                                     "within 32 MiB of input)")
    g.add_argument("--oracle-samples", type=positive_int, default=None,
                   metavar="N", help="samples drawn (with --seed) for the float64 oracle, which sets the "
                                     "tolerance (default 64)")
    g.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="CSV name,label, or the --inputs folder laid out one folder per class: adds accuracy")
    g.add_argument("--resize", type=_size, default=None, metavar="H,W", help="resize images (bilinear)")
    g.add_argument("--skip-bad", action="store_true",
                   help="leave out (and list) samples that fail to decode during the run instead of exit 2")
    g.add_argument("--folded", action="store_true", help="also run the folded eager model on every sample")
    g.add_argument("--min-agreement", type=_fraction, default=None, metavar="F",
                   help="exit 1 when a run's top-1 agreement with the original is below F (e.g. 0.999)")
    g.add_argument("--min-accuracy", type=_fraction, default=None, metavar="F",
                   help="with --labels: exit 1 when an ONNX run's accuracy is below F")
    g.add_argument("--max-accuracy-drop", type=_fraction, default=None, metavar="F",
                   help="with --labels: exit 1 when an ONNX run's accuracy is more than F below the original's")


def check_flags(args: argparse.Namespace) -> None:
    """Before any work: the dataset flags need --inputs; accuracy thresholds need --labels."""
    if args.inputs is None:
        given = [f for f in DATA_FLAGS if getattr(args, f) not in (None, False)]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --inputs (a validation set)")
    if args.labels is None:
        for f in ("min_accuracy", "max_accuracy_drop"):
            if getattr(args, f) is not None:
                raise UsageError(f"--{f.replace('_', '-')} needs --labels")


def open_data(args: argparse.Namespace, sig):
    """(the Dataset --inputs names, its Labels or None), every header read and checked; --json is none of
    its files. Errors raise InputError naming the file."""
    from normfold.verify import open_dataset, read_labels

    data = open_dataset(args.inputs, list(zip(sig.names, sig.shapes, sig.input_dtypes)), resize=args.resize,
                        mean=args.mean, std=args.std)
    try:
        check_paths(output("--json", args.json), [("--inputs", f) for f in data.files])
        labels = read_labels(args.labels, data.names) if args.labels is not None else None
    except BaseException:
        data.close()
        raise
    return data, labels


def main(args: argparse.Namespace, name: str, model, onnx_path: Path, sig, providers: tuple[str, ...],
         data, labels) -> int:
    """Check the first sample against the model, stream, report; errors raise InputError/SessionError."""
    import numpy as np
    import torch
    from rich.console import Console

    from normfold.verify import verify_dataset
    from normfold.verify.check import check_inputs

    try:
        first = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in _first_sample(data, args.skip_bad))
        check_inputs(model, sig, first)
        if isinstance(model, torch.nn.Module):
            model_accepts(model, first)
        with _progress(args) as progress:
            report = verify_dataset(
                model, onnx_path, data, providers, labels=labels, batch_size=args.batch_size,
                oracle_samples=args.oracle_samples or 64, oracle_batch_sizes=args.batch_sizes, seed=args.seed,
                atol=args.atol, rtol=args.rtol, folded=args.folded, skip_bad=args.skip_bad,
                min_agreement=args.min_agreement, min_accuracy=args.min_accuracy,
                max_accuracy_drop=args.max_accuracy_drop, progress=progress, sig=sig)
    finally:
        data.close()

    source = dict(data.source, shape=list(data.columns[0].sample_shape),
                  shapes={c.input: list(c.sample_shape) for c in data.columns},
                  resize=list(args.resize) if args.resize else None,
                  normalize_mean=args.mean, normalize_std=args.std)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(f"model {name}   onnx {onnx_path}   inputs {args.inputs} ({report.total} samples)", soft_wrap=True)
    console.print(report.oracle.table())
    for line in report.oracle.summary()[:-1]:
        console.print(line, soft_wrap=True)
    console.print(report.table())
    for line in report.summary():
        console.print(line, soft_wrap=True, style="bold red" if line.startswith("FAIL") else None)
    if args.json is not None:
        write_json_atomic({"model": name, "onnx": str(onnx_path), "inputs": source, "ok": report.ok,
                           "verify": report.oracle.to_dict(), "dataset": report.to_dict()}, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def _first_sample(data, skip_bad: bool):
    """The first sample that reads (with --skip-bad, the first readable one), to check the model takes it."""
    from normfold.verify import InputError

    for i in range(len(data)):
        kept, xs, bad = data.read([i], skip_bad)
        if kept:
            return xs
    raise InputError(f"no sample of --inputs {data.source['path']} can be read: {bad[0].reason}")


def progress_wanted(args: argparse.Namespace) -> bool:
    """A progress bar on a terminal only: not with --json, not when stdout or stderr is redirected."""
    return args.json is None and sys.stdout.isatty() and sys.stderr.isatty()


class _RichProgress:
    """verify_dataset's Progress as a rich bar on stderr: samples done, samples/s, time left."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.task = None

    def stage(self, description: str, total: int | None) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(description, total=total, rate="")

    def advance(self, samples: int) -> None:
        self.bar.advance(self.task, samples)
        speed = next(t.speed for t in self.bar.tasks if t.id == self.task)
        self.bar.update(self.task, rate=f"{speed:.1f} samples/s" if speed else "")

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()


def _progress(args):
    return _RichProgress() if progress_wanted(args) else contextlib.nullcontext()
