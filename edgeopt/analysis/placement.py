"""How and where each main-graph node executes: its dtype (QDQ-aware) and its device.

**Execution dtype.** A node computes in the dtype of its data, except:

* QOperator/integer ops (``QLinearConv``, ``MatMulInteger``, ``QGemm``, ...) run int8.
* QDQ fusion, as onnxruntime's CPU graph optimizer does it: an op whose data inputs all
  come from DequantizeLinear and whose outputs all feed QuantizeLinear runs as one int8
  kernel (Conv -> QLinearConv, MatMul -> QLinearMatMul, Add -> QLinearAdd, Reshape with
  its Q/DQ dropped, ...). MatMul and Gemm fuse without the trailing Q too (float output,
  e.g. MatMulIntegerToFloat); ArgMax only needs the DQ. The op types are in
  :data:`QDQ_FUSABLE_OPS`. The DQ/Q nodes of such a group are *fused*: they cost
  nothing and go wherever the op they wrap goes. Other Q/DQ nodes (at the model's
  float inputs/outputs, or around ops that stay float) run on their own.
* Constant nodes never run: onnxruntime folds them into weights at load time.

**Placement** (targets with an ``accelerator`` section): a node runs on the accelerator
when its op type (or the float op a quantized op implements: ``QLinearConv`` -> ``Conv``)
is listed in ``accelerator.supported_ops[dtype]`` for its execution dtype, and that dtype
is one of ``accelerator.dtypes``; otherwise it falls back to the CPU. Fused Q/DQ nodes
and Constants take the device of the node they belong to and never split a partition.

**Partitions and hand-overs.** Over the nodes that run on their own, in execution
order (the graph's node order): a *partition* is a maximal run of consecutive
accelerator nodes. The model's inputs and outputs live in CPU memory, so each
partition costs two *hand-overs*: CPU -> accelerator on entry and back on exit.
``handovers == 2 * partitions``; a graph with one unsupported op in the middle of
accelerator ops has 2 partitions and 4 hand-overs, a fully delegated graph 1 and 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import onnx
from onnx import NodeProto

from edgeopt.analysis.graph import DEFAULT_DOMAINS, is_op, node_name
from edgeopt.analysis.shapes import TensorInfo, resolve_shapes
from edgeopt.analysis.summary import is_integer_op
from edgeopt.targets import TargetProfile

__all__ = [
    "FLOAT_EXEC_DTYPES",
    "QDQ_FUSABLE_OPS",
    "ExecutionPlan",
    "NodeExecution",
    "Placement",
    "analyse_execution",
    "base_op_type",
    "exec_dtype_name",
    "place_nodes",
]

Role = Literal["compute", "qdq", "fused_qdq", "fused_activation", "constant"]
# onnxruntime folds these activations into the Conv/Gemm before them (FusedConv, FusedGemm,
# NCHWc Conv) when nothing else reads the intermediate tensor.
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid"})
_ACTIVATION_HOSTS = frozenset({"Conv", "Gemm", "FusedConv", "FusedGemm"})
Device = Literal["cpu", "accelerator"]

_Q_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft"})
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})

# (data input indices or None for all inputs, output Q: "required" | "optional" | "none").
# After onnxruntime's qdq_selector_action_transformer (CPU EP) and ReluQuantFusion.
_ALL = None
QDQ_FUSABLE_OPS: dict[str, tuple[tuple[int, ...] | None, str]] = {
    "Conv": ((0, 1), "required"),
    "MatMul": ((0, 1), "optional"),
    "Gemm": ((0, 1), "optional"),
    "Add": ((0, 1), "required"),
    "Mul": ((0, 1), "required"),
    "Where": ((1, 2), "required"),
    "Concat": (_ALL, "required"),
    "Split": ((0,), "required"),
    "AveragePool": ((0,), "required"),
    "GlobalAveragePool": ((0,), "required"),
    "LeakyRelu": ((0,), "required"),
    "Sigmoid": ((0,), "required"),
    "Softmax": ((0,), "required"),
    "MaxPool": ((0,), "required"),
    "ReduceMax": ((0,), "required"),
    "ReduceMin": ((0,), "required"),
    "Resize": ((0,), "required"),
    "Expand": ((0,), "required"),
    "Flatten": ((0,), "required"),
    "Gather": ((0,), "required"),
    "GatherElements": ((0,), "required"),
    "Reshape": ((0,), "required"),
    "Slice": ((0,), "required"),
    "Squeeze": ((0,), "required"),
    "Tile": ((0,), "required"),
    "Transpose": ((0,), "required"),
    "Unsqueeze": ((0,), "required"),
    "Relu": ((0,), "required"),
    "Clip": ((0,), "required"),
    "ArgMax": ((0,), "none"),
}

_EXEC_NAMES = {
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "float64": "fp64",
    "int8": "int8",
    "uint8": "int8",
}
FLOAT_EXEC_DTYPES = frozenset({"fp32", "fp16", "bf16", "fp64"})
_PREFERRED = frozenset({"float32", "float16", "bfloat16", "float64", "int8", "uint8"})
_KEY_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "uint8": "int8"}

# Quantized ops -> the float op they implement (for supported_ops and efficiency look-ups).
_BASE_OPS = {
    "ConvInteger": "Conv",
    "MatMulInteger": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "QGemm": "Gemm",
    "FusedConv": "Conv",
    "FusedGemm": "Gemm",
    "FusedMatMul": "MatMul",
}


def base_op_type(op_type: str) -> str:
    """The float ONNX op a quantized/fused op implements (QLinearConv -> Conv), else itself."""
    if op_type in _BASE_OPS:
        return _BASE_OPS[op_type]
    if op_type.startswith("QLinear") and len(op_type) > len("QLinear"):
        return op_type[len("QLinear") :]
    return op_type


def exec_dtype_name(dtype: str | None) -> str | None:
    """``float32`` -> ``fp32``, ``uint8``/``int8`` -> ``int8``; other names unchanged."""
    if dtype is None:
        return None
    return _EXEC_NAMES.get(dtype, dtype)


@dataclass(frozen=True)
class NodeExecution:
    """How one main-graph node executes.

    ``role``: ``compute`` (runs as its own kernel), ``qdq`` (a Q/DQ node that runs on its
    own), ``fused_qdq`` (folded into the kernel of node ``attached_to``), ``constant``
    (folded into weights at load time; ``attached_to`` is its first consumer, if any).
    ``qdq_fused`` marks a compute node that onnxruntime fuses with its Q/DQ into an
    int8 kernel.
    """

    index: int
    name: str
    op_type: str
    domain: str
    dtype: str | None
    role: Role
    attached_to: int | None = None
    qdq_fused: bool = False

    @property
    def runs_alone(self) -> bool:
        return self.role in ("compute", "qdq")


@dataclass(frozen=True)
class ExecutionPlan:
    """Per-node execution facts plus the storage aliases of fused QDQ groups (see memory.py)."""

    nodes: tuple[NodeExecution, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    def full_int8_offenders(self) -> list[str]:
        """Nodes running on their own in a float (or unknown) dtype; Q/DQ nodes excluded.

        Shape arithmetic (int64/bool) is not an offender: runtimes fold it away.
        """
        return [
            n.name
            for n in self.nodes
            if n.role == "compute" and (n.dtype is None or n.dtype in FLOAT_EXEC_DTYPES)
        ]


def _is_q(node: NodeProto | None) -> bool:
    return node is not None and is_op(node, "QuantizeLinear", _Q_DOMAINS)


def _is_dq(node: NodeProto | None) -> bool:
    return node is not None and is_op(node, "DequantizeLinear", _Q_DOMAINS)


def _data_dtype(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> str | None:
    """The dtype a float/int8 op computes in: its first float or 8-bit tensor, inputs first."""
    names = [n for n in (*node.input, *node.output) if n]
    dtypes = [info.dtype for n in names if (info := shapes.get(n)) is not None and info.dtype]
    for dtype in dtypes:
        if dtype in _PREFERRED:
            return exec_dtype_name(dtype)
    return exec_dtype_name(dtypes[0]) if dtypes else None


def analyse_execution(
    model: onnx.ModelProto, shapes: Mapping[str, TensorInfo]
) -> ExecutionPlan:
    """Execution dtype, role and QDQ fusion of every main-graph node (see the module doc)."""
    nodes = list(model.graph.node)
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
        for inp in node.input:
            if inp:
                consumers.setdefault(inp, []).append(i)
    graph_outputs = {vi.name for vi in model.graph.output}

    def producer_node(name: str) -> NodeProto | None:
        index = producer.get(name)
        return None if index is None else nodes[index]

    def all_to_q(node: NodeProto) -> bool:
        outs = [o for o in node.output if o]
        return bool(outs) and all(
            o not in graph_outputs
            and consumers.get(o)
            and all(_is_q(nodes[c]) for c in consumers[o])
            for o in outs
        )

    fused: dict[int, bool] = {}  # fused compute node -> its outputs go through Q
    for i, node in enumerate(nodes):
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in QDQ_FUSABLE_OPS:
            continue
        indices, q_rule = QDQ_FUSABLE_OPS[node.op_type]
        picked = range(len(node.input)) if indices is None else indices
        data = [node.input[k] for k in picked if k < len(node.input) and node.input[k]]
        if not data or not all(_is_dq(producer_node(name)) for name in data):
            continue
        to_q = all_to_q(node)
        if q_rule == "required" and not to_q:
            continue
        fused[i] = to_q and q_rule != "none"

    aliases: dict[str, str] = {}
    rows: list[NodeExecution] = []
    for i, node in enumerate(nodes):
        name = node_name(node, i)
        common = {"index": i, "name": name, "op_type": node.op_type, "domain": node.domain}
        if is_op(node, "Constant"):
            users = consumers.get(node.output[0], []) if node.output else []
            dtype = shapes.get(node.output[0]) if node.output else None
            rows.append(
                NodeExecution(
                    **common,
                    dtype=exec_dtype_name(dtype.dtype if dtype else None),
                    role="constant",
                    attached_to=users[0] if users else None,
                )
            )
            continue
        if _is_dq(node) and node.output and node.input:
            users = consumers.get(node.output[0], [])
            if users and node.output[0] not in graph_outputs and all(u in fused for u in users):
                aliases[node.output[0]] = node.input[0]
                rows.append(NodeExecution(**common, dtype="int8", role="fused_qdq", attached_to=users[0]))
                continue
        if _is_q(node) and node.output and node.input:
            src = producer.get(node.input[0])
            if src is not None and fused.get(src):
                aliases.setdefault(node.input[0], node.output[0])
                rows.append(NodeExecution(**common, dtype="int8", role="fused_qdq", attached_to=src))
                continue
        if node.domain in _Q_DOMAINS and node.op_type in _QUANT_OPS:
            rows.append(NodeExecution(**common, dtype="int8", role="qdq"))
            continue
        if i in fused:
            rows.append(NodeExecution(**common, dtype="int8", role="compute", qdq_fused=True))
            continue
        if node.op_type in FUSED_ACTIVATIONS and node.domain in DEFAULT_DOMAINS and node.input:
            src = producer.get(node.input[0])
            if (src is not None and nodes[src].op_type in _ACTIVATION_HOSTS and src not in fused
                    and len(consumers.get(node.input[0], [])) == 1 and node.input[0] not in graph_outputs):
                rows.append(NodeExecution(**common, dtype=rows[src].dtype, role="fused_activation",
                                          attached_to=src))
                continue
        dtype = "int8" if is_integer_op(node) else _data_dtype(node, shapes)
        if dtype is None:  # types not inferred (e.g. after a contrib op): take the producer's
            first = next((name for name in node.input if name), None)
            src = producer.get(first) if first else None
            dtype = rows[src].dtype if src is not None else None
        rows.append(NodeExecution(**common, dtype=dtype, role="compute"))
    return ExecutionPlan(tuple(rows), aliases)


# ------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Device of every main-graph node and the resulting accelerator partitions.

    ``partitions`` holds the node indices of each accelerator partition (only nodes
    that run on their own); ``cpu_fallback`` maps CPU nodes to why they are not on the
    accelerator. Without an accelerator every node is on the CPU and there are no
    partitions. ``full_int8``/``int8_offenders`` are computed for every target;
    ``requires_full_int8`` says whether the target's accelerator demands it.
    """

    devices: tuple[Device, ...]
    accelerator: str | None
    partitions: tuple[tuple[int, ...], ...]
    handovers: int
    cpu_fallback: dict[str, str]
    full_int8: bool
    int8_offenders: tuple[str, ...]
    requires_full_int8: bool

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    @property
    def satisfies_int8_requirement(self) -> bool:
        return self.full_int8 or not self.requires_full_int8


