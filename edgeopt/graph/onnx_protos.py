"""Small read-only helpers over ONNX protos shared by the analysis modules.

Nothing here mutates its arguments; everything works on models whose external
data has not been loaded (only ``dims``/``data_type`` are read, never bytes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, NodeProto, TensorProto, numpy_helper

from edgeopt.graph.model import DTYPE_BITS

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
# Domains whose QuantizeLinear/DequantizeLinear and integer ops onnxruntime runs
Q_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft"})

# (TensorProto enum name, numpy-style name); bits per element in graph.model.DTYPE_BITS.
# Looked up with getattr so older onnx releases without the newest types still work.
DTYPES: tuple[tuple[str, str], ...] = (
    ("FLOAT", "float32"),
    ("UINT8", "uint8"),
    ("INT8", "int8"),
    ("UINT16", "uint16"),
    ("INT16", "int16"),
    ("INT32", "int32"),
    ("INT64", "int64"),
    ("STRING", "string"),
    ("BOOL", "bool"),
    ("FLOAT16", "float16"),
    ("DOUBLE", "float64"),
    ("UINT32", "uint32"),
    ("UINT64", "uint64"),
    ("COMPLEX64", "complex64"),
    ("COMPLEX128", "complex128"),
    ("BFLOAT16", "bfloat16"),
    ("FLOAT8E4M3FN", "float8_e4m3fn"),
    ("FLOAT8E4M3FNUZ", "float8_e4m3fnuz"),
    ("FLOAT8E5M2", "float8_e5m2"),
    ("FLOAT8E5M2FNUZ", "float8_e5m2fnuz"),
    ("UINT4", "uint4"),
    ("INT4", "int4"),
    ("FLOAT4E2M1", "float4_e2m1fn"),
    ("FLOAT8E8M0", "float8_e8m0fnu"),
    ("UINT2", "uint2"),
    ("INT2", "int2"),
    ("FLOAT6E2M3", "float6_e2m3fn"),
    ("FLOAT6E3M2", "float6_e3m2fn"),
)
_DTYPE_NAME: dict[int, str] = {}
_DTYPE_BITS: dict[int, int | None] = {}
for _enum_name, _np_name in DTYPES:
    _value = getattr(TensorProto, _enum_name, None)
    if _value is not None:
        _DTYPE_NAME[_value] = _np_name
        _DTYPE_BITS[_value] = DTYPE_BITS[_np_name]

INTEGER_DTYPES = frozenset(
    {
        "int2",
        "uint2",
        "int4",
        "uint4",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
    }
)


def dtype_name(elem_type: int) -> str | None:
    """Numpy-style name of a ``TensorProto.DataType`` value (None for UNDEFINED)."""
    if elem_type == TensorProto.UNDEFINED:
        return None
    return _DTYPE_NAME.get(elem_type, f"unknown({elem_type})")


def op_key(op_type: str, domain: str) -> str:
    """``Conv`` for the default domain, ``com.microsoft.QGemm`` otherwise."""
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}.{op_type}"


def is_op(node: NodeProto, op_type: str, domains: frozenset[str] = DEFAULT_DOMAINS) -> bool:
    return node.op_type == op_type and node.domain in domains


def num_elements(dims: Iterable[int]) -> int:
    return math.prod(int(d) for d in dims)


def tensor_bytes(tensor: TensorProto) -> int:
    """Bytes the tensor's data takes, from its declared dims (data is never read)."""
    bits = _DTYPE_BITS.get(tensor.data_type)
    if bits is not None:
        return math.ceil(num_elements(tensor.dims) * bits / 8)
    if tensor.data_type == TensorProto.STRING and not uses_external_data(tensor):
        return sum(len(s) for s in tensor.string_data)
    declared = external_data_info(tensor).get("length")
    return int(declared) if declared and declared.isdigit() else 0


def constant_bytes(node: NodeProto) -> int:
    """Bytes a Constant node's value takes once loaded, whatever attribute holds it (a sparse value densified,
    as the runtime loads it; strings outside a tensor count nothing); 0 if malformed."""
    found = constant_tensor(node)
    if found is None:
        return 0
    dims, elem_type, proto = found
    if proto is not None:
        return tensor_bytes(proto)
    return math.ceil(num_elements(dims) * (_DTYPE_BITS.get(elem_type) or 0) / 8)


