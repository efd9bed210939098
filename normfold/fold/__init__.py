"""Fold frozen normalization statistics into neighbouring Conv/ConvTranspose/Linear weights.

Two front ends over one float64 algebra:

``algebra``: the math (pure float64 tensor functions); ``report``: the outcome
both front ends return; ``torch/``: the torch.fx pass over an ``nn.Module``;
``onnx/``: the pass over an ONNX graph (any .onnx file).
"""
from .algebra import ChannelMap, fold_into_producer
from .errors import FoldError
from .onnx import fold_onnx
from .report import FoldReport, Folded, Skipped
from .torch import FoldResult, as_input_tuple, fold

__all__ = [
    "ChannelMap", "FoldError", "FoldReport", "FoldResult", "Folded", "Skipped",
    "as_input_tuple", "fold", "fold_into_producer", "fold_onnx",
]
