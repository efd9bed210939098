"""Training-time normalization layers with frozen channel maps for inference."""
from .affine import NotFoldableError, inference_affine, is_norm, register_norm
from .batchrenorm import BatchRenorm
from .centering import Centering
from .composite import register_composite
from .factory import NORMS, create_norm
from .group_whitening import GroupWhitening
from .iternorm import IterNorm
from .layernorm import LayerNorm2d
from .scaling import Scaling
from .whitening import CholeskyWhitening, Decorrelating, PCAWhitening, ZCAWhitening
from .ws_conv import WSConv2d

__all__ = [
    "BatchRenorm",
    "Centering",
    "CholeskyWhitening",
    "Decorrelating",
    "GroupWhitening",
    "IterNorm",
    "LayerNorm2d",
    "NORMS",
    "NotFoldableError",
    "PCAWhitening",
    "Scaling",
    "WSConv2d",
    "ZCAWhitening",
    "create_norm",
    "inference_affine",
    "is_norm",
    "register_composite",
    "register_norm",
]
