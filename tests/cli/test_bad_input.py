"""Bad input on the command line (issue 12): one line, exit 2, and the user's files exactly as they were.

Each case runs in a workspace of user files (tests/cli/_workspace.py) and
asserts: the exit code, exactly one line on stderr naming the problem, and a
snapshot (content hash, mtime, mode of every file, directory and link) equal
before and after: no input overwritten, no output or directory written.
Where the problem is an output location, the model factory must not even have
run: outputs are validated before the first expensive step.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from normfold.cli import main

from ._workspace import snapshot, workspace

T = ["user.py:tiny", "--input-shape", "1,3,8,8"]
QUICK_BENCH = ["--rounds", "1", "--runs-per-round", "1", "--warmup", "1", "--creation-repeats", "1",
               "--providers", "cpu"]


def _link(src, dst):
    return lambda d: os.symlink(d / src, d / dst)


def _hard_link(src, dst):
    return lambda d: os.link(d / src, d / dst)


def _mkdir(name):
    return lambda d: (d / name).mkdir(parents=True)


def _copy(src, dst):
    def make(d):
        (d / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(d / src, d / dst)
    return make


def _broken_bn_onnx(d):
    """in.onnx with running variance -0.5 in channel 1 of its BatchNormalization: the graph outputs NaN."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(d / "in.onnx"))
    var = next(i for i in proto.graph.initializer if i.name == "var")
    values = numpy_helper.to_array(var).copy()
    values[1] = -0.5
    var.CopyFrom(numpy_helper.from_array(values, "var"))
    onnx.save(proto, str(d / "broken.onnx"))


def _out_link_to_model_file(d):
    (d / "o").mkdir()
    os.symlink(d / "user.py", d / "o" / "model.onnx")


# id: (argv, set-up, message); theme 1: no output may replace an input, nor another output
OVERWRITES = {
    "run-json-is-the-model-file": (["run", *T, "--out", "o", "--json", "user.py"], None,
                                   "--json user.py would overwrite the input file user.py (MODEL)"),
    "run-json-is-a-symlink-to-the-model-file": (["run", *T, "--out", "o", "--json", "r.json"],
                                                _link("user.py", "r.json"), "would overwrite the input file user.py"),
    "run-json-is-a-hard-link-to-the-model-file": (["run", *T, "--out", "o", "--json", "r.json"],
                                                  _hard_link("user.py", "r.json"), "would overwrite the input file"),
    "run-out-file-is-a-symlink-to-the-model-file": (["run", *T, "--out", "o"], _out_link_to_model_file,
                                                    "--out o (model.onnx) would overwrite the input file user.py"),
    "run-onnx-out-holds-the-input": (["run", "o/model.onnx", "--out", "o"], _copy("in.onnx", "o/model.onnx"),
                                     "--out o (model.onnx) would overwrite the input file o/model.onnx (MODEL)"),
    "run-onnx-json-is-the-input": (["run", "in.onnx", "--out", "o", "--json", "in.onnx"], None,
                                   "--json in.onnx would overwrite the input file in.onnx (MODEL)"),
    "run-json-is-an-out-file": (["run", *T, "--out", "o", "--json", "o/model.onnx"], None,
                                "--json o/model.onnx and --out o (model.onnx) are the same file"),
    "run-json-is-the-out-directory": (["run", *T, "--out", "o", "--json", "o"], None,
                                      "--json o would be the directory of --out o (model.onnx)"),
    "inspect-json-is-the-model-file": (["inspect", *T, "--json", "user.py"], None,
                                       "--json user.py would overwrite the input file user.py (MODEL)"),
    "inspect-onnx-json-is-the-input": (["inspect", "in.onnx", "--json", "in.onnx"], None,
                                       "would overwrite the input file in.onnx (MODEL)"),
    "verify-json-is-the-onnx-file": (["verify", "user.py:tiny", "in.onnx", "--json", "in.onnx"], None,
                                     "--json in.onnx would overwrite the input file in.onnx (MODEL.onnx)"),
    "verify-json-is-the-onnx-model": (["verify", "in.onnx", "in.onnx", "--json", "in.onnx"], None,
                                      "--json in.onnx would overwrite the input file in.onnx (MODEL)"),
    "verify-json-is-the-inputs": (["verify", "user.py:tiny", "in.onnx", "--inputs", "x.npz", "--json", "x.npz"],
                                  None, "--json x.npz would overwrite the input file x.npz (--inputs)"),
    "verify-fp16-file-is-the-json": (["verify", "user.py:tiny", "in.onnx", "--precision", "fp16",
                                      "--json", "in.fp16.onnx"], None, "are the same file"),
    "verify-fp16-file-is-a-symlink-to-the-model-file": (
        ["verify", "user.py:tiny", "in.onnx", "--precision", "fp16"], _link("user.py", "in.fp16.onnx"),
        "--precision fp16 writes in.fp16.onnx would overwrite the input file user.py (MODEL)"),
    "bench-export-dir-holds-an-input": (["bench", "user.py:tiny", "D/folded.onnx", "--input-shape", "1,3,8,8",
                                         "--export-dir", "D", *QUICK_BENCH],
                                        _copy("in.onnx", "D/folded.onnx"),
                                        "--export-dir D (folded.onnx) would overwrite the input file D/folded.onnx"),
    "bench-json-is-an-onnx-file": (["bench", "in.onnx", "--json", "in.onnx", *QUICK_BENCH], None,
                                   "--json in.onnx would overwrite the input file in.onnx"),
    "bench-plot-is-the-model-file": (["bench", *T, "--plot", "user.py", *QUICK_BENCH], None,
                                     "--plot user.py would overwrite the input file user.py (MODEL)"),
    "bench-json-is-the-plot": (["bench", "in.onnx", "--json", "r.out", "--plot", "r.out", *QUICK_BENCH], None,
                               "are the same file"),
}

