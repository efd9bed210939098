"""How far a layer's frozen statistics are from the population statistics of the data it sees.

Per channel c, with mu_c and sigma_c^2 the population mean and variance of the
layer's input on the data (``moments.py``; sigma^2 = M2 / n for the shift,
M2 / (n - 1) for the ratio, the convention running_var keeps):

    mean shift   s_c = |mu_frozen,c - mu_c| / sigma_c        (in data standard deviations)
    var ratio    r_c = var_frozen,c / sigma_c^2               (1: right; 4: the norm halves the std)

and per group of a decorrelating/whitening layer, a relative Frobenius distance:

    running_cov:  ||Sigma_frozen - Sigma||_F / ||Sigma||_F
    running_wm:   ||W_frozen - W(Sigma + eps I)||_F / ||W(Sigma + eps I)||_F

(the variance ratio of such a layer is read from its covariance's diagonal).
Each is summarized by its worst and median value, with the worst channels
(groups) named; a layer is *far off* when a mean shift exceeds FAR_SHIFT, a
ratio is beyond FAR_RATIO either way, or a distance exceeds FAR_DISTANCE.
A zero-variance channel with a different frozen mean counts as infinitely far.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .conventions import Frozen, Kept
from .moments import ChannelMoments

FAR_SHIFT = 0.5       # data standard deviations
FAR_RATIO = 2.0       # frozen var / data var beyond 2x or below 1/2
FAR_DISTANCE = 0.5    # relative Frobenius distance
WORST = 3             # channels named per statistic


@dataclass
class Summary:
    """The per-channel (per-group) values of one statistic: worst, median, and the worst indices."""
    values: np.ndarray
    badness: np.ndarray = field(repr=False)

    @property
    def order(self) -> np.ndarray:
        return np.argsort(-self.badness, kind="stable")

    @property
    def worst(self) -> float:
        return float(self.values[self.order[0]])

    @property
    def median(self) -> float:
        return float(np.median(self.values))

    @property
    def worst_channels(self) -> list[int]:
        return [int(i) for i in self.order[:WORST]]

    def to_dict(self) -> dict:
        return {"worst": _num(self.worst), "median": _num(self.median), "worst_channels": self.worst_channels,
                "worst_values": [_num(float(self.values[i])) for i in self.worst_channels]}


@dataclass
class LayerHealth:
    """One norm layer's frozen statistics against the data's."""
    layer: str
    kind: str
    positions: int                      # values per channel the data gave
    shift: Summary | None = None
    ratio: Summary | None = None
    distance: Summary | None = None     # per group, whitening layers
    distance_of: str | None = None      # "covariance" or "whitening matrix"

    @property
    def far(self) -> list[str]:
        """Why the layer is far off ([] when it is not)."""
        out = []
        if self.shift is not None and self.shift.worst > FAR_SHIFT:
            out.append(f"mean {_fmt(self.shift.worst)} std off (channel {self.shift.worst_channels[0]})")
        if self.ratio is not None and _log_off(self.ratio.worst) > math.log(FAR_RATIO):
            out.append(f"variance x{_fmt(self.ratio.worst)} (channel {self.ratio.worst_channels[0]})")
        if self.distance is not None and self.distance.worst > FAR_DISTANCE:
            out.append(f"{self.distance_of} {_fmt(self.distance.worst)} off (group {self.distance.worst_channels[0]})")
        return out

    def to_dict(self) -> dict:
        return {"layer": self.layer, "type": self.kind, "positions": self.positions,
                "mean_shift": None if self.shift is None else self.shift.to_dict(),
                "var_ratio": None if self.ratio is None else self.ratio.to_dict(),
                "matrix_distance": None if self.distance is None else dict(self.distance.to_dict(),
                                                                           of=self.distance_of),
                "far": self.far}

    def line(self) -> str:
        """One line: worst (channels) / median of each statistic, and FAR when far off."""
        def part(label, s, unit=""):
            if s is None:
                return f"{label} -"
            chans = ",".join(map(str, s.worst_channels))
            return f"{label} {_fmt(s.worst)}{unit} [{chans}] median {_fmt(s.median)}{unit}"

        parts = [part("shift", self.shift), part("var", self.ratio, "x")]
        if self.distance is not None:
            parts.append(part("cov" if self.distance_of == "covariance" else "W", self.distance))
        return f"{self.layer} ({self.kind}): " + "   ".join(parts) + ("   FAR OFF" if self.far else "")


def layer_health(layer: str, kind: str, spec: Kept, old: Frozen, data: ChannelMoments,
                 whitening=None) -> LayerHealth:
    """``old`` (frozen, float64) against ``data``; ``whitening(cov) -> W`` for a running_wm layer."""
    with np.errstate(divide="ignore", invalid="ignore"):
        health = LayerHealth(layer, kind, data.count)
        var = data.variance(unbiased=True).numpy()
        if spec.mean:
            std = np.sqrt(data.variance(unbiased=False).numpy())
            diff = np.abs(old.mean.numpy() - data.mean.numpy())
            shift = np.where(diff == 0, 0.0, diff / std)
            health.shift = Summary(shift, shift)
        frozen_var = old.var if spec.var else (old.matrix.diagonal(dim1=-2, dim2=-1).reshape(-1)
                                               if spec.matrix == "cov" else None)
        if frozen_var is not None:
            fv = frozen_var.numpy()
            ratio = np.where(fv == var, 1.0, fv / var)
            health.ratio = Summary(ratio, np.abs(np.log(np.where(ratio > 0, ratio, np.inf))))
        if spec.matrix is not None:
            cov = data.covariance(unbiased=True)
            target = cov if spec.matrix == "cov" else whitening(cov)
            dist = (torch.linalg.matrix_norm(old.matrix - target) / torch.linalg.matrix_norm(target)).numpy()
            health.distance = Summary(dist, np.nan_to_num(dist, nan=np.inf))
            health.distance_of = "covariance" if spec.matrix == "cov" else "whitening matrix"
    return health


def _log_off(ratio: float) -> float:
    return math.inf if not ratio > 0 or math.isinf(ratio) else abs(math.log(ratio))


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _num(value: float):
    return value if math.isfinite(value) else str(value)
