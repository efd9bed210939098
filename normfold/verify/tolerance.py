"""The pass rule: a fold may add no error beyond what the dtype already costs.

For each output, with the float64 run of the original model as the oracle and
the original model run eagerly in the checked dtype (float32, or float16 for
an fp16 export) as the reference:

    e_ref   = max |original_<dtype> - oracle|          the model's own rounding error
    floor   = max(FLOOR_ULPS * eps(float32), eps(dtype)) * max |oracle|
    allowed = K * e_ref + floor

A run (the folded model, the ONNX file on a provider) passes when its max abs
error is <= allowed.

Why K = 8: a folded model rounds differently (W' = A W is rounded once instead
of W and A separately) and onnxruntime sums in another order, so its error is
of the same order as e_ref but not equal to it. Measured on the zoo (11 models:
ResNet-18 with BN/BRN/centering/GN/IterNorm/decorrelation/PCA/Cholesky,
pre-activation ResNet-18, MobileNetV2, ConvNeXt-LN; 1x3x64x64 inputs, batch 1
and 3, ORT CPU), the folded eager and folded ONNX runs land at 0.57-2.0x e32.
In float16 they land at 0.39-1.1x e16, and far below it (0.001-0.004x) for
whitening models, whose unfolded fp16 run loses much more than the folded one.
A wrong fold is far outside: one layer's weight scaled by 1.001 gives ~10^4x
e32 (the tiny model of tests/verify), one element off by 5% of the layer's max ~7500x.
So 8 leaves margin on both sides.

Why the floor: a model whose reference run happens to be exact on these inputs
(e_ref = 0, e.g. an identity) would otherwise demand bit-exactness. 64 float32
ulps of the output scale (7.6e-6 relative) is above summation-reordering noise
and below any real fold error; an fp16 output is never closer than one fp16
ulp (9.8e-4 relative), so that is its floor. tests/conftest.py states the same
rule independently for the tests.

Explicit ``atol``/``rtol`` replace the rule: allowed = atol + rtol * max|oracle|.

Where the original is an .onnx file onnx.reference cannot evaluate (custom-domain
ops), the oracle is that file on onnxruntime in float32 with optimizations off,
and e_ref is its spread over other float32 runs of itself: at ORT_ENABLE_ALL,
and with the input one ulp away (float32_graph.py). The rule is the same; the
claim is weaker (the truth has the original's own float32 error, unseen), and
the report says so (``VerifyReport.oracle``, ``claim``).

Over a whole validation set (stream.py) the float64 oracle runs on a sample
only, and every sample compares a run with the original in the same dtype.
With e_ref and S = max|oracle| measured on the oracle's sample, sample i of
output scale s_i = max|original_i| passes when

    max |run_i - original_i| <= (K * e_ref + floor(S) + e_ref) * max(1, s_i / S)

A run within the rule of the oracle (K e_ref + floor) and an original within
e_ref of it differ by at most the sum (triangle inequality); rounding error
grows with the magnitude of the output, so a sample whose outputs are larger
than any the oracle saw gets a proportionally larger allowance. Explicit
atol/rtol: atol + rtol * s_i.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K = 8.0
FLOOR_ULPS = 64.0


@dataclass(frozen=True)
class Tolerance:
    atol: float | None = None
    rtol: float | None = None

    @property
    def explicit(self) -> bool:
        return self.atol is not None or self.rtol is not None

    def allowed(self, ref_error: float, scale: float, dtype=np.float32) -> float:
        """Largest max-abs error that passes for an output of magnitude ``scale``."""
        if self.explicit:
            return (self.atol or 0.0) + (self.rtol or 0.0) * scale
        return K * ref_error + floor(scale, dtype)

    def per_sample(self, ref_error: float, scale: float, sample_scales: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Largest max |run_i - original_i| that passes, per sample of output scale ``sample_scales``."""
        s = np.asarray(sample_scales, dtype=np.float64)
        if self.explicit:
            return (self.atol or 0.0) + (self.rtol or 0.0) * s
        growth = np.maximum(1.0, s / scale) if scale > 0 else np.ones_like(s)
        return (self.allowed(ref_error, scale, dtype) + ref_error) * growth

    def describe_per_sample(self, dtype=np.float32, oracle_samples: int = 0) -> str:
        if self.explicit:
            return (f"per sample: max|run - original| <= {self.atol or 0.0:g} + {self.rtol or 0.0:g} "
                    "* max|original|")
        return (f"per sample: max|run - original| <= ({K:g} * e_ref + {floor(1.0, dtype):.2g} * S + e_ref) "
                f"* max(1, max|original| / S); e_ref, S = the original's error and max|oracle| on the "
                f"{oracle_samples} samples of the float64 oracle")

    def describe(self, dtype=np.float32, oracle: str = "original model in float64") -> str:
        if self.explicit:
            return f"max_abs <= {self.atol or 0.0:g} + {self.rtol or 0.0:g} * max|oracle|; oracle = {oracle}"
        name = np.dtype(dtype).name
        return (
            f"max_abs <= {K:g} * ({name} original's error) + {floor(1.0, dtype):.2g} * max|oracle|"
            f"; oracle = {oracle}"
        )


def floor(scale: float, dtype=np.float32) -> float:
    return max(FLOOR_ULPS * float(np.finfo(np.float32).eps), float(np.finfo(dtype).eps)) * scale


def minimum_passing(max_abs: float, ref_error: float, scale: float, dtype=np.float32) -> dict:
    """The smallest settings that would have passed: atol alone, rtol alone, or k in the rule."""
    need_k = (max_abs - floor(scale, dtype)) / ref_error if ref_error > 0 else float("inf")
    return {
        "atol": max_abs,
        "rtol": max_abs / scale if scale > 0 else float("inf"),
        "k": max(need_k, 0.0),
    }
