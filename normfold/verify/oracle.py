"""The oracle: the original model, as float64 ground truth and as its own low-precision reference.

verify() needs two things of the original model on a batch: its outputs in
float64 (``run``, the ground truth) and its outputs in the checked dtype
(``reference``, whose error against ``run`` sets the tolerance). Two oracles
provide them:

* ``TorchOracle(model)``: an ``nn.Module`` run eagerly on CPU, on a copy cast to
  float64 / to the dtype (each made once, on first use; the model itself is
  never changed);
* ``OnnxOracle(path)``: an .onnx file, evaluated in float64 by onnx.reference
  on a float64 copy of its graph (float64_graph.py), and run as it is on
  onnxruntime's CPU provider for the reference. A file onnx.reference cannot
  evaluate (custom-domain ops such as com.microsoft's FusedConv or
  DynamicQuantizeLSTM, an op it does not implement) falls back to a float32
  oracle (float32_graph.py): the file on onnxruntime with graph optimizations
  off is the truth, and the reference is its spread over other float32 runs.
  ``precision`` says which ("float64", or the file's dtype), ``claim`` what a
  pass is then worth (None for float64).

Outputs are flat lists of float64 arrays, in the order the ONNX exporter
flattens nested outputs (torch's pytree: tuples, lists and dicts in order).
Anything that can ``run`` a batch this way can be an oracle.

Both run the float64 model ``ORACLE_CHUNK`` samples at a time. A float64
convolution has no oneDNN kernel on CPU: torch unfolds its input (im2col)
into a buffer that grows with the batch, and onnx.reference does the same in
numpy. Measured on ResNet-18 at width 1/4, 64 samples at 224x224 in one batch
raised the process's peak RSS by 1.08 GB; in chunks of 8 the buffer is an
eighth of that. Outputs without a batch axis are computed on the whole batch.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from .._messages import typed_line
from .float32_graph import SPREAD_RUNS, Float32Graph, with_outputs
from .float64_graph import Float64Graph, OracleError
from .session import SessionError, open_session, run_session
from .signature import read_onnx, signature_of
from .tolerance import K

Batch = Sequence[np.ndarray]
ORACLE_CHUNK = 8


class Oracle(Protocol):
    description: str    # what the ground truth is, for the report's rule line
    precision: str      # the dtype the ground truth is computed in: "float64", or "float32" for a fallback

    def run(self, batch: Batch) -> list[np.ndarray]:
        """The original model's outputs in float64."""

    def reference(self, batch: Batch, dtype: np.dtype) -> list[np.ndarray]:
        """The original model's outputs computed in ``dtype`` (returned as float64 arrays)."""


class TorchOracle:
    description = "original model in float64"
    precision = "float64"
    claim = None

    def __init__(self, model: nn.Module):
        self.model = model
        self._casts: dict[torch.dtype, nn.Module] = {}

    def run(self, batch: Batch) -> list[np.ndarray]:
        work = self.cast(torch.float64)
        return in_chunks(lambda b: run_eager(work, _tensors(b), torch.float64), batch)

    def reference(self, batch: Batch, dtype: np.dtype) -> list[np.ndarray]:
        dtype = _TORCH_DTYPES[np.dtype(dtype)]
        return run_eager(self.cast(dtype), _tensors(batch), dtype)

    def cast(self, dtype: torch.dtype) -> nn.Module:
        """The model's copy at ``dtype`` (cast_copy), made once: later calls run the same copy."""
        if dtype not in self._casts:
            self._casts[dtype] = cast_copy(self.model, dtype)
        return self._casts[dtype]


