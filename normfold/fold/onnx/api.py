"""fold_onnx: the ONNX-graph pass's entry point.

PLACEHOLDER (issue 11 replaces this file): returns a copy of the model,
unchanged, and an empty report, so that callers can be written against the
final signature.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import onnx

from ..report import FoldReport


def fold_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    densify: bool = False,
) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every foldable norm site of ``model`` (a ModelProto or a path; never modified).

    ``input_shapes`` fixes symbolic input dims (name -> shape). Returns the
    folded model and a report (``front_end == "onnx"``) naming, for every
    site, what it was folded into or why not.
    """
    proto = onnx.load(os.fspath(model)) if not isinstance(model, onnx.ModelProto) else model
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out, FoldReport(front_end="onnx")
