"""The expected population statistics of a Sequential model, computed directly in float64 (the tests' oracle)."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from normfold.nn.iternorm import newton_whitening


def direct_statistics(model: nn.Sequential, x: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """The expected statistics, computed here: the float64 model run child by child in eval mode; at each
    norm, numpy's mean, unbiased variance / per-group covariance of its whole input (all samples at once),
    set into the layer before it runs (so later layers see the recalibrated ones)."""
    work = copy.deepcopy(model).double().eval()
    h, expected = x.double(), {}
    with torch.no_grad():
        for name, m in work.named_children():
            if getattr(m, "running_mean", None) is not None or getattr(m, "running_var", None) is not None:
                cols = np.moveaxis(h.numpy(), 1, 0).reshape(h.shape[1], -1)
                e = {}
                if getattr(m, "running_mean", None) is not None:
                    e["running_mean"] = cols.mean(axis=1)
                if getattr(m, "running_var", None) is not None:
                    e["running_var"] = cols.var(axis=1, ddof=1)
                if hasattr(m, "group_size"):
                    cov = np.stack([np.cov(g, ddof=1) for g in cols.reshape(m.groups, m.group_size, -1)])
                    eye = np.eye(m.group_size)
                    if m.running == "cov":
                        e["running_cov"] = cov
                    else:
                        e["running_wm"] = newton_whitening(torch.from_numpy(cov + m.eps * eye), m.T).numpy()
                for k, v in e.items():
                    getattr(m, k).copy_(torch.from_numpy(v))
                if hasattr(m, "refresh"):
                    m.refresh()
                expected[name] = e
            h = m(h)
    return expected
