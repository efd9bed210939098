"""onnxruntime sessions: the only module that talks to onnxruntime for verify.

Providers are named short: ``cpu``, ``cuda``. CUDA runs with TF32 off
(``use_tf32=0``): TF32 rounds matmul/conv inputs to 10 mantissa bits, which
is an error of its own, not the fold's.

Thread-pool spinning is off: verify alternates onnxruntime with eager torch
runs and with a second session (the original file), and a pool that
spin-waits after its run takes the cores from whatever runs next. Measured on
2 busy cores, a batch of 16 at 64x64 through ResNet-18 at width 1/4, eager
torch alternating with onnxruntime: eager median 136 and 170 ms with spinning
on, 44 and 100 ms off (two rounds each).

onnxruntime-gpu lists CUDAExecutionProvider as *available* on machines with no
GPU and silently falls back to CPU when a session asks for it; ``cuda_problem``
opens a one-node session with the CUDA provider and checks which provider the
session really got.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from .._messages import error_line

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
PROVIDER_OPTIONS = {"cpu": {}, "cuda": {"use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}}
# short name -> onnxruntime.GraphOptimizationLevel member
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL",
}
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
ORT_DTYPES.update({f"tensor({t})": np.dtype(t).type for t in (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")})


class SessionError(RuntimeError):
    """The ONNX file or the provider cannot be used (missing, corrupt, unavailable)."""


def provider_name(short: str) -> str:
    try:
        return PROVIDERS[short]
    except KeyError:
        raise SessionError(f"unknown provider {short!r}; choose from {', '.join(PROVIDERS)}") from None


def open_session(model: str | os.PathLike | bytes, provider: str = "cpu", *, optimization: str = "all",
                 where: str | None = None, spinning: bool = False):
    """An InferenceSession on one provider, from a file or serialized bytes (``where`` names them in errors).

    ``optimization`` is 'disable', 'basic', 'extended' or 'all'; ``spinning``
    lets the thread pools spin-wait between runs (see above). A session that
    did not get the requested provider is an error, never a silent fallback.
    """
    import onnxruntime as ort

    full = provider_name(provider)
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise SessionError(f"ONNX file {path} does not exist")
        model, where = str(path), where or str(path)
    else:
        where = where or "the ONNX model"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    for pool in ("intra_op", "inter_op"):
        opts.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spinning else "0")
    try:
        with _quiet_ort():
            session = ort.InferenceSession(model, sess_options=opts, providers=[(full, PROVIDER_OPTIONS[provider])])
    except Exception as exc:
        raise SessionError(f"onnxruntime cannot load {where}: {error_line(exc)}") from exc
    if session.get_providers()[0] != full:
        raise SessionError(f"onnxruntime could not use {full} for {where}; {cuda_problem() or 'it fell back to CPU'}")
    return session


def provider_options(session) -> dict:
    """The options the session's providers really run with (for the report)."""
    return {k: dict(v) for k, v in session.get_provider_options().items()}


def cuda_problem() -> str | None:
    """None when onnxruntime can really run on CUDA here, otherwise why not."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"this onnxruntime ({ort.__version__}) has no CUDA provider; "
                "install onnxruntime-gpu with a matching CUDA")
    try:
        with _quiet_ort():
            opts = ort.SessionOptions()
            opts.log_severity_level = 4
            got = ort.InferenceSession(
                _identity_model(), sess_options=opts,
                providers=[("CUDAExecutionProvider", PROVIDER_OPTIONS["cuda"])],
            ).get_providers()
    except Exception as exc:
        return f"onnxruntime's CUDA provider fails to start: {error_line(exc)}"
    if got[0] != "CUDAExecutionProvider":
        return ("onnxruntime lists CUDAExecutionProvider but cannot start it "
                "(no GPU visible, or CUDA/cuDNN libraries missing); it fell back to CPU")
    return None


def run_session(session, inputs: tuple[np.ndarray, ...], output_names: list[str] | None = None) -> list[np.ndarray]:
    """Feed ``inputs`` positionally; name a count, rank, size or dtype mismatch."""
    declared = session.get_inputs()
    if len(declared) != len(inputs):
        raise SessionError(f"the ONNX model takes {len(declared)} inputs, {len(inputs)} were given")
    feed = {}
    for meta, value in zip(declared, inputs):
        problem = shape_mismatch(meta.shape, value.shape)
        if problem:
            raise SessionError(f"ONNX input {meta.name!r} has shape {meta.shape}, the input has shape "
                               f"{list(value.shape)} ({problem})")
        feed[meta.name] = value.astype(ORT_DTYPES.get(meta.type, np.float32), copy=False)
    try:
        return session.run(output_names, feed)
    except Exception as exc:
        raise SessionError(f"onnxruntime failed to run the model: {error_line(exc)}") from exc


def shape_mismatch(declared, shape) -> str | None:
    """Why ``shape`` cannot feed an input declared as ``declared`` (ints or symbolic names), or None."""
    if len(declared) != len(shape):
        return f"{len(declared)} axes expected, {len(shape)} given"
    for axis, (want, got) in enumerate(zip(declared, shape)):
        if isinstance(want, int) and want > 0 and want != got:
            return f"axis {axis} must be {want}, got {got}"
    return None


def _identity_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


@contextlib.contextmanager
def _quiet_ort():
    """onnxruntime logs provider-load failures through its default logger, in red; keep only fatal."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)

