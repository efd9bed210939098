"""normfold run: fold, export, verify and report on one model (the main job).

Writes, into --out DIR, model.onnx (folded) and model.unfolded.onnx (the norm
layers kept, no BatchNorm fusion by the tools) and prints: each norm layer's outcome,
ONNX op counts before and after folding, the errors against the float64
oracle, and the verdict. Exit 0 pass, 1 check failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_model_arguments,
    model_and_input,
    writable_dir,
    write_json_atomic,
)



def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="fold, export, verify: the main job", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--out", type=Path, default=Path("normfold-out"), help="output directory (default ./normfold-out)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from normfold import export, verify

    name, model, shape, x = model_and_input(args)
    out = writable_dir(args.out)
    if args.json is not None and not args.json.parent.is_dir():
        raise UsageError(f"--json {args.json}: directory {args.json.parent} does not exist")

    staging = Path(tempfile.mkdtemp(prefix=".normfold-", dir=out))
    try:
        unfolded = export(model, x, staging / "model.unfolded.onnx", fold=False)
        folded = export(model, x, staging / "model.onnx", fold=True)
        report = verify(model, folded.path, x)
        for f in ("model.unfolded.onnx", "model.onnx"):
            os.replace(staging / f, out / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(f"model      {name}   input {','.join(map(str, shape))}")
    print(f"norms      {len(folded.fold_report.folded)} folded, {len(folded.fold_report.skipped)} skipped")
    for line in folded.fold_report.lines():
        if line.startswith("skipped"):
            print(f"  {line}")
    print(f"ops before {_ops(unfolded.op_counts)}")
    print(f"ops after  {_ops(folded.op_counts)}")
    print(f"wrote      {out / 'model.onnx'}, {out / 'model.unfolded.onnx'}")
    for line in report.lines():  # the table, the rule, and the verdict (PASS / FAIL: ...) last
        print(line)
    if args.json is not None:
        write_json_atomic({
            "model": name,
            "input_shape": list(shape),
            "fold": folded.fold_report.to_dict(),
            "op_counts": {"unfolded": unfolded.op_counts, "folded": folded.op_counts},
            "files": {"folded": str(out / "model.onnx"), "unfolded": str(out / "model.unfolded.onnx")},
            "verify": report.to_dict(),
        }, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def _ops(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} nodes: " + ", ".join(f"{k} {v}" for k, v in counts.items())
