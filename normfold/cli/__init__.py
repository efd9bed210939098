"""normfold: fold normalization statistics into Conv/Linear weights, export to ONNX, verify.

Each subcommand returns an exit code: 0 success, 1 a check failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import sys

from . import bench, inspect, run, verify, zoo
from ._common import UsageError, error

SUBCOMMANDS = (run, inspect, verify, bench, zoo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="normfold", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    try:
        return args.handler(args)
    except UsageError as exc:
        return error(str(exc))
    except KeyboardInterrupt:
        return error("interrupted")


if __name__ == "__main__":
    sys.exit(main())
