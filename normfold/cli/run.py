"""normfold run: fold, export, verify and report on one model (the main job).

MODEL a PyTorch model (zoo name or path/to/file.py:factory): writes, into
--out DIR, model.onnx (folded) and model.unfolded.onnx (the norm layers kept,
no BatchNorm fusion by the tools). torch.fx folds the module; where it cannot
trace the model's forward, the unfolded export is folded by the ONNX-graph
pass instead (the report names the front end and why). The oracle is MODEL in
float64.

MODEL an .onnx file: writes DIR/model.onnx, the file folded by the ONNX-graph
pass (the input file is never modified); the oracle is the input graph in
float64. Symbolic input dims need --input-shape.

Prints each norm's outcome, ONNX op counts before and after folding, the
errors against the float64 oracle, and the verdict. Exit 0 pass, 1 check
failed, 2 bad input (one line; no file written).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import staged
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_model_arguments,
    brief,
    check_paths,
    is_onnx,
    load_onnx,
    model_and_input,
    model_file,
    output,
    outputs_in,
    seeded_input,
    write_json_atomic,
)

TORCH_FILES = ["model.onnx", "model.unfolded.onnx"]
ONNX_FILES = ["model.onnx"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="fold, export, verify: the main job", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--out", type=Path, default=Path("normfold-out"), help="output directory (default ./normfold-out)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    names = ONNX_FILES if is_onnx(args.model) else TORCH_FILES
    check_paths(outputs_in("--out", args.out, names, new_dirs=True) + output("--json", args.json),
                [("MODEL", model_file(args.model))])
    if is_onnx(args.model):
        return _run_onnx(args)
    from normfold.export import ExportError, export_with_baseline
    from normfold.verify import verify

    name, model, shape, x = model_and_input(args)
    with staged(args.out) as stage:
        try:
            folded, unfolded = export_with_baseline(model, x, *map(stage.path, TORCH_FILES))
        except ExportError as exc:
            raise UsageError(str(exc)) from exc
        report = verify(model, folded.path, x)
        files = dict(zip(("folded", "unfolded"), stage.commit(TORCH_FILES)))
    return _report(args, name, shape, folded.fold_report, unfolded.op_counts, folded.op_counts, files, report)


def _run_onnx(args: argparse.Namespace) -> int:
    """MODEL is an .onnx file: fold its graph, write DIR/model.onnx, verify against the file in float64."""
    from normfold.export import ExportError, op_counts, write_checked
    from normfold.fold import FoldError, fold_onnx
    from normfold.verify import InputError, OnnxOracle, OracleError, SessionError, verify

    src = load_onnx(args.model, args.input_shape, runnable=True, seed=args.seed)
    x = seeded_input(src.shape, args.seed)
    try:
        folded_proto, fold_report = fold_onnx(src.signature.proto, input_shapes=src.input_shapes)
    except FoldError as exc:
        raise UsageError(str(exc)) from exc
    with staged(args.out) as stage:
        try:
            folded = write_checked(folded_proto, stage.path("model.onnx"), fold_report)
            report = verify(OnnxOracle(src.signature.proto, where=src.name), folded.path, x)
        except (ExportError, InputError, OracleError, SessionError) as exc:
            raise UsageError(str(exc)) from exc
        [path] = stage.commit(ONNX_FILES)
    return _report(args, src.name, src.shape, fold_report, op_counts(src.signature.proto), folded.op_counts,
                   {"folded": path}, report)


def _report(args, name, shape, fold_report, before: dict, after: dict, files: dict[str, Path], report) -> int:
    """Print the report, write it to --json if given; the exit code."""
    _print(name, shape, fold_report, before, after, list(files.values()), report)
    if args.json is not None:
        write_json_atomic({
            "model": name,
            "input_shape": list(shape),
            "fold": fold_report.to_dict(),
            "op_counts": {"unfolded": before, "folded": after},
            "files": {k: str(p) for k, p in files.items()},
            "verify": report.to_dict(),
        }, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def _print(name, shape, fold_report, before: dict, after: dict, files: list[Path], report) -> None:
    print(f"model      {name}   input {','.join(map(str, shape))}")
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
