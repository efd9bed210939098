"""normfold verify: is MODEL.onnx equivalent to MODEL? The check to put in CI.

The oracle is MODEL run in float64. Against it, on the same inputs: MODEL in
the ONNX file's dtype (its error sets the tolerance), MODEL folded by normfold
(eager), and MODEL.onnx on each onnxruntime provider. A dynamic batch axis is
checked at batch sizes 1 and 3 (and the number of files given with --inputs).

MODEL may itself be an .onnx file, the original of MODEL.onnx (e.g. the input
of `normfold run FILE.onnx`): the oracle is then its graph evaluated in float64
(onnx.reference), and the original file on onnxruntime CPU sets the tolerance.

Verdict, per output: max_abs <= K * e_ref + max(FLOOR_ULPS * eps(fp32), eps(dtype)) * max|oracle|,
e_ref = the original model's own error in that dtype (K = 8, FLOOR_ULPS = 64;
see normfold/verify/tolerance.py for why). --atol/--rtol replace the rule. On
failure the table gives the smallest atol/rtol/k that would have passed, and
the first fold site / ONNX node whose output leaves the oracle.

Inputs: seeded N(0, 1) by default; --uniform LOW,HIGH; or --inputs PATH (a
directory of .png/.jpg/.npy, or an .npz). --mean/--std normalize per channel.

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
    is_onnx,
    load_model,
    load_onnx,
    not_an_input,
    positive_ints,
    write_json_atomic,
)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


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
    add_model_arguments(p)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the ONNX file to check")
    p.add_argument("--providers", default="cpu", help="comma-separated onnxruntime providers: cpu, cuda (default cpu)")
    p.add_argument("--batch-sizes", type=positive_ints, default=None, metavar="1,3",
                   help="batch sizes to check (default: 1,3 for a dynamic batch axis)")
    p.add_argument("--inputs", type=Path, default=None, metavar="PATH",
                   help="real inputs: a directory of .png/.jpg/.npy files, or an .npz")
    p.add_argument("--uniform", type=_floats, default=None, metavar="LOW,HIGH",
                   help="random inputs uniform in [LOW, HIGH) instead of N(0, 1)")
    p.add_argument("--mean", type=_floats, default=None, help="per-channel mean subtracted from the inputs")
    p.add_argument("--std", type=_floats, default=None, help="per-channel std the inputs are divided by")
    p.add_argument("--atol", type=_nonnegative, default=None, help="absolute tolerance (replaces the derived rule)")
    p.add_argument("--rtol", type=_nonnegative, default=None,
                   help="tolerance relative to max|oracle| (replaces the derived rule)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="fp16: export MODEL as float16 (folded in float64, cast once) to MODEL.fp16.onnx "
                        "beside MODEL.onnx and verify that file (default: the ONNX file's own dtype)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from normfold.export import ExportError
    from normfold.verify import InputError, OnnxOracle, OracleError, SessionError, read_onnx, verify
    from normfold.verify.check import check_inputs

    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    if args.json is not None and not args.json.parent.is_dir():
        raise UsageError(f"--json {args.json}: directory {args.json.parent} does not exist")
    if args.uniform is not None and len(args.uniform) != 2:
        raise UsageError(f"--uniform takes LOW,HIGH, got {len(args.uniform)} numbers")
    if args.inputs is not None and args.uniform is not None:
        raise UsageError("--inputs and --uniform exclude each other")
    try:
        from normfold.verify.session import provider_name

        for p in providers or ("",):
            provider_name(p)
        if is_onnx(args.model):
            src = load_onnx(args.model, args.input_shape)
            name, model = src.name, OnnxOracle(src.signature.proto, where=src.name)   # the graph in float64
        else:
            name, model, _ = load_model(args.model)
        if args.json is not None:
            not_an_input(args.json, [args.onnx] + ([Path(args.model)] if is_onnx(args.model) else []), "--json")
        sig = read_onnx(args.onnx)
        onnx_path, sig = _precision(args, model, sig)
        x, source, sizes = _inputs(args, sig)
        check_inputs(model, sig, (x,))
        if not isinstance(model, OnnxOracle):
            _model_accepts(model, x)
        report = verify(model, onnx_path, x, providers, atol=args.atol, rtol=args.rtol, batch_sizes=sizes)
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
    target = args.onnx.with_name(args.onnx.stem + ".fp16.onnx")
    shape = _shape(args, sig)
    x = torch.zeros((2, *shape[1:]))
    export(model, x, target, precision="fp16", dynamic_batch=sig.dynamic_batch)
    return target, read_onnx(target)


def _shape(args, sig) -> tuple[int, ...]:
    """The first input's shape: --input-shape, or the ONNX file's with batch 1."""
    if args.input_shape is not None:
        return args.input_shape
    declared = sig.shapes[0]
    rest = declared[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise UsageError(f"ONNX input {sig.names[0]!r} has shape {declared} with symbolic axes; "
                         "give --input-shape N,C,H,W")
    return (1, *rest)


def _inputs(args, sig):
    """(example batch as a torch tensor, description of its source for the report, batch sizes)."""
    import numpy as np
    import torch

    from normfold.verify.inputs import load_samples, normalize, random_batch

    if len(sig.names) != 1:
        raise UsageError(f"{args.onnx} takes {len(sig.names)} inputs; the CLI verifies single-input models "
                         "(use normfold.verify() from Python for several)")
    sizes = args.batch_sizes
    if args.inputs is not None:
        x = load_samples(args.inputs, rank=len(sig.shapes[0]))
        if sizes is None and sig.dynamic_batch:
            sizes = tuple(sorted({1, 3, len(x)}))
        source = {"kind": "files", "path": str(args.inputs), "samples": int(len(x))}
    else:
        shape = _shape(args, sig)
        if args.input_shape is not None and sizes is None:
            sizes = (shape[0],)
        rows = max(sizes or (3 if sig.dynamic_batch else shape[0],))
        if args.uniform is not None:
            low, high = args.uniform
            x = random_batch((rows, *shape[1:]), "uniform", args.seed, low, high)
            source = {"kind": "uniform", "low": low, "high": high, "seed": args.seed}
        else:
            x = random_batch((rows, *shape[1:]), "normal", args.seed)
            source = {"kind": "normal", "mean": 0.0, "std": 1.0, "seed": args.seed}
    x = normalize(x, args.mean, args.std)
    source.update(shape=list(x.shape[1:]), normalize_mean=args.mean, normalize_std=args.std)
    return torch.from_numpy(np.ascontiguousarray(x)), source, sizes


def _model_accepts(model, x) -> None:
    import torch

    try:
        with torch.no_grad():
            model(x[:1])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"the model rejects inputs of shape {list(x.shape)}: {type(exc).__name__}: {first}") from exc
