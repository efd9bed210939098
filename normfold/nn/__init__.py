"""Training-time normalization layers with frozen channel maps for inference."""
from .affine import NotFoldableError, inference_affine, is_norm, register_norm
from .centering import Centering
from .factory import NORMS, create_norm
from .iternorm import IterNorm

__all__ = [
    "Centering",
    "NORMS",
    "create_norm",
    "IterNorm",
    "NotFoldableError",
    "inference_affine",
    "is_norm",
    "register_norm",
]
