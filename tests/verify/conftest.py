"""One export of the tiny BN model, shared by every verify test."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from normfold import export

from . import _models

MODELS_FILE = Path(_models.__file__)


@pytest.fixture(scope="session")
def bn(tmp_path_factory):
    """(model, example input, path of its folded ONNX export, ExportResult)."""
    model = _models.tiny_bn()
    x = torch.randn(_models.SHAPE, generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("bn") / "model.onnx"
    return model, x, path, export(model, x, path)


def perturbed(src, dst, initializer: str, factor: float) -> Path:
    """Copy the ONNX file ``src`` to ``dst`` with one initializer scaled by ``factor``."""
    proto = onnx.load(str(src))
    for init in proto.graph.initializer:
        if init.name == initializer:
            array = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(array * array.dtype.type(factor), init.name))
            break
    else:
        raise AssertionError(f"{initializer} not in {[i.name for i in proto.graph.initializer]}")
    onnx.save(proto, str(dst))
    return Path(dst)

