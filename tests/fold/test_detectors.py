"""torchvision's detectors: their own forward is untraceable, their backbone, FPN and heads fold.

Built without weights, running statistics set to plausible values (each batch
norm's from the channel statistics of its own input on an image, perturbed:
fresh statistics would make any fold exact). ``fold`` returns with ``""`` in
``report.untraced``; every norm is folded; the outputs of the backbone (with
its FPN) and of the heads equal the original's within the fp32 budget; and
the final detections on a fixed input are the same boxes, labels and scores
(the model folded in float64, where the fold changes nothing but round-off).
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import fx, nn
from torch.utils._pytree import tree_leaves
from torchvision.models import detection

import normfold

from ..conftest import FLOOR_ULPS, K

NO_WEIGHTS = dict(weights=None, weights_backbone=None, num_classes=4)  # few classes: cheap post-processing
DETECTORS = {  # name: (builder, the parts whose outputs are compared)
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        lambda: detection.fasterrcnn_mobilenet_v3_large_320_fpn(min_size=192, max_size=192, box_score_thresh=0.0,
                                                               **NO_WEIGHTS),
        ("backbone", "rpn.head")),
    "retinanet_resnet50_fpn": (
        lambda: detection.retinanet_resnet50_fpn(min_size=160, max_size=160, score_thresh=0.0, **NO_WEIGHTS),
        ("backbone", "head")),
    "ssdlite320_mobilenet_v3_large": (
        lambda: small_images(detection.ssdlite320_mobilenet_v3_large(**NO_WEIGHTS), 160),
        ("backbone", "head")),
}


def small_images(model: nn.Module, size: int) -> nn.Module:
    """SSD resizes every image to a fixed 320x320; a smaller fixed size keeps the test cheap."""
    model.transform.fixed_size = (size, size)
    return model


def plausible_statistics(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Each batch norm's running statistics from its own input on ``x``, perturbed (mean shifted, var x 0.5..2)."""
    g = torch.Generator().manual_seed(seed)

    def hook(bn, args):
        xc = args[0].transpose(0, 1).flatten(1).double()
        mean, var = xc.mean(1), xc.var(1, unbiased=False)
        bn.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn(mean.shape, generator=g, dtype=torch.float64))
        bn.running_var.copy_(var * (0.5 + 1.5 * torch.rand(var.shape, generator=g, dtype=torch.float64)) + 1e-3)

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    handles = [m.register_forward_pre_hook(hook) for m in norms]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return model


def outputs(model: nn.Module, x: torch.Tensor, parts, dtype) -> tuple[dict[str, list[np.ndarray]], list[dict]]:
    """(each part's output tensors, the detections) of a copy of ``model`` at ``dtype``."""
    m = copy.deepcopy(model).to(dtype)
    found: dict[str, list[np.ndarray]] = {}
    for name in parts:
        def hook(_module, _args, out, name=name):
            found.setdefault(name, [t.detach().double().numpy().copy() for t in tree_leaves(out)
                                    if isinstance(t, torch.Tensor)])
        m.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        detections = m(x.to(dtype))
    return found, detections


class Runs(dict):
    """``outputs`` of the original model, computed once per dtype."""

    def __init__(self, model, x, parts):
        super().__init__()
        self.model, self.x, self.parts = model, x, parts

    def __missing__(self, dtype):
        self[dtype] = outputs(self.model, self.x, self.parts, dtype)
        return self[dtype]


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def detector(request):
    build, parts = DETECTORS[request.param]
    torch.manual_seed(0)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    model = plausible_statistics(build(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    return request.param, model, result, x, parts, Runs(model, x, parts)


def test_fold_returns_with_the_untraced_forward_named(detector):
    name, model, result, *_ = detector
    assert "" in result.report.untraced and "TraceError" in result.report.untraced[""]
    assert type(result.model) is type(model) and result.model is not model


def test_every_norm_is_folded(detector):
    _, model, result, *_ = detector
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(norms) > 20
    assert {f.norm for f in result.report.folded} == norms and not result.report.skipped, result.report.lines()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    assert isinstance(result.model.backbone, fx.GraphModule)


def test_backbone_and_head_outputs_equal_the_original(detector):
    _, model, result, x, parts, original = detector
    oracle, fp32 = original[torch.float64][0], original[torch.float32][0]
    got, _ = outputs(result.model, x, parts, torch.float32)
    for part in parts:
        assert len(got[part]) == len(oracle[part]) > 0
        for o, r, g in zip(oracle[part], fp32[part], got[part]):
            allowed = K * np.abs(r - o).max() + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(o).max()
            assert np.abs(g - o).max() <= allowed, part


def test_final_detections_match(detector):
    """Folded in float64, the fold is exact up to round-off: the detections are the same.

    (In float32, near-equal scores of an untrained head reorder under any
    rounding, the original's own fp32 run included; the fp32 fold is checked
    on the outputs of the parts above.)
    """
    _, model, _, x, _, original = detector
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folded = normfold.fold(copy.deepcopy(model).double(), x.double())
    assert not folded.report.skipped
    (want,), (got,) = original[torch.float64][1], outputs(folded.model, x, (), torch.float64)[1]
    assert len(want["boxes"]) >= 100
    assert torch.equal(got["labels"], want["labels"])
    torch.testing.assert_close(got["boxes"], want["boxes"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got["scores"], want["scores"], rtol=1e-9, atol=1e-12)
