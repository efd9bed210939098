"""The shipped digits data, the digits CNN, and the demo's reported numbers."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from normfold.nn import create_norm, is_norm
from normfold.zoo.digits import DATA, DigitNet, load_digits
from tests.conftest import run_onnx

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_digits.py"


def test_data_file_has_the_scikit_learn_digits():
    with np.load(DATA) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    # scikit-learn's documented class sizes for load_digits
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_split_is_fixed_disjoint_and_complete():
    d = load_digits()
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.y_train.shape == (1437,) and d.y_test.shape == (360,)
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert set(d.y_test.tolist()) == set(range(10))
    with np.load(DATA) as f:
        raw = np.sort(f["images"].reshape(1797, -1).astype(np.float32) / 16, axis=0)
    both = torch.cat([d.x_train, d.x_test]).reshape(1797, -1).numpy()
    np.testing.assert_array_equal(np.sort(both, axis=0), raw)
    assert torch.equal(load_digits().x_test, d.x_test)


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_digits(tmp_path / "nope.npz")


@pytest.mark.parametrize("norm", ["bn", "zca", "iternorm", "gn", "ln"])
def test_digitnet_uses_the_named_norm_and_classifies_ten_ways(norm):
    model = DigitNet(norm, **({"num_groups": 8} if norm == "gn" else {}))
    kinds = {type(m) for m in model.modules() if is_norm(m)}
    assert kinds == {type(create_norm(norm, 32, **({"num_groups": 8} if norm == "gn" else {})))}
    assert model.eval()(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def _script():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script      # dataclasses look their module up while the script is executed
    try:
        spec.loader.exec_module(script)
    finally:
        del sys.modules[spec.name]
    return script


def test_demo_reports_what_onnxruntime_really_predicts(tmp_path):
    script = _script()
    out, report = tmp_path / "onnx", tmp_path / "demo.json"
    code = script.main(["--norms", "iternorm", "--epochs", "1", "--repeats", "3",
                        "--out", str(out), "--json", str(report)])
    (row,) = json.loads(report.read_text())
    assert code == 0 and row["mismatches"] == 0 and row["folded"] == row["norms"] == 3
    d = load_digits()
    pred = run_onnx(out / "digits-iternorm.onnx", d.x_test).argmax(1)
    assert row["onnx_acc"] == pytest.approx(float((pred == d.y_test.numpy()).mean()))
    assert row["torch_acc"] == row["onnx_acc"]
    assert row["torch_acc"] > 0.5      # one epoch already learns the digits; chance is 0.1
    names = {p.name for p in out.iterdir()}
    assert names == {"digits-iternorm.onnx", "digits-iternorm.unfolded.onnx", "digits-iternorm.verify.json",
                     "digits_test.npz", "digits_test.csv"}
    # the labelled test set the check read (and `normfold verify --inputs --labels` can): the split itself
    with np.load(out / "digits_test.npz") as f:
        np.testing.assert_array_equal(f["x"], d.x_test.numpy())
    rows = [line.split(",") for line in (out / "digits_test.csv").read_text().splitlines()]
    assert [int(r) for r, _ in rows] == list(range(360)) and [int(y) for _, y in rows] == d.y_test.tolist()
    checked = json.loads((out / "digits-iternorm.verify.json").read_text())
    assert checked["accuracy"]["onnx_cpu"] == row["onnx_acc"] and checked["samples"] == 360


def test_demo_plot_with_every_model_diverged_says_so_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "demo.png"
    _script().plot_demo([{"norm": "pca", "diverged": "epoch 1: loss nan"}], path, "cmd")
    assert capsys.readouterr().err == f"nothing to plot in {path}: every model diverged\n"
    assert list(tmp_path.iterdir()) == []
