"""normfold inspect: placeholder until its issue lands (its owner replaces this file)."""
from __future__ import annotations

import argparse

from ._common import UsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="(not yet implemented)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    raise UsageError("normfold inspect is not implemented yet")
