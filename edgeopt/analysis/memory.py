"""Memory facts of an ONNX graph: per-node traffic, weight bytes and an activation liveness plan.

Everything is computed from resolved shapes (:func:`~edgeopt.analysis.shapes.resolve_shapes`);
weight data is never read. A tensor whose size is unknown (shape not inferred, or a
variable-size dtype such as string) is counted as 0 bytes and *named* in the result's
``unknown_tensors``, so totals are then lower bounds; nothing here raises on such tensors.

Weights are initializers (sparse ones included) and Constant-node outputs; every other
tensor is an activation.

``aliases`` (optional everywhere) maps a tensor name to the tensor that really holds its
data at run time. :func:`edgeopt.analysis.placement.analyse_execution` builds it for
QDQ models: the float output of a fused DequantizeLinear is stored as its int8 input,
and the float output of a fused Conv/MatMul is stored as the int8 output of the
QuantizeLinear that follows it (onnxruntime fuses DQ -> op -> Q into one int8 kernel,
so the float tensors never exist).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import onnx
from onnx import GraphProto, NodeProto

from edgeopt.analysis.graph import (
    DTYPES,
    constant_tensor,
    dtype_name,
    is_op,
    iter_graphs,
    node_name,
    num_elements,
    real_input_names,
    subgraphs,
    tensor_bytes,
)
from edgeopt.analysis.shapes import TensorInfo

__all__ = [
    "LiveTensor",
    "MemoryPlan",
    "NodeTraffic",
    "bits_per_element",
    "liveness_plan",
    "node_traffic",
    "resolve_alias",
    "tensor_size_bytes",
    "weight_bytes_by_dtype",
    "weight_names",
]

_BITS: dict[str, int | None] = {np_name: bits for _, np_name, bits in DTYPES}


def bits_per_element(dtype: str | None) -> int | None:
    """Bits per element of a numpy-style dtype name; None when unknown or variable (string)."""
    return _BITS.get(dtype) if dtype else None


def tensor_size_bytes(info: TensorInfo | None) -> int | None:
    """Bytes of a tensor from its resolved shape and dtype; None when either is unknown."""
    if info is None or info.shape is None:
        return None
    bits = bits_per_element(info.dtype)
    if bits is None:
        return None
    return math.ceil(num_elements(info.shape) * bits / 8)


def resolve_alias(name: str, aliases: Mapping[str, str] | None) -> str:
    """Follow ``aliases`` from ``name`` to the tensor that holds the data (cycle-safe)."""
    if not aliases:
        return name
    seen = {name}
    while name in aliases:
        name = aliases[name]
        if name in seen:
            break
        seen.add(name)
    return name


def weight_names(graph: GraphProto) -> set[str]:
    """Initializers (sparse ones included) and Constant outputs of ``graph`` (not its subgraphs)."""
    names = {t.name for t in graph.initializer}
    names |= {s.values.name for s in graph.sparse_initializer}
    names |= {n.output[0] for n in graph.node if is_op(n, "Constant") and n.output}
    return names


def weight_bytes_by_dtype(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of all stored weights per dtype, subgraphs included, largest first.

    Initializers, sparse initializers (values + indices) and Constant-node values.
    """
    acc: dict[str, int] = {}

    def add(dtype: str | None, size: int) -> None:
        key = dtype or "undefined"
        acc[key] = acc.get(key, 0) + size

    for graph in iter_graphs(model.graph):
        for tensor in graph.initializer:
            add(dtype_name(tensor.data_type), tensor_bytes(tensor))
        for sparse in graph.sparse_initializer:
            add(dtype_name(sparse.values.data_type), tensor_bytes(sparse.values))
            add(dtype_name(sparse.indices.data_type), tensor_bytes(sparse.indices))
        for node in graph.node:
            if not (is_op(node, "Constant") and node.output):
                continue
            const = constant_tensor(node)
            if const is None:
                continue
            dims, elem_type, proto = const
            if proto is not None:
                add(dtype_name(elem_type), tensor_bytes(proto))
            else:
                bits = bits_per_element(dtype_name(elem_type)) or 0
                add(dtype_name(elem_type), math.ceil(num_elements(dims) * bits / 8))
    return dict(sorted(acc.items(), key=lambda kv: (-kv[1], kv[0])))


