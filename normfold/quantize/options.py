"""What `normfold quantize` does, as one value: the quantizer's settings and which DFQ steps run.

Defaults (chosen by measurement, docs/quantize.md): weights s8 per output
channel, activations u8 (onnxruntime's recommendation for x86 with VNNI),
percentile calibration at 99.999 (MinMax lets one outlier set a tensor's
range; PP-OCR's recognizer drops from 100 % to 18 % exact match with it),
cross-layer equalization and bias correction on, the accuracy search on.
High-bias absorption is off: with bounds from the calibration data's minima it
took PP-OCR's recognizer from 72 % to 54 % exact match (values of other inputs
below the bound are clipped); ``absorb_high_bias=True`` turns it on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

CALIBRATIONS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("u8", "s8")


class QuantizeError(ValueError):
    """Bad input to quantize: one line naming the file, flag or argument."""


@dataclass(frozen=True)
class QuantOptions:
    per_channel: bool = True               # weights: s8 per output channel (False: one scale per tensor)
    activations: str = "u8"                # "u8" (asymmetric) or "s8" (symmetric)
    calibration: str = "percentile"        # "minmax", "percentile" or "entropy"
    percentile: float = 99.999             # for calibration="percentile"
    calibration_samples: int = 256         # at most this many samples of the calibration set
    equalize: bool = True                  # cross-layer equalization (equalize.py)
    bias_correction: bool = True           # bias_correction.py
    absorb_high_bias: bool = False         # DFQ's high-bias absorption after equalization (off: measured to hurt)
    search: bool = True                    # keep the worst nodes in float until the gate holds (search.py)
    max_float: int | None = None           # at most this many nodes kept in float by the search
    op_types: tuple[str, ...] | None = None  # quantize only these op types (None: all onnxruntime quantizes)
    sigmas: float = 6.0                    # data-free ranges: mean +- sigmas * std of the frozen statistics

    def __post_init__(self):
        if self.activations not in ACTIVATION_TYPES:
            raise QuantizeError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activations!r}")
        if self.calibration not in CALIBRATIONS:
            raise QuantizeError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise QuantizeError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.calibration_samples < 1:
            raise QuantizeError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if not self.sigmas > 0:
            raise QuantizeError(f"sigmas must be > 0, got {self.sigmas}")
        if self.max_float is not None and self.max_float < 0:
            raise QuantizeError(f"max_float must be >= 0, got {self.max_float}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_types"] = list(self.op_types) if self.op_types else None
        return d
