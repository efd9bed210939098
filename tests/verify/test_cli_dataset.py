"""`normfold verify --inputs DATA`: exit codes, the one-line refusals (before the long run, nothing
written), JSON with plain numbers, accuracy and agreement against computations made here."""
from __future__ import annotations

import copy
import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from normfold import export
from normfold.cli import main
from normfold.cli.verify_data import progress_wanted

from . import _models
from .conftest import MODELS_FILE, bias_shifted, flipping_shift, perturbed

BN = f"{MODELS_FILE}:tiny_bn"
CLASSES, PER_CLASS = 3, 6


def _predict(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return copy.deepcopy(model).eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder-per-class set of PNGs: (root, names, float32 images decoded here, class of each)."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(11)
    names, images, classes = [], [], []
    for c in range(CLASSES):
        (root / str(c)).mkdir()
        for i in range(PER_CLASS):
            a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / str(c) / f"{i}.png")
            names.append(f"{c}/{i}.png")
            images.append(a.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
            classes.append(c)
    return root, names, np.stack(images), np.array(classes)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The two-input model, its folded and unfolded exports, and an .npz keyed by its input names."""
    d = tmp_path_factory.mktemp("two")
    model = _models.two_inputs()
    rng = np.random.default_rng(12)
    image, mask = rng.random((9, 3, 16, 16)).astype(np.float32), rng.random((9, 1, 16, 16)).astype(np.float32)
    x = (torch.from_numpy(image[:2]), torch.from_numpy(mask[:2]))
    folded = export(model, x, d / "two.onnx").path
    unfolded = export(model, x, d / "two.unfolded.onnx", fold=False).path
    np.savez(d / "two.npz", image=image, mask=mask)
    return d, model, folded, unfolded, image, mask


@pytest.mark.parametrize("spec", ["folder", "glob"])
def test_labelled_folder_accuracy_and_plain_json(bn, folder, tmp_path, capsys, spec):
    model, _, path, _ = bn
    root, names, images, classes = folder
    out = tmp_path / "r.json"
    inputs = str(root) if spec == "folder" else str(root / "*" / "*.png")
    argv = ["verify", BN, str(path), "--inputs", inputs, "--labels", str(root), "--oracle-samples", "5",
            "--json", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "PASS" in captured.out and captured.err == ""      # no progress bar off a terminal
    data = json.loads(out.read_text())
    expected = float((_predict(model, images).argmax(1) == classes).mean())
    assert data["dataset"]["accuracy"] == {"original_fp32": expected, "onnx_cpu": expected}
    assert data["inputs"]["samples"] == len(names) and data["ok"] is True
    assert data["dataset"]["labels"]["classes"] == {str(c): c for c in range(CLASSES)}
    (row,) = data["dataset"]["rows"]
    assert all(type(row[k]) is float for k in ("max_abs", "p99_abs", "mean_abs", "allowed", "top5"))
    assert type(row["top1_agree"]) is int and row["samples"] == len(names)
    assert sorted(data["dataset"]["oracle_samples"]["names"]) == data["dataset"]["oracle_samples"]["names"]


@pytest.fixture(scope="module")
def shifted(bn, tmp_path_factory):
    """An ONNX file whose predictions differ from the model's on some samples of an .npz, labels = the
    model's own predictions: (file, npz, labels.csv, fraction of samples whose prediction is kept)."""
    model, _, path, _ = bn
    d = tmp_path_factory.mktemp("shifted")
    x = np.random.default_rng(13).random((40, 3, 16, 16)).astype(np.float32)
    logits = _predict(model, x)
    cls, shift = flipping_shift(logits)
    bad = bias_shifted(path, d / "shifted.onnx", "fc.bias", {cls: shift})
    np.savez(d / "x.npz", x=x)
    (d / "labels.csv").write_text("".join(f"{i},{y}\n" for i, y in enumerate(logits.argmax(1))))
    shifted_logits = logits.copy()
    shifted_logits[:, cls] += shift
    kept = float((shifted_logits.argmax(1) == logits.argmax(1)).mean())
    assert 0 < kept < 1
    return bad, d / "x.npz", d / "labels.csv", kept


@pytest.mark.parametrize("flag, offset, code", [
    ("--min-agreement", +0.01, 1), ("--min-agreement", -0.01, 0),
    ("--min-accuracy", +0.01, 1), ("--min-accuracy", -0.01, 0),
    ("--max-accuracy-drop", -0.01, 1), ("--max-accuracy-drop", +0.01, 0),
], ids=["agreement_above", "agreement_below", "accuracy_above", "accuracy_below", "drop_below", "drop_above"])
def test_thresholds_set_the_exit_code(shifted, tmp_path, flag, offset, code):
    bad, npz, labels, kept = shifted
    value = (1 - kept if flag == "--max-accuracy-drop" else kept) + offset
    out = tmp_path / "r.json"
    argv = ["verify", BN, str(bad), "--inputs", str(npz), "--labels", str(labels), "--atol", "100",
            "--oracle-samples", "4", flag, f"{value:.6f}", "--json", str(out)]
    assert main(argv) == code
    data = json.loads(out.read_text())["dataset"]
    assert data["accuracy"]["original_fp32"] == 1.0
    assert data["accuracy"]["onnx_cpu"] == pytest.approx(kept, abs=1e-12)
    assert data["rows"][0]["agreement"] == pytest.approx(kept, abs=1e-12)
    assert (len(data["failures"]) == 1) == (code == 1)


def test_samples_over_the_tolerance_exit_1_and_are_named(bn, folder, tmp_path, capsys):
    _, _, path, _ = bn
    root, names, _, _ = folder
    bad = perturbed(path, tmp_path / "bad.onnx", "stem.weight", 1.001)
    assert main(["verify", BN, str(bad), "--inputs", str(root), "--oracle-samples", "3"]) == 1
    out = capsys.readouterr().out
    assert f"onnx_cpu linear: over the tolerance: {', '.join(names[:10])} ... and {len(names) - 10} more" in out
    assert "module stem" in out        # the oracle phase localizes the wrong weight


def _bad_case(case, tmp_path, folder, two):
    """(argv, text the error line must hold)."""
    root = folder[0]
    d = tmp_path / "in"
    d.mkdir()
    if case == "not_an_image":
        (d / "broken.png").write_bytes(b"not a png")
        return ["--inputs", str(d)], "broken.png"
    if case == "mixed_sizes":
        for name, shape in (("a.png", (16, 16, 3)), ("b.png", (12, 16, 3))):
            Image.fromarray(np.zeros(shape, np.uint8)).save(d / name)
        return ["--inputs", str(d)], "b.png has sample shape (3, 12, 16), a.png has (3, 16, 16) (give --resize H,W"
    if case == "label_names_missing_sample":
        (d / "l.csv").write_text("".join(f"{c}/{i}.png,{c}\n" for c in range(CLASSES) for i in range(PER_CLASS))
                                 + "0/99.png,0\n")
        return ["--inputs", str(root), "--labels", str(d / "l.csv")], "sample '0/99.png' is not among the inputs"
    if case == "unlabelled_sample":
        (d / "l.csv").write_text("0/0.png,0\n")
        return ["--inputs", str(root), "--labels", str(d / "l.csv")], "has no label for sample '0/1.png'"
    if case == "npz_key_not_an_input":
        _, _, folded, _, image, mask = two
        np.savez(d / "x.npz", image=image, mask=mask, depth=mask)
        return [f"{MODELS_FILE}:two_inputs", str(folded), "--inputs", str(d / "x.npz")], \
            "key 'depth' is not an input of the model (its inputs: image, mask)"
    if case == "zero_samples":
        return ["--inputs", str(d)], "holds no .png/.jpg/.npy files"
    if case == "labels_without_inputs":
        return ["--labels", str(d / "l.csv")], "--labels needs --inputs"
    if case == "accuracy_without_labels":
        return ["--inputs", str(root), "--min-accuracy", "0.9"], "--min-accuracy needs --labels"
    if case == "json_is_an_input":
        return ["--inputs", str(root), "--json", str(root / "0" / "0.png")], "would overwrite the input file"
    if case.startswith("text_file"):   # numpy.load calls any file without its header "pickled data"
        name = {"text_file": "notes.txt", "text_file_npy": "notes.npy", "text_file_npz": "notes.npz"}[case]
        (d / name).write_text("these are my notes\n")
        return ["--inputs", str(d / name)], f"{d / name} is not an .npz/.npy/image file"
    if case == "resize_for_arrays":
        np.save(d / "a.npy", np.zeros((3, 8, 8), np.float32))
        return ["--inputs", str(d)], "axis 2 must be 16, got 8"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "not_an_image", "mixed_sizes", "label_names_missing_sample", "unlabelled_sample", "npz_key_not_an_input",
    "zero_samples", "labels_without_inputs", "accuracy_without_labels", "json_is_an_input", "resize_for_arrays",
    "text_file", "text_file_npy", "text_file_npz",
])
def test_bad_input_exits_2_before_the_oracle_runs(bn, folder, two, tmp_path, capsys, monkeypatch, case):
    stream = importlib.import_module("normfold.verify.stream")

    def no_long_run(*args, **kwargs):
        raise AssertionError("the check started before the bad input was found")

    monkeypatch.setattr(stream, "verify", no_long_run)
    _, _, path, _ = bn
    extra, expect = _bad_case(case, tmp_path, folder, two)
    argv = ["verify", BN, str(path)] + extra if extra[0].startswith("--") else ["verify"] + extra
    out = tmp_path / "report.json"
    if "--json" not in argv:
        argv += ["--json", str(out)]
    before = {p: p.stat().st_mtime_ns for p in folder[0].rglob("*")}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("normfold: error:") and expect in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert {p: p.stat().st_mtime_ns for p in folder[0].rglob("*")} == before


