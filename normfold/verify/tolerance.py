"""The pass rule: a fold may add no error beyond what float32 already has.

For each output, with the float64 run of the original model as the oracle:

    e32     = max |original_fp32 - oracle|          the model's own fp32 error
    floor   = FLOOR_ULPS * eps(float32) * max |oracle|
    allowed = K * e32 + floor

A run (the folded ONNX file on onnxruntime, say) passes when its max abs error
is <= allowed.

Why K = 8: a folded model rounds differently (W' = A W is rounded once instead
of W and A separately) and onnxruntime sums in another order, so its error is
of the same order as e32, not equal to it; measured on the zoo it stays within
1-3x e32. A wrong fold (a weight off by 1e-3 relative) is 100-10^4x e32, so 8
leaves margin on both sides.

Why the floor: a model whose fp32 run happens to be exact on these inputs
(e32 = 0, e.g. an identity) would otherwise demand bit-exactness. 64 ulps of
the output scale is far below any real fold error.

Explicit ``atol``/``rtol`` replace the rule: allowed = atol + rtol * max|oracle|.
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

    def allowed(self, fp32_error: float, scale: float, dtype=np.float32) -> float:
        """Largest max-abs error that passes for an output of magnitude ``scale``."""
        if self.explicit:
            return (self.atol or 0.0) + (self.rtol or 0.0) * scale
        return K * fp32_error + FLOOR_ULPS * float(np.finfo(dtype).eps) * scale

    def describe(self) -> str:
        if self.explicit:
            return f"max_abs <= {self.atol or 0.0:g} + {self.rtol or 0.0:g} * max|oracle|"
        return f"max_abs <= {K:g} * fp32 error + {FLOOR_ULPS:g} * eps(fp32) * max|oracle|"
