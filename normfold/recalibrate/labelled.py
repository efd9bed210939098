"""Top-1 accuracy before and after recalibration, on labelled data (``recalibrate --labels``).

``top1(run, batches, labels)``: the fraction of samples whose first output's
argmax is its label, ``run(batch) -> (N, classes)`` array, batches in the
order of ``labels``. ``torch_runner`` runs an eval copy of a PyTorch model in
its own dtype (not float64: this is the accuracy the model has as shipped),
``onnx_runner`` an ONNX graph on onnxruntime's CPU provider.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

from .errors import RecalibrationError


def top1(run, batches, labels: np.ndarray) -> float:
    hits = seen = 0
    for batch in batches():
        out = np.asarray(run(batch))
        if out.ndim != 2 or out.shape[1] < 2:
            raise RecalibrationError(f"--labels: the model's first output has shape {list(out.shape)}, not "
                                     "(N, classes): top-1 accuracy needs a classifier")
        hits += int((out.argmax(1) == labels[seen:seen + len(out)]).sum())
        seen += len(out)
    return hits / seen


def torch_runner(model: torch.nn.Module):
    work = copy.deepcopy(model).eval()

    @torch.no_grad()
    def run(batch):
        out = work(*batch)
        return next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor)).float().numpy()
    return run


def onnx_runner(proto):
    from normfold.verify.session import open_session, run_session

    session = open_session(proto.SerializeToString(), "cpu", optimization="disable", where="the ONNX model")
    return lambda batch: run_session(session, tuple(np.asarray(t) for t in batch))[0]
