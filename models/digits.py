"""The handwritten-digits data (8x8, 1797 samples) and a small CNN for it.

``data/digits.npz`` is scikit-learn's ``load_digits()`` saved once (see
scripts/train_digits.py for the command); scikit-learn is not a dependency.
Pixels are integers 0..16; ``load_digits`` scales them to [0, 1] and splits
train/test with a fixed permutation, so every run sees the same 360 test images.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from normfold.nn import create_norm

DATA = Path(__file__).resolve().parents[1] / "data" / "digits.npz"
NUM_CLASSES, TEST_SIZE, SPLIT_SEED = 10, 360, 0


class Digits(NamedTuple):
    x_train: torch.Tensor   # (N, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor   # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(path: str | Path = DATA) -> Digits:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"digits data {path} not found (it ships in the repository's data/ folder)")
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    if images.ndim != 3 or images.shape[1:] != (8, 8) or labels.shape != images.shape[:1]:
        raise ValueError(f"{path}: expected images (N, 8, 8) and labels (N,), got {images.shape} and {labels.shape}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    x = torch.from_numpy(images[order].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(labels[order].astype(np.int64))
    return Digits(x[TEST_SIZE:], y[TEST_SIZE:], x[:TEST_SIZE], y[:TEST_SIZE])


class DigitNet(nn.Module):
    """(3x3 Conv -> Norm -> ReLU) x2 at 8x8, pool, once more at 4x4, pool, Linear.

    Widths 32 and 64 keep whitening groups of 16 (and IterNorm's 64, capped
    at C) dividing every norm's channels.
    """

    def __init__(self, norm: str = "bn", width: int = 32, num_classes: int = NUM_CLASSES, **norm_kw):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), create_norm(norm, cout, **norm_kw), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * 2 * 2, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
