"""normfold run: fold, export, verify and report on one model (the main job).

MODEL a PyTorch model (zoo name or path/to/file.py:factory): writes, into
--out DIR, model.onnx (folded) and model.unfolded.onnx (the norm layers kept,
no BatchNorm fusion by the tools). torch.fx folds the module; where it cannot
trace the model's forward, the unfolded export is folded by the ONNX-graph
pass instead (the report names the front end and why). The oracle is MODEL in
float64.

MODEL an .onnx file: writes DIR/model.onnx, the file folded by the ONNX-graph
pass and then simplified by onnxsim (--no-simplify: not; where onnxsim fails
or its graph fails the check, the folded graph, and the report says why); the
input file is never modified. The oracle is the input graph in float64, or in
float32 on onnxruntime where onnx.reference cannot evaluate it (custom-domain
ops): the report says which, and what a pass is then worth. Symbolic input
dims need --input-shape; a file with several inputs takes one NAME=N,C,H,W
per input with symbolic dims (an input whose only symbolic dim is the batch
needs none). Each input gets a seeded example: floats N(0, 1), integers and
bools 0 or 1; --inputs FILE.npz (keyed by input name) feeds yours. External data beside MODEL is
read; a folded model over 2 GB is written with its weights in model.onnx.data.

Prints each norm's outcome, ONNX op counts before and after folding, the
errors against the float64 oracle, and the verdict. Exit 0 pass, 1 check
failed, 2 bad input (one line; no file written).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import staged
from ..onnx_file import data_files, data_path
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_model_arguments,
    brief,
    check_paths,
    is_onnx,
    model_and_input,
    model_file,
    output,
    outputs_in,
    write_json_atomic,
)
from .onnx_model import add_inputs_argument, check_inputs_flag, load_onnx, shapes_text
from .recalibrate import check_recalibrate_flag, recalibrated_for

TORCH_FILES = ["model.onnx", "model.unfolded.onnx"]
ONNX_FILES = ["model.onnx"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="fold, export, verify: the main job", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, named_shapes=True)
    add_inputs_argument(p)
    p.add_argument("--out", type=Path, default=Path("normfold-out"), help="output directory (default ./normfold-out)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--no-simplify", dest="simplify", action="store_false",
                   help="MODEL an .onnx file: write the folded graph as the fold leaves it (default: onnxsim "
                        "simplifies it, and the simplified graph is verified and written)")
    p.add_argument("--recalibrate", default=None, metavar="DATA",
                   help="a PyTorch MODEL: first replace its frozen norm statistics by population statistics over "
                        "DATA (as `normfold recalibrate`; folder, glob or .npz), then fold and verify that model")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    names = ONNX_FILES if is_onnx(args.model) else TORCH_FILES
    names = [*names, *(data_path(n).name for n in names)]   # a model over 2 GB: its external data too
    check_inputs_flag(args)
    check_recalibrate_flag(args)
    inputs = [("MODEL", model_file(args.model)), ("--inputs", args.inputs),
              ("--recalibrate", args.recalibrate)]
    if is_onnx(args.model):
        inputs += [("MODEL's external data", f) for f in data_files(args.model)]
    check_paths(outputs_in("--out", args.out, names, new_dirs=True) + output("--json", args.json), inputs)
    if is_onnx(args.model):
        return _run_onnx(args)
    import onnx

    from normfold.export import ExportError, export_with_baseline
    from normfold.export.torchscript import exporter_of
    from normfold.verify import InputError, OracleError, SessionError, verify

    name, model, shape, x = model_and_input(args)
    model = recalibrated_for(args, model, shape)
    with staged(args.out) as stage:
        try:
            folded, unfolded = export_with_baseline(model, x, *map(stage.path, TORCH_FILES))
        except ExportError as exc:
            raise UsageError(str(exc)) from exc
        try:
            report = verify(model, folded.path, x)
        except (InputError, OracleError, SessionError) as exc:
            raise UsageError(f"verifying the exported file: {exc}") from exc
        if (exporter := exporter_of(onnx.load(str(folded.path), load_external_data=False))) is not None:
            report.notes.insert(0, f"exporter: {exporter}")
        files = _commit(stage, {"folded": folded, "unfolded": unfolded})
    return _report(args, name, {"input": shape}, folded.fold_report, unfolded.op_counts, folded.op_counts, files, report)


def _run_onnx(args: argparse.Namespace) -> int:
    """MODEL is an .onnx file: fold its graph, write DIR/model.onnx, verify against the file in float64."""
    from normfold.export import ExportError, op_counts, write_checked
    from normfold.export.simplify import verified_simplest
    from normfold.fold import FoldError, fold_onnx
    from normfold.verify import InputError, OnnxOracle, OracleError, SessionError, verify

    import torch

    src = load_onnx(args.model, args, runnable=True)
    x = tuple(torch.from_numpy(a) for a in src.example(args.seed))
    try:
        folded_proto, fold_report = fold_onnx(src.signature.proto, input_shapes=src.input_shapes)
    except FoldError as exc:
        raise UsageError(str(exc)) from exc
    with staged(args.out) as stage:
        def check(proto):
            folded = write_checked(proto, stage.path("model.onnx"), fold_report)
            report = verify(oracle, folded.path, x)
            return (folded, report), report.ok

        try:
            oracle = OnnxOracle(src.signature.proto, where=src.name, path=src.path)
            (folded, report), simplified = verified_simplest(folded_proto, check, enabled=args.simplify)
        except (ExportError, InputError, OracleError, SessionError) as exc:
            raise UsageError(str(exc)) from exc
        report.notes.insert(0, f"simplify: {simplified}")
        files = _commit(stage, {"folded": folded})
    return _report(args, src.name, src.shapes, fold_report, op_counts(src.signature.proto), folded.op_counts,
                   files, report)


def _commit(stage, results: dict) -> dict[str, Path]:
    """Move every file the exports wrote into --out: {"folded": path, "folded_data": its external data, ...}."""
    names = {key + suffix: path.name for key, result in results.items()
             for path, suffix in zip(result.files, ("", "_data"))}
    return dict(zip(names, stage.commit(list(names.values()))))


def _report(args, name, shapes: dict, fold_report, before: dict, after: dict, files: dict[str, Path], report) -> int:
    """Print the report, write it to --json if given; the exit code. ``shapes``: {input: shape}."""
    _print(name, shapes_text(shapes), fold_report, before, after, list(files.values()), report)
    if args.json is not None:
        write_json_atomic({
            "model": name,
            "input_shape": list(next(iter(shapes.values()))),
            "input_shapes": {k: list(v) for k, v in shapes.items()},
            "fold": fold_report.to_dict(),
            "op_counts": {"unfolded": before, "folded": after},
            "files": {k: str(p) for k, p in files.items()},
            "verify": report.to_dict(),
        }, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def _print(name, inputs: str, fold_report, before: dict, after: dict, files: list[Path], report) -> None:
    print(f"model      {name}   input {inputs}")
    if fold_report.front_end != "torch.fx":
        why = f": {brief(fold_report.front_end_reason)}" if fold_report.front_end_reason else ""
        print(f"front end  {fold_report.front_end}{why}")
    print(f"norms      {len(fold_report.folded)} folded, {len(fold_report.skipped)} skipped")
    for line in fold_report.lines():
        if line.startswith("skipped"):
            print(f"  {line}")
    print(f"ops before {_ops(before)}")
    print(f"ops after  {_ops(after)}")
    print(f"wrote      {', '.join(map(str, files))}")
    for line in report.lines():  # the table, the rule, and the verdict (PASS / FAIL: ...) last
        print(line)


def _ops(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} nodes: " + ", ".join(f"{k} {v}" for k, v in counts.items())
