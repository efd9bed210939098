"""Models whose weights are in external data files: read (CLI and API), written as one file or, over 2 GB, two.

The check is independent of normfold's verify: onnxruntime runs the original
file (loaded from its path, with its data) and the float64 oracle is
onnx.reference on the original's graph (tests/fold_onnx/_oracle.py). Writing
over 2 GB is exercised on a small model by lowering the limit
(``normfold.onnx_file.MAX_BYTES``); scripts/fold_large.py does it for real.
"""
from __future__ import annotations

import importlib
import json
import os

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import normfold
import normfold.onnx_file
from normfold.cli import main
from normfold.fold import FoldError

from ..onnx_cli._files import conv_bn_relu
from ._oracle import assert_equivalent

SHAPE = (2, 3, 8, 8)


def _external(d, name="m.onnx"):
    """conv_bn_relu saved with every tensor in ``<name>.data``; (path, the model with its data, its params)."""
    model, params = conv_bn_relu(shape=SHAPE)
    path, saved = d / name, onnx.ModelProto()
    saved.CopyFrom(model)   # onnx.save_model moves the data out of the model it is given
    onnx.save_model(saved, str(path), save_as_external_data=True, location=f"{name}.data", size_threshold=0)
    return path, model, params


def _relocated(path, location: str):
    """Rewrite every tensor's external location in ``path`` to ``location``."""
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(path))


def _truncated(d):
    path, *_ = _external(d)
    data = d / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:-8])
    return path


def _escaping(d):
    path, *_ = _external(d)
    os.replace(d / "m.onnx.data", d.parent / "outside.data")
    _relocated(path, "../outside.data")
    return path


def _absolute(d):
    path, *_ = _external(d)
    _relocated(path, str(d / "m.onnx.data"))
    return path


def _missing(d):
    path, *_ = _external(d)
    (d / "m.onnx.data").unlink()
    return path


# name: (make the file in a folder, the message); tests/onnx_cli/test_bad_input.py runs them through every command
BAD_DATA = {
    "truncated": (_truncated, "the data file is truncated"),
    "escaping": (_escaping, "'../outside.data', outside the model's folder"),
    "absolute": (_absolute, "outside the model's folder"),
    "missing": (_missing, "m.onnx.data, which does not exist"),
}


def _ort(path_or_proto, x: np.ndarray) -> np.ndarray:
    model = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _tensors_outside(path) -> list[str]:
    return [t.name for t in normfold.onnx_file.external_tensors(onnx.load(str(path), load_external_data=False))]


def test_the_api_folds_a_file_with_external_data(tmp_path):
    path, model, _ = _external(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    folded, report = normfold.fold_onnx(path)
    assert [(f.norm, f.into) for f in report.folded] == [("bn", "conv")]
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    assert not normfold.onnx_file.external_tensors(folded)   # the data is in the returned model
    x = np.random.default_rng(1).standard_normal(SHAPE)
    assert_equivalent(model, folded, {"x": x})
    np.testing.assert_allclose(_ort(folded, x.astype(np.float32)), _ort(str(path), x.astype(np.float32)),
                               rtol=1e-5, atol=1e-5)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_file_folds_to_the_same_bytes_as_the_model_loaded_from_it(tmp_path, monkeypatch):
    """Read from a file, the fold frees the input and moves each weight into the output on its own
    (normfold/fold/onnx/serialize.py; every weight here, not only those over 1 MiB): the same model."""
    monkeypatch.setattr(importlib.import_module("normfold.fold.onnx.serialize"), "LARGE", 0)
    path, *_ = _external(tmp_path)
    from_file, _ = normfold.fold_onnx(path)
    from_memory, _ = normfold.fold_onnx(onnx.load(str(path)))
    assert from_file.SerializeToString() == from_memory.SerializeToString()
    assert len(from_file.graph.initializer) == 2 and all(len(t.raw_data) for t in from_file.graph.initializer)


def test_serialize_moving_each_weight_on_its_own_makes_the_message_serialize_model_makes(monkeypatch):
    serialize = importlib.import_module("normfold.fold.onnx.serialize")
    monkeypatch.setattr(serialize, "LARGE", 0)
    model, _ = conv_bn_relu(shape=SHAPE)
    expected = ir.serde.serialize_model(ir.serde.deserialize_model(model))
    work = ir.serde.deserialize_model(model)
    assert serialize.serialize(work).SerializeToString() == expected.SerializeToString()
    assert all(v.const_value is None for v in work.graph.initializers.values())   # the IR let the weights go


def test_a_model_in_memory_that_refers_to_external_data_is_refused(tmp_path):
    path, *_ = _external(tmp_path)
    with pytest.raises(FoldError) as err:
        normfold.fold_onnx(onnx.load(str(path), load_external_data=False))
    assert "\n" not in str(err.value) and "pass the .onnx file's path" in str(err.value)


@pytest.mark.parametrize("over_2gb", [False, True], ids=["one-file", "over-2gb"])
def test_run_reads_external_data_and_writes_one_file_or_two(tmp_path, capsys, monkeypatch, over_2gb):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    path, model, _ = _external(src_dir)
    if over_2gb:   # "2 GB" is 2000 bytes, every tensor of 16 bytes or more goes outside
        monkeypatch.setattr(normfold.onnx_file, "MAX_BYTES", 2000)
        monkeypatch.setattr(normfold.onnx_file, "EXTERNAL_MIN", 16)
    out, report_path = tmp_path / "out", tmp_path / "r.json"
    assert main(["run", str(path), "--out", str(out), "--json", str(report_path), "--no-simplify"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")
    report = json.loads(report_path.read_text())
    expected = {"folded": str(out / "model.onnx")} | ({"folded_data": str(out / "model.onnx.data")} if over_2gb else {})
    assert report["files"] == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(os.path.basename(p) for p in expected.values())
    x = np.random.default_rng(2).standard_normal(SHAPE)
    folded = onnx.load(str(out / "model.onnx"))   # with its data, from beside it
    outside = _tensors_outside(out / "model.onnx")
    assert len(outside) == (len(folded.graph.initializer) if over_2gb else 0) == (2 if over_2gb else 0)  # W', b'
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    assert_equivalent(model, folded, {"x": x})
    np.testing.assert_allclose(_ort(str(out / "model.onnx"), x.astype(np.float32)),
                               _ort(str(path), x.astype(np.float32)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_the_api_refuses_bad_external_data_in_one_line(tmp_path, case):
    d = tmp_path / "in"
    d.mkdir()
    make, message = BAD_DATA[case]
    path = make(d)
    with pytest.raises(FoldError) as err:
        normfold.fold_onnx(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and message in str(err.value)


def test_save_over_2gb_writes_aligned_external_data_and_leaves_the_model_as_it_was(tmp_path, monkeypatch):
    model, _ = conv_bn_relu(shape=SHAPE)
    before = model.SerializeToString()
    monkeypatch.setattr(normfold.onnx_file, "MAX_BYTES", 2000)
    monkeypatch.setattr(normfold.onnx_file, "EXTERNAL_MIN", 16)
    files = normfold.onnx_file.save(model, tmp_path / "m.onnx")
    assert files == [tmp_path / "m.onnx", tmp_path / "m.onnx.data"]
    assert model.SerializeToString() == before
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_array_equal(_ort(str(tmp_path / "m.onnx"), x), _ort(model, x))
    offsets = [int(e.value) for t in onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph.initializer
               for e in t.external_data if e.key == "offset"]
    assert offsets == sorted(offsets) and all(o % normfold.onnx_file.ALIGNMENT == 0 for o in offsets)
