"""Norm + activation modules: a norm followed by parts of the module's own.

timm's ``BatchNormAct2d`` subclasses ``nn.BatchNorm2d``, but its eval forward is

    y = act(drop(batch_norm(x)))

so batch norm's map describes only its first step; folding the module as a
batch norm would drop the activation. Such a module is a *composite*: a
registered splitter returns an equivalent ``nn.Sequential`` of parts, the first
named ``norm`` (a plain norm whose map is known, sharing the module's
statistics), then the module's own remaining parts (``drop``, ``act``) in order.
The fold pass replaces the module by its parts only after checking, in float64,
that they compute the module's forward; then the norm folds and the parts stay.

Registered by dotted class name, as the adapters are: normfold imports no timm.
A splitter that cannot find a part raises :class:`SplitError` naming it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from ._registry import key_label, lookup


class SplitError(ValueError):
    """A composite module lacks a part its splitter needs."""


Splitter = Callable[[nn.Module], nn.Sequential]

_SPLITTERS: dict[type | str, Splitter] = {}


def register_composite(module_type: type | str, fn: Splitter) -> None:
    """Make ``module_type`` a composite: ``fn(module)`` returns its parts (see the module docstring).

    ``module_type`` is an nn.Module subclass or its dotted name; subclasses are
    covered too, subject to the fold pass's check of the parts against the
    module's own forward.
    """
    label = key_label(module_type, "register_composite")
    if not callable(fn):
        raise TypeError(f"register_composite: splitter for {label} is not callable")
    _SPLITTERS[module_type] = fn


def is_composite(module: nn.Module) -> bool:
    return lookup(_SPLITTERS, module) is not None


def split(module: nn.Module) -> nn.Sequential:
    """The parts of a composite module: ``Sequential(norm=..., <rest>...)``.

    Raises SplitError when a part cannot be found or the parts are malformed.
    The parts share the module's tensors (no copy); the module is not changed.
    """
    found = lookup(_SPLITTERS, module)
    if found is None:
        raise SplitError(f"{type(module).__name__} is not a registered composite")
    try:
        parts = found[1](module)
    except SplitError:
        raise
    except Exception as exc:
        raise SplitError(f"cannot split {type(module).__name__} into a norm and the rest: "
                         f"{type(exc).__name__}: {exc}") from exc
    names = list(parts._modules) if isinstance(parts, nn.Sequential) else []
    if not names or names[0] != "norm":
        raise SplitError(f"the splitter for {type(module).__name__} did not return Sequential(norm=..., ...)")
    return parts


def _part(module: nn.Module, name: str) -> nn.Module:
    part = getattr(module, name, None)
    if not isinstance(part, nn.Module):
        raise SplitError(f"cannot split {type(module).__name__} into a norm and the rest: "
                         f"it has no {name!r} submodule")
    return part


def _batch_norm_like(module: nn.Module, affine_as_buffers: bool = False) -> nn.Module:
    """A plain nn.BatchNorm2d/SyncBatchNorm sharing ``module``'s statistics and affine parameters.

    ``affine_as_buffers``: the module keeps gamma/beta as buffers (a frozen
    batch norm); they become non-trainable Parameters over the same storage.
    """
    for name in ("running_mean", "running_var", "eps"):
        if getattr(module, name, None) is None:
            raise SplitError(f"cannot split {type(module).__name__} into a norm and the rest: it has no {name!r}")
    channels = module.running_mean.shape[0]
    cls = nn.SyncBatchNorm if isinstance(module, nn.SyncBatchNorm) else nn.BatchNorm2d
    affine = getattr(module, "weight", None) is not None
    norm = cls(channels, eps=module.eps, momentum=getattr(module, "momentum", 0.1), affine=affine,
               track_running_stats=True, device="meta")
    with torch.no_grad():
        for name in ("weight", "bias"):
            value = getattr(module, name, None)
            if affine and affine_as_buffers:
                value = nn.Parameter(value, requires_grad=False)
            if affine:
                norm._parameters[name] = value
        norm._buffers["running_mean"] = module.running_mean
        norm._buffers["running_var"] = module.running_var
        tracked = getattr(module, "num_batches_tracked", None)
        norm._buffers["num_batches_tracked"] = (
            tracked if isinstance(tracked, torch.Tensor) else torch.tensor(0, device=module.running_mean.device))
    return norm.train(module.training)


def _norm_drop_act(module: nn.Module, *, affine_as_buffers: bool = False, optional: bool = False) -> nn.Sequential:
    """Sequential(norm, drop, act): timm's norm-act layers (``optional``: parts may be absent)."""
    parts = OrderedDict(norm=_batch_norm_like(module, affine_as_buffers))
    for name in ("drop", "act"):
        if optional and not hasattr(module, name):
            continue
        parts[name] = _part(module, name)
    return nn.Sequential(parts)


# timm.layers.norm_act (forward: batch norm, then self.drop, then self.act).
register_composite("timm.layers.norm_act.BatchNormAct2d", _norm_drop_act)
# SyncBatchNormAct applies drop/act only when present (hasattr in its forward).
register_composite("timm.layers.norm_act.SyncBatchNormAct", lambda m: _norm_drop_act(m, optional=True))
# Not a batch norm subclass: x * scale + bias from buffers, then drop, then act.
register_composite("timm.layers.norm_act.FrozenBatchNormAct2d", lambda m: _norm_drop_act(m, affine_as_buffers=True))
