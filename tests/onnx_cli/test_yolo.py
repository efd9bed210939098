"""Ultralytics YOLOv8, which torch.fx cannot trace: `normfold run` exports it with the dynamo exporter,
folds the graph with the ONNX pass and verifies it against the PyTorch model in float64; the exported
file then goes through `normfold run/verify FILE.onnx` with the ONNX oracle."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.utils._pytree import tree_leaves

from normfold.cli import main

from ..conftest import FLOOR_ULPS, K
from . import yolo

FACTORY = Path(yolo.__file__)
SHAPE = ",".join(map(str, yolo.SHAPE))
# name: (factory, ONNX outputs: the eval outputs flattened as the exporter does)
MODELS = {
    "detect": ("detect", 6),      # decoded (1, 84, A); boxes (1, 64, A), scores (1, 80, A); 3 feature maps
    "classify": ("classify", 2),  # probabilities, logits
}


@pytest.fixture(scope="module", params=MODELS.values(), ids=MODELS.keys())
def yolo_run(request, tmp_path_factory):
    """`normfold run tests/onnx_cli/yolo.py:<factory>` once per model: (factory, outputs, exit code, stdout, dir, json)."""
    factory, outputs = request.param
    out = tmp_path_factory.mktemp(factory)
    stdout = io.StringIO()   # capsys is function-scoped; this fixture runs once per module
    with contextlib.redirect_stdout(stdout):
        code = main(["run", f"{FACTORY}:{factory}", "--input-shape", SHAPE, "--out", str(out / "out"),
                     "--json", str(out / "report.json")])
    return factory, outputs, code, stdout.getvalue(), out / "out", json.loads((out / "report.json").read_text())


def test_run_folds_through_the_onnx_front_end_and_passes(yolo_run):
    factory, outputs, code, text, out, report = yolo_run
    assert code == 0, text
    assert text.rstrip().endswith("PASS")
    cls = {"detect": "DetectionModel", "classify": "ClassificationModel"}[factory]
    assert f"front end  onnx: torch.fx could not trace {cls}.forward: " in text
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.unfolded.onnx"]
    fold = report["fold"]
    assert fold["front_end"] == "onnx" and fold["front_end_reason"].startswith(f"torch.fx could not trace {cls}")
    assert "" in fold["untraced"]
    norms = {"detect": 57, "classify": 26}[factory]
    assert report["op_counts"]["unfolded"]["BatchNormalization"] == norms
    assert "BatchNormalization" not in report["op_counts"]["folded"]
    assert report["op_counts"]["folded"]["Conv"] == report["op_counts"]["unfolded"]["Conv"]
    bn_nodes = {n.name for n in onnx.load(str(out / "model.unfolded.onnx")).graph.node
                if n.op_type == "BatchNormalization"}
    # each norm by its module path (recorded by the dynamo exporter) and its node in the unfolded file
    named = [re.fullmatch(r"(model\.\S+) \((\S+)\)", f["norm"]) for f in fold["folded"]]
    assert all(named), [f["norm"] for f in fold["folded"]]
    assert {m.group(2) for m in named} >= bn_nodes and len(bn_nodes) == norms
    checks = report["verify"]["checks"]
    assert report["verify"]["ok"]
    assert {(c["run"], c["batch"]) for c in checks} == {(r, b) for r in ("original_fp32", "onnx_cpu") for b in (1, 3)}
    assert len([c for c in checks if c["run"] == "onnx_cpu" and c["batch"] == 1]) == outputs
    assert "oracle = original model in float64" in report["verify"]["rule"]


def test_verdict_matches_an_independent_run(yolo_run):
    """onnxruntime on the written file against the factory's model in float64, with tests/conftest's rule."""
    import onnxruntime as ort

    factory, outputs, code, _, out, report = yolo_run
    model = getattr(yolo, factory)()
    x = torch.randn(yolo.SHAPE, generator=torch.Generator().manual_seed(0))   # the CLI's example input (seed 0)
    with torch.no_grad():
        truth = [t.numpy() for t in tree_leaves(model.double()(x.double()))]
        fp32 = [t.double().numpy() for t in tree_leaves(model.float()(x))]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(got) == len(truth) == outputs
    rows = [c for c in report["verify"]["checks"] if c["run"] == "onnx_cpu" and c["batch"] == 1]
    for row, t, f, g in zip(rows, truth, fp32, got):
        err, e32 = float(np.abs(g - t).max()), float(np.abs(f - t).max())
        assert row["max_abs"] == pytest.approx(err, rel=1e-6, abs=1e-12)
        assert err <= K * e32 + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(t).max(), row["output"]


def test_the_exported_file_runs_as_an_onnx_model(yolo_run, tmp_path, capsys):
    """The unfolded export is a third-party-like .onnx: run folds it again with the ONNX oracle; verify agrees."""
    factory, outputs, _, _, out, _ = yolo_run
    src = out / "model.unfolded.onnx"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    js = tmp_path / "r.json"
    assert main(["run", str(src), "--out", str(tmp_path / "again"), "--json", str(js)]) == 0, capsys.readouterr().out
    report = json.loads(js.read_text())
    assert report["verify"]["ok"] and "original ONNX graph in float64" in report["verify"]["rule"]
    assert len([c for c in report["verify"]["checks"] if c["run"] == "onnx_cpu" and c["batch"] == 1]) == outputs
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["model.onnx"]
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    assert main(["verify", str(src), str(out / "model.onnx"), "--batch-sizes", "2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")
    onnx.checker.check_model(onnx.load(str(tmp_path / "again" / "model.onnx")), full_check=True)
