"""normfold: fold normalization statistics into Conv/Linear weights, export to ONNX, verify.

Each subcommand returns an exit code: 0 success, 1 a check failed, 2 bad input
(one line on stderr, nothing written). The console script exits 130 on Ctrl-C
and 143 on SIGTERM, after removing what it was writing, and 141 when the reader of its
output has gone (see _normfold_cli.py).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from typing import Iterator

from .. import __version__
from . import bench, inspect, quantize, recalibrate, run, verify, zoo
from .._messages import first_line, is_out_of_memory, typed_line
from ._common import UsageError, error

SUBCOMMANDS = (run, inspect, verify, bench, quantize, recalibrate, zoo)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where to read more), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="normfold", description=__doc__)
    parser.add_argument("--version", action="version", version=f"normfold {__version__}")
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
        with _warnings_as_lines():
            return args.handler(args)
    except UsageError as exc:
        return error(str(exc))
    except Exception as exc:
        if is_out_of_memory(exc):
            what = typed_line(exc) if first_line(str(exc)) else type(exc).__name__
            return error(f"out of memory: {what}; try a smaller input shape or batch size")
        raise


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Each distinct warning once, as one line ``normfold: warning: ...`` on stderr."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = first_line(str(message)) or category.__name__
        if text not in shown:
            shown.add(text)
            print(f"normfold: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


if __name__ == "__main__":
    sys.exit(main())
