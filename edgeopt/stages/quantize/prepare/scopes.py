"""Walking a model's graphs with scoping (a subgraph sees its enclosing graphs' names), and the compute
nodes whose weights the quantizer could store as int8."""


from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from onnx import (
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
)
from pydantic import BaseModel, ConfigDict

from edgeopt.graph.onnx_protos import (
    DEFAULT_DOMAINS,
    constant_tensor,
    is_op,
    join_path,
    node_name,
    subgraphs,
)

MS_DOMAIN = "com.microsoft"
# Float compute ops onnxruntime can quantize; the value lists the input slots that hold weights.
COMPUTE_WEIGHT_SLOTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("", "Conv"): (1,),
    ("", "ConvTranspose"): (1,),
    ("", "MatMul"): (1, 0),
    ("", "Gemm"): (1, 0),
    ("", "Gather"): (0,),  # embeddings: only counted when the table is a constant
    ("", "LSTM"): (1, 2),
    ("", "GRU"): (1, 2),
    (MS_DOMAIN, "Attention"): (1,),
}
COMPUTE_LABEL = "Conv/ConvTranspose/MatMul/Gemm/Gather/LSTM/GRU/Attention"
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
# Integer types a DequantizeLinear weight may be stored in.
QUANT_INT_DTYPES = frozenset({"int4", "uint4", "int8", "uint8", "int16", "uint16"})
QOPERATOR_OPS = frozenset({"QGemm", "QAttention", "QEmbedLayerNormalization"})
# Activations the QDQ quantizer removes, renaming the producer's output (QDQRemovableActivation).
REMOVABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------- scopes


def norm_domain(domain: str) -> str:
    return "" if domain in DEFAULT_DOMAINS else domain


def node_key(node: NodeProto) -> str:
    """Identifies a node across quantization: its name, else its first output."""
    if node.name:
        return node.name
    return "#" + (node.output[0] if node.output else "")


@dataclass
class Scope:
    """One graph with links to the graphs enclosing it (ONNX outer-scope lookup)."""

    graph: GraphProto
    path: str  # display path: "" for the main graph, "<node>/<attr>" below it
    key: tuple[tuple[str, str], ...]  # path matched between a float and a quantized model
    parent: Scope | None
    initializers: dict[str, TensorProto] = field(default_factory=dict)
    constants: dict[str, NodeProto] = field(default_factory=dict)  # Constant node outputs
    producers: dict[str, NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[NodeProto]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.initializers = {t.name: t for t in self.graph.initializer}
        for node in self.graph.node:
            for out in node.output:
                if out:
                    self.producers[out] = node
            if is_op(node, "Constant") and node.output:
                self.constants[node.output[0]] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def chain(self) -> Iterator[Scope]:
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def resolve(self, name: str) -> Scope | None:
        """The innermost scope defining ``name`` (as initializer, node output or graph input)."""
        for scope in self.chain():
            if (
                name in scope.initializers
                or name in scope.producers
                or any(i.name == name for i in scope.graph.input)
            ):
                return scope
        return None

    def initializer(self, name: str) -> TensorProto | None:
        scope = self.resolve(name)
        return None if scope is None else scope.initializers.get(name)

    def producer(self, name: str) -> NodeProto | None:
        scope = self.resolve(name)
        return None if scope is None else scope.producers.get(name)

    def constant_info(self, name: str) -> tuple[int, str] | None:
        """(elem_type, "initializer"|"Constant") when ``name`` is a constant tensor in scope."""
        scope = self.resolve(name)
        if scope is None:
            return None
        if name in scope.initializers:
            return scope.initializers[name].data_type, "initializer"
        node = scope.constants.get(name)
        if node is not None and (const := constant_tensor(node)) is not None:
            return const[1], "Constant"
        return None


def walk_scopes(graph: GraphProto) -> Iterator[Scope]:
    def walk(scope: Scope) -> Iterator[Scope]:
        yield scope
        for index, node in enumerate(scope.graph.node):
            for attr_name, sub in subgraphs(node):
                child = Scope(
                    graph=sub,
                    path=join_path(scope.path, node_name(node, index), attr_name),
                    key=(*scope.key, (node_key(node), attr_name)),
                    parent=scope,
                )
                yield from walk(child)

    yield from walk(Scope(graph=graph, path="", key=(), parent=None))


def all_names(model: ModelProto) -> set[str]:
    """Every tensor and node name of ``model``, subgraphs included: what a new name must not be."""
    names: set[str] = set()
    for scope in walk_scopes(model.graph):
        g = scope.graph
        names.update(t.name for t in g.initializer)
        names.update(v.name for v in (*g.input, *g.output, *g.value_info))
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
            names.add(node.name)
    names.discard("")
    return names


def _display(scope: Scope, node: NodeProto, index: int) -> str:
    return join_path(scope.path, node_name(node, index))


# ------------------------------------------------------------------ compute nodes


@dataclass(frozen=True)
class Compute:
    scope: Scope
    node: NodeProto
    display: str
    weight_slots: tuple[int, ...]  # input slots holding constant weights (may be empty)


def compute_nodes(graph: GraphProto) -> Iterator[Compute]:
    """Quantizable float compute nodes, subgraphs included, with their constant-weight slots."""
    for scope in walk_scopes(graph):
        for index, node in enumerate(scope.graph.node):
            slots = COMPUTE_WEIGHT_SLOTS.get((norm_domain(node.domain), node.op_type))
            if slots is None:
                continue
            constant = tuple(
                s
                for s in slots
                if s < len(node.input)
                and node.input[s]
                and (info := scope.constant_info(node.input[s])) is not None
                and info[0] in FLOAT_TYPES
            )
            if node.op_type in ("MatMul", "Gemm") and constant:
                constant = constant[:1]  # B if constant, else A
            if node.op_type == "Gather" and not constant:
                continue  # index arithmetic, not an embedding table
            yield Compute(scope, node, _display(scope, node, index), constant)


def const_derived(scope: Scope) -> dict[str, str]:
    """Tensors of this graph computed only from constants: name -> op that computes it."""
    derived: dict[str, str] = {}
    for node in scope.graph.node:
        if (
            node.op_type in ("Constant", "DequantizeLinear")  # DQ weights: already quantized
            or node.op_type in _RANDOM_OPS
            or subgraphs(node)
        ):
            continue
        inputs = [i for i in node.input if i]
        if inputs and all(i in derived or scope.constant_info(i) is not None for i in inputs):
            for out in node.output:
                if out:
                    derived[out] = node.op_type
    return derived
