"""normfold verify: is MODEL.onnx equivalent to MODEL? The check to put in CI.

The oracle is MODEL run in float64. Against it, on the same inputs: MODEL in
the ONNX file's dtype (its error sets the tolerance), MODEL folded by normfold
(eager), and MODEL.onnx on each onnxruntime provider. A dynamic batch axis is
checked at batch sizes 1 and 3, as `run` does (and also at the batch of
--input-shape when that is another; with --inputs, the number of files given).

MODEL may itself be an .onnx file, the original of MODEL.onnx (e.g. the input
of `normfold run FILE.onnx`): the oracle is then its graph evaluated in float64
(onnx.reference), and the original file on onnxruntime CPU sets the tolerance.

Verdict, per output: max_abs <= K * e_ref + max(FLOOR_ULPS * eps(fp32), eps(dtype)) * max|oracle|,
e_ref = the original model's own error in that dtype (K = 8, FLOOR_ULPS = 64;
see normfold/verify/tolerance.py for why). --atol/--rtol replace the rule. On
failure the table gives the smallest atol/rtol/k that would have passed, and
the first fold site / ONNX node whose output leaves the oracle.

Inputs: seeded N(0, 1) by default; --uniform LOW,HIGH; integer and bool model
inputs 0 or 1 (--input-shape NAME=N,C,H,W per input with symbolic dims, as for
run); or --inputs PATH, a
validation set streamed in batches (a directory of .png/.jpg/.npy, a glob, or an
.npz; for several model inputs, an .npz keyed by input name or a folder per
input): the float64 oracle runs on --oracle-samples of them to set the
tolerance, and every sample compares the ONNX file with the original model;
--labels adds accuracy, --min-agreement/--min-accuracy/--max-accuracy-drop gate
on it. --mean/--std normalize per channel.

Exit 0 pass, 1 a check failed, 2 bad input or environment.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_model_arguments,
    check_memory,
    check_paths,
    finite_floats,
    is_onnx,
    load_model,
    model_accepts,
    model_file,
    output,
    positive_floats,
    positive_ints,
    readable_onnx,
    write_json_atomic,
)
from . import verify_data
from .onnx_model import input_shapes, load_onnx


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check an ONNX file against its PyTorch model (exit 1 on failure)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, named_shapes=True)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the ONNX file to check")
    p.add_argument("--providers", default="cpu", help="comma-separated onnxruntime providers: cpu, cuda (default cpu)")
    p.add_argument("--batch-sizes", type=positive_ints, default=None, metavar="1,3",
                   help="batch sizes to check (default: 1,3 for a dynamic batch axis, and the batch of "
                        "--input-shape when that is another)")
    p.add_argument("--inputs", default=None, metavar="PATH",
                   help="a validation set, streamed: a directory of .png/.jpg/.npy files, a glob, or an .npz")
    p.add_argument("--uniform", type=finite_floats, default=None, metavar="LOW,HIGH",
                   help="random inputs uniform in [LOW, HIGH) instead of N(0, 1)")
    p.add_argument("--mean", type=finite_floats, default=None,
                   help="per-channel mean subtracted from the inputs (one value: every channel)")
    p.add_argument("--std", type=positive_floats, default=None,
                   help="per-channel std (> 0) the inputs are divided by (one value: every channel)")
    p.add_argument("--atol", type=_nonnegative, default=None, help="absolute tolerance (replaces the derived rule)")
    p.add_argument("--rtol", type=_nonnegative, default=None,
                   help="tolerance relative to max|oracle| (replaces the derived rule)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="fp16: export MODEL as float16 (folded in float64, cast once) to MODEL.fp16.onnx "
                        "beside MODEL.onnx and verify that file (default: the ONNX file's own dtype)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    verify_data.add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from normfold.export import ExportError
    from normfold.verify import InputError, OnnxOracle, OracleError, SessionError, read_onnx, verify
    from normfold.verify.check import check_inputs

    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    if args.model is None:   # argparse gave the one positional to MODEL.onnx
        raise UsageError(f"give MODEL before {args.onnx}: the model it was exported from (a zoo name, "
                         "path/to/file.py:factory, or the original .onnx)")
    side = fp16_file(args.onnx) if args.precision == "fp16" else None
    check_paths(output("--json", args.json) + output("--precision fp16 writes", side),
                [("MODEL", model_file(args.model)), ("MODEL.onnx", args.onnx), ("--inputs", args.inputs),
                 ("--labels", args.labels)])
    if args.uniform is not None and len(args.uniform) != 2:
        raise UsageError(f"--uniform takes LOW,HIGH, got {len(args.uniform)} numbers")
    if args.inputs is not None and args.uniform is not None:
        raise UsageError("--inputs and --uniform exclude each other")
    verify_data.check_flags(args)
    try:
        from normfold.verify.session import provider_name

        for p in providers or ("",):
            provider_name(p)
        if is_onnx(args.model) and args.inputs is not None:   # any number of inputs: the data gives the shapes
            name = str(args.model)
            model = OnnxOracle(readable_onnx(args.model).proto, where=name)
            model.session("cpu")    # onnxruntime loads it: the session its reference runs on
        elif is_onnx(args.model):
            src = load_onnx(args.model, args, runnable=True)
            name, model = src.name, OnnxOracle(src.signature.proto, where=src.name)   # the graph in float64
        else:
            name, model, _ = load_model(args.model)
        sig = read_onnx(args.onnx)
        if args.inputs is not None:   # a validation set, opened before an fp16 export (same inputs)
            data, labels = verify_data.open_data(args, sig)
            return verify_data.main(args, name, model, *_precision(args, model, sig), providers, data, labels)
        xs, source, sizes = _inputs(args, sig)   # before an fp16 export: its inputs are the same
        onnx_path, sig = _precision(args, model, sig)
        check_inputs(model, sig, xs)
        if not isinstance(model, OnnxOracle):
            model_accepts(model, xs)
        report = verify(model, onnx_path, xs, providers, atol=args.atol, rtol=args.rtol, batch_sizes=sizes,
                        sig=sig)
    except (SessionError, InputError, ExportError, OracleError) as exc:
        raise UsageError(str(exc)) from exc

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(f"model {name}   onnx {onnx_path}   inputs {source}", soft_wrap=True)
    console.print(report.table())
    for line in report.summary():
        console.print(line, soft_wrap=True, style="bold red" if line.startswith("FAIL") else None)
    if args.json is not None:
        write_json_atomic({
            "model": name,
            "onnx": str(onnx_path),
            "inputs": source,
            "verify": report.to_dict(),
        }, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def fp16_file(onnx: Path) -> Path:
    """Where --precision fp16 writes the fp16 export of an fp32 MODEL.onnx: MODEL.fp16.onnx beside it."""
    return onnx.with_name(onnx.stem + ".fp16.onnx")


def _precision(args, model, sig):
    """The file to verify: MODEL.onnx itself, or (fp16 asked of an fp32 file) a fresh fp16 export beside it."""
    import torch

    from normfold.export import export
    from normfold.verify import OnnxOracle, read_onnx

    have = "fp16" if sig.dtype == torch.float16 else "fp32"
    if args.precision is None or args.precision == have:
        return args.onnx, sig
    if args.precision == "fp32":
        raise UsageError(f"--precision fp32, but {args.onnx} is an fp16 model")
    if isinstance(model, OnnxOracle):
        raise UsageError(f"--precision fp16 exports the PyTorch MODEL at fp16; with an ONNX MODEL ({model.where}), "
                         "give the fp16 file itself")
    target = fp16_file(args.onnx)
    shape = _shapes(args, sig)[sig.names[0]]
    x = torch.zeros((2, *shape[1:]))
    export(model, x, target, precision="fp16", dynamic_batch=sig.dynamic_batch)
    return target, read_onnx(target)


def _shapes(args, sig) -> dict[str, tuple[int, ...]]:
    """{input: shape} of the checked file: --input-shape, or the file's own with batch 1 (onnx_model.py)."""
    return input_shapes(sig, args.onnx, args.input_shape, args.named_shapes)


