"""Trace a model with torch.fx, keeping every norm layer as one node.

Norm layers are leaves (one ``call_module`` node each, whatever package they
come from). When a submodule cannot be traced (data-dependent control flow,
an unsupported call), it becomes a leaf too and tracing is retried: the rest of
the model still folds, and the norms inside it are reported as not folded,
with the failing call. When the top-level forward itself cannot be traced,
:class:`FoldError` names the call (file, line, source) that failed.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ...nn.affine import is_norm
from ..errors import FoldError

_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass
class Traced:
    graph_module: fx.GraphModule
    opaque: dict[str, str] = field(default_factory=dict)   # submodule -> why it was kept whole


class _Tracer(fx.Tracer):
    def __init__(self, opaque: set[str]):
        super().__init__()
        self.opaque = opaque
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_norm(m) or qualname in self.opaque or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        name = self.path_of_module(m)
        self.stack.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = next((s for s in reversed(self.stack) if s), None)
            raise
        finally:
            self.stack.pop()


def failing_call(exc: BaseException) -> str:
    """'file:line in fn: source' of the innermost frame outside torch, or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_TORCH_DIR)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}: {(f.line or '').strip()}"


def describe(exc: BaseException) -> str:
    where = failing_call(exc)
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0] if text else ''}"
    return f"{what} (at {where})" if where else what


def trace(model: nn.Module, max_retries: int = 32) -> Traced:
    """fx-trace ``model``; submodules fx cannot trace are kept whole (see module docstring)."""
    opaque: dict[str, str] = {}
    for _ in range(max_retries):
        tracer = _Tracer(set(opaque))
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises many types; the message is what matters
            if tracer.failed_in and tracer.failed_in not in opaque:
                opaque[tracer.failed_in] = describe(exc)
                continue
            raise FoldError(f"torch.fx could not trace {type(model).__name__}.forward: {describe(exc)}") from exc
        return Traced(fx.GraphModule(model, graph, class_name=type(model).__name__), opaque)
    raise FoldError(f"torch.fx could not trace {type(model).__name__}: more than {max_retries} untraceable submodules")