# theme 2: an output location that cannot be written is refused before the model is even built
LATE = {
    "run-json-is-a-directory": (["run", *T, "--out", "o", "--json", "jdir"], _mkdir("jdir"),
                                "--json jdir is a directory"),
    "run-json-unwritable": (["run", *T, "--out", "o", "--json", "/proc/normfold.json"], None,
                            "--json /proc/normfold.json cannot be written"),
    "run-json-directory-missing": (["run", *T, "--out", "o", "--json", "nodir/r.json"], None,
                                   "--json nodir/r.json: directory nodir does not exist"),
    "run-json-under-a-file": (["run", *T, "--out", "o", "--json", "user.py/r.json"], None, "is not a directory"),
    "run-out-is-a-file": (["run", *T, "--out", "user.py"], None, "is not a directory"),
    "run-out-unwritable": (["run", *T, "--out", "/proc/normfold-out"], None, "cannot be written"),
    "run-onnx-json-is-a-directory": (["run", "in.onnx", "--out", "o", "--json", "jdir"], _mkdir("jdir"),
                                     "--json jdir is a directory"),
    "verify-onnx-json-missing-directory": (["verify", "in.onnx", "in.onnx", "--json", "nodir/r.json"], None,
                                           "--json nodir/r.json: directory nodir does not exist"),
    "inspect-json-is-a-directory": (["inspect", *T, "--json", "jdir"], _mkdir("jdir"), "--json jdir is a directory"),
    "verify-json-unwritable": (["verify", "user.py:tiny", "in.onnx", "--json", "/proc/normfold.json"], None,
                               "cannot be written"),
    "bench-plot-is-a-directory": (["bench", *T, "--plot", "jdir", *QUICK_BENCH], _mkdir("jdir"),
                                  "--plot jdir is a directory"),
    "bench-export-dir-is-a-file": (["bench", *T, "--export-dir", "user.py", *QUICK_BENCH], None,
                                   "--export-dir user.py is not a directory"),
    "bench-export-dir-missing": (["bench", *T, "--export-dir", "nodir", *QUICK_BENCH], None,
                                 "--export-dir nodir does not exist"),
}

