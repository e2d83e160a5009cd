"""Memory facts of a neutral graph (graph.model): per-node traffic and an activation liveness plan.

Everything is computed from the graph's resolved shapes; weight data is never read. A tensor whose size is
unknown (shape not inferred, or a variable-size dtype such as string) is counted as 0 bytes and *named* in
the result's ``unknown_tensors``, so totals are then lower bounds; nothing here raises on such tensors.

Weights are the graph's ``weights`` (initializers and constants); every other tensor is an activation.

``aliases`` (the graph's, unless given) maps a tensor name to the tensor that really holds its data at run
time. For QDQ models the ONNX adapter sets them: the float output of a fused DequantizeLinear is stored as
its int8 input, and the float output of a fused Conv/MatMul as the int8 output of the QuantizeLinear that
follows it (onnxruntime fuses DQ -> op -> Q into one int8 kernel, so the float tensors never exist).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edgeopt.graph.model import Graph, tensor_size_bytes

__all__ = [
    "LiveTensor",
    "MemoryPlan",
    "NodeTraffic",
    "liveness_plan",
    "node_traffic",
    "resolve_alias",
]


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


def node_traffic(graph: Graph, *, aliases: Mapping[str, str] | None = None) -> list[NodeTraffic]:
    """Per node: bytes read (weights / activations) and written, by dtype.

    Explicit inputs and outputs only: what an If/Loop/Scan body reads inside is not
    added to the control-flow node. A tensor listed twice as an input is read once.
    """
    aliases = graph.aliases if aliases is None else aliases
    rows: list[NodeTraffic] = []
    for node in graph.nodes:
        unknown: list[str] = []
        read_w = read_a = written = 0
        read_dt: dict[str, int] = {}
        written_dt: dict[str, int] = {}
        inputs = _distinct(resolve_alias(n, aliases) for n in node.inputs)
        outputs = _distinct(resolve_alias(n, aliases) for n in node.outputs)
        for name in inputs:
            info = graph.tensors.get(name)
            size = tensor_size_bytes(info)
            if node.reads_rows_of is not None and name == node.reads_rows_of:
                # An embedding lookup reads the rows it gathers, not the whole table.
                size = tensor_size_bytes(graph.tensors.get(node.outputs[0])) if node.outputs else size
            if size is None:
                unknown.append(name)
                continue
            if name in graph.weights:
                read_w += size
            else:
                read_a += size
            key = (info.dtype if info else None) or "undefined"
            read_dt[key] = read_dt.get(key, 0) + size
        for name in outputs:
            info = graph.tensors.get(name)
            size = tensor_size_bytes(info)
            if size is None:
                unknown.append(name)
                continue
            written += size
            key = (info.dtype if info else None) or "undefined"
            written_dt[key] = written_dt.get(key, 0) + size
        rows.append(
            NodeTraffic(
                index=node.index,
                name=node.name,
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


def liveness_plan(graph: Graph, *, aliases: Mapping[str, str] | None = None) -> MemoryPlan:
    """Live activation bytes per node and their peak, in the graph's node order.

    Execution order is the graph's node order (ONNX requires it to be topological).
    A tensor is live from the node producing it (graph inputs: from the first node) to
    its last consumer (graph outputs: to the last node); an output nobody consumes is
    live only at its producer. Names an If/Loop/Scan body reads from the main graph
    count as read by that node. Subgraph-internal tensors are not planned.

    Not modelled: in-place ops (Relu, Reshape, Add reusing an input buffer), so the
    peak is what a plain arena needs, an upper bound for runtimes that share buffers;
    fragmentation, workspace/scratch buffers of kernels, and the weights themselves
    (reported separately as ``weight_bytes``).
    """
    aliases = graph.aliases if aliases is None else aliases
    nodes = graph.nodes
    n = len(nodes)
    last = max(n - 1, 0)
    start: dict[str, int] = {}
    end: dict[str, int] = {}

    def is_activation(name: str) -> bool:
        return bool(name) and name not in graph.weights

    for name in graph.inputs:
        target = resolve_alias(name, aliases)
        if is_activation(target):
            start[target] = 0
            end.setdefault(target, 0)
    for index, node in enumerate(nodes):
        for name in [*node.inputs, *node.outer_reads]:
            target = resolve_alias(name, aliases)
            if not is_activation(target):
                continue
            start.setdefault(target, index)
            end[target] = max(end.get(target, index), index)
        for name in node.outputs:
            target = resolve_alias(name, aliases)
            if not is_activation(target):
                continue
            start[target] = min(start.get(target, index), index)
            end[target] = max(end.get(target, index), index)
    for name in graph.outputs:
        target = resolve_alias(name, aliases)
        if is_activation(target):
            start.setdefault(target, 0)
            end[target] = last

    tensors: list[LiveTensor] = []
    unknown: list[str] = []
    delta = [0] * (last + 2)
    for name in start:
        size = tensor_size_bytes(graph.tensors.get(name))
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
        peak_node: str | None = nodes[peak_index].name
    else:  # no nodes: the graph inputs passed through are all that is live
        peak_index, peak_node = None, None
        peak = sum(t.bytes or 0 for t in tensors)

    by_dtype = dict(graph.weight_bytes_by_dtype)
    return MemoryPlan(
        order=tuple(node.name for node in nodes),
        live_bytes=tuple(live),
        peak_activation_bytes=peak,
        peak_index=peak_index,
        peak_node=peak_node,
        tensors=tuple(sorted(tensors, key=lambda t: (t.start, t.end, t.name))),
        weight_bytes=sum(by_dtype.values()),
        weight_bytes_by_dtype=by_dtype,
        unknown_tensors=tuple(sorted(unknown)),
    )
