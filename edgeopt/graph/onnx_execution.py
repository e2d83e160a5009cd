"""How each node of an ONNX graph executes under onnxruntime's CPU provider: its dtype (QDQ-aware) and
whether it runs as its own kernel or is fused into another's.

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
* Constant nodes never run: onnxruntime folds them into weights at load time, and with them every node
  whose inputs are all constants (ConstantFolding: weights sliced and concatenated by an exporter, shape
  arithmetic on constants), and Shape/Size where the model declares static input shapes.
* An Identity whose output is not a graph output is removed (IdentityElimination): its consumers read
  its input.
* A float Conv's BatchNormalization, per-channel constant Add/Mul and then one activation are folded
  into it at load (role ``fused_activation``: no kernel of their own).
"""


from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx
from onnx import NodeProto

from edgeopt.graph.model import Role
from edgeopt.graph.onnx_protos import DEFAULT_DOMAINS, Q_DOMAINS, is_integer_op, is_op, node_name, weight_names
from edgeopt.graph.onnx_shapes import TensorInfo

# onnxruntime folds these activations into the Conv/Gemm before them (FusedConv, FusedGemm,
# NCHWc Conv) when nothing else reads the intermediate tensor.
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish"})
# ... and folds these into a float Conv's weights and bias at load (ConvBNFusion, ConvAddFusion, ConvMulFusion)
# when their other inputs are constants, before any activation is fused.
FOLDED_INTO_CONV = frozenset({"BatchNormalization", "Add", "Mul"})
_ACTIVATION_HOSTS = frozenset({"Conv", "Gemm", "FusedConv", "FusedGemm"})

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
_PREFERRED = frozenset({"float32", "float16", "bfloat16", "float64", "int8", "uint8"})

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
    """Per-node execution facts plus the storage aliases of fused QDQ groups (graph.model.Graph.aliases)."""

    nodes: tuple[NodeExecution, ...]
    aliases: dict[str, str] = field(default_factory=dict)


def _is_q(node: NodeProto | None) -> bool:
    return node is not None and is_op(node, "QuantizeLinear", Q_DOMAINS)


def _is_dq(node: NodeProto | None) -> bool:
    return node is not None and is_op(node, "DequantizeLinear", Q_DOMAINS)


# onnxruntime's ConstantFolding leaves these alone: random ops, and quantize/dequantize (kept for QDQ fusion)
_NOT_FOLDED = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                         "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def folds_from_constants(node: NodeProto, folded: set[str]) -> bool:
    """onnxruntime's ConstantFolding computes ``node`` once at load: a default-domain op without subgraphs whose
    inputs are all constants (weights or folded outputs)."""
    if node.domain not in DEFAULT_DOMAINS or node.op_type in _NOT_FOLDED or not node.output:
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    inputs = [name for name in node.input if name]
    return bool(inputs) and all(name in folded for name in inputs)


def _folds_at_load(node: NodeProto, folded: set[str], shapes: Mapping[str, TensorInfo], static_shapes: bool) -> bool:
    """:func:`folds_from_constants`, or a Shape/Size of a statically shaped tensor."""
    inputs = [name for name in node.input if name]
    if node.op_type in ("Shape", "Size") and inputs and node.domain in DEFAULT_DOMAINS:
        info = shapes.get(inputs[0])
        return static_shapes and info is not None and info.shape is not None
    return folds_from_constants(node, folded)