# theme 3: what used to be a traceback (or a crash) is one line
ONE_LINE = {
    "run-input-shape-too-large": (["run", "user.py:tiny", "--input-shape", "100000,3,224,224", "--out", "o"], None,
                                  "the example input of shape 100000,3,224,224 needs"),
    "run-input-shape-absurd": (["run", "user.py:tiny", "--input-shape", "99999999999,99999999999,3,3", "--out", "o"],
                               None, "of memory available"),
    "verify-batch-sizes-in-the-billions": (["verify", "user.py:tiny", "in.onnx", "--batch-sizes", "1000000000"],
                                           None, "an input batch of shape 1000000000,3,8,8 needs"),
    "bench-batch-sizes-in-the-billions": (["bench", *T, "--batch-sizes", "1000000000", *QUICK_BENCH], None,
                                          "of shape 1000000000,3,8,8 needs"),
    "verify-negative-seed": (["verify", "user.py:tiny", "in.onnx", "--seed", "-1"], None,
                             "argument --seed: expected an integer from 0 to 2**64-1, got '-1'"),
    "run-negative-seed": (["run", *T, "--seed", "-1", "--out", "o"], None, "argument --seed"),
    "run-seed-too-large": (["run", *T, "--seed", str(2**70), "--out", "o"], None, "argument --seed"),
    "verify-std-zero": (["verify", "user.py:tiny", "in.onnx", "--std", "0"], None,
                        "argument --std: expected comma-separated positive finite numbers, got '0'"),
    "verify-std-with-a-zero": (["verify", "user.py:tiny", "in.onnx", "--std", "0.2,0,0.2"], None, "argument --std"),
    "verify-std-nan": (["verify", "user.py:tiny", "in.onnx", "--std", "nan"], None, "argument --std"),
    "verify-std-negative": (["verify", "user.py:tiny", "in.onnx", "--std", "-1"], None, "argument --std"),
    "verify-mean-inf": (["verify", "user.py:tiny", "in.onnx", "--mean", "inf"], None,
                        "argument --mean: expected comma-separated finite numbers, got 'inf'"),
    "verify-uniform-nan": (["verify", "user.py:tiny", "in.onnx", "--uniform", "0,nan"], None, "argument --uniform"),
    "verify-batch-size-two-values": (["verify", "in.onnx", "in.onnx", "--inputs", "d", "--batch-size", "4,8"], None,
                                     "argument --batch-size: expected a positive integer, got '4,8'"),
    "verify-oracle-samples-two-values": (["verify", "in.onnx", "in.onnx", "--inputs", "d", "--oracle-samples", "4,8"],
                                         None, "argument --oracle-samples: expected a positive integer, got '4,8'"),
    "run-onnx-input-shape-too-large": (["run", "in.onnx", "--input-shape", "1000000000,3,8,8", "--out", "o"], None,
                                       "the input of in.onnx of shape 1000000000,3,8,8 needs"),
    "inspect-zero-batch": (["inspect", "user.py:tiny", "--input-shape", "0,3,8,8"], None, "argument --input-shape"),
    "run-exporter-cannot-export": (["run", "user.py:unexportable", "--input-shape", "1,3,8,8", "--out", "o"], None,
                                   "no exporter could export Net: torch.onnx.export (dynamo): torch.onnx.export "
                                   "failed for Net: GuardOnDataDependentSymNode"),
    "run-wrong-rank": (["run", "user.py:tiny", "--input-shape", "1,3,8", "--out", "o"], None,
                       "the model rejects input shape 1,3,8: its forward raised RuntimeError"),
}

