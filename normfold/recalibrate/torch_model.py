"""Recalibrate a PyTorch model's frozen norm statistics to the population statistics of a data set.

``recalibrate(model, data)`` returns a recalibrated deep copy and its report;
the caller's model is never modified. The work runs on a float64 eval copy:

* float64, so the activations each layer sees are the float64 model's (the
  statistics are then the exact population moments of the oracle's activations,
  not of float32 rounding of them), merged in float64 (``moments.py``); cost:
  about 2x a float32 forward on CPU. The new statistics are written into a
  copy in the model's own dtype (cast once), the layers' training flags as the
  caller had them;
* eval mode, so Dropout is the identity and no layer in training mode
  normalizes with batch statistics or moves its running averages during the
  passes.

Layer by layer in execution order (precise BN; Wu & Johnson 2021): each
layer's statistics are measured with every layer that ran before it already
recalibrated. Pass 1 reads every layer at once on the model as it is: it
gives the health report, the execution order and the first layer's final
statistics. Pass k (k = 2..L) reads layer k only, with layers 1..k-1 written,
and stops the forward after layer k's last call. Cost: L passes over the
data, the k-th a forward up to layer k: about (L + 1) / 2 full forwards per
sample, plus the first full pass.

``statistics_health(model, data)`` is pass 1 alone: how far each layer's
frozen statistics are from the data's (``health.py``).
"""
from __future__ import annotations

import copy

from torch import nn

from ..nn.affine import is_norm, not_foldable_reason
from .conventions import frozen, kept, population_whitening, write
from .data import as_batches
from .errors import RecalibrationError
from .health import LayerHealth, layer_health
from .passes import Target, collect
from .report import HealthReport, RecalibrationReport


def recalibrate(model: nn.Module, data, *, batch_size: int | None = None) -> tuple[nn.Module, RecalibrationReport]:
    """(a recalibrated copy of ``model``, the report). ``data``: see ``data.as_batches``."""
    batches = as_batches(data, batch_size)
    work, targets = _working_copy(model)
    first = collect(work, targets, batches)
    _check_counts(first, targets)
    by_path = {t.path: t for t in targets}
    health = _health(first, targets)
    result = copy.deepcopy(model)
    changes, passes = [], 1
    for k, path in enumerate(first.order):
        target = by_path[path]
        stop = (target, first.calls[path]) if path in first.calls else None   # not run on the first batch: no cut
        current = first if k == 0 else collect(work, [target], batches, stop_at=stop)
        passes += k > 0
        moments = current.moments[path]
        changes.append(_layer_health(target, moments))
        write(target.module, target.spec, moments)
        write(result.get_submodule(path), target.spec, moments)
    report = RecalibrationReport(changes, health, passes, first.samples, health.unreached)
    return result, report


def statistics_health(model: nn.Module, data, *, batch_size: int | None = None) -> HealthReport:
    """Every norm layer's frozen statistics against the population statistics of its input on ``data``."""
    work, targets = _working_copy(model)
    first = collect(work, targets, as_batches(data, batch_size))
    _check_counts(first, targets)
    return _health(first, targets)


def norm_targets(model: nn.Module) -> list[Target]:
    """The layers with running statistics to recalibrate, in module order; RecalibrationError when none."""
    targets = []
    for path, module in model.named_modules():
        spec = kept(module)
        if spec is not None:
            targets.append(Target(path, module, spec))
    if not targets:
        others = [(p, m) for p, m in model.named_modules() if is_norm(m)]
        why = ""
        if others:
            path, m = others[0]
            reason = not_foldable_reason(m) or "it keeps no running statistics normfold knows how to recalibrate"
            why = f" (its norm layer {path or '(the model)'} ({type(m).__name__}): {reason})"
        raise RecalibrationError("the model has no norm layer with running statistics (batch norm, centering, "
                                 f"scaling, decorrelation, whitening): nothing to recalibrate{why}")
    return targets


def _working_copy(model: nn.Module) -> tuple[nn.Module, list[Target]]:
    norm_targets(model)     # refuse before copying
    work = copy.deepcopy(model).double().eval()
    return work, norm_targets(work)


def _check_counts(first, targets: list[Target]) -> None:
    for t in targets:
        count, needed = first.moments[t.path].count, t.spec.needed
        if t.path in first.order and count < needed:
            what = (f"a covariance of its groups of {t.spec.group_size} channels" if t.spec.matrix
                    else "an unbiased variance")
            raise RecalibrationError(f"norm layer {t.label} saw {count} values per channel over {first.samples} "
                                     f"samples; {what} needs at least {needed}: give more samples")


def _layer_health(target: Target, moments) -> LayerHealth:
    """The layer's statistics as they are now against ``moments``."""
    return layer_health(target.path, type(target.module).__name__, target.spec, frozen(target.module, target.spec),
                        moments, lambda cov: population_whitening(target.module, cov))


def _health(first, targets: list[Target]) -> HealthReport:
    by_path = {t.path: t for t in targets}
    layers = [_layer_health(by_path[path], first.moments[path]) for path in first.order]
    unreached = [t.path for t in targets if t.path not in first.order]
    return HealthReport(layers, first.samples, unreached)
