"""The second exporter: ``torch.onnx.export(dynamo=False)``, TorchScript tracing, where the dynamo exporter fails.

torch.export cannot follow data-dependent shapes (torchvision's Mask R-CNN,
Keypoint R-CNN and Faster R-CNN stop on ``GuardOnDataDependentSymNode`` in
their box post-processing); the TorchScript tracer records the ops of one call
and exports those, which is how torchvision documents exporting them. It is
tried only after the dynamo exporter failed, and the file says so: its
metadata key :data:`EXPORTER_KEY` names the exporter and why, and
:func:`exporter_of` reads it back for the reports.

A trace is one call: where the model's Python turns a tensor's value into a
Python bool, number or loop count (``if y.sum() > 0``), the file keeps the
example's path. The tracer warns at each such place; the note counts them and
names the first, since the verify that follows checks only its own inputs.

Constant folding is off, so a BatchNormalization stays a node of its own (the
TorchScript exporter's eval-mode Conv+BN fusion runs with it): the unfolded
file keeps its norms for the ONNX-graph fold, as the dynamo export does.
"""
from __future__ import annotations

import inspect
import io
import os
import re
import warnings

import onnx
import torch
from torch import nn

from .._messages import first_line, root_cause, typed_line
from .._quiet import quiet

EXPORTER_KEY = "normfold.exporter"
DYNAMO = "torch.onnx.export (dynamo)"
TORCHSCRIPT = "torch.onnx.export (dynamo=False, TorchScript)"
# the tracer's warnings that a tensor's value became a Python constant of the trace
_FIXES = re.compile(r"^(Converting a tensor to a Python|Iterating over a tensor|Using len to get tensor shape)")


def torchscript_export(model: nn.Module, inputs: tuple, *, opset: int, dynamo_failure: str) -> onnx.ModelProto:
    """``model`` exported by the TorchScript exporter, its metadata saying why; raises with both exporters' reasons.

    The batch axis stays the example's: a trace of a detector splits its batch into
    that many images with constant sizes, so no other batch size would run.
    """
    names = _input_names(model, len(inputs))
    buffer = io.BytesIO()
    try:
        with quiet(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            torch.onnx.export(model, inputs, buffer, dynamo=False, opset_version=opset, input_names=names,
                              do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
    except Exception as exc:
        why = short(typed_line(root_cause(exc)))
        raise RuntimeError(f"no exporter could export {type(model).__name__}: {DYNAMO}: {short(dynamo_failure)}; "
                           f"{TORCHSCRIPT}: {why}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    note = f"{TORCHSCRIPT}; the dynamo exporter failed: {short(dynamo_failure)}"
    fixed = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning) and _FIXES.search(str(w.message))]
    if fixed:
        first = fixed[0]
        note += (f"; the trace fixed {len(fixed)} Python uses of tensor values (branches, sizes, loops) to the "
                 f"example's (first at {os.path.basename(first.filename)}:{first.lineno}): the file is exact where "
                 "inputs take the same paths, which verify checks on its inputs only")
    onnx.helper.set_model_props(proto, {EXPORTER_KEY: note})
    return proto


def exporter_of(proto: onnx.ModelProto) -> str | None:
    """What :func:`torchscript_export` recorded in ``proto``, or None (the dynamo exporter wrote it)."""
    return next((p.value for p in proto.metadata_props if p.key == EXPORTER_KEY), None)


def short(text: str, limit: int = 160) -> str:
    """The first line of ``text``, cut at ``limit`` characters."""
    line = first_line(text)
    return line if len(line) <= limit else line[:limit].rstrip() + " ..."


def _input_names(model: nn.Module, n: int) -> list[str]:
    """The forward's parameter names for ``n`` positional inputs (as the dynamo exporter names them)."""
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return params[:n] if len(params) >= n else [f"input{i}" for i in range(n)]
