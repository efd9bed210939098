"""onnxsim after the ONNX-graph fold, so the written file has no more nodes than onnxsim alone leaves.

The fold removes norm nodes; onnxsim folds what else is constant (shape
computations on fixed dims, Constant chains, Identity, casts of initializers)
and runs onnxoptimizer's fusions (Conv+BatchNormalization among them). Run on
the folded graph, onnxsim removes what it would remove from the original, and
the norms it cannot fuse (a norm after an activation, before a conv, a
whitening chain) are gone already. That is measured, not a theorem: a fold that
adds a node (an input shift before a padded conv) can leave one more; the
tests check it. onnxsim runs twice: with its default passes, and without
its batched MatMul+Add -> Gemm fusion, which wraps a 3-D MatMul in
Shape/Slice/Concat/Reshape nodes to make it a Gemm (on PP-OCRv4's recognizer,
folded: 292 nodes, 307 with that fusion, 271 without it); the graph with fewer
nodes is kept (the default one on a tie). ``simplify`` returns the folded graph
itself, with the reason, where onnxsim raises (a custom op it cannot infer
shapes for, ...), cannot validate its result, or leaves more nodes than it was
given.

The simplified graph is what gets verified against the original, as a whole
(``verified_simplest``): where it fails the check and the folded graph alone
passes, the folded graph is written instead, and the note says why.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, TypeVar

import onnx

from .._messages import typed_line
from .._quiet import quiet

T = TypeVar("T")
VARIANTS = ((), ("fuse_matmul_add_bias_into_gemm_batched",))   # onnxsim passes skipped, per run


class Simplified(NamedTuple):
    proto: onnx.ModelProto   # onnxsim's graph, or the graph given where onnxsim did not help
    note: str                # what onnxsim did, or why its graph is not used


def simplify(proto: onnx.ModelProto) -> Simplified:
    """onnxsim's graph of ``proto`` with the fewest nodes (VARIANTS), or ``proto`` itself and why not."""
    import onnxsim

    before = len(proto.graph.node)
    best = None
    for skipped in VARIANTS:
        try:
            with quiet():
                out, ok = onnxsim.simplify(proto, skipped_optimizers=list(skipped) or None)
        except Exception as exc:
            return Simplified(proto, f"onnxsim failed ({typed_line(exc)}): kept the folded graph")
        if not ok:
            return Simplified(proto, "onnxsim could not validate its graph: kept the folded graph")
        if best is None or len(out.graph.node) < len(best.graph.node):
            best = out
    after = len(best.graph.node)
    if after > before:
        return Simplified(proto, f"onnxsim gave {after} nodes for {before}: kept the folded graph")
    return Simplified(best, f"onnxsim after the fold: {before} -> {after} nodes")


def verified_simplest(folded: onnx.ModelProto, check: Callable[[onnx.ModelProto], tuple[T, bool]],
                      enabled: bool = True) -> tuple[T, str]:
    """``check``'s result on onnxsim's graph of ``folded``, or on ``folded`` where onnxsim did not help or
    its graph fails ``check`` while ``folded`` passes; and a note saying which and why.

    ``check(proto)`` writes and verifies ``proto``, returning (its result, whether it passed); where it raises
    on onnxsim's graph (onnx.checker, onnxruntime refuse it), the folded graph is checked instead."""
    if not enabled:
        return check(folded)[0], "not simplified (--no-simplify)"
    simplified = simplify(folded)
    if simplified.proto is folded:
        return check(folded)[0], simplified.note
    try:
        result, ok = check(simplified.proto)
    except Exception as exc:    # onnx.checker or onnxruntime refuses onnxsim's graph: the folded one stands
        why = f"{simplified.note}, but its graph was refused ({typed_line(exc)}): kept the folded graph"
        return check(folded)[0], why
    if ok:
        return result, simplified.note
    fallback, fallback_ok = check(folded)    # what is written now, and reported
    if not fallback_ok:
        return fallback, f"{simplified.note}, but its graph failed the check, and so does the folded graph (kept)"
    return fallback, f"{simplified.note}, but its graph failed the check and the folded graph passes: kept that"
