"""Activation ranges without data (DFQ, Nagel et al. 2019): from the frozen statistics, written where
onnxruntime's quantizer reads calibrated ranges (its calibration cache), so that it calibrates nothing.

Every tensor statistics.propagate reaches gets [low, high] = its per-channel
range, widest over the channels. The graph input has no statistics of its
own: ``input_range`` (low, high) says what values it takes (for an image
normalized with ImageNet's mean and std, about -2.1 to 2.6); it is treated as
uniform on that range. A tensor the propagation does not reach has no range,
and the quantizer leaves it in float (listed in the report).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .statistics import Moments


def input_moments(input_range: Sequence[float], channels: int) -> Moments:
    """Uniform on [low, high] in every channel: mean (low + high) / 2, std (high - low) / sqrt(12)."""
    low, high = float(input_range[0]), float(input_range[1])
    ones = np.ones(channels)
    return Moments(ones * (low + high) / 2, ones * (high - low) / np.sqrt(12.0), ones * low, ones * high)


def write_cache(known: dict[str, Moments], path: str | os.PathLike) -> int:
    """Write the ranges as onnxruntime's calibration cache (MinMax); how many tensors got one."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    ranges = {name: (np.float32(min(float(m.low.min()), 0.0)), np.float32(max(float(m.high.max()), 0.0)))
              for name, m in known.items() if m.low.size and np.all(np.isfinite(m.low)) and np.all(np.isfinite(m.high))}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), path)
    return len(ranges)
