"""`normfold recalibrate`, `run --recalibrate`, `inspect --statistics`: outcomes, and bad input (exit 2, one
line, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from normfold.cli import main
from normfold.recalibrate import recalibrate, recalibrate_onnx

from . import _models
from ._direct import direct_statistics
from .test_onnx import bn_graph

MODELS = _models.__file__
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(n=24, channels=3, size=6, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, channels, size, size)) * 2 + 1).astype(np.float32)


@pytest.fixture
def data(tmp_path):
    np.savez(tmp_path / "data.npz", x=_x())
    return tmp_path / "data.npz"


def _listing(d):
    return sorted((str(p.relative_to(d)), p.stat().st_size) for p in d.rglob("*"))


def test_recalibrate_writes_a_state_dict_the_users_model_loads(tmp_path, data, capsys):
    out = tmp_path / "out"
    assert main(["recalibrate", f"{MODELS}:conv_bn", "--inputs", str(data), "--out", str(out),
                 "--batch-size", "5", "--json", str(tmp_path / "r.json")]) == 0
    model = _models.conv_bn()
    model.load_state_dict(torch.load(out / "state_dict.pt", weights_only=True))
    for name, stats in direct_statistics(_models.conv_bn(), torch.from_numpy(_x())).items():
        for k, v in stats.items():
            np.testing.assert_allclose(getattr(model.get_submodule(name), k).double().numpy(), v, rtol=1e-6)
    report = json.loads((tmp_path / "r.json").read_text())
    assert [layer["layer"] for layer in report["layers"]] == ["1", "4"] and report["samples"] == 24
    assert all(layer["far"] for layer in report["layers"])        # the factory's statistics are random
    printed = capsys.readouterr().out
    assert "recalibrated 2 norm layers on 24 samples in 2 passes" in printed and "FAR OFF" in printed


def test_recalibrate_an_onnx_file_replaces_its_batch_norm_statistics(tmp_path, data):
    model, _ = bn_graph()
    np.savez(tmp_path / "five.npz", x=_x(size=5))
    onnx.save(model, tmp_path / "in.onnx")
    before = (tmp_path / "in.onnx").read_bytes()
    assert main(["recalibrate", str(tmp_path / "in.onnx"), "--inputs", str(tmp_path / "five.npz"),
                 "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "in.onnx").read_bytes() == before
    written = onnx.load(tmp_path / "out" / "model.onnx")
    expected, _ = recalibrate_onnx(model, _x(size=5))
    got = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    for init in expected.graph.initializer:
        np.testing.assert_array_equal(got[init.name], numpy_helper.to_array(init))
    assert not np.array_equal(got["m2"], numpy_helper.to_array(next(i for i in model.graph.initializer
                                                                     if i.name == "m2")))


def test_run_recalibrate_folds_the_recalibrated_model_and_verifies_it(tmp_path, data, capsys):
    import onnxruntime as ort

    out = tmp_path / "out"
    assert main(["run", f"{MODELS}:bn_zca", "--input-shape", "1,3,6,6", "--recalibrate", str(data),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "recalibrated 2 norm layers" in printed and printed.rstrip().endswith("PASS")
    recalibrated, _ = recalibrate(_models.bn_zca().double(), torch.from_numpy(_x()))
    x = _x(n=4, seed=3)
    with torch.no_grad():
        reference = recalibrated(torch.from_numpy(x).double()).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    stale = _models.bn_zca()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - stale).max() > 100 * np.abs(got - reference).max()


def test_inspect_statistics_flags_stale_layers_and_not_recalibrated_ones(tmp_path, data, capsys):
    assert main(["inspect", f"{MODELS}:conv_bn", "--input-shape", "1,3,6,6", "--statistics", str(data)]) == 0
    assert "2 of 2 norm layers far off" in capsys.readouterr().out
    main(["recalibrate", f"{MODELS}:conv_bn", "--inputs", str(data), "--out", str(tmp_path / "out")])
    (tmp_path / "fixed.py").write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "def model():\n"
        "    import importlib.util\n"
        f"    spec = importlib.util.spec_from_file_location('m', {MODELS!r})\n"
        "    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "    m = mod.conv_bn()\n"
        f"    m.load_state_dict(torch.load({str(tmp_path / 'out' / 'state_dict.pt')!r}, weights_only=True))\n"
        "    return m\n")
    capsys.readouterr()
    assert main(["inspect", f"{tmp_path / 'fixed.py'}:model", "--input-shape", "1,3,6,6", "--statistics",
                 str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["statistics"]
    assert report["far"] == 0 and report["samples"] == 24
    assert all(abs(layer["var_ratio"]["worst"] - 1) < 1e-5 for layer in report["layers"])


@pytest.mark.parametrize("argv, arrays, words", [
    (["recalibrate", f"{MODELS}:conv_bn"], _x(channels=4), ["rejects inputs of shape [1, 4, 6, 6]"]),
    (["recalibrate", f"{MODELS}:no_stats"], _x(), ["no norm layer with running statistics", "GroupNorm"]),
    (["recalibrate", f"{MODELS}:wide_whitening"], _x(n=10, size=1), ["10 values per channel", "at least 65"]),
    (["recalibrate", f"{MODELS}:nan_model"], _x(), ["norm layer 2 (BatchNorm2d)", "NaN"]),
    (["run", f"{MODELS}:conv_bn", "--input-shape", "1,3,6,6", "--recalibrate"], _x(channels=4),
     ["--recalibrate have shape [4, 6, 6]", "axis 1 must be 3"]),
    (["inspect", f"{MODELS}:nan_model", "--input-shape", "1,3,6,6", "--statistics"], _x(), ["NaN"]),
], ids=["wrong-channels", "no-norm", "too-few-for-covariance", "nan", "run-wrong-channels", "inspect-nan"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, arrays, words):
    np.savez(tmp_path / "d.npz", x=arrays)
    before = _listing(tmp_path)
    out_flag = [] if argv[0] == "inspect" else ["--out", str(tmp_path / "out")]
    flag = [] if argv[0] != "recalibrate" else ["--inputs"]
    assert main([*argv, *flag, str(tmp_path / "d.npz"), *out_flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("normfold: error: ")
    for w in words:
        assert w in err
    assert _listing(tmp_path) == before


def test_missing_data_and_an_onnx_model_for_run_recalibrate_are_refused(tmp_path, capsys):
    assert main(["recalibrate", f"{MODELS}:conv_bn", "--inputs", str(tmp_path / "none.npz"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    onnx.save(bn_graph()[0], tmp_path / "in.onnx")
    assert main(["run", str(tmp_path / "in.onnx"), "--recalibrate", str(tmp_path / "in.onnx"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "takes a PyTorch MODEL" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_labels_add_top1_before_and_after(tmp_path, data, capsys):
    x = torch.from_numpy(_x())
    labels = np.random.default_rng(5).integers(0, 4, len(x))
    recalibrated, _ = recalibrate(_models.conv_bn(), x)
    with torch.no_grad():
        after = float((recalibrated(x).argmax(1).numpy() == labels).mean())
        before = float((_models.conv_bn()(x).argmax(1).numpy() == labels).mean())
    (tmp_path / "labels.csv").write_text("".join(f"x[{i}],{y}\n" for i, y in enumerate(labels)))
    assert main(["recalibrate", f"{MODELS}:conv_bn", "--inputs", str(data), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]) == 0
    accuracy = json.loads((tmp_path / "r.json").read_text())["accuracy"]
    assert accuracy["before"] == pytest.approx(before) and accuracy["after"] == pytest.approx(after)
    assert f"{before:.2%} before, {after:.2%} after" in capsys.readouterr().out
