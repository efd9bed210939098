"""What the tools normfold is measured against do on the same model.

* ``fx_fuse``: ``torch.fx.experimental.optimization.fuse``, PyTorch's own
  Conv/Linear+BatchNorm fuser. It matches exact module types (Conv1d/2d/3d ->
  BatchNorm1d/2d/3d, Linear -> BatchNorm1d) whose producer has one user, on a
  ``torch.fx.symbolic_trace`` of the model; a subclass (timm's BatchNormAct2d)
  is traced through, not fused.
* ``dynamo_default``: ``torch.onnx.export(model, args, dynamo=True)`` with its
  default ``optimize=True`` (onnxscript's optimizer, whose default rules fuse
  BatchNormalization into a preceding Conv/ConvTranspose/Gemm).
"""
from __future__ import annotations

import copy

import onnx
import torch
from torch import fx, nn

FUSED_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fx_fuse(model: nn.Module) -> tuple[fx.GraphModule, list[str]]:
    """``fuse`` on a copy of ``model``, and the names of the norm modules it fused away.

    Raises what ``torch.fx.symbolic_trace`` raises on a model it cannot trace.
    """
    from torch.fx.experimental.optimization import fuse

    traced = fx.symbolic_trace(copy.deepcopy(model).eval())
    before = _norm_calls(traced, traced.graph)
    fused = fuse(traced, inplace=True, no_trace=True)
    after = set(_norm_calls(fused, fused.graph))
    return fused, [name for name in before if name not in after]


def _norm_calls(module: nn.Module, graph: fx.Graph) -> list[str]:
    modules = dict(module.named_modules())
    return [
        str(n.target) for n in graph.nodes
        if n.op == "call_module" and type(modules.get(str(n.target))) in FUSED_NORMS
    ]


def dynamo_default(model: nn.Module, args: tuple) -> onnx.ModelProto:
    """The ONNX model ``torch.onnx.export(model, args, dynamo=True)`` gives with its defaults."""
    from normfold._quiet import quiet

    with quiet():
        program = torch.onnx.export(copy.deepcopy(model).eval(), args, dynamo=True)
    return program.model_proto
