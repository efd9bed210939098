"""normfold bench: onnxruntime latency of the unfolded, folded and norm-free models.

MODEL (a zoo name or path/to/file.py:factory) is exported three ways: unfolded
(norm layers kept, exporter optimizations off), folded, and its norm-free twin
(every foldable norm replaced by identity: the limit of what folding can gain).
Extra ONNX files on the command line are timed beside them; give only ONNX
files (`normfold bench a.onnx b.onnx`) to time just those, side by side, each
against the first (the input shape is the first file's, or --input-shape where
it has symbolic dims; a file with several inputs takes --input-shape NAME=N,C,H,W
per input with symbolic dims, and each input is fed a seeded array of its
dtype: floats N(0, 1), integers and bools 0 or 1).

Each provider x optimization level x batch size is one setting. Within a
setting the variants are timed interleaved (rotating rounds), so the printed
ratios folded/unfolded and folded/twin hold up on a busy machine. Session
creation is timed separately. Thread counts are explicit: --threads, by
default the CPUs in this process's affinity mask.

With --budget-ms X it is a deployment latency test: exit 1 when the X-th
--percentile (default 90) of the folded model (and of every extra ONNX file)
exceeds X ms in any measured setting. Exit 2 on bad input, including
--providers cuda on a machine where CUDA does not really work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bench.variants import VARIANT_FILES
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_model_arguments,
    check_memory,
    check_paths,
    cpu_session,
    is_onnx,
    model_and_input,
    model_file,
    output,
    outputs_in,
    positive_ints,
    readable_onnx,
    write_json_atomic,
)
from .onnx_model import add_inputs_argument, check_inputs_flag, load_onnx


def _name_list(choices: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(p.strip() for p in text.split(",") if p.strip())
        bad = [n for n in names if n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return names
    return parse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="onnxruntime latency: unfolded vs folded vs norm-free twin",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, named_shapes=True)
    add_inputs_argument(p)
    p.add_argument("onnx", nargs="*", type=Path, help="extra ONNX files to time beside the model")
    p.add_argument("--providers", type=_name_list(("cpu", "cuda")), default=None,
                   help="comma-separated: cpu,cuda (default: cpu, plus cuda when it really works)")
    p.add_argument("--batch-sizes", type=positive_ints, default=None, metavar="B1,B2",
                   help="batch sizes to time (default: the input shape's batch)")
    p.add_argument("--opt-levels", type=_name_list(("disable", "basic", "extended", "all")),
                   default=("disable", "all"), help="graph optimization levels (default disable,all)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: CPUs in the affinity mask)")
    p.add_argument("--spinning", action="store_true",
                   help="let onnxruntime's thread pools spin-wait between runs (off: interleaved sessions would compete)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    p.add_argument("--runs-per-round", type=int, default=5, help="timed runs per variant per round (default 5)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per variant and batch size (default 5)")
    p.add_argument("--creation-repeats", type=int, default=3, help="session creations timed per variant (default 3)")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget: exit 1 when exceeded")
    p.add_argument("--percentile", type=float, default=None, help="percentile the budget applies to (default 90)")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG chart here")
    p.add_argument("--export-dir", type=Path, default=None, help="keep the exported variants in this directory")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from normfold.bench import BenchError, bench
    from normfold.export import ExportError

    _check_args(args)
    check_inputs_flag(args)
    onnx_files = list(args.onnx)
    for f in onnx_files:
        if not is_onnx(f):
            raise UsageError(f"extra argument {f}: expected an .onnx file")
    check_paths(output("--json", args.json) + output("--plot", args.plot)
                + outputs_in("--export-dir", args.export_dir, VARIANT_FILES),
                [("MODEL", model_file(args.model)), ("--inputs", args.inputs)]
                + [("an ONNX file to time", f) for f in onnx_files])
    model = x = shapes = None
    if is_onnx(args.model):
        src = load_onnx(args.model, args)
        cpu_session(src.path)
        onnx_files.insert(0, src.path)
        shape, shapes = src.shape, src.shapes
        name = ", ".join(f.name for f in onnx_files)
    else:
        name, model, shape, x = model_and_input(args)
    if args.batch_sizes:
        for k, s in enumerate(shapes.values() if shapes else [shape]):
            if k == 0 or src.signature.batched(k):
                check_memory((max(args.batch_sizes), *s[1:]), "an input at the largest --batch-sizes")
    for f in args.onnx:
        readable_onnx(f, runnable=True)

    try:
        report = bench(
            model, x, onnx_files=onnx_files, sample_shape=shape[1:], providers=args.providers,
            input_shapes=shapes if shapes and len(shapes) > 1 else None,
            feeds=dict(zip(src.signature.names, src.given)) if shapes and src.given is not None else None,
            batch_sizes=args.batch_sizes or (shape[0],), optimizations=args.opt_levels, threads=args.threads, spinning=args.spinning,
            rounds=args.rounds, runs_per_round=args.runs_per_round, warmup=args.warmup,
            creation_repeats=args.creation_repeats, budget_ms=args.budget_ms,
            budget_percentile=args.percentile or 90.0, name=name, export_dir=args.export_dir,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except (BenchError, ExportError) as exc:
        raise UsageError(str(exc)) from exc

    print_report(report)
    if args.json is not None:
        write_json_atomic(report.to_dict(), args.json)
        print(f"wrote {args.json}")
    if args.plot is not None:
        from normfold.bench.plot import plot_png

        plot_png([report], args.plot)
        print(f"wrote {args.plot}")
    if report.budget is not None:
        print("PASS" if report.budget.ok else "FAIL: over the latency budget")
        return EXIT_OK if report.budget.ok else EXIT_FAILED
    return EXIT_OK


def print_report(report) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 140)
    for table in report.tables():
        console.print(table)
    for r in report.ratios():
        print(r.line())
    for s in report.skipped:
        print(f"skipped {s['what']}: {s['reason']}")
    if report.budget is not None:
        for line in report.budget.lines():
            print(line)


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("threads", "rounds", "runs_per_round", "warmup", "creation_repeats"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.percentile is not None and args.budget_ms is None:
        raise UsageError("--percentile applies to --budget-ms; give a budget")
    if args.percentile is not None and not 0 < args.percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {args.percentile:g}")
    if args.budget_ms is not None and not args.budget_ms > 0:
        raise UsageError(f"--budget-ms must be positive, got {args.budget_ms:g}")
    if args.export_dir is not None and is_onnx(args.model):
        raise UsageError(f"--export-dir keeps the exports of a PyTorch MODEL; {args.model} is an ONNX file, "
                         "timed as it is, with nothing exported")
    if args.export_dir is not None and not args.export_dir.is_dir():
        raise UsageError(f"--export-dir {args.export_dir} is not a directory" if args.export_dir.exists()
                         else f"--export-dir {args.export_dir} does not exist")
