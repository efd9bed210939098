"""Population statistics for frozen norm layers: how far off they are (health), and recalibration.

A batch norm's running statistics are an EMA of batch estimates taken while
the weights moved, often on other data; the fold bakes them into the weights.
``statistics_health`` measures them against the population statistics of a
data set, ``recalibrate`` replaces them (precise BN; AdaBN on a deployment
domain), layer by layer in order, in float64; ``recalibrate_onnx`` does the same
for the BatchNormalization nodes of an ONNX graph.
"""
from .conventions import Kept, kept, register_statistics
from .errors import RecalibrationError
from .health import LayerHealth
from .moments import ChannelMoments
from .onnx_graph import onnx_health, recalibrate_onnx
from .report import HealthReport, RecalibrationReport
from .torch_model import recalibrate, statistics_health

__all__ = [
    "ChannelMoments",
    "HealthReport",
    "Kept",
    "LayerHealth",
    "RecalibrationError",
    "RecalibrationReport",
    "kept",
    "onnx_health",
    "recalibrate",
    "recalibrate_onnx",
    "register_statistics",
    "statistics_health",
]
