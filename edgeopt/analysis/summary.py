"""One serialisable summary of an ONNX graph: I/O, parameters, ops, MACs, quantization."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal

import onnx
from onnx import AttributeProto, GraphProto, NodeProto, TensorProto
from pydantic import BaseModel, ConfigDict

from edgeopt.graph.onnx_protos import (
    INTEGER_DTYPES,
    Q_DOMAINS,
    constant_tensor,
    dtype_name,
    external_data_info,
    inline_functions,
    is_integer_op,
    is_op,
    iter_graphs,
    iter_nodes,
    num_elements,
    op_key,
    tensor_bytes,
    uses_external_data,
)
from edgeopt.graph.onnx_macs import compute_macs, macs_by_op_type
from edgeopt.graph.onnx_shapes import (
    DeclaredTensor,
    TensorInfo,
    model_inputs,
    model_outputs,
    resolve_shapes_with_error,
)
from edgeopt.units import plural

__all__ = [
    "DtypeStats",
    "ExternalDataFile",
    "GraphSummary",
    "Producer",
    "QuantizationKind",
    "TensorSpec",
    "summarize_graph",
]

QuantizationKind = Literal["none", "qdq", "qoperator", "dynamic", "weights-only"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """A graph input/output; symbolic dims are kept as their name ("?" when unnamed)."""

    name: str
    shape: list[int | str] | None
    dtype: str | None


class Producer(_Frozen):
    name: str
    version: str


class DtypeStats(_Frozen):
    count: int
    elements: int
    bytes: int


class ExternalDataFile(_Frozen):
    """A file referenced by external-data tensors, with what the model declares for it."""

    location: str
    tensors: int
    bytes: int


class GraphSummary(_Frozen):
    """Static facts about a model; ``model_dump(mode="json")`` gives plain JSON."""

    ir_version: int
    opsets: dict[str, int]  # domain -> version, the default domain shown as "ai.onnx"
    producer: Producer
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    resolved_inputs: list[TensorSpec]  # the concrete input shapes MACs were computed for
    parameter_count: int
    initializers: dict[str, DtypeStats]  # per dtype, subgraphs and external data included
    op_histogram: dict[str, int]  # subgraph nodes included; "com.microsoft.QGemm" style keys
    node_count: int  # all nodes, subgraph nodes included
    macs_total: int  # If counts its larger branch, a Loop body once
    macs_by_op_type: dict[str, int]
    macs_unknown_nodes: list[str]  # "<subgraph path>/<node>" for nodes inside subgraphs
    macs_trip_count_unknown: bool  # a Loop (or a Scan of unknown length) was counted once
    quantization: QuantizationKind
    quantization_detail: str
    quantized_node_count: int  # QOperator/integer ops, or ops fed by DequantizeLinear
    external_data: list[ExternalDataFile]
    warnings: list[str]


# ------------------------------------------------------------------------- tensors

_SMALL_INT_TYPES = frozenset({TensorProto.INT32, TensorProto.INT64})
_SMALL_INT_MAX_ELEMENTS = 16


def _node_tensors(node: NodeProto) -> Iterator[TensorProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == AttributeProto.TENSORS:
            yield from attr.tensors
        elif attr.type == AttributeProto.SPARSE_TENSOR:
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices


def _all_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every TensorProto stored in the model: initializers and node attributes, all graphs."""
    for g in iter_graphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in g.node:
            yield from _node_tensors(node)


def _quantized_data_names(nodes: Sequence[NodeProto]) -> set[str]:
    """Small int tensors that are quantized data (int32 biases), not shapes or axes."""
    names: set[str] = set()
    for node in nodes:
        if is_op(node, "DequantizeLinear", Q_DOMAINS) and node.input:
            names.add(node.input[0])
        elif is_op(node, "QLinearConv") and len(node.input) > 8:
            names.add(node.input[8])
        elif is_op(node, "QGemm", frozenset({"com.microsoft"})) and len(node.input) > 6:
            names.add(node.input[6])
    return names