def _supported(target: TargetProfile) -> dict[str, frozenset[str]]:
    acc = target.accelerator
    table: dict[str, set[str]] = {}
    if acc is None:
        return {}
    for key, ops in acc.supported_ops.items():
        norm = _KEY_ALIASES.get(key.lower(), key.lower())
        table.setdefault(norm, set()).update(ops)
    return {k: frozenset(v) for k, v in table.items()}


def place_nodes(
    model: onnx.ModelProto,
    target: TargetProfile,
    shapes: Mapping[str, TensorInfo] | None = None,
    *,
    execution: ExecutionPlan | None = None,
) -> Placement:
    """CPU/accelerator placement of the main graph's nodes on ``target`` (module doc)."""
    if execution is None:
        execution = analyse_execution(model, shapes if shapes is not None else resolve_shapes(model))
    acc = target.accelerator
    supported = _supported(target)
    acc_dtypes = {_KEY_ALIASES.get(d.lower(), d.lower()) for d in acc.dtypes} if acc else set()

    devices: list[Device] = ["cpu"] * len(execution.nodes)
    fallback: dict[str, str] = {}
    for row in execution.nodes:
        if not row.runs_alone or acc is None:
            continue
        dtype = row.dtype or "unknown"
        ops = supported.get(dtype, frozenset())
        known_domain = row.domain in _Q_DOMAINS
        if dtype not in acc_dtypes or not ops:
            fallback[row.name] = f"{acc.name} does not run {dtype} ops"
        elif known_domain and (row.op_type in ops or base_op_type(row.op_type) in ops):
            devices[row.index] = "accelerator"
        else:
            fallback[row.name] = f"{row.op_type} ({dtype}) is not in {acc.name}'s supported ops"
    for row in execution.nodes:  # fused Q/DQ and Constants follow their node
        if not row.runs_alone and row.attached_to is not None:
            devices[row.index] = devices[row.attached_to]

    partitions: list[tuple[int, ...]] = []
    current: list[int] = []
    for row in execution.nodes:
        if not row.runs_alone:
            continue
        if devices[row.index] == "accelerator":
            current.append(row.index)
        elif current:
            partitions.append(tuple(current))
            current = []
    if current:
        partitions.append(tuple(current))

    offenders = tuple(execution.full_int8_offenders())
    return Placement(
        devices=tuple(devices),
        accelerator=acc.name if acc else None,
        partitions=tuple(partitions),
        handovers=2 * len(partitions),
        cpu_fallback=fallback,
        full_int8=not offenders,
        int8_offenders=offenders,
        requires_full_int8=bool(acc and acc.requires_full_int8),
    )
