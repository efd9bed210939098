"""The ONNX fold rules, one per file, listed explicitly (no import-time registration).

The pass tries ``BACKWARD`` first (into the layer before a norm: always exact),
then ``FORWARD`` (into the layer after it). The rule whose op type matches the
neighbouring layer decides: its rewrite says why not, or folds.
"""
from __future__ import annotations

from . import (
    conv_backward, conv_forward, conv_transpose_backward, gemm_backward, gemm_forward, matmul_backward,
    matmul_forward,
)
from ._base import Layer, Rewrite, Rule, Site

BACKWARD: tuple[Rule, ...] = (conv_backward.RULE, conv_transpose_backward.RULE, gemm_backward.RULE, matmul_backward.RULE)
FORWARD: tuple[Rule, ...] = (conv_forward.RULE, gemm_forward.RULE, matmul_forward.RULE)


def rule_for(rules: tuple[Rule, ...], node) -> Rule | None:
    return next((r for r in rules if r.matches(node)), None)


__all__ = ["BACKWARD", "FORWARD", "Layer", "Rewrite", "Rule", "Site", "rule_for"]