def _parameter_count(graph: GraphProto, nodes: Sequence[NodeProto]) -> int:
    keep = _quantized_data_names(nodes)

    def counted(name: str, dims: Sequence[int], elem_type: int) -> int:
        n = num_elements(dims)
        is_shape_like = (
            elem_type in _SMALL_INT_TYPES and len(dims) <= 1 and n <= _SMALL_INT_MAX_ELEMENTS
        )
        return 0 if is_shape_like and name not in keep else n

    total = 0
    for g in iter_graphs(graph):
        total += sum(counted(t.name, t.dims, t.data_type) for t in g.initializer)
        total += sum(
            counted(s.values.name, s.dims, s.values.data_type) for s in g.sparse_initializer
        )
    for node in nodes:
        if is_op(node, "Constant") and node.output:
            const = constant_tensor(node)
            if const is not None:
                total += counted(node.output[0], const[0], const[1])
    return total


def _initializer_stats(graph: GraphProto) -> dict[str, DtypeStats]:
    acc: dict[str, list[int]] = {}
    for g in iter_graphs(graph):
        entries = [(t.data_type, num_elements(t.dims), tensor_bytes(t)) for t in g.initializer]
        entries += [
            (
                s.values.data_type,
                num_elements(s.dims),
                tensor_bytes(s.values) + tensor_bytes(s.indices),
            )
            for s in g.sparse_initializer
        ]
        for elem_type, elements, size in entries:
            stats = acc.setdefault(dtype_name(elem_type) or "undefined", [0, 0, 0])
            stats[0] += 1
            stats[1] += elements
            stats[2] += size
    return {
        dtype: DtypeStats(count=c, elements=e, bytes=b)
        for dtype, (c, e, b) in sorted(acc.items(), key=lambda kv: -kv[1][2])
    }


def _external_data(graph: GraphProto) -> list[ExternalDataFile]:
    acc: dict[str, list[int]] = {}
    for tensor in _all_tensors(graph):
        if not uses_external_data(tensor):
            continue
        info = external_data_info(tensor)
        length = info.get("length", "")
        size = int(length) if length.isdigit() else tensor_bytes(tensor)
        stats = acc.setdefault(info.get("location", ""), [0, 0])
        stats[0] += 1
        stats[1] += size
    return [
        ExternalDataFile(location=loc, tensors=n, bytes=b) for loc, (n, b) in sorted(acc.items())
    ]


# -------------------------------------------------------------------- quantization

DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})
WEIGHTS_ONLY_QUANT_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized", "MatMulBnb4", "MatMulFpQ4"})


