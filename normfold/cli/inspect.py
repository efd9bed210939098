"""normfold inspect: what the fold would do with every norm layer, without exporting.

Prints one line per norm layer: folded (into which layer, backward/forward, by
which rule) or skipped (why), then each part torch.fx could not trace (with
the call that failed), then any warnings. ``--json`` prints the same
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
    model_and_input,
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
    from normfold.fold import FoldError, fold

    name, model, shape, x = model_and_input(args)
    if args.json not in (None, "-") and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json {args.json}: directory {Path(args.json).parent} does not exist")
    try:
        with warnings.catch_warnings():  # the report lists them
            warnings.simplefilter("ignore")
            report = fold(model, x, densify=args.densify, clone_shared=args.clone_shared).report
    except FoldError as exc:
        raise UsageError(str(exc)) from exc

    if args.json is not None:
        data = {"model": name, "input_shape": list(shape), **report.to_dict()}
        if args.json == "-":
            json.dump(data, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EXIT_OK
        write_json_atomic(data, Path(args.json))
    print(f"model  {name}   input {','.join(map(str, shape))}")
    print(f"norms  {len(report.folded) + len(report.skipped)}: {len(report.folded)} folded, {len(report.skipped)} skipped")
    if report.untraced:
        whole = "the model's own forward and " if "" in report.untraced else ""
        print(f"parts  {len(report.untraced)} untraced ({whole}parts torch.fx could not trace; "
              "what they call was folded where it traces)")
    for line in report.lines():
        print(f"  {line}")
    return EXIT_OK
