"""INT8 that keeps its accuracy: fold, equalize, quantize (onnxruntime, QDQ), correct biases, search, measure.

Pipeline (``quantize``)::

    model --fold--> folded fp32 --equalize (DFQ)--> --quantize (onnxruntime QDQ, calibrated)-->
          --bias correction--> --search: worst nodes kept in float until the gate holds--> INT8
          and at each step: agreement / accuracy against fp32 on the user's data, then latency.

equalize.py and bias_correction.py are float64 algebra on the ONNX graph;
qdq.py wraps ``onnxruntime.quantization.quantize_static``; search.py ranks
nodes with ``onnxruntime.quantization.qdq_loss_debug``; evaluate.py and
metric.py measure; report.py says what happened. Datasets are
``normfold.verify``'s streaming readers.

``normfold.quantize`` is the function (``normfold.quantize(model, data)``):
reach the modules with ``from normfold.quantize.equalize import equalize``
(``import normfold.quantize.equalize as m`` resolves the attribute, the function).
"""
from .api import quantize
from .evaluate import Evaluation
from .metric import Metric, load_metric, top1
from .options import QuantizeError, QuantOptions
from .report import QuantReport

__all__ = ["Evaluation", "Metric", "QuantOptions", "QuantReport", "QuantizeError", "load_metric", "quantize", "top1"]
