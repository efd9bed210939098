"""Whether onnxruntime really runs on CUDA here, found without normfold's code.

The CUDA tests decide from this whether they run, and a test checks that normfold's own answer
(``normfold.verify.cuda_problem``, ``normfold.bench.session.cuda_unavailable_reason``) agrees: a
wrong "unavailable" from normfold must not skip the GPU test and pass the refusal test on a GPU.
"""
from __future__ import annotations

import functools

import numpy as np
from onnx import TensorProto, helper


@functools.cache
def cuda_probe() -> str | None:
    """None when a one-node session on onnxruntime's CUDAExecutionProvider runs on it and gives the right
    values; otherwise why not."""
    import onnxruntime as ort

    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.arange(4, dtype=np.float32)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
        (y,) = session.run(None, {"x": x})
    except Exception as exc:
        return f"a one-node onnxruntime session on CUDAExecutionProvider fails: {type(exc).__name__}: {exc}"
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return (f"onnxruntime {ort.__version__} fell back to {session.get_providers()} for a session on "
                "CUDAExecutionProvider: CUDA does not start here")
    if not np.array_equal(y, -x):
        return f"a one-node CUDA session computes Neg({x.tolist()}) = {y.tolist()}"
    return None
