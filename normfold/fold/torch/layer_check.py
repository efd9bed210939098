"""Trust no class, for the layers too: a subclass of Conv/ConvTranspose/Linear folds only where its fold is checked.

The fold rules compute the new weight from the layer's weight and the norm's
map ``y = A z + c``, assuming the layer computes ``z = W * x + b`` (``*``: its
conv or matrix product). A subclass (transformers' ``EfficientNetDepthwiseConv2d``,
segmentation_models_pytorch's ``Conv2dStaticSamePadding``, a user's
``class MyConv(nn.Conv2d)``) may pad first, standardize its weight, add a
low-rank path, quantize, or anything else. Its class is no evidence; the fold
itself is checked, on a probe input ``x``, with the layer's own eval forward
``f`` and the rewritten layer's ``f'``:

    backward (norm after the layer):   f'(x)       = A f(x) + c
    forward  (norm before the layer):  f'(x - nu)  = f(A x + c)      (nu = 0 unless the rule shifts the input)

Both sides run in float64: the rule is applied once more to a float64 copy of
the layer, so no rounding of the folded weight enters the comparison, and

    dev = max |f' - expected| / max |expected|

stays near 2^-53 for a layer whose forward is its conv; a forward that does
anything the fold does not commute with (weight standardization, an extra
path, padding with zeros that the norm's ``c`` should have seen) is off by
orders of magnitude more than :data:`probe.TOLERANCE`. The probe input is
standard normal on the norm's side (``x`` for backward; ``A x + c`` for
forward), so a border error of size ``|c|`` is measured against values of size 1.

A layer whose forward pads with zeros before its conv folds forward only with
the input shift (``conv_forward``'s zero-padding case); the caller retries
with it when the plain fold fails this check.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from ...nn._channels import channel_view
from .probe import SEED, TOLERANCE
from .rules import Rewrite, Rule, Site
from .rules._base import LAYERS, is_subclass
from .trace import describe

PROBE_SIDE = 8   # positions per spatial axis of the probe (the traced size when that fails)


def checked_rewrite(rule: Rule, site: Site) -> Rewrite | str:
    """``rule``'s rewrite of ``site`` (the rule's check first), checked as above when the layer is a subclass."""
    why = rule.check(site)
    rewrite = rule.rewrite(site) if why is None else why
    if isinstance(rewrite, str) or not is_subclass(site.module):
        return rewrite
    why = fold_problem(site, rule)
    if why is not None and rule.direction == "forward" and not site.pads_inside:
        padded = replace(site, pads_inside=True)
        if fold_problem(padded, rule) is None:
            rewrite = rule.rewrite(padded)
            return replace(rewrite, note="; ".join(n for n in (rewrite.note, "its forward pads with zeros first") if n))
    return rewrite if why is None else why


def fold_problem(site: Site, rule: Rule) -> str | None:
    """Why the fold of ``rule`` at ``site`` (a subclass layer) does not hold for the layer's own forward, or None."""
    cls = type(site.module).__name__
    try:
        layer = copy.deepcopy(site.module).double().eval()
    except Exception as exc:  # a layer that cannot be copied cannot be checked
        return f"{site.name} ({cls}) cannot be copied to float64 to check its fold: {describe(exc)}"
    rewrite = rule.rewrite(replace(site, module=layer))
    if isinstance(rewrite, str):
        return rewrite
    shape = site.in_shape
    if shape is None:
        return f"the input shape of {site.name} ({cls}) is unknown, so its fold cannot be checked against its forward"
    tries = [_small(shape)] + ([tuple(shape)] if _small(shape) != tuple(shape) else [])
    for s in tries:
        try:
            with torch.no_grad():
                dev = _deviation(layer, rewrite.module.double().eval(), rewrite, site, rule.direction, s)
            break
        except Exception as exc:  # a layer may reject any input; the last failure is the reason
            error = exc
    else:
        return f"{site.name} ({cls}).forward fails on a float64 probe input of shape {tries[-1]}: {describe(error)}"
    if not dev <= TOLERANCE:   # NaN too
        return (f"{site.name} is a {cls}, a subclass of {_base(site.module)} whose forward does not fold like one: "
                f"the folded layer differs from the norm's output by {dev:.3g} (relative) on a probe input")
    return None


def _deviation(layer: nn.Module, folded: nn.Module, rewrite: Rewrite, site: Site, direction: str,
               shape: tuple[int, ...]) -> float:
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    a, c = site.map.a.cpu(), site.map.c.cpu()
    if direction == "backward":
        z = layer(x)
        want = _apply(a, c, z, site.map.diagonal)
        got = folded(x)
    else:   # x is the norm's output; its input is A^-1 (x - c), or x itself when A is singular
        nu = rewrite.shift
        v = _solve(a, c, x, site.map.diagonal)
        want = layer(_apply(a, c, v, site.map.diagonal))
        got = folded(v if nu is None else v - channel_view(nu.double(), v))
    scale = want.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return float((got - want).abs().max() / scale)


def _apply(a: torch.Tensor, c: torch.Tensor, v: torch.Tensor, diagonal: bool) -> torch.Tensor:
    """A v + c on the channel axis (1) of ``v``."""
    rows = v.movedim(1, -1)
    out = rows * a if diagonal else rows @ a.T
    return (out + c).movedim(-1, 1)


def _solve(a: torch.Tensor, c: torch.Tensor, x: torch.Tensor, diagonal: bool) -> torch.Tensor:
    rows = (x.movedim(1, -1) - c)
    if diagonal:
        v = torch.where(a != 0, rows / torch.where(a != 0, a, 1), rows)
    else:
        try:
            v = torch.linalg.solve(a, rows.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:   # singular
            v = rows
    return v.movedim(-1, 1)


def _small(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, *shape[1:2], *(min(d, PROBE_SIDE) for d in shape[2:])) if len(shape) > 2 else (min(shape[0], 4), *shape[1:])


def _base(module: nn.Module) -> str:
    return next(t.__name__ for t in type(module).__mro__ if t in LAYERS)
