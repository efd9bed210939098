"""onnxruntime sessions: the only module that talks to onnxruntime for verify."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class SessionError(RuntimeError):
    """The ONNX file or the provider cannot be used (missing, corrupt, unavailable)."""


def provider_name(short: str) -> str:
    try:
        return PROVIDERS[short]
    except KeyError:
        raise SessionError(f"unknown provider {short!r}; choose from {', '.join(PROVIDERS)}") from None


def open_session(path: str | os.PathLike, provider: str = "cpu", *, optimization: str = "all"):
    """An InferenceSession on one provider; ``optimization`` is 'disable', 'basic', 'extended' or 'all'."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise SessionError(f"ONNX file {path} does not exist")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=[provider_name(provider)])
    except SessionError:
        raise
    except Exception as exc:
        raise SessionError(f"onnxruntime cannot load {path}: {str(exc).strip().splitlines()[0]}") from exc


def run_session(session, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Feed ``inputs`` positionally; name a count, rank or dtype mismatch."""
    declared = session.get_inputs()
    if len(declared) != len(inputs):
        raise SessionError(f"the ONNX model takes {len(declared)} inputs, {len(inputs)} were given")
    feed = {}
    for meta, value in zip(declared, inputs):
        if len(meta.shape) != value.ndim:
            raise SessionError(
                f"ONNX input {meta.name!r} has shape {meta.shape}, the example input has shape {value.shape}"
            )
        for want, got in zip(meta.shape, value.shape):
            if isinstance(want, int) and want != got:
                raise SessionError(
                    f"ONNX input {meta.name!r} has shape {meta.shape}, the example input has shape {value.shape}"
                )
        feed[meta.name] = value
    return session.run(None, feed)
