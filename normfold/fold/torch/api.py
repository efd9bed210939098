"""``fold(model, example_inputs)``: the torch.fx front end's entry point."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map_only

from ...nn.affine import is_norm, not_foldable_reason
from ...nn.bake import bake_weights
from ..report import FoldReport, Skipped
from .examples import check_example_inputs
from .graph import Options
from .parts import Calls, fold_module
from .trace import bind_call


@dataclass
class FoldResult:
    model: nn.Module
    report: FoldReport


def as_input_tuple(example_inputs: Any, *, nested: bool = False) -> tuple[Any, ...]:
    """Accept one tensor or a sequence of tensors; name the problem otherwise.

    ``nested``: the sequence may also hold lists/tuples/dicts holding tensors
    (the positional arguments of a detector's forward).
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    for i, arg in enumerate(inputs):
        leaves = tree_leaves(arg) if nested else [arg]
        if not any(isinstance(t, torch.Tensor) for t in leaves):
            also = " (or a list/tuple/dict holding tensors)" if nested else ""
            raise TypeError(f"example_inputs[{i}] is {type(arg).__name__}, expected a torch.Tensor{also}")
    return inputs


def fold(model: nn.Module, example_inputs: Any, *, densify: bool = False, clone_shared: bool = False) -> FoldResult:
    """Fold every foldable norm into a neighbouring Conv/ConvTranspose/Linear.

    Returns a new eval-mode module and a report naming, for every norm layer,
    what it was folded into or why it was not. ``model`` is not modified.

    ``example_inputs``: one tensor, or the forward's positional arguments
    (tensors, or lists/dicts of tensors as detectors take them).
    ``densify``: allow a channel-mixing map (whitening) to make a grouped or
    depthwise conv denser (fewer groups; exact, more MACs).
    ``clone_shared``: when a producer's output also feeds something else, fold
    into a copy of the producer for the norm's branch instead of skipping.

    A model whose own forward torch.fx cannot trace is folded part by part
    (its largest traceable submodules); ``report.untraced`` then holds ``""``
    with the failing call, and every other part left whole.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold: model must be a torch.nn.Module, got {type(model).__name__}")
    args = as_input_tuple(example_inputs, nested=True)
    check_example_inputs(model, args)
    # the pass runs the model on its examples (eager, shape propagation): a forward that writes its
    # input in place (x.div_(255)) must not change the caller's tensors
    args = tree_map_only(torch.Tensor, lambda t: t.detach().clone(), args)
    report = FoldReport(warnings=_state_warnings(model))
    if report.warnings:
        more = f" (and {len(report.warnings) - 1} more, see the report)" if len(report.warnings) > 1 else ""
        warnings.warn(f"normfold.fold: {report.warnings[0]}{more}", stacklevel=2)

    work = bake_weights(copy.deepcopy(model).eval())
    norms = {name: work.get_submodule(name) for name in _norm_layers(work)}
    calls = Calls(work, args)
    call = bind_call(work, args)
    folded = fold_module(work, call if isinstance(call, dict) else None, args, report,
                         Options(densify=densify, clone_shared=clone_shared), calls)
    _account(norms, report, calls)
    return FoldResult(model=folded.eval(), report=report)


def _norm_layers(model: nn.Module) -> list[str]:
    """Paths of the norm layers, outermost only (a composite's own norm part is the composite)."""
    names = [name for name, m in model.named_modules() if is_norm(m)]
    found = set(names)

    def nested(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:k]) in found for k in range(1, len(parts)))

    return [n for n in names if not nested(n)]


def _account(norms: dict[str, nn.Module], report: FoldReport, calls: Calls) -> None:
    """Report every norm layer the pass did not reach, with the reason."""
    reported = {f.norm for f in report.folded} | {s.norm for s in report.skipped}
    for name, module in norms.items():
        if name in reported or any(n.startswith(name + "[call ") for n in reported):
            continue
        inside = max((p for p in report.untraced if p == "" or name.startswith(p + ".")), key=len, default=None)
        never = not_foldable_reason(module)
        if never is not None:
            reason = f"{type(module).__name__} is not foldable: {never}"
        elif inside is None:
            reason = "not called in the traced forward"
        else:
            where = "called from the model's own forward" if inside == "" else f"inside {inside}"
            reason = f"{where}, which torch.fx could not trace ({report.untraced[inside]})"
            if not calls.called(name):
                reason += "; not called on the example inputs either"
        report.skipped.append(Skipped(norm=name, reason=reason))


def _state_warnings(model: nn.Module) -> list[str]:
    out = []
    for name, m in model.named_modules():
        if not is_norm(m) or not_foldable_reason(m) is not None:
            continue
        if m.training:
            out.append(f"{name or type(m).__name__} is in training mode; folded from its running statistics "
                       "(the folded model is in eval mode)")
        tracked = getattr(m, "num_batches_tracked", None)
        if isinstance(tracked, torch.Tensor) and int(tracked) == 0 and _initial_statistics(m):
            out.append(f"{name or type(m).__name__} never updated its statistics (num_batches_tracked == 0 and "
                       "every running statistic still holds its initial value: zeros, ones or the identity)")
    return out


def _initial_statistics(m: nn.Module) -> bool:
    """Whether every ``running_*`` buffer of ``m`` holds a constructor's value: all zeros, all ones or identities.

    The counter alone is no evidence: statistics set directly (loaded from
    another framework, recalibrated, randomized in a test) leave it at 0.
    """
    stats = [b for n, b in m.named_buffers(recurse=False) if n.startswith("running_") and b is not None]
    return bool(stats) and all(_constant_start(b) for b in stats)


def _constant_start(b: torch.Tensor) -> bool:
    if bool((b == 0).all()) or bool((b == 1).all()):
        return True
    return b.dim() >= 2 and b.shape[-1] == b.shape[-2] and torch.equal(b, torch.eye(b.shape[-1], dtype=b.dtype,
                                                                                     device=b.device).expand_as(b))
