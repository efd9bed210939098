"""Fold what torch.fx can trace: the whole module, or else its largest traceable parts.

Detectors (torchvision's FasterRCNN, RetinaNet, SSD; detectron2's
meta-architectures) take lists or dicts, resize images and post-process with
data-dependent Python: torch.fx cannot trace their own forward. Their
backbone, FPN and heads trace fine. So:

1. Trace the module. If that works (untraceable submodules kept whole as
   leaves), fold its graph; then treat each of those leaves as below.
2. If the module's own forward cannot be traced, record the failing call in
   ``report.untraced`` (``""`` for the model itself) and visit its children:
   each child holding a norm is folded by step 1, called with the arguments it
   received in one eager run of the model on the example inputs (recorded by
   forward pre-hooks), and replaced by its folded graph module; a child never
   called itself (a ModuleList) is visited in turn.

The result is the same module with its traceable parts folded; everything
else stays as it is. A folded part keeps the plain attributes its parent may
read (Ultralytics' model loop reads each layer's ``f`` and ``i``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

from ...nn.affine import is_norm
from ..errors import FoldError
from ..report import FoldReport
from .graph import FoldPass, Options
from .shapes import propagate_shapes
from .trace import UntraceableError, bind_call, describe, trace


class Calls:
    """The arguments each submodule received in one eager run (recorded on first use)."""

    def __init__(self, model: nn.Module, args: tuple[Any, ...]):
        self.model, self.args = model, args
        self._seen: dict[str, tuple[nn.Module, tuple, dict]] | None = None

    def _record(self) -> dict[str, tuple[nn.Module, tuple, dict]]:
        if self._seen is None:
            seen: dict[str, tuple[nn.Module, tuple, dict]] = {}
            handles = [m.register_forward_pre_hook(_recorder(seen, name, m), with_kwargs=True)
                       for name, m in self.model.named_modules()]
            try:
                with torch.no_grad():
                    self.model(*self.args)
            except Exception as exc:
                raise FoldError(f"{type(self.model).__name__} fails on the example inputs: {describe(exc)}") from exc
            finally:
                for h in handles:
                    h.remove()
            self._seen = seen
        return self._seen

    def called(self, path: str) -> bool:
        return path in self._record()

    def of(self, path: str, module: nn.Module) -> dict[str, Any] | str | None:
        """``module``'s recorded arguments by name, why they cannot be traced, or None if never called."""
        seen = self._record().get(path)
        if seen is None:
            return None
        if seen[0] is not module:
            return None
        return bind_call(module, seen[1], seen[2])


def _recorder(seen: dict, name: str, module: nn.Module):
    def hook(_module, args, kwargs):
        seen.setdefault(name, (module, args, kwargs))
    return hook


def fold_module(module: nn.Module, call: dict[str, Any] | None, args: tuple[Any, ...], report: FoldReport,
                options: Options, calls: Calls, prefix: str = "") -> nn.Module:
    """``module`` folded (a graph module), or ``module`` itself with its traceable parts folded.

    ``call``: the arguments to trace with (see ``trace``); ``args``: the same,
    positional, for shape propagation. Raises FoldError when the example
    inputs do not fit the module.
    """
    try:
        traced = trace(module, call)
    except UntraceableError as exc:
        report.untraced[prefix] = exc.call
        _visit(module, prefix, report, options, calls)
        return module
    gm = traced.graph_module
    propagate_shapes(gm, args)
    FoldPass(gm, report, options, prefix).run()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    for path, why in traced.opaque.items():  # leaves of gm: the same objects as in module
        full = f"{prefix}.{path}" if prefix else path
        report.untraced[full] = why
        _visit(gm.get_submodule(path), full, report, options, calls)
    return gm


def _visit(module: nn.Module, prefix: str, report: FoldReport, options: Options, calls: Calls) -> None:
    """Fold each child of an untraceable ``module`` that holds a norm (see the module docstring)."""
    for name, child in list(module.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if is_norm(child) or not any(is_norm(m) for m in child.modules()):
            continue
        # outside the try below: it raises only when the model itself fails on the example inputs
        # (one eager run for all parts), a bad call for the caller, not a part to leave unfolded
        call = calls.of(path, child)
        if call is None:
            _visit(child, path, report, options, calls)
            continue
        if isinstance(call, str):
            report.untraced[path] = call
            _visit(child, path, report, options, calls)
            continue
        local = FoldReport()
        try:
            folded = fold_module(child, call, tuple(call.values()), local, options, calls, path)
        except Exception as exc:  # the part stays as it is; its own parts may still fold
            report.untraced[path] = describe(exc)
            _visit(child, path, report, options, calls)
            continue
        report.folded += local.folded
        report.skipped += local.skipped
        report.untraced.update(local.untraced)
        if folded is not child:
            _keep_attributes(child, folded)
            setattr(module, name, folded)


def _keep_attributes(original: nn.Module, folded: fx.GraphModule) -> None:
    """Give ``folded`` ``original``'s plain public attributes that it lacks.

    Plain: numbers, strings, dtypes and containers of them (``resolution``,
    ``f``), not tensors or caches of them, which the traced graph holds or
    does not need. Registered as torch.fx's user-preserved attributes, so they
    survive a deepcopy of the graph module too.
    """
    own = vars(folded)
    kept = {k: v for k, v in vars(original).items()
            if not k.startswith("_") and k not in own and not hasattr(type(folded), k) and _plain(v)}
    for key, value in kept.items():
        setattr(folded, key, value)
    folded.meta.setdefault(_USER_PRESERVED_ATTRIBUTES_KEY, {}).update(kept)


def _plain(value: Any) -> bool:
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)):
        return True
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False