def _data_dtype(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> str | None:
    """The dtype a float/int8 op computes in: its first float or 8-bit tensor, inputs first."""
    names = [n for n in (*node.input, *node.output) if n]
    dtypes = [info.dtype for n in names if (info := shapes.get(n)) is not None and info.dtype]
    for dtype in dtypes:
        if dtype in _PREFERRED:
            return exec_dtype_name(dtype)
    return exec_dtype_name(dtypes[0]) if dtypes else None


def analyse_execution(
    model: onnx.ModelProto, shapes: Mapping[str, TensorInfo], constants: set[str] | None = None
) -> ExecutionPlan:
    """Execution dtype, role and QDQ fusion of every main-graph node (see the module doc); ``constants``: the
    main graph's weight names (onnx_protos.weight_names), computed here when not given."""
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

    constants = weight_names(model.graph) if constants is None else constants
    conv_of: dict[int, int] = {}  # float Conv (and what is folded into it) -> the Conv whose kernel runs it
    activated: set[int] = set()  # Convs with an activation fused already

    def folds_into_conv(node: NodeProto, conv: int) -> bool:
        """BatchNormalization with constant statistics, or Add/Mul by a constant of one value per channel."""
        if node.op_type == "BatchNormalization":
            return len(node.output) == 1 and all(name in constants for name in node.input[1:5])
        if node.op_type not in ("Add", "Mul") or len(node.input) != 2 or node.input[1] not in constants:
            return False
        weight = shapes.get(nodes[conv].input[1]) if len(nodes[conv].input) > 1 else None
        other = shapes.get(node.input[1])
        if weight is None or weight.shape is None or other is None or other.shape is None:
            return False
        dims = list(other.shape)
        if len(dims) == len(weight.shape) and dims and dims[0] == 1:
            dims = dims[1:]
        return dims == [weight.shape[0]] + [1] * (len(weight.shape) - 2)

    aliases: dict[str, str] = {}
    rows: list[NodeExecution] = []
    folded = set(constants)  # weights, and what constant folding makes of them
    # onnxruntime folds Shape/Size only where the shape is static as the model declares it (no symbolic input dim)
    static_shapes = all(vi.type.tensor_type.HasField("shape")
                        and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
                        for vi in model.graph.input if vi.name not in constants)
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
        if node.domain in Q_DOMAINS and node.op_type in _QUANT_OPS:
            rows.append(NodeExecution(**common, dtype="int8", role="qdq"))
            continue
        if _folds_at_load(node, folded, shapes, static_shapes):
            folded.update(o for o in node.output if o)
            users = consumers.get(node.output[0], []) if node.output else []
            rows.append(NodeExecution(**common, dtype=_data_dtype(node, shapes), role="constant",
                                      attached_to=users[0] if users else None))
            continue
        if (is_op(node, "Identity") and node.input and node.output and node.output[0] not in graph_outputs
                and node.input[0] in producer):
            # IdentityElimination: the consumers read the input itself
            aliases[node.output[0]] = node.input[0]
            rows.append(NodeExecution(**common, dtype=rows[producer[node.input[0]]].dtype, role="fused_activation",
                                      attached_to=producer[node.input[0]]))
            continue
        if i in fused:
            rows.append(NodeExecution(**common, dtype="int8", role="compute", qdq_fused=True))
            continue
        if node.domain in DEFAULT_DOMAINS and node.input and node.op_type in FUSED_ACTIVATIONS | FOLDED_INTO_CONV:
            src = producer.get(node.input[0])
            alone = len(consumers.get(node.input[0], [])) == 1 and node.input[0] not in graph_outputs
            host = conv_of.get(src) if src is not None else None  # a float Conv, or what is folded into one
            if host is None and src is not None and nodes[src].op_type in _ACTIVATION_HOSTS and src not in fused:
                host = src
            if host is not None and alone and host not in activated:
                folds = host in conv_of and node.op_type in FOLDED_INTO_CONV and folds_into_conv(node, host)
                if folds or node.op_type in FUSED_ACTIVATIONS:
                    if folds:
                        conv_of[i] = host
                    else:
                        activated.add(host)
                    rows.append(NodeExecution(**common, dtype=rows[host].dtype, role="fused_activation",
                                              attached_to=host))
                    continue
        dtype = "int8" if is_integer_op(node) else _data_dtype(node, shapes)
        if dtype is None:  # types not inferred (e.g. after a contrib op): take the producer's
            first = next((name for name in node.input if name), None)
            src = producer.get(first) if first else None
            dtype = rows[src].dtype if src is not None else None
        if (node.op_type == "Conv" and node.domain in DEFAULT_DOMAINS and dtype in ("fp32", None)
                and len(node.input) > 1 and node.input[1] in constants):
            conv_of[i] = i
        rows.append(NodeExecution(**common, dtype=dtype, role="compute"))
    return ExecutionPlan(tuple(rows), aliases)


