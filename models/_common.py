"""Small helpers shared by the zoo's architectures."""
from __future__ import annotations


def scaled(channels: int, width_mult: float, divisor: int = 8) -> int:
    """``channels * width_mult`` rounded to a multiple of ``divisor`` (never below it,
    never more than 10% under the exact value), as MobileNet's ``_make_divisible``.

    Multiples of 8 keep whitening groups of 8/16 dividing every width.
    """
    if width_mult == 1.0:
        return channels
    exact = channels * width_mult
    rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * exact:
        rounded += divisor
    return rounded