def _inputs(args, sig):
    """(example batch of each input as torch tensors, description of their source for the report, batch sizes)."""
    import numpy as np
    import torch

    from normfold.verify.check import DYNAMIC_BATCH_SIZES
    from normfold.verify.inputs import normalize, random_batch, random_input

    sizes = args.batch_sizes
    shapes = _shapes(args, sig)
    first = shapes[sig.names[0]]
    if (args.input_shape is not None or args.named_shapes) and sizes is None:
        sizes = tuple(sorted({*DYNAMIC_BATCH_SIZES, first[0]})) if sig.dynamic_batch else (first[0],)
    rows = max(sizes or (3 if sig.dynamic_batch else first[0],))
    if args.uniform is not None:
        source = {"kind": "uniform", "low": args.uniform[0], "high": args.uniform[1], "seed": args.seed}
    else:
        source = {"kind": "normal", "mean": 0.0, "std": 1.0, "seed": args.seed}
    xs = []
    for k, (name, dtype) in enumerate(zip(sig.names, sig.input_dtypes)):
        shape = (rows, *shapes[name][1:]) if sig.batched(k) else shapes[name]
        check_memory(shape, "an input batch" if len(shapes) == 1 else f"a batch of input {name!r}")
        seed = (args.seed + k) % 2**64
        if dtype.kind != "f":
            xs.append(random_input(shape, dtype, seed))
            continue
        x = normalize(random_batch(shape, source["kind"], seed, *(args.uniform or ())), args.mean, args.std)
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            raise UsageError(f"--mean/--std make sample {bad[0][0]} of input {name!r} NaN or infinite "
                             f"(at {tuple(int(i) for i in bad[0][1:])}): there is nothing to compare")
        xs.append(x)
    source.update(shape=list(xs[0].shape[1:]), normalize_mean=args.mean, normalize_std=args.std)
    if len(xs) > 1:
        source.update(shapes={n: list(x.shape) for n, x in zip(sig.names, xs)})
    return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in xs), source, sizes
