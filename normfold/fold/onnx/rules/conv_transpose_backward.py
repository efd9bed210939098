"""ConvTranspose -> norm: fold into the transposed conv's output channels.

The weight is ``(I, O/G, *k)``: output channels are weight dim 1, *per group*
(output channel ``g * O/G + j`` is ``weight[g * I/G : (g+1) * I/G, j]``). In the
per-group view ``K[g, o, i, *k]`` (``algebra.to_groups(..., transposed=True)``)
the fold is the conv's:

    K'[g] = A_g K[g]        b' = A b + c

exact for any stride, pads, output_padding, output_shape, dilation and group.
"""
from __future__ import annotations

from . import conv_backward
from ._base import Rewrite, Rule, Site


def rewrite(site: Site) -> Rewrite | str:
    return conv_backward.fold(site, transposed=True)


RULE = Rule("conv-transpose-backward", "backward", ("ConvTranspose",), rewrite)
