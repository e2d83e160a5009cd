"""Static analysis of ONNX graphs: shapes, MACs, parameter and quantization summaries.

Pure library code on in-memory ``onnx.ModelProto`` objects: nothing here prints,
imports torch, mutates the caller's model or reads external weight data.
"""

from edgeopt.analysis.macs import (
    MacsReport,
    NodeCost,
    compute_macs,
    get_op_cost,
    macs_by_op_type,
    register_op_cost,
    total_macs,
)
from edgeopt.analysis.shapes import (
    DeclaredTensor,
    TensorInfo,
    model_inputs,
    model_outputs,
    resolve_shapes,
)
from edgeopt.analysis.summary import GraphSummary, summarize_graph

__all__ = [
    "DeclaredTensor",
    "GraphSummary",
    "MacsReport",
    "NodeCost",
    "TensorInfo",
    "compute_macs",
    "get_op_cost",
    "macs_by_op_type",
    "model_inputs",
    "model_outputs",
    "register_op_cost",
    "resolve_shapes",
    "summarize_graph",
    "total_macs",
]