# theme 4: broken frozen statistics are named (module, buffer, channel, value), never folded into NaN
STATISTICS = {
    "run-nan-var": (["run", "user.py:nan_var", "--input-shape", "1,3,8,8", "--out", "o"], None,
                    "norm layer bn (BatchNorm2d) has broken statistics: running_var[2] = nan: not a finite number"),
    "run-negative-var": (["run", "user.py:negative_var", "--input-shape", "1,3,8,8", "--out", "o"], None,
                         "norm layer bn (BatchNorm2d) has broken statistics: running_var[1] = -0.5: with eps = 1e-05, "
                         "var + eps = -0.49999 is not positive"),
    "run-zero-var-zero-eps": (["run", "user.py:zero_var_zero_eps", "--input-shape", "1,3,8,8", "--out", "o"], None,
                              "running_var[3] = 0: with eps = 0, var + eps = 0 is not positive"),
    "run-inf-weight": (["run", "user.py:inf_weight", "--input-shape", "1,3,8,8", "--out", "o"], None,
                       "norm layer bn (BatchNorm2d) has broken statistics: weight[0] = inf"),
    "inspect-nan-var": (["inspect", "user.py:nan_var", "--input-shape", "1,3,8,8", "--json", "r.json"], None,
                        "bn (BatchNorm2d) has broken statistics: running_var[2] = nan"),
    "verify-nan-var": (["verify", "user.py:nan_var", "in.onnx", "--json", "r.json"], None,
                       "bn (BatchNorm2d) has broken statistics: running_var[2] = nan"),
    "run-onnx-broken-batch-norm": (["run", "broken.onnx", "--out", "o"], _broken_bn_onnx,
                                   "broken.onnx's output 'y' holds 64 NaN or infinite values (of 256)"),
    "verify-onnx-broken-batch-norm": (["verify", "broken.onnx", "in.onnx"], _broken_bn_onnx,
                                      "broken.onnx's output 'y' holds 64 NaN or infinite values"),
    "bench-negative-var": (["bench", "user.py:negative_var", "--input-shape", "1,3,8,8", "--export-dir", ".",
                            *QUICK_BENCH], None, "bn (BatchNorm2d) has broken statistics: running_var[1] = -0.5"),
}

# theme 6: messages that say what happened
MESSAGES = {
    "model-file-exits-at-import": (["run", "exits.py:f", "--out", "o"], None, "importing exits.py called sys.exit()"),
    "factory-exits": (["run", "user.py:exits", "--out", "o"], None, "user.py:exits() called sys.exit(3)"),
    "forward-exits": (["run", "user.py:forward_exits", "--input-shape", "1,3,8,8", "--out", "o"], None,
                      "the model rejects input shape 1,3,8,8: its forward called sys.exit(0)"),
    "verify-forward-exits": (["verify", "user.py:forward_exits", "in.onnx"], None,
                             "the model rejects inputs of shape [3, 3, 8, 8]: its forward called sys.exit(0)"),
    "refused-pickle": (["run", "user.py:refused_pickle", "--out", "o"], None,
                       "user.py:refused_pickle() raised UnpicklingError: Unsupported global: GLOBAL "
                       "tests.cli._workspace.Opaque was not an allowed global by default (torch.load with "
                       "weights_only=True refused it) (at user.py:"),
    "model-file-is-a-directory": (["run", "pkg.py:f", "--out", "o"], _mkdir("pkg.py"),
                                  "model file pkg.py is a directory, not a Python file"),
    "verify-onnx-file-is-a-directory": (["verify", "user.py:tiny", "d.onnx"], _mkdir("d.onnx"),
                                        "d.onnx is a directory, not an ONNX file"),
    "run-onnx-model-is-a-directory": (["run", "d.onnx", "--out", "o"], _mkdir("d.onnx"), "d.onnx is a directory"),
    "bench-extra-onnx-is-a-directory": (["bench", "in.onnx", "d.onnx", *QUICK_BENCH], _mkdir("d.onnx"),
                                        "d.onnx is a directory"),
    "bench-onnx-model-with-export-dir": (["bench", "in.onnx", "--export-dir", ".", *QUICK_BENCH], None,
                                         "--export-dir keeps the exports of a PyTorch MODEL; in.onnx is an ONNX "
                                         "file, timed as it is, with nothing exported"),
    "verify-without-model": (["verify", "in.onnx"], None, "give MODEL before in.onnx: the model it was exported from"),
    "factory-returns-none": (["run", "user.py:returns_none", "--out", "o"], None,
                             "user.py:returns_none() returned NoneType, not a torch.nn.Module"),
    "forward-returns-none": (["run", "user.py:forward_none", "--input-shape", "1,3,8,8", "--out", "o"], None,
                             "the model's forward returned None for input shape 1,3,8,8"),
    "forward-returns-str": (["run", "user.py:forward_str", "--input-shape", "1,3,8,8", "--out", "o"], None,
                            "returned str without floating-point tensors"),
    "forward-returns-int": (["run", "user.py:forward_int", "--input-shape", "1,3,8,8", "--out", "o"], None,
                            "returned a int64 tensor"),
    "forward-returns-nan": (["run", "user.py:forward_nan", "--input-shape", "1,3,8,8", "--out", "o"], None,
                            "the model's output 0 holds 3 NaN or infinite values (of 3)"),
    "half-model": (["run", "user.py:half", "--input-shape", "1,3,8,8", "--out", "o"], None,
                   "the model's conv.weight is float16: the command line takes a float32 model"),
    "meta-model": (["run", "user.py:meta", "--input-shape", "1,3,8,8", "--out", "o"], None,
                   "the model's conv.weight is on the meta device"),
    "verify-nan-inputs": (["verify", "in.onnx", "in.onnx", "--inputs", "nan"],
                          lambda d: (d / "nan").mkdir() or np.save(d / "nan" / "a.npy", np.full((3, 8, 8), np.nan,
                                                                                              np.float32)),
                          "--inputs nan: sample 0 holds NaN or infinite values"),
}

