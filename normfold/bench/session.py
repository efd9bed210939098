"""onnxruntime sessions configured for benchmarking, and one-inference runners.

Everything that changes latency is set explicitly and recorded: provider,
graph optimization level, intra-/inter-op thread counts (intra-op defaults to
the CPUs this process may run on, ``os.sched_getaffinity``), sequential
execution, and on CUDA the cuDNN convolution algorithm search. On CUDA the
input lives on the device and outputs are bound there (IO binding), so
host<->device copies are not timed as compute.

CUDA is probed, not assumed: onnxruntime-gpu lists CUDAExecutionProvider as
available on machines without a GPU or without the CUDA libraries, then
silently runs on CPU. A provider counts only if a session really got it.

Thread-pool spinning is off by default. onnxruntime's intra-op threads
spin-wait after each run; when variants run interleaved, the spinning pool of
the session that just ran competes with the next one for the same cores.
Measured on this 2-core machine, two sessions of the *same* ResNet-18 file
interleaved (scripts/bench_spinning.py): spinning on, p50 54 ms and a
per-round ratio IQR of 0.50-1.67; spinning off, p50 27 ms and an IQR of
0.986-1.013. Every variant gets the same setting, so ratios stay fair.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._messages import error_line
from ..verify.session import (
    OPTIMIZATION_LEVELS,
    ORT_DTYPES,
    PROVIDERS,
    SessionError,
    cuda_problem,
    provider_name,
    shape_mismatch,
)


def default_threads() -> int:
    """The number of CPUs this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SessionConfig:
    provider: str                       # "cpu" or "cuda"
    optimization: str                   # "disable" ... "all"
    intra_op_threads: int
    inter_op_threads: int = 1
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    spinning: bool = False              # intra/inter-op thread pools spin-wait between runs

    def __post_init__(self):
        provider_name(self.provider)
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise SessionError(
                f"unknown optimization level {self.optimization!r}; choose from {', '.join(OPTIMIZATION_LEVELS)}"
            )
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise SessionError(f"thread counts must be >= 1, got {self.intra_op_threads}/{self.inter_op_threads}")

    @property
    def ort_level(self) -> str:
        return OPTIMIZATION_LEVELS[self.optimization]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["graph_optimization_level"] = self.ort_level
        if self.provider != "cuda":
            del out["cudnn_conv_algo_search"]
        return out


@functools.lru_cache(maxsize=None)
def cuda_unavailable_reason() -> str | None:
    """None when a session really runs on CUDAExecutionProvider, else why not.

    A CUDA build of torch that sees no device answers quickly; otherwise
    verify's probe opens a one-node CUDA session and checks what it got.
    """
    import torch

    if torch.version.cuda is not None and not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: no usable CUDA device"
    return cuda_problem()


def open_timed(path: str | os.PathLike, config: SessionConfig):
    """(InferenceSession, creation time in ms) for ``path`` under ``config``."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise SessionError(f"ONNX file {path} does not exist")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, config.ort_level)
    opts.intra_op_num_threads = config.intra_op_threads
    opts.inter_op_num_threads = config.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if config.spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    providers: list = [PROVIDERS["cpu"]]
    if config.provider == "cuda":
        providers = [(PROVIDERS["cuda"], {"device_id": 0, "cudnn_conv_algo_search": config.cudnn_conv_algo_search}),
                     PROVIDERS["cpu"]]
    start = time.perf_counter_ns()
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise SessionError(f"onnxruntime cannot load {path}: {error_line(exc)}") from exc
    create_ms = (time.perf_counter_ns() - start) / 1e6
    if session.get_providers()[0] != provider_name(config.provider):
        raise SessionError(f"{path}: asked for {provider_name(config.provider)}, the session got {session.get_providers()}")
    return session, create_ms


def batch_mismatch(session, batch_size: int) -> str | None:
    """Why this session cannot take a batch of ``batch_size`` (a fixed batch dim), or None."""
    dim = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None
    if isinstance(dim, int) and dim != batch_size:
        return f"the file fixes the batch dimension to {dim}"
    return None


def make_feed(session, shapes, batch_size: int, seed: int = 0, arrays: dict | None = None) -> dict[str, np.ndarray]:
    """A seeded input per session input at ``batch_size``, in its dtype (``verify.inputs.random_input``:
    floats N(0, 1), integers and bools 0 or 1); or, where ``arrays`` ({input name: array}; a one-input file takes
    the only one) has one, that array, its rows repeated or cut to ``batch_size`` (``verify.inputs.batch_of``).

    ``shapes``: a sample shape (without the batch axis) for a one-input file, or {input name: shape} for a file
    with several (the batch axis replaced by ``batch_size`` where the file declares it symbolic, and on the
    first input, whose fixed batch ``batch_mismatch`` has checked).
    """
    from ..verify.inputs import batch_of, random_input

    metas = session.get_inputs()
    if isinstance(shapes, dict):
        missing = [m.name for m in metas if m.name not in shapes]
        if missing:
            raise SessionError(f"input {missing[0]!r} has no shape (the shapes given: {', '.join(shapes)})")
        full = [tuple(shapes[m.name]) for m in metas]
    elif len(metas) != 1:
        raise SessionError(f"this model takes {len(metas)} inputs ({', '.join(m.name for m in metas)}); "
                           "give a shape per input")
    else:
        full = [(batch_size, *shapes)]
    feed = {}
    for k, (meta, shape) in enumerate(zip(metas, full)):
        dtype = ORT_DTYPES.get(meta.type)
        if dtype is None:
            raise SessionError(f"input {meta.name!r} has type {meta.type}; bench feeds float, integer and bool "
                               "tensors")
        if meta.shape and (k == 0 or not isinstance(meta.shape[0], int)):
            shape = (batch_size, *shape[1:])
        problem = shape_mismatch(meta.shape, shape)
        if problem:
            raise SessionError(f"input {meta.name!r} has shape {meta.shape}, the input shape is {list(shape)} "
                               f"({problem})")
        given = (arrays or {}).get(meta.name) if len(metas) > 1 else next(iter((arrays or {}).values()), None)
        if given is not None:
            given = batch_of(given, batch_size) if shape != tuple(given.shape) else given
            problem = shape_mismatch(meta.shape, given.shape)
            if problem:
                raise SessionError(f"input {meta.name!r} has shape {meta.shape}, the array given has shape "
                                   f"{list(given.shape)} ({problem})")
        feed[meta.name] = random_input(shape, dtype, seed + k) if given is None else given.astype(dtype, copy=False)
    return feed


def make_runner(session, provider: str, feed: dict[str, np.ndarray]):
    """A no-argument callable that runs one inference on ``feed`` ({input name: array}).

    CPU: ``session.run`` (no copies involved). CUDA: each input is copied to the
    device once, inputs and outputs are bound there, and each call is one
    ``run_with_iobinding`` (which synchronizes the device before returning).
    """
    if provider != "cuda":
        return lambda: session.run(None, feed)
    import onnxruntime as ort

    binding = session.io_binding()
    on_device = {name: ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0) for name, x in feed.items()}
    for name, value in on_device.items():
        binding.bind_ortvalue_input(name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", 0)

    def run():
        session.run_with_iobinding(binding)
        return on_device  # keeps the device buffers alive as long as the runner

    return run
