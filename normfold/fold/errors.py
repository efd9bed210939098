"""The one error both front ends raise when a model cannot be analysed at all."""


class FoldError(RuntimeError):
    """The model could not be analysed (torch.fx cannot trace it, the ONNX file cannot be read)."""