def _outer_names(node: NodeProto) -> set[str]:
    """Names a node's subgraphs read from enclosing scopes (If/Loop/Scan implicit inputs)."""
    used: set[str] = set()
    defined: set[str] = set()
    for _, sub in subgraphs(node):
        for graph in iter_graphs(sub):
            defined.update(vi.name for vi in graph.input)
            defined.update(t.name for t in graph.initializer)
            defined.update(s.values.name for s in graph.sparse_initializer)
            for inner in graph.node:
                used.update(i for i in inner.input if i)
                defined.update(o for o in inner.output if o)
            used.update(vi.name for vi in graph.output)
    return used - defined


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class NodeTraffic:
    """Bytes one node reads and writes (each distinct tensor once), split by kind and dtype.

    Sizes of ``unknown_tensors`` are not known and counted as 0: the totals are then
    lower bounds (``known`` is False).
    """

    index: int
    name: str
    op_type: str
    weight_bytes_read: int
    activation_bytes_read: int
    bytes_written: int
    read_bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    written_bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    unknown_tensors: tuple[str, ...] = ()

    @property
    def bytes_read(self) -> int:
        return self.weight_bytes_read + self.activation_bytes_read

    @property
    def bytes_total(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def known(self) -> bool:
        return not self.unknown_tensors


def _distinct(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        if n:
            seen.setdefault(n, None)
    return list(seen)


def node_traffic(
    model: onnx.ModelProto,
    shapes: Mapping[str, TensorInfo],
    *,
    aliases: Mapping[str, str] | None = None,
) -> list[NodeTraffic]:
    """Per main-graph node: bytes read (weights / activations) and written, by dtype.

    Explicit inputs and outputs only: what an If/Loop/Scan body reads inside is not
    added to the control-flow node. A tensor listed twice as an input is read once.
    """
    graph = model.graph
    weights = weight_names(graph)
    rows: list[NodeTraffic] = []
    for index, node in enumerate(graph.node):
        unknown: list[str] = []
        read_w = read_a = written = 0
        read_dt: dict[str, int] = {}
        written_dt: dict[str, int] = {}
        inputs = _distinct(resolve_alias(n, aliases) for n in node.input)
        outputs = _distinct(resolve_alias(n, aliases) for n in node.output)
        gathered_rows = node.op_type == "Gather" and node.input and node.input[0] in weights
        for name in inputs:
            info = shapes.get(name)
            size = tensor_size_bytes(info)
            if gathered_rows and name == node.input[0]:
                # An embedding lookup reads the rows it gathers, not the whole table.
                size = tensor_size_bytes(shapes.get(node.output[0])) if node.output else size
            if size is None:
                unknown.append(name)
                continue
            if name in weights:
                read_w += size
            else:
                read_a += size
            key = (info.dtype if info else None) or "undefined"
            read_dt[key] = read_dt.get(key, 0) + size
        for name in outputs:
            info = shapes.get(name)
            size = tensor_size_bytes(info)
            if size is None:
                unknown.append(name)
                continue
            written += size
            key = (info.dtype if info else None) or "undefined"
            written_dt[key] = written_dt.get(key, 0) + size
        rows.append(
            NodeTraffic(
                index=index,
                name=node_name(node, index),
                op_type=node.op_type,
                weight_bytes_read=read_w,
                activation_bytes_read=read_a,
                bytes_written=written,
                read_bytes_by_dtype=read_dt,
                written_bytes_by_dtype=written_dt,
                unknown_tensors=tuple(_distinct(unknown)),
            )
        )
    return rows


# -------------------------------------------------------------------------- liveness


@dataclass(frozen=True)
class LiveTensor:
    """An activation live from node ``start`` to node ``end`` (inclusive, execution indices).

    ``bytes`` is None when the size is unknown (then counted as 0).
    """

    name: str
    start: int
    end: int
    bytes: int | None


@dataclass(frozen=True)
class MemoryPlan:
    """Activation liveness over the main graph's node order, plus the weights beside it.

    ``live_bytes[i]`` is what is live while node ``i`` runs (its inputs and outputs
    included). ``peak_activation_bytes`` is what an arena allocator with perfect
    packing (no fragmentation, no in-place reuse) needs; weights are not part of it.
    """

    order: tuple[str, ...]
    live_bytes: tuple[int, ...]
    peak_activation_bytes: int
    peak_index: int | None
    peak_node: str | None
    tensors: tuple[LiveTensor, ...]
    weight_bytes: int
    weight_bytes_by_dtype: dict[str, int]
    unknown_tensors: tuple[str, ...] = ()

    @property
    def peak_is_lower_bound(self) -> bool:
        """True when some activation sizes are unknown (they were counted as 0)."""
        return bool(self.unknown_tensors)

    @property
    def live_at_peak(self) -> tuple[LiveTensor, ...]:
        if self.peak_index is None:
            return tuple(t for t in self.tensors if t.start <= 0 <= t.end)
        return tuple(t for t in self.tensors if t.start <= self.peak_index <= t.end)


def liveness_plan(
    model: onnx.ModelProto,
    shapes: Mapping[str, TensorInfo],
    *,
    aliases: Mapping[str, str] | None = None,
) -> MemoryPlan:
    """Live activation bytes per node and their peak, for the main graph in node order.

    Execution order is the main graph's node order (ONNX requires it to be topological).
    A tensor is live from the node producing it (graph inputs: from the first node) to
    its last consumer (graph outputs: to the last node); an output nobody consumes is
    live only at its producer. Names an If/Loop/Scan body reads from the main graph
    count as read by that node. Subgraph-internal tensors are not planned.

    Not modelled: in-place ops (Relu, Reshape, Add reusing an input buffer), so the
    peak is what a plain arena needs, an upper bound for runtimes that share buffers;
    fragmentation, workspace/scratch buffers of kernels, and the weights themselves
    (reported separately as ``weight_bytes``).
    """
    graph = model.graph
    weights = weight_names(graph)
    nodes = list(graph.node)
    n = len(nodes)
    last = max(n - 1, 0)
    start: dict[str, int] = {}
    end: dict[str, int] = {}

    def is_activation(name: str) -> bool:
        return bool(name) and name not in weights

    for name in real_input_names(graph):
        target = resolve_alias(name, aliases)
        if is_activation(target):
            start[target] = 0
            end.setdefault(target, 0)
    for index, node in enumerate(nodes):
        for name in [*node.input, *sorted(_outer_names(node))]:
            target = resolve_alias(name, aliases)
            if not is_activation(target):
                continue
            start.setdefault(target, index)
            end[target] = max(end.get(target, index), index)
        for name in node.output:
            target = resolve_alias(name, aliases)
            if not is_activation(target):
                continue
            start[target] = min(start.get(target, index), index)
            end[target] = max(end.get(target, index), index)
    for vi in graph.output:
        target = resolve_alias(vi.name, aliases)
        if is_activation(target):
            start.setdefault(target, 0)
            end[target] = last

    tensors: list[LiveTensor] = []
    unknown: list[str] = []
    delta = [0] * (last + 2)
    for name in start:
        size = tensor_size_bytes(shapes.get(name))
        if size is None:
            unknown.append(name)
        tensors.append(LiveTensor(name, start[name], end[name], size))
        delta[start[name]] += size or 0
        delta[end[name] + 1] -= size or 0
    live: list[int] = []
    running = 0
    for index in range(n):
        running += delta[index]
        live.append(running)

    if live:
        peak_index = max(range(n), key=lambda i: (live[i], -i))  # first node at the peak
        peak = live[peak_index]
        peak_node: str | None = node_name(nodes[peak_index], peak_index)
    else:  # no nodes: the graph inputs passed through are all that is live
        peak_index, peak_node = None, None
        peak = sum(t.bytes or 0 for t in tensors)

    by_dtype = weight_bytes_by_dtype(model)
    return MemoryPlan(
        order=tuple(node_name(node, i) for i, node in enumerate(nodes)),
        live_bytes=tuple(live),
        peak_activation_bytes=peak,
        peak_index=peak_index,
        peak_node=peak_node,
        tensors=tuple(sorted(tensors, key=lambda t: (t.start, t.end, t.name))),
        weight_bytes=sum(by_dtype.values()),
        weight_bytes_by_dtype=by_dtype,
        unknown_tensors=tuple(sorted(unknown)),
    )
