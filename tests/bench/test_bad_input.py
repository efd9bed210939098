"""normfold.bench never exports over a file it was asked to time (issue 12)."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from normfold.bench import BenchError, bench

from ..onnx_cli._files import conv_bn_relu


def test_export_dir_holding_a_file_to_time_is_refused_before_any_export(tmp_path):
    import onnx

    d = tmp_path / "exports"
    d.mkdir()
    onnx.save(conv_bn_relu()[0], str(tmp_path / "x.onnx"))
    shutil.copy(tmp_path / "x.onnx", d / "folded.onnx")
    before = (hashlib.sha256((d / "folded.onnx").read_bytes()).hexdigest(), (d / "folded.onnx").stat().st_mtime_ns)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).eval()
    with pytest.raises(BenchError, match="would overwrite .*folded.onnx, an ONNX file to time"):
        bench(model, torch.randn(1, 3, 8, 8), onnx_files=[d / "folded.onnx"], export_dir=d, providers=["cpu"],
              rounds=1, runs_per_round=1, warmup=1, creation_repeats=1)
    assert (hashlib.sha256((d / "folded.onnx").read_bytes()).hexdigest(),
            (d / "folded.onnx").stat().st_mtime_ns) == before
    assert sorted(p.name for p in d.iterdir()) == ["folded.onnx"]