class OnnxOracle:
    """The original .onnx file: in float64 by onnx.reference, or, where that cannot evaluate it, in float32
    on onnxruntime (see the module docstring); ``why`` says why not float64 (None when float64)."""

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, where: str | None = None,
                 path: str | os.PathLike | None = None):
        if isinstance(model, onnx.ModelProto):
            self.where = where or "the original ONNX model"
            self.signature = signature_of(model, self.where)
        else:
            self.where = where or str(Path(model))
            self.signature = read_onnx(model)
            path = model
        self.path = path    # the file (given, or ``path``): sessions open from it, with its external data
        self.proto = self.signature.proto
        self.dtype = self.signature.np_dtype    # the dtype its reference runs in
        self._sessions: dict[str, object] = {}
        self._evaluated = False
        self.why: str | None = None
        try:
            self.graph: Float64Graph | Float32Graph = Float64Graph(self.proto, self.where)
        except OracleError as exc:
            self._fall_back(exc)

    @property
    def precision(self) -> str:
        return "float64" if self.why is None else self.dtype.name

    @property
    def description(self) -> str:
        if self.why is None:
            return "original ONNX graph in float64 (onnx.reference)"
        return f"original ONNX file in {self.dtype.name} on onnxruntime CPU, optimizations off ({self.why})"

    @property
    def claim(self) -> str | None:
        """What a pass is worth with the fallback oracle, for the report (None with the float64 one)."""
        if self.why is None:
            return None
        name = self.dtype.name
        return (f"{name} oracle: the original's error is its spread over other {name} runs of itself "
                f"({'; '.join(SPREAD_RUNS)}), not its distance from float64: a pass says the checked file "
                f"is within {K:g}x that spread (plus the 64-ulp floor) of the original, and cannot see rounding "
                "error the original file itself has")

    def run(self, batch: Batch, names: list[str] | None = None) -> list[np.ndarray]:
        try:
            if names:     # intermediate tensors need not have a batch axis: one run
                out = self.graph.run(batch, names)
            else:
                out = in_chunks(self.graph.run, batch) if self.why is None else self.graph.run(batch)
        except OracleError as exc:
            if self._evaluated:    # one oracle per check: never switch after a float64 result
                raise
            self._fall_back(exc)
            return self.run(batch, names)
        self._evaluated = True
        return out

    def reference(self, batch: Batch, dtype: np.dtype, names: list[str] | None = None,
                  provider: str = "cpu") -> list[np.ndarray]:
        """The original file on onnxruntime (its outputs, or the tensors ``names``), as float64 arrays;
        with the fallback oracle, per output the run of its spread farthest from the truth."""
        if np.dtype(dtype) != self.dtype:
            raise SessionError(f"{self.where} is a {self.dtype.name} model; its reference cannot run in "
                               f"{np.dtype(dtype).name} (compare files of the same dtype)")
        if self.why is not None:
            return self.graph.spread(batch, names, provider)
        if names:
            session = open_session(with_outputs(self.proto, names).SerializeToString(), provider)
        else:
            session = self.session(provider)
        return [np.asarray(v, dtype=np.float64) for v in run_session(session, tuple(batch), names)]

    def session(self, provider: str = "cpu"):
        """onnxruntime's session of the original on ``provider``, opened once (SessionError naming the file)."""
        if provider not in self._sessions:
            model = self.path or self.proto.SerializeToString()   # no bytes of a model over 2 GB
            self._sessions[provider] = open_session(model, provider, where=self.where)
        return self._sessions[provider]

    def _fall_back(self, exc: OracleError) -> None:
        """Evaluate the file on onnxruntime in its own dtype from now on; remember why."""
        self.why = exc.reason
        self.graph = Float32Graph(self.proto, self.where, self.path)


def as_oracle(model) -> Oracle:
    """An oracle from an ``nn.Module``, an .onnx path or ModelProto, or an oracle itself."""
    if isinstance(model, nn.Module):
        return TorchOracle(model)
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        return OnnxOracle(model)
    if callable(getattr(model, "run", None)) and callable(getattr(model, "reference", None)):
        return model
    raise TypeError(f"the oracle must be a torch.nn.Module, an .onnx file or an Oracle, got {type(model).__name__}")


def in_chunks(run, batch: Batch, chunk: int = ORACLE_CHUNK) -> list[np.ndarray]:
    """``run(batch)`` computed ``chunk`` samples at a time and concatenated; on the whole batch at once
    when an output has no batch axis to concatenate along."""
    n = len(batch[0]) if len(batch) else 0
    if n <= chunk:
        return run(batch)
    parts = [run(tuple(x[i:i + chunk] if np.ndim(x) and len(x) == n else x for x in batch))   # not a weight input
             for i in range(0, n, chunk)]
    sizes = [min(chunk, n - i) for i in range(0, n, chunk)]
    if any(o.ndim == 0 or o.shape[0] != k for part, k in zip(parts, sizes) for o in part):
        return run(batch)
    return [np.concatenate(outs) for outs in zip(*parts)]


def eager_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> list[np.ndarray]:
    """Run a copy of ``model`` in eval mode at ``dtype``; outputs flattened to a list."""
    return run_eager(cast_copy(model, dtype), inputs, dtype)


def cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in eval mode at ``dtype`` (the caller's model is untouched)."""
    return copy.deepcopy(model).eval().to(dtype)


def run_eager(work: nn.Module, inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> list[np.ndarray]:
    """``work``'s outputs (float64 arrays, flattened in pytree order) on ``inputs`` cast to ``dtype``.

    An error in the model's own forward (at a batch size or input the first check did not try) is an
    OracleError naming the model and the input shapes, not a traceback out of verify."""
    try:
        with torch.no_grad():
            out = work(*(t.to(dtype) if t.is_floating_point() else t for t in inputs))
    except Exception as exc:
        shapes = ", ".join(str(list(t.shape)) for t in inputs)
        raise OracleError(f"{type(work).__name__}.forward failed on inputs of shape {shapes} "
                          f"in {str(dtype).removeprefix('torch.')}: {typed_line(exc)}") from exc
    return [t.detach().cpu().double().numpy() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                 np.dtype(np.float64): torch.float64}


def _tensors(batch: Batch) -> tuple[torch.Tensor, ...]:
    return tuple(t if isinstance(t, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(t)) for t in batch)
