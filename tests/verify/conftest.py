"""One export of the tiny BN model, shared by every verify test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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



def bias_shifted(src, dst, initializer: str, shifts: dict[int, float]) -> Path:
    """Copy the ONNX file ``src`` to ``dst`` with ``initializer[k] += v`` for each k, v in ``shifts``
    (raising a class's logit changes the predictions whose margin is smaller)."""
    proto = onnx.load(str(src))
    (init,) = [i for i in proto.graph.initializer if i.name == initializer]
    b = numpy_helper.to_array(init).copy()
    for k, v in shifts.items():
        b[k] += v
    init.CopyFrom(numpy_helper.from_array(b, init.name))
    onnx.save(proto, str(dst))
    return Path(dst)


def flipping_shift(logits: np.ndarray) -> tuple[int, float]:
    """(class, shift) such that raising that class's logit by shift changes about half of the predictions
    it can change, with no sample near a tie: the shift lies halfway between two consecutive gaps
    max(logits) - logits[class]."""
    cls = int(np.bincount(np.argsort(logits, axis=1)[:, -2]).argmax())     # the most frequent runner-up
    gaps = np.sort((logits.max(1) - logits[:, cls])[logits.argmax(1) != cls])
    k = len(gaps) // 2
    return cls, float(gaps[k - 1] + gaps[k]) / 2
