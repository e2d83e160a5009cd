"""`edgeopt inspect model.tflite`: what the flatbuffer holds, without running it.

Subgraphs and signatures, ops by builtin name, every tensor with its dtype and quantization (per-tensor or
per-axis), whether the model is fully int8 (what Edge TPU and Ethos-U need: every op computing in an
integer type and integer inputs and outputs), float16 weights, bytes by tensor and MACs.
"""

from __future__ import annotations

from typing import Any

from edgeopt.formats.tflite import INTEGER_ACTIVATIONS, Subgraph, TfliteModel, tensor_macs
from edgeopt.graph.tflite_adapter import to_graph

# ops that move or reshape data and compute nothing: their dtype follows their input's
_DATA_MOVEMENT = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "PACK", "UNPACK",
                            "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "GATHER", "PAD", "PADV2", "SHAPE"})
TOP_TENSORS = 10


def _quantization(tensor: Any) -> dict[str, Any] | None:
    q = tensor.quantization
    if q is None:
        return None
    if q.per_axis:
        return {"kind": "per-axis", "axis": q.axis, "channels": len(q.scales), "scale_min": min(q.scales),
                "scale_max": max(q.scales), "zero_points": sorted(set(q.zero_points))}
    return {"kind": "per-tensor", "scale": q.scales[0], "zero_point": q.zero_points[0] if q.zero_points else 0}


def _float_compute(graph: Subgraph, stored: set[int]) -> list[str]:
    """Ops that compute in float: their first activation input (or output) is a float tensor."""
    offenders = []
    for op in graph.operators:
        if op.op in ("QUANTIZE", "DEQUANTIZE"):  # the edges of int8 islands: not compute
            continue
        if op.op in _DATA_MOVEMENT and op.inputs and graph.tensors[op.inputs[0]].dtype in INTEGER_ACTIVATIONS:
            continue
        tensors = [i for i in op.inputs if i >= 0 and i not in stored] or list(op.outputs)
        dtype = graph.tensors[tensors[0]].dtype if tensors else None
        if dtype is None or dtype.startswith(("float", "bfloat")):
            offenders.append(f"{op.op.lower()}_{op.index}")
    return offenders


def summarize_tflite(model: TfliteModel) -> dict[str, Any]:
    graph = model.main
    stored = {t.index for t in graph.tensors if t.buffer_bytes > 0}
    ops: dict[str, int] = {}
    macs_by_op: dict[str, int] = {}
    unknown_macs = []
    for op in graph.operators:
        ops[op.op] = ops.get(op.op, 0) + 1
        macs = tensor_macs(graph, op)
        if macs is None:
            unknown_macs.append(f"{op.op.lower()}_{op.index}")
        elif macs:
            macs_by_op[op.op] = macs_by_op.get(op.op, 0) + macs
    tensors = [{"index": t.index, "name": t.name, "shape": list(t.shape),
                **({"shape_signature": list(t.shape_signature)} if t.shape_signature and -1 in t.shape_signature
                   else {}),
                "dtype": t.dtype, "bytes": t.buffer_bytes, "stored": t.buffer_bytes > 0,
                "quantization": _quantization(t)} for t in graph.tensors]
    float_inputs = [graph.tensors[i].name for i in graph.inputs if graph.tensors[i].dtype not in INTEGER_ACTIVATIONS]
    float_outputs = [graph.tensors[i].name for i in graph.outputs
                     if graph.tensors[i].dtype not in INTEGER_ACTIVATIONS]
    float_ops = _float_compute(graph, stored)
    fp16 = [t.name for t in graph.tensors if t.dtype == "float16" and t.buffer_bytes > 0]
    weight_bytes: dict[str, int] = {}
    for t in graph.tensors:
        if t.buffer_bytes:
            weight_bytes[t.dtype] = weight_bytes.get(t.dtype, 0) + t.buffer_bytes
    largest = sorted((t for t in graph.tensors if t.buffer_bytes), key=lambda t: -t.buffer_bytes)[:TOP_TENSORS]
    custom = model.custom_ops()
    warnings = [f"custom op {name}: stock TFLite runtimes cannot run it without the library that registers it"
                for name in custom]
    if len(model.subgraphs) > 1:
        warnings.append(f"{len(model.subgraphs) - 1} more subgraph(s) (control flow or other signatures): MACs and "
                        "estimates cover the main subgraph")
    # weights and biases: stored tensors, less integer shape operands (an int32 bias of an int8 model has scales)
    params = sum(_elements(t.shape) for t in graph.tensors if t.buffer_bytes and (
        t.dtype not in ("int32", "int64") or t.quantization is not None))
    return {
        "format": "tflite", "schema_version": model.version, "description": model.description,
        "subgraphs": [{"index": g.index, "name": g.name, "operators": len(g.operators), "tensors": len(g.tensors),
                       "inputs": [g.tensors[i].name for i in g.inputs],
                       "outputs": [g.tensors[i].name for i in g.outputs]} for g in model.subgraphs],
        "signatures": [{"key": s.key, "subgraph": s.subgraph, "inputs": list(s.inputs), "outputs": list(s.outputs)}
                       for s in model.signatures],
        "inputs": [_io(graph, i) for i in graph.inputs], "outputs": [_io(graph, i) for i in graph.outputs],
        "op_counts": dict(sorted(ops.items(), key=lambda item: -item[1])),
        "custom_ops": custom,
        "macs_total": sum(macs_by_op.values()) if not unknown_macs else None,
        "macs_by_op": macs_by_op, "macs_unknown_ops": unknown_macs,
        "parameter_count": params,
        "weight_bytes_by_dtype": weight_bytes,
        "largest_tensors": [{"name": t.name, "dtype": t.dtype, "bytes": t.buffer_bytes} for t in largest],
        "float16_weights": fp16,
        "fully_int8": not float_ops and not float_inputs and not float_outputs,
        "float_ops": float_ops, "float_inputs": float_inputs, "float_outputs": float_outputs,
        "metadata": model.metadata,
        "tensors": tensors,
        "neutral_graph_nodes": len(to_graph(model).nodes),
        "warnings": warnings,
    }


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= max(0, d)
    return count


def _io(graph: Subgraph, index: int) -> dict[str, Any]:
    t = graph.tensors[index]
    return {"name": t.name, "shape": list(t.shape_signature or t.shape), "dtype": t.dtype,
            "quantization": _quantization(t)}