def test_no_classifier_output_for_agreement_exits_2(tmp_path, capsys):
    model = _models.feature_map()
    path = export(model, torch.randn(2, 3, 16, 16), tmp_path / "map.onnx").path
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((4, 3, 16, 16)).astype(np.float32))
    argv = ["verify", f"{MODELS_FILE}:feature_map", str(path), "--inputs", str(tmp_path / "x.npz"),
            "--min-agreement", "0.99", "--oracle-samples", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "need a classifier output (N, classes)" in err and len(err.strip().splitlines()) == 1


def test_a_forward_that_fails_mid_run_is_one_line_naming_the_model_and_shape(bn, folder, tmp_path, capsys):
    """The first sample passes the up-front check; the stream's batch of 8 does not: exit 2, no traceback."""
    _, _, path, _ = bn
    out = tmp_path / "r.json"
    argv = ["verify", f"{MODELS_FILE}:fails_on_large_batches", str(path), "--inputs", str(folder[0]),
            "--oracle-samples", "2", "--batch-size", "8", "--json", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "_FailsOnLargeBatches.forward failed on inputs of shape [8, 3, 16, 16]" in err
    assert "RuntimeError: batch 8 is over this model's 4" in err
    assert not out.exists()


def test_corrupt_file_mid_stream_exits_2_or_is_skipped(bn, tmp_path, capsys):
    _, _, path, _ = bn
    rng = np.random.default_rng(14)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    whole = (tmp_path / "6.png").read_bytes()
    (tmp_path / "6.png").write_bytes(whole[: len(whole) // 2])     # its header still reads
    argv = ["verify", BN, str(path), "--inputs", str(tmp_path), "--oracle-samples", "2", "--batch-size", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "6.png" in err and "truncated" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "r.json"
    assert main(argv + ["--skip-bad", "--json", str(out)]) == 0
    data = json.loads(out.read_text())["dataset"]
    assert [(s["index"], s["name"]) for s in data["skipped"]] == [(6, "6.png")]
    assert data["samples"] == 7 and data["total"] == 8 and data["rows"][0]["samples"] == 7


@pytest.mark.parametrize("oracle, layout", [("factory", "npz"), ("onnx", "npz"), ("factory", "folders")])
def test_two_inputs_each_output_checked(two, tmp_path, oracle, layout):
    d, model, folded, unfolded, image, mask = two
    if layout == "npz":
        inputs = d / "two.npz"
    else:
        inputs = tmp_path / "data"
        for name, arr in (("image", image), ("mask", mask)):
            (inputs / name).mkdir(parents=True)
            for i, a in enumerate(arr):
                np.save(inputs / name / f"{i}.npy", a)
    spec = f"{MODELS_FILE}:two_inputs" if oracle == "factory" else str(unfolded)
    out = tmp_path / "r.json"
    assert main(["verify", spec, str(folded), "--inputs", str(inputs), "--oracle-samples", "3",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["dataset"]["rows"]
    assert [r["output"] for r in rows] == ["linear", "conv2d_2"] and all(r["samples"] == 9 for r in rows)
    assert rows[0]["top1_agree"] == 9 and rows[1]["top1_agree"] is None
    assert data["inputs"]["shapes"] == {"image": [3, 16, 16], "mask": [1, 16, 16]}


@pytest.mark.parametrize("json_given, stdout_tty, stderr_tty, shown", [
    (False, True, True, True), (True, True, True, False), (False, False, True, False), (False, True, False, False),
], ids=["terminal", "json", "stdout_redirected", "stderr_redirected"])
def test_progress_bar_only_on_a_terminal(monkeypatch, json_given, stdout_tty, stderr_tty, shown):
    import argparse
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: stdout_tty, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: stderr_tty, raising=False)
    args = argparse.Namespace(json="r.json" if json_given else None)
    assert progress_wanted(args) is shown


@pytest.mark.parametrize("oracle", ["factory", "onnx"])
def test_each_onnx_file_is_read_and_checked_once(two, tmp_path, monkeypatch, oracle):
    """The CLI reads MODEL.onnx (and an ONNX MODEL) once and hands the signature through verify_dataset and
    verify(); the ONNX MODEL's runnability is checked on the one session its reference then runs on."""
    import collections

    import onnx
    import onnxruntime

    d, _, folded, unfolded, _, _ = two
    loads, checks, sessions = collections.Counter(), [], []
    load, check, session = onnx.load, onnx.checker.check_model, onnxruntime.InferenceSession
    monkeypatch.setattr(onnx, "load", lambda f, *a, **k: loads.update([str(f)]) or load(f, *a, **k))
    monkeypatch.setattr(onnx.checker, "check_model", lambda m, *a, **k: checks.append(m) or check(m, *a, **k))
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda m, *a, **k: sessions.append(m) or session(m, *a, **k))
    spec = f"{MODELS_FILE}:two_inputs" if oracle == "factory" else str(unfolded)
    assert main(["verify", spec, str(folded), "--inputs", str(d / "two.npz"), "--oracle-samples", "3",
                 "--batch-sizes", "3", "--json", str(tmp_path / "r.json")]) == 0
    files = [str(folded)] + ([str(unfolded)] if oracle == "onnx" else [])
    assert loads == collections.Counter(files) and len(checks) == len(files)
    original = load(str(unfolded)).SerializeToString()
    assert sessions.count(original) == (1 if oracle == "onnx" else 0)
