"""Getting a float ONNX model ready for onnxruntime's quantizer, and checking what it did.

Why this exists: ``onnxruntime.quantization`` only quantizes weights that are
*initializers*, and its static quantizer only looks at the *main* graph. Published
models often hold weights as ``Constant`` nodes, or inside ``If``/``Loop``/``Scan``
bodies; then ``quantize_static`` quantizes nothing, the file can even grow, and
nothing warns. What onnxruntime 1.32 does, read from its source:

* ``QuantFormat.QDQ`` (``QDQQuantizer.quantize_model`` in ``qdq_quantizer.py``)
  iterates ``self.model.nodes()``, which is ``ONNXModel.nodes()`` in
  ``onnx_model.py``, i.e. ``model.graph.node``, the main graph only.
  ``extra_options["EnableSubgraph"]`` is never read on this path, so nodes inside
  subgraphs are copied through in float, whatever the options.
* The calibrator (``CalibraterBase.select_tensors_to_calibrate`` and
  ``MinMaxCalibrater.augment_graph`` in ``calibrate.py``) only looks at
  ``model.graph.node``, so tensors inside subgraphs never get a range.
* ``QuantFormat.QOperator`` with ``EnableSubgraph`` (``ONNXQuantizer.quantize_node_with_sub_graph``
  / ``quantize_subgraph`` in ``onnx_quantizer.py``) does recurse, but static
  mode needs ranges that subgraph tensors never have. A subgraph MatMul whose
  weight is not an initializer crashes in ``operators/matmul.py``
  (``QLinearMatMul.quantize``: ``TypeError: 'NoneType' object is not iterable``).
  One whose weight *is* an initializer gets no output range, and the result fails
  ``_clean_initializers_helper`` with ``RuntimeError: Invalid model with unknown
  initializers/tensors`` when the branch reads a main-graph tensor that the
  quantizer renamed.
* Weights: ``BaseQuantizer.is_valid_quantize_weight`` / ``ONNXQuantizer.__quantize_inputs``
  look weights up in ``self.model.initializer()``: the current graph's initializers
  (the wrapped subgraph's own, for a sub-quantizer), then the parent quantizer's.
  A ``Constant`` node's output is not an initializer. The QDQ quantizer calibrates
  it and puts a per-tensor *activation* QuantizeLinear/DequantizeLinear pair after
  it, so the float weight stays in the file and the model grows.
* ``quantize_dynamic(..., extra_options={"EnableSubgraph": True})`` does quantize
  MatMul nodes inside subgraphs (MatMulInteger), provided their weights are
  initializers of that subgraph or of an enclosing graph.
* Beware: ``quantize_static`` given a ``ModelProto`` saves *that object* with
  ``onnx.save_model(..., save_as_external_data=True)`` (``quantize.py``, before
  ``create_calibrator``), which rewrites its large initializers in place into
  references to a temporary file deleted on return. Pass it a copy.

So the preparation here is: turn every ``Constant`` into an initializer *of the graph
it lives in*. In a subgraph that is valid ONNX (IR >= 4), keeps scoping and names
exactly as they were, and is what onnxruntime's sub-quantizer looks up. Moving
subgraph weights to the main graph would gain nothing in 1.32: QDQ still skips the
subgraph node, and QOperator/dynamic find subgraph-local initializers just as well.
For subgraph compute nodes after *static* quantization, :func:`quantize_subgraph_weights`
stores their weights as int8 with a ``DequantizeLinear`` (weights-only), the most
that can be done without calibration ranges inside subgraphs.
"""

from edgeopt.stages.quantize.prepare.biases import unshare_biases
from edgeopt.stages.quantize.prepare.checks import already_quantized, check_quantizable
from edgeopt.stages.quantize.prepare.coverage import NodeCoverage, QuantCoverage, QuantHow, count_quantized_nodes
from edgeopt.stages.quantize.prepare.lift import LiftedGraph, LiftReport, lift_constant_weights, spatial_means_as_global_pool
from edgeopt.stages.quantize.prepare.scopes import (
    Compute,
    Scope,
    compute_nodes,
    const_derived,
    node_key,
    norm_domain,
    walk_scopes,
)
from edgeopt.stages.quantize.prepare.subgraph_weights import quantize_subgraph_weights

__all__ = [
    "Compute",
    "LiftReport",
    "LiftedGraph",
    "NodeCoverage",
    "QuantCoverage",
    "QuantHow",
    "Scope",
    "already_quantized",
    "check_quantizable",
    "compute_nodes",
    "const_derived",
    "count_quantized_nodes",
    "lift_constant_weights",
    "node_key",
    "norm_domain",
    "quantize_subgraph_weights",
    "unshare_biases",
    "spatial_means_as_global_pool",
    "walk_scopes",
]
