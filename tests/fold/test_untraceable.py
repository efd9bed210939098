"""Models whose own forward torch.fx cannot trace fold part by part.

A detectron2-style meta-architecture (a list of dicts in, data-dependent
post-processing, a dict between backbone and FPN, a head called with an int):
``fold`` returns instead of raising, ``report.untraced`` names each part left
whole with the call that failed (``""``: the model's own forward), the
traceable parts are folded, every norm is accounted for, and the result
equals the original in float64 terms.
"""
from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from torch import fx, nn

import normfold
from normfold.fold import FoldError

from ..conftest import FLOOR_ULPS, K, assert_equivalent_outputs, run_eager


def conv_bn(c_in, c_out, k=3):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.ReLU())


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.stage = conv_bn(3, 8), conv_bn(8, 8)

    def forward(self, x):
        c2 = self.stem(x)
        return {"p2": c2, "p3": self.stage(nn.functional.max_pool2d(c2, 2))}


class FPN(nn.Module):
    """Takes the backbone's dict (fx traces it with the dict's tensors as placeholders)."""

    def __init__(self):
        super().__init__()
        self.lateral = nn.ModuleDict({k: nn.Sequential(nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6)) for k in ("p2", "p3")})

    def forward(self, feats: dict[str, torch.Tensor], extra: torch.Tensor | None = None):
        out = {k: self.lateral[k](v) for k, v in feats.items()}
        return out if extra is None else {k: v + extra for k, v in out.items()}


class Head(nn.Module):
    """Called with an int: left whole (specialising it could break other sizes); its block folds."""

    def __init__(self):
        super().__init__()
        self.block, self.out = conv_bn(6, 6), nn.Conv2d(6, 2, 1)

    def forward(self, x, size: int):
        return nn.functional.interpolate(self.out(self.block(x)), size=(size, size))


class MetaArch(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.fpn, self.head = Backbone(), FPN(), Head()
        self.refine = nn.ModuleList([conv_bn(2, 2, 1), conv_bn(2, 2, 1)])
        self.loose = nn.BatchNorm2d(2)

    def forward(self, batched_inputs: list[dict]):
        images = torch.stack([d["image"] for d in batched_inputs])
        feats = self.fpn(self.backbone(images))
        out = self.head(feats["p3"], images.shape[-1])
        for layer in self.refine:
            out = layer(out)
        out = self.loose(out)
        if out.amax() > 1e6:   # data-dependent control flow: fx cannot trace the model's own forward
            out = out / out.amax()
        return [out[i] for i in range(len(batched_inputs))]


EXPECTED_FOLDED = {"backbone.stem.1", "backbone.stage.1", "fpn.lateral.p2.1", "fpn.lateral.p3.1", "head.block.1",
                   "refine.0.1", "refine.1.1"}


def _inputs(size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(3, size, size, generator=g)} for _ in range(2)]


def _run(model, batched, dtype):
    m = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        return [t.double().numpy() for t in m([{"image": d["image"].to(dtype)} for d in batched])]


def _assert_equivalent(model, folded, batched):
    oracle, e32 = _run(model, batched, torch.float64), _run(model, batched, torch.float32)
    for o, r, f in zip(oracle, e32, _run(folded, batched, torch.float32)):
        allowed = K * np.abs(r - o).max() + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(o).max()
        assert np.abs(f - o).max() <= allowed


@pytest.fixture(scope="module")
def folded():
    torch.manual_seed(0)
    model = MetaArch()
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(_inputs(8, seed))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, (_inputs(),))
    return model, result


def test_fold_returns_naming_the_untraceable_forward(folded):
    _, result = folded
    assert re.search(r"test_untraceable.py:\d+ in forward: if out.amax\(\) > 1e6", result.report.untraced[""])
    assert "argument 'size' holds a int" in result.report.untraced["head"]
    assert any(line.startswith("untraced (the model itself): ") for line in result.report.lines())


def test_every_norm_is_accounted_for_and_the_traceable_parts_fold(folded):
    model, result = folded
    assert {f.norm for f in result.report.folded} == EXPECTED_FOLDED
    (loose,) = result.report.skipped
    assert loose.norm == "loose" and "called from the model's own forward, which torch.fx could not trace" in loose.reason
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {f.norm for f in result.report.folded} | {"loose"} == norms
    for part in ("backbone", "fpn", "head.block", "refine.0", "refine.1"):
        assert isinstance(result.model.get_submodule(part), fx.GraphModule), part
    assert type(result.model.head) is Head and type(result.model) is MetaArch


@pytest.mark.parametrize("size", [8, 12])
def test_the_result_equals_the_original(folded, size):
    model, result = folded
    _assert_equivalent(model, result.model, _inputs(size, seed=5))


def test_the_callers_model_is_untouched(folded):
    model, result = folded
    assert all(type(m) is not fx.GraphModule for m in model.modules())
    assert isinstance(model.backbone.stem[1], nn.BatchNorm2d) and result.model.backbone is not model.backbone


def test_a_traced_part_called_with_another_structure_raises_instead_of_computing_something_else(folded):
    model, result = folded
    feats = {"p2": torch.randn(1, 8, 4, 4), "p3": torch.randn(1, 8, 2, 2)}
    with torch.no_grad():
        result.model.fpn(feats)                                     # as traced: fine
        with pytest.raises(TypeError, match="argument 'extra' was traced as"):
            result.model.fpn(feats, extra=torch.ones(1))           # traced with extra=None
        with pytest.raises(TypeError, match="argument 'feats' was traced as"):
            result.model.fpn({"p3": feats["p3"]})


