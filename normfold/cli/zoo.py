"""normfold zoo: list the bundled models (the names `normfold run` accepts).

One line per model: name, input shape, number of norm layers, description.
--json prints the same as a JSON list. Counting norm layers builds each model
on the meta device (no memory, no statistics), so listing is instant.
"""
from __future__ import annotations

import argparse
import json

from ._common import EXIT_OK


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="list the bundled zoo models", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(handler=main)


def entries() -> list[dict]:
    """Every zoo entry as plain data, in registry order."""
    import torch

    from normfold import zoo
    from normfold.nn import is_norm

    rows = []
    for entry in zoo.ZOO.values():
        with torch.device("meta"):
            model = entry.factory()
        rows.append({
            "name": entry.name,
            "default": entry.name == zoo.DEFAULT,
            "norm": entry.norm,
            "input_shape": list(entry.input_shape),
            "norm_layers": sum(1 for m in model.modules() if is_norm(m)),
            "description": entry.description,
        })
    return rows


def main(args: argparse.Namespace) -> int:
    rows = entries()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows) + 2
    print(f"{'name':<{width}}{'input':<14}{'norms':>5}  description")
    for r in rows:
        mark = " (default)" if r["default"] else ""
        shape = "x".join(map(str, r["input_shape"]))
        print(f"{r['name']:<{width}}{shape:<14}{r['norm_layers']:>5}  {r['description']}{mark}")
    return EXIT_OK
