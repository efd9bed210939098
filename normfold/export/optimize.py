"""The exporter's graph optimizer, with or without its BatchNorm fusions.

``torch.onnx.export(optimize=True)`` runs ``onnxscript.optimizer.optimize_ir``:
constant folding plus onnxscript's default rewrite rules, three of which are
``FuseBatchNormIntoConv``, ``...IntoConvTranspose`` and ``...IntoGemm``. The
unfolded baseline must differ from the folded export *only* in folding, so it
gets the same optimizer with those three rules left out. Turning the whole
optimizer off instead would also keep the unoptimized decomposition of every
other op (GroupNorm, LayerNorm, reshapes) and credit folding with savings it
did not make.

The default rule list is private in onnxscript (``rewriter._DEFAULT_REWRITE_RULES``,
onnxscript 0.3–0.7); where it is missing, ``BaselineUnavailable`` says so
rather than silently exporting a different baseline.
"""
from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

NORM_FUSIONS = ("FuseBatchNormIntoConv", "FuseBatchNormIntoConvTranspose", "FuseBatchNormIntoGemm")
ITERATIONS = 2  # as optimize_ir's default


class BaselineUnavailable(RuntimeError):
    """This onnxscript does not expose its default rewrite rules."""


def optimize(model: ir.Model, *, keep_norms: bool) -> None:
    """Optimize ``model`` in place as torch.onnx.export does; without BN fusion when ``keep_norms``."""
    from onnxscript import optimizer, rewriter

    if not keep_norms:
        optimizer.optimize_ir(model)
        return
    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:
        raise BaselineUnavailable(
            "onnxscript.rewriter._DEFAULT_REWRITE_RULES is missing in this onnxscript version: "
            "cannot build the unfolded baseline with the exporter's optimizer minus its BN fusion"
        )
    kept = [r for r in rules if getattr(r, "name", None) not in NORM_FUSIONS]
    common_passes.InlinePass()(model)
    for _ in range(ITERATIONS):
        optimizer.fold_constants(model, onnx_shape_inference=True)  # as optimize_ir does
        rewriter.rewrite(model, pattern_rewrite_rules=kept)
        optimizer.remove_unused_nodes(model)
    ir.passes.Sequential(
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(),
        common_passes.RemoveUnusedNodesPass(),
    )(model)
