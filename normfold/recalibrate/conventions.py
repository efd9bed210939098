"""Which frozen statistics a norm layer keeps, and how new population statistics are written into it.

A layer's eval map is built from its running statistics; recalibration
replaces them by the population statistics of its input (``moments.py``),
written the way the layer's own training would have written them:

* batch norm (torch's BatchNorm1d/2d/3d, SyncBatchNorm and subclasses such as
  timm's BatchNormAct2d; torchvision's, detectron2's and timm's
  FrozenBatchNormAct2d; normfold's BatchRenorm):
  ``running_mean = mu``, ``running_var = M2 / (n - 1)`` (the unbiased variance:
  torch's batch norm stores it, and frozen batch norms load it from there);
* Centering: ``running_mean = mu``;  Scaling: ``running_var = M2 / (n - 1)``
  (the variance around the mean, as its training computes it);
* decorrelation and whitening (normfold's GroupWhitening family):
  ``running_mean = mu`` and, per group, ``running_cov = M2 / (n - 1)`` (the
  unbiased covariance its training averages), after which the layer's own
  ``refresh()`` derives ``eval_matrix = W(running_cov + eps I)`` in float64;
  a layer that keeps a running whitening matrix (``running="wm"``) gets
  ``running_wm = W(Sigma + eps I)`` from its own ``whitening_matrix``, with
  Sigma the same unbiased covariance.

Weights and biases are never touched. ``register_statistics(type, fn)`` adds a
layer: ``fn(module)`` returns its ``Kept`` (or None: no statistics to
recalibrate, e.g. track_running_stats=False). InstanceNorm's running
statistics average each sample's own statistics, not a population's: not
registered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..nn._registry import key_label, lookup
from ..nn.batchrenorm import BatchRenorm
from ..nn.centering import Centering
from ..nn.group_whitening import GroupWhitening
from ..nn.scaling import Scaling
from .moments import ChannelMoments


@dataclass(frozen=True)
class Kept:
    """The running statistics of one layer: a mean, a per-channel variance, a group covariance or a
    running whitening matrix (``matrix``: "cov", "wm" or None), over ``channels`` channels in groups of
    ``group_size``."""
    channels: int
    mean: bool
    var: bool
    matrix: str | None = None
    group_size: int = 1

    @property
    def needed(self) -> int:
        """Positions per channel an unbiased (co)variance needs: g + 1 for a full-rank g x g covariance."""
        return self.group_size + 1 if (self.var or self.matrix) else 1


@dataclass
class Frozen:
    """A layer's frozen statistics in float64: mean (C,), variance (C,), covariance or W (G, g, g)."""
    mean: torch.Tensor | None
    var: torch.Tensor | None
    matrix: torch.Tensor | None


_KEPT: dict[type | str, Callable[[nn.Module], Kept | None]] = {}


def register_statistics(module_type: type | str, fn: Callable[[nn.Module], Kept | None]) -> None:
    """Make ``module_type`` (a class or its dotted name) recalibratable: ``fn(module)`` says what it keeps."""
    key_label(module_type, "register_statistics")
    _KEPT[module_type] = fn


def kept(module: nn.Module) -> Kept | None:
    """What ``module`` keeps (None: not a norm with running statistics)."""
    found = lookup(_KEPT, module)
    return None if found is None else found[1](module)


def frozen(module: nn.Module, spec: Kept) -> Frozen:
    def get(name):
        return getattr(module, name).detach().double().cpu()

    matrix = None if spec.matrix is None else get("running_cov" if spec.matrix == "cov" else "running_wm")
    return Frozen(get("running_mean") if spec.mean else None, get("running_var") if spec.var else None, matrix)


def population_whitening(module: nn.Module, cov: torch.Tensor) -> torch.Tensor:
    """W(Sigma + eps I) in float64 by the layer's own ``whitening_matrix``."""
    eye = torch.eye(cov.shape[-1], dtype=torch.float64)
    return module.whitening_matrix(cov + module.eps * eye)


@torch.no_grad()
def write(module: nn.Module, spec: Kept, moments: ChannelMoments) -> None:
    """Replace ``module``'s running statistics by ``moments`` (IN PLACE: call it on a copy)."""
    def put(name, value):
        buffer = getattr(module, name)
        buffer.copy_(value.to(dtype=buffer.dtype, device=buffer.device))

    if spec.mean:
        put("running_mean", moments.mean)
    if spec.var:
        put("running_var", moments.variance(unbiased=True))
    if spec.matrix == "cov":
        put("running_cov", moments.covariance(unbiased=True))
    elif spec.matrix == "wm":
        put("running_wm", population_whitening(module, moments.covariance(unbiased=True)))
    refresh = getattr(module, "refresh", None)
    if callable(refresh):
        refresh()


def _batch_norm(module: nn.Module) -> Kept | None:
    mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)):
        return None   # track_running_stats=False
    return Kept(int(mean.shape[0]), mean=True, var=True)


def _group_whitening(module: GroupWhitening) -> Kept:
    return Kept(module.num_features, mean=True, var=False, matrix=module.running, group_size=module.group_size)


register_statistics(nn.modules.batchnorm._BatchNorm, _batch_norm)
register_statistics(BatchRenorm, _batch_norm)
register_statistics(Centering, lambda m: Kept(m.num_features, mean=True, var=False))
register_statistics(Scaling, lambda m: Kept(m.num_features, mean=False, var=True))
register_statistics(GroupWhitening, _group_whitening)
for _name in ("torchvision.ops.misc.FrozenBatchNorm2d", "detectron2.layers.batch_norm.FrozenBatchNorm2d",
              "timm.layers.norm_act.FrozenBatchNormAct2d"):
    register_statistics(_name, _batch_norm)