def _op_list(nodes: Iterable[NodeProto]) -> str:
    counts = Counter(op_key(n.op_type, n.domain) for n in nodes)
    return ", ".join(
        f"{n} {op}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def quantization_kind(
    graph: GraphProto, nodes: Sequence[NodeProto], shapes: Mapping[str, TensorInfo]
) -> tuple[QuantizationKind, str, int]:
    """(kind, detail, number of quantized compute nodes)."""
    q = [n for n in nodes if is_op(n, "QuantizeLinear", Q_DOMAINS)]
    dq = [n for n in nodes if is_op(n, "DequantizeLinear", Q_DOMAINS)]
    dynamic = [n for n in nodes if n.domain in Q_DOMAINS and n.op_type in DYNAMIC_QUANT_OPS]
    integer = [n for n in nodes if is_integer_op(n)]
    weights_only_ops = [n for n in nodes if n.op_type in WEIGHTS_ONLY_QUANT_OPS]

    if dynamic:
        detail = f"activations quantized at run time ({_op_list(dynamic)})"
        return "dynamic", f"{detail}; integer ops: {_op_list(integer) or 'none'}", len(integer)
    if integer:
        return "qoperator", f"quantized operators: {_op_list(integer)}", len(integer)

    weights: dict[str, str] = {}
    for g in iter_graphs(graph):
        weights.update((t.name, dtype_name(t.data_type) or "") for t in g.initializer)
    for node in nodes:
        if is_op(node, "Constant") and node.output and (const := constant_tensor(node)):
            weights[node.output[0]] = dtype_name(const[1]) or ""
    dq_outputs = {n.output[0] for n in dq if n.output}
    wrapped = [
        n
        for n in nodes
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(i in dq_outputs for i in n.input)
    ]
    weight_types = sorted({weights[n.input[0]] for n in dq if n.input and n.input[0] in weights})
    weight_text = f"weights {'/'.join(weight_types)}" if weight_types else "no quantized weights"

    if q and dq:
        act_types = sorted(
            {info.dtype for n in q if (info := shapes.get(n.output[0])) is not None and info.dtype}
        )
        acts = f"activations {'/'.join(act_types) or 'of unknown type'}"
        detail = f"{_op_list(q + dq)} around {plural(len(wrapped), 'op')}; {weight_text}, {acts}"
        return "qdq", detail, len(wrapped)

    dq_on_weights = all(n.input and weights.get(n.input[0], "") in INTEGER_DTYPES for n in dq)
    if (dq or weights_only_ops) and dq_on_weights:
        parts = []
        if dq:
            parts.append(f"{_op_list(dq)} on {weight_text}")
        if weights_only_ops:
            parts.append(f"quantized-weight ops: {_op_list(weights_only_ops)}")
        detail = "; ".join(parts) + "; activations stay in float"
        return "weights-only", detail, len(wrapped) + len(weights_only_ops)
    if dq or q:
        # Quantized tensors enter or leave the graph without a Q/DQ pair inside it.
        detail = f"{_op_list(q + dq)} on activations, no Q/DQ pairs"
        return "qdq", detail, len(wrapped)
    return "none", "no quantization ops", 0


# ------------------------------------------------------------------------- summary


def _spec(t: DeclaredTensor | TensorInfo) -> TensorSpec:
    return TensorSpec(name=t.name, shape=None if t.shape is None else list(t.shape), dtype=t.dtype)


def summarize_graph(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    default_dim: int = 1,
) -> GraphSummary:
    """Summarise ``model`` without mutating it or reading external data.

    ``input_shapes`` fixes symbolic input dims for the MAC count (others become
    ``default_dim``); bad names or shapes raise :class:`~edgeopt.errors.InputError`.
    """
    inputs = model_inputs(model)
    shapes, inference_error = resolve_shapes_with_error(model, input_shapes, default_dim)
    analysed = inline_functions(model)  # same graph resolve_shapes saw
    graph = analysed.graph
    nodes = [ref.node for ref in iter_nodes(graph)]
    macs = compute_macs(analysed, shapes=shapes)
    kind, detail, quantized = quantization_kind(graph, nodes, shapes)

    histogram = Counter(op_key(n.op_type, n.domain) for n in nodes)
    warnings: list[str] = []
    if inference_error:
        warnings.append(f"ONNX shape inference failed, shapes are partial: {inference_error}")
    if macs.trip_count_unknown:
        warnings.append("a loop's trip count is unknown: its body's MACs are counted once")
    if macs.unknown_nodes:
        warnings.append(
            f"{plural(len(macs.unknown_nodes), 'node')} with unknown shapes "
            "left out of the MAC total"
        )

    return GraphSummary(
        ir_version=model.ir_version,
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        producer=Producer(name=model.producer_name, version=model.producer_version),
        inputs=[_spec(t) for t in inputs],
        outputs=[_spec(t) for t in model_outputs(model)],
        resolved_inputs=[
            _spec(shapes.get(t.name) or TensorInfo(t.name, None, t.dtype)) for t in inputs
        ],
        parameter_count=_parameter_count(graph, nodes),
        initializers=_initializer_stats(graph),
        op_histogram=dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
        node_count=len(nodes),
        macs_total=macs.total,
        macs_by_op_type=macs_by_op_type(macs.rows),
        macs_unknown_nodes=list(macs.unknown_nodes),
        macs_trip_count_unknown=macs.trip_count_unknown,
        quantization=kind,
        quantization_detail=detail,
        quantized_node_count=quantized,
        external_data=_external_data(graph),
        warnings=warnings,
    )
