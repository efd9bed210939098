"""fold_onnx: fold the norms of any .onnx graph with the shared float64 algebra.

Contract (the CLI and verify rely on it):

* ``fold_onnx(model_or_path, *, input_shapes=None, densify=False) -> (onnx.ModelProto, FoldReport)``.
  The input proto or file is never modified.
* ``report.front_end == "onnx"``. Every norm-like site (each BatchNormalization,
  each Add/Sub/Mul/Div with one constant operand, each channel-mixing region)
  appears once: in ``report.folded`` (``norm``: the site's node name(s), joined by
  ",", after the PyTorch module path(s) where the dynamo exporter recorded them:
  ``"features.0.1 (node_batch_norm_3)"``; ``into``: the Conv/ConvTranspose/Gemm/MatMul node), in
  ``report.tidied`` (``rule == "identity"``: a chain whose map is exactly y = x, removed; no norm)
  or in ``report.skipped`` with the reason. Scalar arithmetic inside an activation
  (GELU's ``/ sqrt 2``, ``+ 1``, ``* 0.5``; Hardswish's ``+ 3``, ``/ 6``) or on a
  statistic (LayerNorm's ``var + eps``) is no norm: listed only when it folds
  (``activation``).
* A weight or bias that several layers read is folded into a copy per layer
  that takes a fold (``copies``: the bytes added are ``report.added_bytes``, and
  a copy beyond the bound is refused); a weight that is quantized (a
  DequantizeLinear's output) takes no fold, and a quantized graph gets a
  warning saying so (``quantized``).
* Nodes that are not rewritten keep their names and output tensor names; a
  tensor whose values change gets a new name. The folded graph can be compared
  with the original tensor by tensor. Besides folds, Identity nodes go and a
  Reshape target computed from shapes is stored where it is the same at every
  batch size (``tidy``), as the peer optimizers do.
* ``FoldError`` (one line naming the file or input) for a file that is not
  ONNX, whose external data is missing, truncated or outside its folder, a
  ModelProto that refers to external data, or symbolic dims that a site
  needs when ``input_shapes`` does not fix them. An op or opset the pass does
  not know skips only that site, with the reason.
* The output passes ``onnx.checker.check_model(full_check=True)``.

Layout: ``load`` (read, refuse, working IR copy), ``shapes`` (static shapes as
evidence), ``sites`` with ``norms`` and ``region`` (what each site computes),
``layout`` (the layout ops in numpy), ``maps`` (a channel map on an axis), ``through``
(a map across a channel-preserving Reshape/Flatten/Squeeze/Transpose), ``graph``
(what every part asks of the IR), ``rules/`` (one fold per file), ``copies`` (shared
weights), ``quantized`` (quantized weights), ``activation`` (what is no site),
``tidy`` (the two rewrites that are no folds), ``fold`` (the pass).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
from typing import Iterator, Mapping, Sequence

import onnx
import onnx_ir as ir
import torch

from ..report import FoldReport
from . import tidy
from .fold import OnnxPass
from .graph import sweep
from .load import keep_value_info, read, working_copy
from .serialize import serialize
from .shapes import infer


def fold_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    densify: bool = False,
) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every foldable norm site of ``model`` (a ModelProto or a path; never modified).

    ``input_shapes`` fixes symbolic input dims (name -> shape); a symbolic
    leading (batch) dim needs none: sites are proven at batch 1 and 2.
    ``densify`` allows a channel-mixing map to make a grouped conv denser.
    Returns the folded model and a report (``front_end == "onnx"``) naming,
    for every site, what it was folded into or why not.
    """
    with _collector_paused():
        return _fold(model, input_shapes, densify)


def _fold(model, input_shapes, densify) -> tuple[onnx.ModelProto, FoldReport]:
    work, report, value_info = _folded_ir(model, input_shapes, densify)   # the working proto goes with its frame
    out = serialize(work)
    keep_value_info(value_info, out)
    return out, report


def _folded_ir(model, input_shapes, densify) -> tuple[ir.Model, FoldReport, list]:
    """The folded onnx-ir model, the report, and the model's value_info."""
    source = read(model)
    shapes = infer(source.skeleton, source.data_inputs, input_shapes, source.label)
    # the shapes as the model declares them (a rewrite that is not a fold must hold for every input)
    declared = functools.cache(lambda: infer(source.skeleton, source.data_inputs, None, source.label)
                               if input_shapes else shapes)
    work = working_copy(source, declared)
    report = FoldReport(front_end="onnx")
    fold_pass = OnnxPass(work, shapes, report, densify=densify)
    tidy.drop_identities(work.graph)
    tidy.constant_reshapes(work.graph, declared, fold_pass.fresh)
    with _one_thread():
        fold_pass.run()
    if fold_pass.regions_folded and input_shapes:
        report.warnings.append(
            f"{fold_pass.regions_folded} channel-mixing region(s) were proven at the given input shapes "
            f"({', '.join(f'{k}={list(v)}' for k, v in input_shapes.items())}); the folded graph keeps the "
            "declared input dims"
        )
    sweep(work.graph)
    return work, report, source.value_info


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the fold (as it was, after).

    The IR is thousands of small linked objects (nodes, values, uses), and
    allocating them triggers the collector, which then walks every object the
    process holds (torch's and onnx's modules included): a quarter of the fold's
    time on a 600-node file. The fold's own garbage is collected after it, as usual.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread for the pass: its matrices are small (C x C, one layer's weight), and
    waking a thread pool costs more than the math (a 32x32 float64 matmul: 16 us on one
    thread, 1.7 ms on two busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
