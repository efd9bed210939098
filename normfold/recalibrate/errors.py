"""The one error recalibration raises on bad input: a ValueError whose message names the layer, the data or
the argument (the command line turns it into one line and exit code 2)."""


class RecalibrationError(ValueError):
    """The data does not fit the model, has too few samples, holds NaN, or the model has nothing to recalibrate."""
