"""Fold frozen normalization statistics into neighbouring Conv/Linear weights."""
from .algebra import fold_into_producer
from .graph import FoldError, FoldResult, as_input_tuple, fold
from .report import FoldReport, Folded, Skipped

__all__ = ["FoldError", "FoldReport", "FoldResult", "Folded", "Skipped", "as_input_tuple", "fold", "fold_into_producer"]
