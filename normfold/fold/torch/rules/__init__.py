"""The fold rules, one per file, listed explicitly (no import-time registration).

The pass tries ``BACKWARD`` first (into the layer before a norm: always exact),
then ``FORWARD`` (into the layer after it). The first rule whose types match
the neighbouring layer decides: its check says why not, or its rewrite folds.
"""
from __future__ import annotations

from . import conv_backward, conv_forward, conv_transpose_backward, linear_backward, linear_forward
from ._base import Rewrite, Rule, Site

BACKWARD: tuple[Rule, ...] = (conv_backward.RULE, conv_transpose_backward.RULE, linear_backward.RULE)
FORWARD: tuple[Rule, ...] = (conv_forward.RULE, linear_forward.RULE)


def rule_for(rules: tuple[Rule, ...], module) -> Rule | None:
    return next((r for r in rules if r.matches(module)), None)


__all__ = ["BACKWARD", "FORWARD", "Rewrite", "Rule", "Site", "rule_for"]
