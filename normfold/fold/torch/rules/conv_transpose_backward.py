"""ConvTranspose1d/2d/3d -> norm: fold into the transposed conv's output channels.

The weight is ``(I, O/G, *k)``: output channels are weight dim 1, *per group*
(output channel ``g * O/G + j`` is ``weight[g * I/G : (g+1) * I/G, j]``). In the
per-group view ``K[g, o, i, *k]`` the fold is the same as for a conv:

    K'[g] = A_g K[g]        b' = A b + c

exact for any stride, padding, output_padding, dilation and groups. A map that
mixes channels across groups is densified (``densify=True``) or refused.
"""
from __future__ import annotations

from . import conv_backward
from ._base import CONV_TRANSPOSES, Rule

RULE = Rule("conv-transpose-backward", "backward", CONV_TRANSPOSES, conv_backward.check, conv_backward.rewrite)
