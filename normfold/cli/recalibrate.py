"""normfold recalibrate: replace frozen norm statistics by population statistics over DATA (precise BN, AdaBN).

MODEL is what `normfold run` takes. --inputs DATA is what `verify --inputs`
takes (a folder of images/.npy, a glob, an .npz; --resize, --mean, --std),
streamed in --batch-size batches. Every norm layer that keeps running
statistics (batch norm, centering, scaling, decorrelation, whitening) gets
the mean and (co)variance of its input over all of DATA, in float64, layer by
layer in execution order (each layer measured with the layers before it
already recalibrated); weights are untouched.

A PyTorch MODEL: writes DIR/state_dict.pt (`model.load_state_dict(
torch.load(path, weights_only=True))` into your model). An .onnx MODEL: writes
DIR/model.onnx with each BatchNormalization's mean/var replaced (the inputs of
the nodes read on onnxruntime by exposing them as outputs of an in-memory copy).

Prints, per layer, how far the old statistics were from the new (mean shift
in data standard deviations, variance ratio, covariance or whitening-matrix
distance; the worst channels named). Exit 0, or 2 on bad input (DATA that
does not fit the model, too few samples for a covariance, NaN activations, no
norm layer with statistics: one line, nothing written).
"""
from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from ..atomic import staged
from ._common import (
    EXIT_OK,
    UsageError,
    add_model_arguments,
    check_paths,
    finite_floats,
    is_onnx,
    load_model,
    model_accepts,
    model_file,
    output,
    outputs_in,
    positive_floats,
    positive_int,
    readable_onnx,
    write_json_atomic,
)
from .verify_data import _size