CASES = [pytest.param(*case, True, id=f"overwrite-{name}") for name, case in OVERWRITES.items()]
CASES += [pytest.param(*case, True, id=f"late-{name}") for name, case in LATE.items()]
CASES += [pytest.param(*case, False, id=f"{theme}-{name}")
          for theme, cases in (("one-line", ONE_LINE), ("statistics", STATISTICS), ("message", MESSAGES))
          for name, case in cases.items()]


def _refused(tmp_path, monkeypatch, capsys, argv, setup=None):
    """Run ``argv`` in a workspace; assert exit 2, one plain line on stderr, every file as it was.
    Returns (workspace, the line)."""
    d = workspace(tmp_path)
    if setup is not None:
        setup(d)
    monkeypatch.chdir(d)
    before = snapshot(d)
    code = main(argv)
    err = capsys.readouterr().err.splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert "\x1b[" not in err[0]
    assert snapshot(d) == before
    return d, err[0]


@pytest.mark.parametrize("argv, setup, message, before_model", CASES)
def test_exit_2_one_line_nothing_written(tmp_path, monkeypatch, capsys, argv, setup, message, before_model):
    d, line = _refused(tmp_path, monkeypatch, capsys, argv, setup)
    assert "normfold" in line and "error: " in line and message in line, line
    if before_model:
        assert not (d / "factory-called").exists(), "the model was built before the output was checked"


@pytest.mark.parametrize("argv, cause", [
    pytest.param(["run", "user.py:torch_oom", "--input-shape", "1,3,8,8", "--out", "o"],
                 "RuntimeError: [enforce fail at", id="run-torch-allocation-fails"),
    pytest.param(["inspect", "user.py:numpy_oom", "--input-shape", "1,3,8,8", "--json", "r.json"],
                 "MemoryError: Unable to allocate 1.00 EiB", id="inspect-numpy-memory-error"),
])
def test_a_forward_out_of_memory_is_reported_as_such(tmp_path, monkeypatch, capsys, argv, cause):
    """An allocation failing in the model's forward is not the model rejecting the input shape."""
    _, line = _refused(tmp_path, monkeypatch, capsys, argv)
    assert line.startswith(f"normfold: error: out of memory: {cause}"), line
    assert line.endswith("; try a smaller input shape or batch size"), line


def test_a_single_mean_and_std_apply_to_every_channel():
    from normfold.verify.inputs import normalize

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    got = normalize(x, (0.5,), (0.25,))
    np.testing.assert_allclose(got, (x.astype(np.float64) - 0.5) / 0.25, rtol=1e-6)


def test_verify_with_one_mean_and_std_value_passes(tmp_path, capsys):
    d = workspace(tmp_path)
    assert main(["verify", str(d / "in.onnx"), str(d / "in.onnx"), "--mean", "0.5", "--std", "0.25",
                 "--json", str(d / "r.json")]) == 0, capsys.readouterr().err
    import json

    data = json.loads((d / "r.json").read_text())
    assert data["inputs"]["normalize_mean"] == [0.5] and data["inputs"]["normalize_std"] == [0.25]
