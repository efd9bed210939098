"""normfold inspect: what the fold would do with every norm, without writing a file.

Prints one line per norm layer (or, for an .onnx MODEL, per fold site the
ONNX-graph pass found): folded (into which layer, backward/forward, by which
rule) or skipped (why), then each part torch.fx could not trace (with the
call that failed), then any warnings. For a PyTorch model whose own forward
torch.fx cannot trace, the report is the ONNX-graph pass's on the model's
unfolded export (in memory), as `normfold run` would fold it. ``--json`` prints the same
report as JSON on stdout (``--json FILE`` writes it to FILE atomically).
``--statistics DATA`` adds, per norm layer, how far its frozen statistics are
from the population statistics of its input on DATA (one streaming pass;
normfold.recalibrate.statistics_health; for an .onnx MODEL, its
BatchNormalization nodes). Exit 0, or 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ._common import (
    EXIT_OK,
    UsageError,
    add_model_arguments,
    brief,
    check_paths,
    is_onnx,
    model_and_input,
    model_file,
    output,
    write_json_atomic,
)
from .onnx_model import add_inputs_argument, check_inputs_flag, load_onnx, shapes_text
from .recalibrate import statistics_for



def add_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="list every norm layer with its fold outcome and reason",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, named_shapes=True)
    add_inputs_argument(p)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print the report as JSON (to FILE if given)")
    p.add_argument("--densify", action="store_true",
                   help="allow whitening to make grouped/depthwise convs denser (fewer groups)")
    p.add_argument("--clone-shared", action="store_true",
                   help="fold into a copy of a producer whose output has other users")
    p.add_argument("--statistics", default=None, metavar="DATA",
                   help="also measure each norm's frozen statistics against the population statistics of its "
                        "input on DATA (folder, glob or .npz, as verify --inputs): mean shift, variance ratio, "
                        "covariance distance; far-off layers flagged (`normfold recalibrate` replaces them)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    check_inputs_flag(args)
    check_paths(output("--json", None if args.json == "-" else args.json),
                [("MODEL", model_file(args.model)), ("--inputs", args.inputs),
                 ("--statistics", args.statistics)])
    if is_onnx(args.model):
        name, shapes, report = _onnx_report(args)
    else:
        name, shape, report = _torch_report(args)
        shapes = {"input": shape}
    health = statistics_for(args)

    if args.json is not None:
        data = {"model": name, "input_shape": list(next(iter(shapes.values()))),
                "input_shapes": {k: list(v) for k, v in shapes.items()}, **report.to_dict()}
        if health is not None:
            data["statistics"] = health.to_dict()
        if args.json == "-":
            json.dump(data, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EXIT_OK
        write_json_atomic(data, Path(args.json))
    print(f"model  {name}   input {shapes_text(shapes)}")
    if report.front_end != "torch.fx":
        print(f"front  {report.front_end}" + (f": {brief(report.front_end_reason)}" if report.front_end_reason else ""))
    print(f"norms  {len(report.folded) + len(report.skipped)}: {len(report.folded)} folded, {len(report.skipped)} skipped")
    if report.untraced:
        itself = ", the model's own forward among them" if "" in report.untraced else ""
        print(f"parts  {len(report.untraced)} torch.fx could not trace{itself}: "
              "what they call is folded where it traces")
    for line in report.lines():
        print(f"  {line}")
    for line in health.lines() if health is not None else []:
        print(line)
    return EXIT_OK


def _torch_report(args):
    from normfold.export import ExportError, fold_graph, torch_fx, unfolded_graph
    from normfold.fold import FoldError, fold

    name, model, shape, x = model_and_input(args)

    def attempt():
        with warnings.catch_warnings():  # the report lists them
            warnings.simplefilter("ignore")
            return None, fold(model, x, densify=args.densify, clone_shared=args.clone_shared).report

    try:
        (_, report), why, untraced = torch_fx(model, attempt)
    except FoldError as exc:
        raise UsageError(str(exc)) from exc
    if why is not None:   # as normfold run would: the ONNX-graph pass on the unfolded export
        try:
            _, report = fold_graph(unfolded_graph(model, x), why, untraced, densify=args.densify)
        except ExportError as exc:   # what the API still folds: the parts torch.fx traces, in PyTorch
            _, report = attempt()
            report.front_end = "torch.fx (the parts it traces)"
            report.front_end_reason = (f"no exporter could export {type(model).__name__}: normfold.fold(model, "
                                       "inputs) folds these parts in PyTorch, `normfold run` cannot write a file; "
                                       f"{why}; {exc}")
    return name, shape, report


def _onnx_report(args):
    from normfold.fold import FoldError, fold_onnx

    src = load_onnx(args.model, args)
    try:
        _, report = fold_onnx(src.signature.proto, input_shapes=src.input_shapes, densify=args.densify)
    except FoldError as exc:
        raise UsageError(str(exc)) from exc
    return src.name, src.shapes, report
