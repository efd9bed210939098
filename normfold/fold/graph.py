"""The graph pass: find (producer -> norm) sites with torch.fx and fold them.

A site folds backward when all of these hold, otherwise the norm is skipped
with the first reason that fails:

* the norm has a frozen channel map (``inference_affine``);
* its input is the output of a plain Conv1d/2d/3d or Linear module;
* that output feeds nothing else, and the producer module is called once;
* the norm's channel axis is the producer's output-channel axis (for Linear:
  a rank-2 output; on (N, C, L) the norm would act on another axis);
* a full channel map stays inside the conv's groups;
* the folded weights are finite in the producer's dtype.

The caller's model is never touched: the pass works on a deep copy in eval mode.
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..nn.affine import NotFoldableError, inference_affine, is_norm
from ..nn.bake import bake_weights
from .algebra import fold_into_producer, is_block_diagonal
from .report import FoldReport, Folded, Skipped

PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class FoldError(RuntimeError):
    """The model could not be analysed (for example, torch.fx cannot trace it)."""


@dataclass
class FoldResult:
    model: nn.Module
    report: FoldReport


class _NormLeafTracer(fx.Tracer):
    """Keeps every norm layer as one call_module node, whatever package it is from."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_norm(m) or super().is_leaf_module(m, qualname)


def as_input_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Accept one tensor or a sequence of tensors; name the problem otherwise."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"example_inputs[{i}] is {type(t).__name__}, expected a torch.Tensor")
    return inputs


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _NormLeafTracer().trace(model)
    except Exception as exc:  # fx raises many types; the message is what matters
        raise FoldError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def fold(model: nn.Module, example_inputs: Any) -> FoldResult:
    """Fold every foldable norm into the Conv/Linear before it.

    Returns a new eval-mode module and a report naming, for every norm layer,
    what it was folded into or why it was not. ``model`` is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold: model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = as_input_tuple(example_inputs)
    work = bake_weights(copy.deepcopy(model).eval())
    gm = trace(work)
    with torch.no_grad():
        ShapeProp(gm).propagate(*inputs)

    modules = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    report = FoldReport()
    seen: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not is_norm(modules[node.target]):
            continue
        seen.add(node.target)
        producer = node.args[0] if node.args else None
        reason = _why_not(node, producer, modules, calls)
        if reason is None:
            reason = _fold_site(gm, node, producer, modules)
        if reason is None:
            report.folded.append(Folded(norm=node.target, into=producer.target))
        else:
            report.skipped.append(Skipped(norm=node.target, reason=reason))

    for name, module in work.named_modules():
        if name not in seen and is_norm(module):
            report.skipped.append(Skipped(norm=name, reason="not called in the traced forward"))

    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return FoldResult(model=gm.eval(), report=report)


def _why_not(node: fx.Node, producer: Any, modules: dict, calls: Counter) -> str | None:
    if not isinstance(producer, fx.Node) or producer.op != "call_module":
        what = producer.format_node() if isinstance(producer, fx.Node) else repr(producer)
        return f"its input is not produced by a module ({what})"
    prod = modules[producer.target]
    if type(prod) not in PRODUCERS:
        return f"its input comes from {producer.target} ({type(prod).__name__}), not a Conv/Linear"
    if len(producer.users) > 1:
        others = ", ".join(str(u) for u in producer.users if u is not node)
        return f"the output of {producer.target} also feeds {others}"
    if calls[producer.target] > 1:
        return f"{producer.target} is called at {calls[producer.target]} sites; editing it would change the others"
    meta = producer.meta.get("tensor_meta")
    if isinstance(prod, nn.Linear) and meta is not None and len(meta.shape) != 2:
        return (
            f"{producer.target} (Linear) outputs shape {tuple(meta.shape)}: its features are the "
            f"last axis, but the norm normalizes axis 1"
        )
    return None


def _fold_site(gm: fx.GraphModule, node: fx.Node, producer: fx.Node, modules: dict) -> str | None:
    norm, prod = modules[node.target], modules[producer.target]
    try:
        a, c = inference_affine(norm)
    except NotFoldableError as exc:
        return str(exc)
    if c.shape[0] != prod.weight.shape[0]:
        return f"{node.target} has {c.shape[0]} channels but {producer.target} outputs {prod.weight.shape[0]}"
    groups = getattr(prod, "groups", 1)
    if not is_block_diagonal(a, groups):
        return (
            f"its channel map mixes channels across the {groups} groups of {producer.target}; "
            "folding would make the conv denser"
        )
    weight, bias = fold_into_producer(prod.weight, prod.bias, a, c)
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        return f"the folded weights overflow {prod.weight.dtype}"
    new = copy.deepcopy(prod)
    new.weight = nn.Parameter(weight, requires_grad=prod.weight.requires_grad)
    new.bias = nn.Parameter(bias, requires_grad=prod.weight.requires_grad)
    _set_submodule(gm, producer.target, new)
    node.replace_all_uses_with(producer)
    gm.graph.erase_node(node)
    return None


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


__all__: Sequence[str] = ("FoldError", "FoldResult", "fold", "trace", "as_input_tuple")
