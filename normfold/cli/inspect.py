"""normfold inspect: what the fold would do with every norm, without writing a file.

Prints one line per norm layer (or, for an .onnx MODEL, per fold site the
ONNX-graph pass found): folded (into which layer, backward/forward, by which
rule) or skipped (why), then each part torch.fx could not trace (with the
call that failed), then any warnings. For a PyTorch model whose own forward
torch.fx cannot trace, the report is the ONNX-graph pass's on the model's
unfolded export (in memory), as `normfold run` would fold it. ``--json`` prints the same
report as JSON on stdout (``--json FILE`` writes it to FILE atomically).
Exit 0, or 2 on bad input.
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
    load_onnx,
    model_and_input,
    model_file,
    output,
    write_json_atomic,
)



def add_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="list every norm layer with its fold outcome and reason",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print the report as JSON (to FILE if given)")
    p.add_argument("--densify", action="store_true",
                   help="allow whitening to make grouped/depthwise convs denser (fewer groups)")
    p.add_argument("--clone-shared", action="store_true",
                   help="fold into a copy of a producer whose output has other users")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    check_paths(output("--json", None if args.json == "-" else args.json), [("MODEL", model_file(args.model))])
    if is_onnx(args.model):
        name, shape, report = _onnx_report(args)
    else:
        name, shape, report = _torch_report(args)

    if args.json is not None:
        data = {"model": name, "input_shape": list(shape), **report.to_dict()}
        if args.json == "-":
            json.dump(data, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EXIT_OK
        write_json_atomic(data, Path(args.json))
    print(f"model  {name}   input {','.join(map(str, shape))}")
    if report.front_end != "torch.fx":
        print(f"front  {report.front_end}" + (f": {brief(report.front_end_reason)}" if report.front_end_reason else ""))
    print(f"norms  {len(report.folded) + len(report.skipped)}: {len(report.folded)} folded, {len(report.skipped)} skipped")
    if report.untraced:
        itself = ", the model's own forward among them" if "" in report.untraced else ""
        print(f"parts  {len(report.untraced)} torch.fx could not trace{itself}: "
              "what they call is folded where it traces")
    for line in report.lines():
        print(f"  {line}")
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
        except ExportError as exc:
            raise UsageError(f"{why}; exporting it for the ONNX-graph fold failed: {exc}") from exc
    return name, shape, report


def _onnx_report(args):
    from normfold.fold import FoldError, fold_onnx

    src = load_onnx(args.model, args.input_shape)
    try:
        _, report = fold_onnx(src.signature.proto, input_shapes=src.input_shapes, densify=args.densify)
    except FoldError as exc:
        raise UsageError(str(exc)) from exc
    return src.name, src.shape, report
