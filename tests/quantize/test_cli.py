"""`normfold quantize` from the command line: files written, JSON, exit codes, one-line refusals."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from normfold.cli import main
from normfold.export import export

from ._digits import onnx_accuracy, trained, write_sets


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A trained digits CNN as a third party would ship it: unfolded .onnx, plus its data."""
    model, data = trained("bn")
    root = tmp_path_factory.mktemp("cli")
    path = export(model, data.x_test[:1], root / "digits.onnx", fold=False).path
    return path, data, write_sets(data, root)


def test_onnx_model_writes_folded_and_int8_files_and_json(shipped, tmp_path, capsys):
    path, data, (cal, test, labels) = shipped
    before = path.read_bytes()
    out, report = tmp_path / "out", tmp_path / "r.json"
    code = main(["quantize", str(path), "--calibrate", str(cal), "--inputs", str(test), "--labels", str(labels),
                 "--max-accuracy-drop", "0.02", "--out", str(out), "--json", str(report), "--bench-rounds", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert path.read_bytes() == before                                  # the input file is never touched
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx"]
    r = json.loads(report.read_text())
    x, y = data.x_test.numpy(), data.y_test.numpy()
    int8_acc, _ = onnx_accuracy(out / "model.int8.onnx", x, y)
    assert r["steps"][-1]["int8_score"] == pytest.approx(int8_acc, abs=1e-12)
    assert r["ok"] is True and r["fold_verified"] is True
    assert {l["batch_size"] for l in r["latency"]} == {1, 8}
    assert {l["numerator"] for l in r["latency"]} == {"folded", "unfolded"}   # each against int8
    assert "PASS" in text.splitlines()[-2]
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "BatchNormalization" not in ops


def test_gate_that_cannot_hold_exits_1_with_the_best_found(shipped, tmp_path, capsys):
    path, data, (cal, test, labels) = shipped
    # per-tensor MinMax INT8 with nothing kept in float: some of 40 predictions change
    x = data.x_test[:40].numpy()
    np.savez(tmp_path / "val.npz", x=x)
    code = main(["quantize", str(path), "--calibrate", str(cal), "--inputs", str(tmp_path / "val.npz"),
                 "--per-tensor", "--calibration", "minmax", "--no-equalize", "--no-bias-correction",
                 "--min-agreement", "1", "--max-float", "0", "--no-bench", "--final-only",
                 "--out", str(tmp_path / "o"), "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    if json.loads((tmp_path / "r.json").read_text())["steps"][-1]["agreement"] == 1.0:
        pytest.skip("this INT8 model agrees on all 40 images: the gate holds")
    assert code == 1
    assert text.splitlines()[-2].startswith("FAIL: agreement")
    assert (tmp_path / "o" / "model.int8.onnx").is_file()               # the best found is written


@pytest.mark.parametrize("extra, message", [
    ([], "give --calibrate"),
    (["--calibrate", "nope.npz"], "--calibrate nope.npz does not exist"),
    (["--calibrate", "CAL", "--labels", "LABELS"], "need a validation set"),
    (["--calibrate", "CAL", "--inputs", "TEST", "--max-accuracy-drop", "0.01"], "needs labels"),
    (["--calibrate", "CAL", "--inputs", "TEST", "--labels", "LABELS", "--metric", "m.py:f"], "m.py does not exist"),
    (["--calibrate", "CAL", "--percentile", "20"], "percentile must be in"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(shipped, tmp_path, capsys, monkeypatch, extra, message):
    path, _, (cal, test, labels) = shipped
    monkeypatch.chdir(tmp_path)
    args = [{"CAL": str(cal), "TEST": str(test), "LABELS": str(labels)}.get(a, a) for a in extra]
    code = main(["quantize", str(path), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_already_quantized_file_is_refused(shipped, tmp_path, capsys):
    path, _, (cal, test, labels) = shipped
    assert main(["quantize", str(path), "--calibrate", str(cal), "--no-bench", "--final-only",
                 "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    code = main(["quantize", str(tmp_path / "a" / "model.int8.onnx"), "--calibrate", str(cal),
                 "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "already quantized" in err and "model.int8.onnx" in err
    assert not (tmp_path / "b").exists()


def test_output_may_not_overwrite_an_input(shipped, tmp_path, capsys):
    path, _, (cal, _, _) = shipped
    code = main(["quantize", str(path), "--calibrate", str(cal), "--out", str(path.parent), "--json", str(cal)])
    assert code == 2
    assert "--json" in capsys.readouterr().err