def uses_external_data(tensor: TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL


SMALL_CONSTANT_ELEMENTS = 4096


def small_constant(tensor: TensorProto | None) -> np.ndarray | None:
    """The values of a small stored tensor (a scale, a zero point, a Slice's steps); None for one stored outside the
    file (never read here) or larger than SMALL_CONSTANT_ELEMENTS (a weight, not a parameter)."""
    if tensor is None or uses_external_data(tensor) or num_elements(tensor.dims) > SMALL_CONSTANT_ELEMENTS:
        return None
    return numpy_helper.to_array(tensor)


def external_data_info(tensor: TensorProto) -> dict[str, str]:
    """The ``external_data`` key/value entries (location, offset, length, checksum)."""
    return {entry.key: entry.value for entry in tensor.external_data}


@dataclass(frozen=True)
class NodeRef:
    """A node with its display name and the path of the subgraph holding it ("" = main graph)."""

    node: NodeProto
    name: str
    subgraph_path: str


def node_name(node: NodeProto, index: int) -> str:
    """The node's own name, or a stable ``<op_type>_<index>`` (index within its graph)."""
    return node.name or f"{node.op_type}_{index}"


def subgraphs(node: NodeProto) -> list[tuple[str, GraphProto]]:
    """(attribute name, graph) for every graph attribute (If branches, Loop/Scan bodies)."""
    found: list[tuple[str, GraphProto]] = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            found.append((attr.name, attr.g))
        elif attr.type == AttributeProto.GRAPHS:
            found.extend((f"{attr.name}[{i}]", g) for i, g in enumerate(attr.graphs))
    return found


def join_path(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def iter_nodes(graph: GraphProto, path: str = "") -> Iterator[NodeRef]:
    """Depth-first over all nodes; a node's subgraph nodes follow it directly."""
    for index, node in enumerate(graph.node):
        name = node_name(node, index)
        yield NodeRef(node, name, path)
        for attr_name, sub in subgraphs(node):
            yield from iter_nodes(sub, join_path(path, name, attr_name))


def iter_graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """The graph itself and every nested subgraph."""
    yield graph
    for node in graph.node:
        for _, sub in subgraphs(node):
            yield from iter_graphs(sub)


def outer_names(node: NodeProto) -> set[str]:
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


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... whichever ``taken`` lacks first; it is added to ``taken``."""
    name, index = base, 1
    while name in taken:
        index += 1
        name = f"{base}_{index}"
    taken.add(name)
    return name


def read_counts(graph: GraphProto) -> Counter[str]:
    """How often each name is read: by node inputs in ``graph`` and every nested subgraph (a body may read an
    outer tensor), and once more for each graph output that names it."""
    counts = Counter(name for body in iter_graphs(graph) for node in body.node for name in node.input)
    counts.update(output.name for output in graph.output)
    return counts


def constant_tensor(node: NodeProto) -> tuple[tuple[int, ...], int, TensorProto | None] | None:
    """(dims, elem_type, tensor proto if any) of a Constant node's value, or None if malformed."""
    for attr in node.attribute:
        name = attr.name
        if name == "value":
            return tuple(attr.t.dims), attr.t.data_type, attr.t
        if name == "sparse_value":
            return tuple(attr.sparse_tensor.dims), attr.sparse_tensor.values.data_type, None
        if name == "value_float":
            return (), TensorProto.FLOAT, None
        if name == "value_floats":
            return (len(attr.floats),), TensorProto.FLOAT, None
        if name == "value_int":
            return (), TensorProto.INT64, None
        if name == "value_ints":
            return (len(attr.ints),), TensorProto.INT64, None
        if name == "value_string":
            return (), TensorProto.STRING, None
        if name == "value_strings":
            return (len(attr.strings),), TensorProto.STRING, None
    return None


def stored_tensors(graph: GraphProto) -> dict[str, TensorProto]:
    """The tensors ``graph`` stores, by name: its initializers and its Constant nodes' ``value`` tensors (read with
    small_constant: never external data)."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        value = constant_tensor(node) if is_op(node, "Constant") and node.output else None
        if value is not None and value[2] is not None:
            found[node.output[0]] = value[2]
    return found


def weight_names(graph: GraphProto) -> set[str]:
    """Initializers (sparse ones included) and Constant outputs of ``graph`` (not its subgraphs)."""
    names = {t.name for t in graph.initializer}
    names |= {s.values.name for s in graph.sparse_initializer}
    names |= {n.output[0] for n in graph.node if is_op(n, "Constant") and n.output}
    return names


def real_input_names(graph: GraphProto) -> list[str]:
    """Graph inputs that are not initializers (old-IR models list weights as inputs too)."""
    weights = {t.name for t in graph.initializer} | {
        s.values.name for s in graph.sparse_initializer
    }
    return [vi.name for vi in graph.input if vi.name not in weights]


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with model-local functions inlined (a new proto), or the model itself.

    Inlining lets shape inference and MAC counting see the real ops behind a
    function call. It is best effort: on failure the original model is analysed.
    """
    if not model.functions:
        return model
    try:
        import onnx.inliner

        return onnx.inliner.inline_local_functions(model)
    except Exception:  # noqa: BLE001 - third-party C++ failure; analysis still works without it
        return model


INTEGER_OPS = frozenset(
    {
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
    }
)


def is_integer_op(node: NodeProto) -> bool:
    """QOperator-style ops computing on quantized tensors (QLinear*, *Integer, QGemm, ...)."""
    return node.domain in Q_DOMAINS and (
        node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS
    )