def test_a_model_with_bad_example_inputs_still_fails_loudly():
    with pytest.raises(FoldError, match="MetaArch fails on the example inputs"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            normfold.fold(MetaArch().eval(), ([{"img": torch.randn(3, 8, 8)}],))


@pytest.mark.parametrize("factory", ["detect", "classify"])
def test_ultralytics_parts_keep_the_attributes_its_layer_loop_reads(factory):
    """YOLOv8's forward loops over its layers reading each one's ``f`` and ``i``: a folded part must keep them."""
    from ..onnx_cli import yolo

    model = getattr(yolo, factory)()
    x = torch.randn(yolo.SHAPE, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    assert "" in result.report.untraced
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {f.norm for f in result.report.folded} == norms and not result.report.skipped
    for original, folded in zip(model.model, result.model.model):
        assert (folded.f, folded.i) == (original.f, original.i)
    _assert_within_fp32(model, result.model, x)


def _assert_within_fp32(model, folded, x):
    """Every output of ``folded`` is as close to ``model`` in float64 as ``model`` in float32 is (K, floor)."""
    oracle, e32, got = (_leaves(m, x, dtype) for m, dtype in
                        ((model, torch.float64), (model, torch.float32), (folded, torch.float32)))
    assert len(got) == len(oracle) > 0
    for o, r, f in zip(oracle, e32, got):
        allowed = K * np.abs(r - o).max() + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(o).max()
        assert np.abs(f - o).max() <= allowed


def _leaves(model, x, dtype):
    from torch.utils._pytree import tree_leaves

    m = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        return [t.double().numpy() for t in tree_leaves(m(x.to(dtype))) if isinstance(t, torch.Tensor)]


class _Cached(nn.Module):
    """A part with a plain attribute its parent reads and a cache of non-leaf tensors (timm's EfficientViT)."""

    def __init__(self):
        super().__init__()
        self.block, self.resolution, self.cache = conv_bn(4, 4), 6, {}
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x):
        self.cache["b"] = self.bias * 2          # a non-leaf tensor: deepcopy refuses those
        return self.block(x) + self.cache["b"].view(1, -1, 1, 1)


class _ReadsResolution(nn.Module):
    def __init__(self):
        super().__init__()
        self.part = _Cached()

    def forward(self, x):
        if x.shape[-1] == self.part.resolution:   # data-dependent: the model itself is untraceable
            x = x * 2
        return self.part(x)


def test_a_folded_part_keeps_plain_attributes_and_drops_tensor_caches():
    model = _ReadsResolution()
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(torch.randn(4, 4, 6, 6, generator=torch.Generator().manual_seed(seed)))
    model.eval()
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    assert "" in result.report.untraced and [f.norm for f in result.report.folded] == ["part.block.1"]
    part = result.model.part
    assert isinstance(part, fx.GraphModule) and part.resolution == 6 and not hasattr(part, "cache")
    twin = copy.deepcopy(result.model)           # would raise on the cached non-leaf tensor
    assert twin.part.resolution == 6
    _assert_within_fp32(model, twin, x)


class _ScalesItsInputInPlace(nn.Module):
    """A forward that writes its input (x.div_(255)) and branches on data (untraceable at the top)."""

    def __init__(self):
        super().__init__()
        self.body = conv_bn(3, 4)

    def forward(self, x):
        x.div_(255.0)
        return self.body(x) if bool(x.sum() > -1e9) else x


def test_the_callers_example_tensors_are_not_written_by_the_fold():
    torch.manual_seed(0)
    model = _ScalesItsInputInPlace().eval()
    x = torch.rand(2, 3, 8, 8) * 255
    before = x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    assert torch.equal(x, before)
    assert [f.norm for f in result.report.folded] == ["body.1"] and "" in result.report.untraced


class DataDependentParent(nn.Module):
    """Untraceable itself (data-dependent control flow); its ``body`` traces and is folded on its own."""

    def __init__(self):
        from timm.layers import BatchNormAct2d

        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  BatchNormAct2d(4), nn.ReLU(), nn.BatchNorm2d(4))

    def forward(self, x):
        return self.body(x if x.mean() > -1e6 else -x)


def test_reasons_in_a_part_folded_on_its_own_name_modules_by_their_full_path():
    """Every module a reason names carries the part's path; its output is the part's, not the model's."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("a", DataDependentParent())
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 6, 6))
    model.eval()
    x = torch.randn(2, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    assert set(result.report.untraced) == {"a"}
    assert {(f.norm, f.into) for f in result.report.folded} == {("a.body.1", "a.body.0")}
    assert {s.norm: s.reason for s in result.report.skipped} == {
        "a.body.3": "backward: its input comes from a.body.2 (ReLU), not a Conv/ConvTranspose/Linear; "
                    "forward: its output feeds a.body.3.act (ReLU) (through a.body.3.drop), not a Conv/Linear",
        "a.body.5": "backward: its input comes from a.body.4 (ReLU), not a Conv/ConvTranspose/Linear; "
                    "forward: its output feeds the output of part a.body, not a Conv/Linear",
    }
    assert_equivalent_outputs(model, run_eager(result.model, x), x)
