"""Frozen statistics a norm's map is built from: finite numbers, positive variances.

A norm with broken statistics has no map: a running variance that is NaN,
negative, or zero with ``eps = 0`` makes ``1 / sqrt(var + eps)`` NaN or inf,
and the model itself outputs NaN. The fold pass checks every norm before it
computes the map, so the reason names the tensor, the channel and the value
instead of "a folded value is not finite":

* every floating parameter and buffer of the layer is a finite number;
* a variance (``running_var``): ``var + eps > 0``, with the layer's own ``eps``;
* a covariance (``running_cov``, the whitening layers; shape (G, g, g)):
  ``cov + eps I`` is positive definite in every group (smallest eigenvalue,
  in float64, above 0), so that ``(cov + eps I)^(-1/2)`` exists.

``statistics_problem(module)`` is the reason for one layer (None when sound);
``broken_statistics(model)`` lists ``(path, reason)`` for every norm layer of a
model that has a frozen map.
"""
from __future__ import annotations

import torch
from torch import nn

from .affine import is_norm, not_foldable_reason


@torch.no_grad()
def statistics_problem(module: nn.Module) -> str | None:
    """Why ``module``'s parameters and buffers cannot make a channel map, or None."""
    eps = float(getattr(module, "eps", 0.0) or 0.0)
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t is None or not t.is_floating_point() or t.is_meta:
            continue
        bad = torch.nonzero(~torch.isfinite(t))
        if len(bad):
            return f"{name}{_index(bad[0])} = {_number(t[tuple(bad[0])])}: not a finite number"
        leaf = name.rpartition(".")[2]
        if leaf == "running_var":
            total = t.double() + eps
            bad = torch.nonzero(total <= 0)
            if len(bad):
                i = tuple(bad[0])
                return (f"{name}{_index(bad[0])} = {_number(t[i])}: with eps = {eps:g}, var + eps = "
                        f"{_number(total[i])} is not positive, so 1/sqrt(var + eps) is not a number")
        if leaf == "running_cov" and t.dim() == 3 and t.shape[-1] == t.shape[-2]:
            eye = torch.eye(t.shape[-1], dtype=torch.float64, device=t.device)
            smallest = torch.linalg.eigvalsh(t.double() + eps * eye).amin(dim=-1)
            bad = torch.nonzero(smallest <= 0)
            if len(bad):
                g, size = int(bad[0][0]), t.shape[-1]
                return (f"{name}[{g}] (channels {g * size}-{g * size + size - 1}) + eps I is not positive "
                        f"definite: smallest eigenvalue {_number(smallest[g])} (eps = {eps:g})")
    return None


def broken_statistics(model: nn.Module) -> list[tuple[str, str]]:
    """``(module path, reason)`` for every norm layer with a frozen map whose statistics are broken."""
    out = []
    for path, m in model.named_modules():
        if is_norm(m) and not_foldable_reason(m) is None:
            why = statistics_problem(m)
            if why is not None:
                out.append((path, why))
    return out


def _index(index: torch.Tensor) -> str:
    return "" if index.numel() == 0 else "[" + ", ".join(str(int(i)) for i in index) + "]"


def _number(value: torch.Tensor) -> str:
    return f"{float(value):.6g}"