TORCH_FILES = ["state_dict.pt"]
ONNX_FILES = ["model.onnx"]
_RANK4 = ("batch", "channels", "height", "width")   # a PyTorch MODEL without --input-shape: images


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("recalibrate", help="population statistics over DATA into the norm layers "
                                                  "(precise BN, AdaBN)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--inputs", required=True, metavar="DATA",
                   help="a folder of images/.npy, a glob, or an .npz (as verify --inputs); labels are not needed")
    p.add_argument("--resize", type=_size, default=None, metavar="H,W", help="resize images (bilinear)")
    p.add_argument("--mean", type=finite_floats, default=None, help="per-channel mean subtracted from images")
    p.add_argument("--std", type=positive_floats, default=None, help="per-channel std images are divided by")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="samples per batch (default 32)")
    p.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="CSV name,label, or the --inputs folder laid out one folder per class: adds the top-1 "
                        "accuracy on DATA before and after")
    p.add_argument("--out", type=Path, default=Path("normfold-recalibrated"),
                   help="output directory (default ./normfold-recalibrated)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    names = ONNX_FILES if is_onnx(args.model) else TORCH_FILES
    check_paths(outputs_in("--out", args.out, names, new_dirs=True) + output("--json", args.json),
                [("MODEL", model_file(args.model)), ("--inputs", args.inputs), ("--labels", args.labels)])
    options = dict(resize=args.resize, mean=args.mean, std=args.std, batch_size=args.batch_size, labels=args.labels)
    if is_onnx(args.model):
        import onnx

        name = args.model
        sig = readable_onnx(args.model, runnable=True)
        new, report = onnx_recalibrated(sig, args.inputs, "--inputs", **options)
        onnx.checker.check_model(new)     # only initializers changed: a failure would be normfold's bug
        blob = new.SerializeToString()

        def save(path):
            path.write_bytes(blob)
    else:
        import torch

        name, model, zoo_shape = load_model(args.model)
        new, report = torch_recalibrated(model, args.input_shape or zoo_shape, args.inputs, "--inputs", **options)
        buffer = io.BytesIO()
        torch.save(new.state_dict(), buffer)

        def save(path):
            path.write_bytes(buffer.getvalue())
    with staged(args.out) as stage:
        save(stage.path(names[0]))
        files = stage.commit(names)
    print(f"model      {name}")
    for line in report.lines():
        print(line)
    print(f"wrote      {', '.join(map(str, files))}")
    if args.json is not None:
        write_json_atomic({"model": name, **report.to_dict(), "files": [str(f) for f in files]}, args.json)
    return EXIT_OK


def torch_dataset(spec, flag: str, shape, *, resize=None, mean=None, std=None):
    """DATA for a PyTorch model: ``verify.open_dataset`` with the input declared as (batch, *shape[1:]), or
    (batch, channels, height, width) without a shape; UsageError naming the file."""
    from normfold.verify import InputError, open_dataset

    declared = ["batch", *shape[1:]] if shape else list(_RANK4)
    try:
        return open_dataset(spec, [("input", declared)], resize=resize, mean=mean, std=std, flag=flag)
    except InputError as exc:
        raise UsageError(str(exc)) from exc


@contextlib.contextmanager
def _torch_data(model, shape, spec, flag, resize, mean, std):
    import torch

    from normfold.recalibrate import RecalibrationError
    from normfold.recalibrate.torch_model import norm_targets

    try:
        norm_targets(model)
    except RecalibrationError as exc:
        raise UsageError(str(exc)) from exc
    data = torch_dataset(spec, flag, shape, resize=resize, mean=mean, std=std)
    try:
        model_accepts(model, tuple(torch.from_numpy(a) for a in _read(data, [0])))
        yield data
    finally:
        data.close()


def _read(data, indices):
    from normfold.verify import InputError

    try:
        return data.read(indices)[1]
    except InputError as exc:
        raise UsageError(str(exc)) from exc


def torch_recalibrated(model, shape, spec, flag: str, *, resize=None, mean=None, std=None, batch_size=None,
                       labels=None):
    """(recalibrated copy of ``model``, report) over DATA ``spec``, or UsageError; with ``labels``, the top-1
    accuracy on DATA before and after in the report."""
    from normfold.recalibrate import recalibrate
    from normfold.recalibrate.labelled import torch_runner

    with _torch_data(model, shape, spec, flag, resize, mean, std) as data:
        truth = _labels(labels, data)
        new, report = _refused(flag, spec, lambda: recalibrate(model, data, batch_size=batch_size))
        _accuracy(report, truth, labels, data, batch_size, torch_runner(model), torch_runner(new), flag, spec)
        return new, report


def check_recalibrate_flag(args) -> None:
    """Before any work: --recalibrate DATA takes a PyTorch MODEL."""
    if getattr(args, "recalibrate", None) is not None and is_onnx(args.model):
        raise UsageError(f"--recalibrate {args.recalibrate} takes a PyTorch MODEL; for an .onnx file run "
                         "`normfold recalibrate MODEL --inputs DATA` and give its model.onnx")


def recalibrated_for(args, model, shape):
    """`run --recalibrate DATA` (and the like): ``model`` recalibrated on DATA, its report printed; the
    model itself when the flag is not given."""
    if args.recalibrate is None:
        return model
    new, report = torch_recalibrated(model, shape, args.recalibrate, "--recalibrate")
    for line in report.lines():
        print(line)
    return new


def statistics_for(args):
    """`inspect --statistics DATA`: the statistics health of MODEL on DATA (None without the flag). A
    PyTorch MODEL is loaded again here (the fold report works on its own copy)."""
    if getattr(args, "statistics", None) is None:
        return None
    if is_onnx(args.model):
        return onnx_statistics(readable_onnx(args.model, runnable=True), args.statistics, "--statistics")
    _, model, zoo_shape = load_model(args.model)
    return torch_health(model, args.input_shape or zoo_shape, args.statistics, "--statistics")


def torch_health(model, shape, spec, flag: str, *, resize=None, mean=None, std=None, batch_size=None):
    """The statistics health of ``model`` on DATA ``spec``, or UsageError."""
    from normfold.recalibrate import statistics_health

    with _torch_data(model, shape, spec, flag, resize, mean, std) as data:
        return _refused(flag, spec, lambda: statistics_health(model, data, batch_size=batch_size))


@contextlib.contextmanager
def _onnx_data(sig, spec, flag, resize, mean, std):
    from normfold.verify import InputError, open_dataset

    try:
        data = open_dataset(spec, list(zip(sig.names, sig.shapes, sig.input_dtypes)), resize=resize, mean=mean,
                            std=std, flag=flag)
    except InputError as exc:
        raise UsageError(str(exc)) from exc
    try:
        yield data
    finally:
        data.close()


def onnx_recalibrated(sig, spec, flag: str, *, resize=None, mean=None, std=None, batch_size=None, labels=None):
    """(the graph with recalibrated BatchNormalization statistics, report) over DATA ``spec``, or UsageError;
    with ``labels``, the top-1 accuracy on DATA before and after in the report."""
    from normfold.recalibrate import recalibrate_onnx
    from normfold.recalibrate.labelled import onnx_runner

    size = _onnx_batch(sig, batch_size)
    with _onnx_data(sig, spec, flag, resize, mean, std) as data:
        truth = _labels(labels, data)
        new, report = _refused(flag, spec, lambda: recalibrate_onnx(sig.proto, data, batch_size=size))
        _accuracy(report, truth, labels, data, size, onnx_runner(sig.proto), onnx_runner(new), flag, spec)
        return new, report


def _labels(labels, data):
    """The class of each sample of ``data`` (None without --labels), or UsageError naming the file."""
    from normfold.verify import InputError, read_labels

    if labels is None:
        return None
    try:
        return read_labels(labels, data.names).values
    except InputError as exc:
        raise UsageError(str(exc)) from exc


def _accuracy(report, truth, labels, data, batch_size, before, after, flag, spec) -> None:
    """``report.accuracy``: top-1 of the model ``before`` and ``after`` recalibration on ``data``."""
    from normfold.recalibrate.data import as_batches
    from normfold.recalibrate.labelled import top1

    if truth is None:
        return
    batches = as_batches(data, batch_size)
    report.accuracy = {"labels": str(labels), "before": _refused(flag, spec, lambda: top1(before, batches, truth)),
                       "after": _refused(flag, spec, lambda: top1(after, batches, truth))}


def onnx_statistics(sig, spec, flag: str, *, resize=None, mean=None, std=None, batch_size=None):
    """The statistics health of an ONNX graph's BatchNormalizations on DATA ``spec``, or UsageError."""
    from normfold.recalibrate import onnx_health

    with _onnx_data(sig, spec, flag, resize, mean, std) as data:
        return _refused(flag, spec, lambda: onnx_health(sig.proto, data, batch_size=_onnx_batch(sig, batch_size)))


def _refused(flag: str, spec, work):
    """``work()``; its RecalibrationError as a UsageError naming the data flag."""
    from normfold.recalibrate import RecalibrationError

    try:
        return work()
    except RecalibrationError as exc:
        raise UsageError(f"{flag} {spec}: {exc}") from exc


def _onnx_batch(sig, batch_size):
    """A file with a fixed batch takes batches of exactly that size."""
    if sig.dynamic_batch:
        return batch_size
    fixed = int(sig.shapes[0][0])
    if batch_size not in (None, fixed):
        raise UsageError(f"the ONNX file has a fixed batch of {fixed}; --batch-size {batch_size} does not fit it")
    return fixed
