"""A workspace of a careless user's files, and a snapshot that proves a command left it as it was."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import onnx

from ..onnx_cli._files import conv_bn_relu
from . import user_models


class Opaque:
    """A class torch.load(weights_only=True) refuses to unpickle."""


def workspace(d: Path) -> Path:
    """``d`` with user.py (a copy of user_models.py), exits.py (sys.exit() at import), in.onnx (a third-party
    ONNX file), x.npz (inputs) and checkpoint.pt (a pickle weights_only refuses)."""
    import torch

    shutil.copy(Path(user_models.__file__), d / "user.py")
    (d / "exits.py").write_text("import sys\n\nsys.exit()\n")
    onnx.save(conv_bn_relu()[0], str(d / "in.onnx"))
    np.savez(d / "x.npz", a=np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    torch.save({"config": Opaque()}, d / "checkpoint.pt")
    return d


def snapshot(d: Path, ignore: tuple[str, ...] = ("factory-called",)) -> dict[str, tuple]:
    """Every file, directory and link under ``d``: content hash, mtime and mode (what "unchanged" means)."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if rel in ignore:
            continue
        st = p.lstat()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
        else:
            out[rel] = ("dir", st.st_mode)
    return out
