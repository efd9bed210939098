"""A digits CNN trained here (a few seconds), its test set on disk, and independent accuracy on onnxruntime."""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def train_digits():
    spec = importlib.util.spec_from_file_location("_train_digits", ROOT / "scripts" / "train_digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@functools.cache
def trained(norm: str = "bn", epochs: int = 4):
    """(model in eval mode, Digits): DigitNet with ``norm`` trained on the 1437 training images."""
    script = train_digits()
    data = script.load_digits()
    model, _ = script.train(data, norm, batch_size=32, epochs=epochs, seed=0, lr=0.002)
    return model, data


def write_sets(data, out: Path, n_calibration: int = 128) -> tuple[Path, Path, Path]:
    """(calibration .npz from training images, test .npz, labels CSV): keyed by the input name 'x'."""
    out.mkdir(parents=True, exist_ok=True)
    cal, test, labels = out / "cal.npz", out / "test.npz", out / "labels.csv"
    np.savez(cal, x=data.x_train[:n_calibration].numpy())
    np.savez(test, x=data.x_test.numpy())
    labels.write_text("".join(f"{i},{int(y)}\n" for i, y in enumerate(data.y_test)))
    return cal, test, labels


def onnx_accuracy(path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(top-1 accuracy, predictions) of the ONNX file at ``path`` on onnxruntime CPU, computed here."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    pred = logits.argmax(axis=1)
    return float((pred == y).mean()), pred
