"""Fold frozen normalization statistics into neighbouring Conv/ConvTranspose/Linear weights.

``algebra``: the float64 math; ``rules/``: one fold rule per file (what it
matches, why not, the rewrite); ``trace``: torch.fx with norms as leaves;
``graph``: the pass that finds sites and dispatches; ``report``: the outcome.
"""
from .algebra import ChannelMap, fold_into_producer
from .graph import FoldResult, as_input_tuple, fold
from .report import FoldReport, Folded, Skipped
from .trace import FoldError

__all__ = [
    "ChannelMap", "FoldError", "FoldReport", "FoldResult", "Folded", "Skipped",
    "as_input_tuple", "fold", "fold_into_producer",
]
