"""Ultralytics YOLOv8 built from the package's yaml (no weights), with real batch-norm statistics.

Factories for the command line (``normfold run tests/onnx_cli/yolo.py:detect``)
and the tests. Ultralytics' ``forward`` loops over its layer list in Python, so
torch.fx cannot trace it: these are the models the ONNX front end exists for.

Fresh statistics (mean 0, variance 1, gamma 1, beta 0) would make any fold
exact; ``populate`` draws gamma/beta and runs training-mode passes, with each
norm's momentum set to None (a cumulative average) during them, since
Ultralytics' momentum of 0.03 would leave the statistics near their initial
values after a few passes. Ultralytics is kept offline and its settings file
out of the repository and the home directory.
"""
from __future__ import annotations

import logging
import os
import tempfile

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "normfold-tests-ultralytics"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from normfold.zoo.populate import populate  # noqa: E402

SHAPE = (1, 3, 64, 64)


def detect() -> nn.Module:
    """YOLOv8n detection (80 classes); eval outputs (decoded boxes, {boxes, scores, feats: [3 maps]})."""
    from ultralytics.nn.tasks import DetectionModel

    return _with_statistics(_quiet(lambda: DetectionModel("yolov8n.yaml", verbose=False)))


def classify() -> nn.Module:
    """YOLOv8n-cls (1000 classes); eval outputs (probabilities, logits)."""
    from ultralytics.nn.tasks import ClassificationModel

    return _with_statistics(_quiet(lambda: ClassificationModel("yolov8n-cls.yaml", verbose=False)))


def _quiet(build):
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        torch.manual_seed(0)
        return build()
    finally:
        LOGGER.setLevel(level)


def _with_statistics(model: nn.Module) -> nn.Module:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = None
    populate(model, (4, *SHAPE[1:]), steps=2, seed=0)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
