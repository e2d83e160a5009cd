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

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, NodeProto, TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict

from edgeopt.analysis._graph import (
    DEFAULT_DOMAINS,
    constant_tensor,
    dtype_name,
    is_op,
    iter_nodes,
    join_path,
    node_name,
    op_key,
    subgraphs,
    tensor_bytes,
    uses_external_data,
)
from edgeopt.analysis.summary import _DYNAMIC_OPS, _WEIGHTS_ONLY_OPS, _is_integer_op, _quantization
from edgeopt.errors import InputError
from edgeopt.export.onnx_normalize import MIN_OPSET, default_opset

__all__ = [
    "LiftReport",
    "LiftedGraph",
    "NodeCoverage",
    "QuantCoverage",
    "check_quantizable",
    "count_quantized_nodes",
    "lift_constant_weights",
    "quantize_subgraph_weights",
    "spatial_means_as_global_pool",
]

_MS_DOMAIN = "com.microsoft"
# Float compute ops onnxruntime can quantize; the value lists the input slots that hold weights.
_COMPUTE_WEIGHT_SLOTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("", "Conv"): (1,),
    ("", "ConvTranspose"): (1,),
    ("", "MatMul"): (1, 0),
    ("", "Gemm"): (1, 0),
    ("", "Gather"): (0,),  # embeddings: only counted when the table is a constant
    ("", "LSTM"): (1, 2),
    ("", "GRU"): (1, 2),
    (_MS_DOMAIN, "Attention"): (1,),
}
_COMPUTE_LABEL = "Conv/ConvTranspose/MatMul/Gemm/Gather/LSTM/GRU/Attention"
_FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
# Integer types a DequantizeLinear weight may be stored in.
_QUANT_INT_DTYPES = frozenset({"int4", "uint4", "int8", "uint8", "int16", "uint16"})
_QOPERATOR_OPS = frozenset({"QGemm", "QAttention", "QEmbedLayerNormalization"})
# Activations the QDQ quantizer removes, renaming the producer's output (QDQRemovableActivation).
_REMOVABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------- scopes


def _norm_domain(domain: str) -> str:
    return "" if domain in DEFAULT_DOMAINS else domain


def _node_key(node: NodeProto) -> str:
    """Identifies a node across quantization: its name, else its first output."""
    if node.name:
        return node.name
    return "#" + (node.output[0] if node.output else "")


@dataclass
class _Scope:
    """One graph with links to the graphs enclosing it (ONNX outer-scope lookup)."""

    graph: GraphProto
    path: str  # display path: "" for the main graph, "<node>/<attr>" below it
    key: tuple[tuple[str, str], ...]  # path matched between a float and a quantized model
    parent: _Scope | None
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

    def chain(self) -> Iterator[_Scope]:
        scope: _Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def resolve(self, name: str) -> _Scope | None:
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


def _walk_scopes(graph: GraphProto) -> Iterator[_Scope]:
    def walk(scope: _Scope) -> Iterator[_Scope]:
        yield scope
        for index, node in enumerate(scope.graph.node):
            for attr_name, sub in subgraphs(node):
                child = _Scope(
                    graph=sub,
                    path=join_path(scope.path, node_name(node, index), attr_name),
                    key=(*scope.key, (_node_key(node), attr_name)),
                    parent=scope,
                )
                yield from walk(child)

    yield from walk(_Scope(graph=graph, path="", key=(), parent=None))


def _display(scope: _Scope, node: NodeProto, index: int) -> str:
    return join_path(scope.path, node_name(node, index))


# ------------------------------------------------------------------------ lifting


class LiftedGraph(_Frozen):
    """Constants turned into initializers in one graph ("" is the main graph)."""

    path: str
    constants: int
    bytes: int
    names: list[str]


class LiftReport(_Frozen):
    graphs: list[LiftedGraph]
    total_constants: int
    total_bytes: int
    skipped: list[str]  # "<path>/<name>: why it stayed a Constant node"
    ir_version_raised_from: int | None  # subgraph initializers without graph inputs need IR >= 4


def _constant_as_tensor(node: NodeProto) -> TensorProto | None:
    """The dense tensor a Constant node yields (named after its output), or None."""
    if len(node.attribute) != 1 or not node.output or not node.output[0]:
        return None
    attr = node.attribute[0]
    if attr.ref_attr_name:  # inside a function body: the value is a call argument
        return None
    name = node.output[0]
    tensor: TensorProto | None = None
    if attr.name == "value" and attr.type == AttributeProto.TENSOR:
        tensor = TensorProto()
        tensor.CopyFrom(attr.t)
    elif attr.name == "value_float":
        tensor = helper.make_tensor(name, TensorProto.FLOAT, [], [attr.f])
    elif attr.name == "value_floats":
        tensor = helper.make_tensor(name, TensorProto.FLOAT, [len(attr.floats)], list(attr.floats))
    elif attr.name == "value_int":
        tensor = helper.make_tensor(name, TensorProto.INT64, [], [attr.i])
    elif attr.name == "value_ints":
        tensor = helper.make_tensor(name, TensorProto.INT64, [len(attr.ints)], list(attr.ints))
    elif attr.name == "value_string":
        tensor = helper.make_tensor(name, TensorProto.STRING, [], [attr.s])
    elif attr.name == "value_strings":
        tensor = helper.make_tensor(name, TensorProto.STRING, [len(attr.strings)], list(attr.strings))
    if tensor is not None:
        tensor.name = name
    return tensor


def lift_constant_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, LiftReport]:
    """A new model whose ``Constant`` nodes are initializers of the graph they were in.

    Main graph and every ``If``/``Loop``/``Scan`` body (recursively) are handled. Names
    and scopes do not change, so the model computes exactly what it did. Constants that
    are graph outputs, sparse, or function-attribute references are left alone (listed in
    ``skipped``). The input model is not modified. Model-local functions are not touched.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    lifted: list[LiftedGraph] = []
    skipped: list[str] = []

    def lift(graph: GraphProto, path: str) -> None:
        outputs = {o.name for o in graph.output}
        taken = {t.name for t in graph.initializer} | {i.name for i in graph.input}
        keep: list[NodeProto] = []
        names: list[str] = []
        size = 0
        for index, node in enumerate(graph.node):
            if is_op(node, "Constant"):
                label = join_path(path, node.output[0] if node.output else node_name(node, index))
                tensor = _constant_as_tensor(node)
                reason = None
                if tensor is None:
                    reason = "sparse, attribute-reference or malformed value"
                elif tensor.name in outputs:
                    reason = "it is a graph output"
                elif tensor.name in taken:
                    reason = "an initializer or input of that name already exists"
                if reason is None:
                    graph.initializer.append(tensor)
                    taken.add(tensor.name)
                    names.append(tensor.name)
                    size += tensor_bytes(tensor)
                    continue
                skipped.append(f"{label}: {reason}")
            keep.append(node)
            for attr_name, sub in subgraphs(node):
                lift(sub, join_path(path, node_name(node, index), attr_name))
        if names:
            del graph.node[:]
            graph.node.extend(keep)
            lifted.append(LiftedGraph(path=path, constants=len(names), bytes=size, names=names))

    lift(result.graph, "")
    raised_from = None
    if lifted and result.ir_version < 4:
        # IR 3 requires every initializer to be listed as a graph input; subgraph inputs
        # are positional, so raise the IR version rather than add inputs.
        raised_from = result.ir_version
        result.ir_version = 4
    lifted.sort(key=lambda g: g.path)
    report = LiftReport(
        graphs=lifted,
        total_constants=sum(g.constants for g in lifted),
        total_bytes=sum(g.bytes for g in lifted),
        skipped=skipped,
        ir_version_raised_from=raised_from,
    )
    return result, report


def spatial_means_as_global_pool(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A new model whose main-graph ReduceMean over all spatial axes (2..rank-1) of a float
    tensor is a GlobalAveragePool (followed by a Flatten when keepdims=0). Returns the model and
    the names of the rewritten nodes; the input model is not modified.

    Why: torch exports ``adaptive_avg_pool2d(x, 1)`` and ``x.mean((2, 3))`` as ReduceMean, which
    onnxruntime's quantizer leaves in float (a Dequantize, a float mean and a Quantize between the
    last conv and the head), while GlobalAveragePool has an int8 kernel. The two compute the same.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference fails on some valid graphs; then nothing is rewritten
        return model, []
    info = {v.name: v.type.tensor_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    opset = default_opset(model)
    initializers = {t.name: t for t in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if is_op(n, "Constant") and n.output}
    result = onnx.ModelProto()
    result.CopyFrom(model)
    rewritten: list[str] = []
    dropped_axes: set[str] = set()
    nodes: list[NodeProto] = []
    for index, node in enumerate(result.graph.node):
        tensor = info.get(node.input[0]) if is_op(node, "ReduceMean") and node.input else None
        rank = len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else 0
        if tensor is None or tensor.elem_type not in _FLOAT_TYPES - {TensorProto.BFLOAT16} or rank < 3:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes_input = node.input[1] if opset >= 18 and len(node.input) > 1 and node.input[1] else None
        if axes_input is not None:
            source = initializers.get(axes_input)
            if source is None and axes_input in constants:
                source = _constant_as_tensor(constants[axes_input])
            axes = None if source is None else [int(a) for a in numpy_helper.to_array(source).ravel()]
        else:
            axes = attrs.get("axes")
        if axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
            nodes.append(node)
            continue
        name = node_name(node, index)
        if attrs.get("keepdims", 1):
            nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]], name=name))
        else:
            pooled = f"{node.output[0]}__pooled"
            nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=name))
            nodes.append(helper.make_node("Flatten", [pooled], [node.output[0]], name=f"{name}__flatten", axis=1))
        if axes_input is not None:
            dropped_axes.add(axes_input)
        rewritten.append(name)
    if rewritten:
        del result.graph.node[:]
        result.graph.node.extend(nodes)
        still_read = {i for ref in iter_nodes(result.graph) for i in ref.node.input}
        unused = [t for t in result.graph.initializer if t.name in dropped_axes and t.name not in still_read]
        for tensor in unused:
            result.graph.initializer.remove(tensor)
    return result, rewritten


# ------------------------------------------------------------------ compute nodes


@dataclass(frozen=True)
class _Compute:
    scope: _Scope
    node: NodeProto
    display: str
    weight_slots: tuple[int, ...]  # input slots holding constant weights (may be empty)


def _compute_nodes(graph: GraphProto) -> Iterator[_Compute]:
    """Quantizable float compute nodes, subgraphs included, with their constant-weight slots."""
    for scope in _walk_scopes(graph):
        for index, node in enumerate(scope.graph.node):
            slots = _COMPUTE_WEIGHT_SLOTS.get((_norm_domain(node.domain), node.op_type))
            if slots is None:
                continue
            constant = tuple(
                s
                for s in slots
                if s < len(node.input)
                and node.input[s]
                and (info := scope.constant_info(node.input[s])) is not None
                and info[0] in _FLOAT_TYPES
            )
            if node.op_type in ("MatMul", "Gemm") and constant:
                constant = constant[:1]  # B if constant, else A
            if node.op_type == "Gather" and not constant:
                continue  # index arithmetic, not an embedding table
            yield _Compute(scope, node, _display(scope, node, index), constant)


def _const_derived(scope: _Scope) -> dict[str, str]:
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


# --------------------------------------------------------------------- checking


def _examples(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _ops_text(nodes: Sequence[NodeProto]) -> str:
    counts = Counter(op_key(n.op_type, n.domain) for n in nodes)
    return ", ".join(f"{c} {op}" for op, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def check_quantizable(model: onnx.ModelProto) -> list[str]:
    """Reasons why onnxruntime's static quantization would achieve nothing or break.

    Each reason says what is wrong and how to fix it; ``[]`` means nothing stands in
    the way. Reads only protos (never external data bytes); does not modify ``model``.
    """
    reasons: list[str] = []
    opset = default_opset(model)
    if opset < MIN_OPSET:
        reasons.append(
            f"opset {opset} < {MIN_OPSET}: per-channel QDQ writes DequantizeLinear with an axis, "
            f"which needs opset {MIN_OPSET} (upgrade first, e.g. edgeopt convert --opset 17 or "
            f"onnx.version_converter.convert_version)"
        )

    all_nodes = [ref.node for ref in iter_nodes(model.graph)]
    kind, detail, _ = _quantization(model.graph, all_nodes, {})
    if kind != "none":
        reasons.append(
            f"the model is already quantized ({kind}: {detail}); quantizing it again would "
            "stack quantization errors (start from the float model)"
        )

    computes = list(_compute_nodes(model.graph))
    function_computes = [
        n
        for f in model.functions
        for n in f.node
        if (_norm_domain(n.domain), n.op_type) in _COMPUTE_WEIGHT_SLOTS
    ]
    if function_computes:
        reasons.append(
            f"{_ops_text(function_computes)} sit inside model-local functions, which onnxruntime's "
            "quantizer does not look into: inline them first (onnx.inliner.inline_local_functions)"
        )
    if not computes:
        if not function_computes:
            reasons.append(
                f"no {_COMPUTE_LABEL} nodes found: static quantization has nothing to quantize"
            )
        return reasons

    main = [c for c in computes if not c.scope.key]
    sub = [c for c in computes if c.scope.key]
    with_init_weight = [
        c for c in main if any(c.node.input[s] in c.scope.initializers for s in c.weight_slots)
    ]
    if not with_init_weight:
        reasons.append(
            f"no {_COMPUTE_LABEL} with constant weights found in the main graph: "
            "quantize_static would quantize no weights (see the other reasons for where they are)"
        )

    constant_weights: list[str] = []
    derived_weights: list[str] = []
    external: list[str] = []
    derived_cache: dict[int, dict[str, str]] = {}
    for c in computes:
        for s in c.weight_slots:
            name = c.node.input[s]
            info = c.scope.constant_info(name)
            if info is not None and info[1] == "Constant":
                constant_weights.append(c.display)
            tensor = c.scope.initializer(name)
            if tensor is not None and uses_external_data(tensor) and not tensor.raw_data:
                external.append(name)
        if c.weight_slots or c.node.op_type == "Gather":
            continue
        # No constant weight slot: is a weight computed from constants by ops the quantizer ignores?
        derived = derived_cache.setdefault(id(c.scope), _const_derived(c.scope))
        for s in _COMPUTE_WEIGHT_SLOTS[(_norm_domain(c.node.domain), c.node.op_type)]:
            if s < len(c.node.input) and c.node.input[s] in derived:
                derived_weights.append(f"{c.display} <- {derived[c.node.input[s]]}")
                break

    if constant_weights:
        reasons.append(
            f"{len(constant_weights)} weight(s) come from Constant nodes ({_examples(constant_weights)}); "
            "onnxruntime's quantizer only quantizes initializers: run lift_constant_weights() first"
        )
    if derived_weights:
        reasons.append(
            f"{len(derived_weights)} weight(s) are computed from constants by ops the quantizer does not "
            f"see through ({_examples(derived_weights)}), so they stay float: fold constants first "
            "(edgeopt convert simplifies with onnxslim)"
        )
    if external:
        reasons.append(
            f"{len(external)} weight(s) are external data that was not loaded ({_examples(external)}): "
            "load the model with its external data before quantizing"
        )
    if sub:
        reasons.append(
            f"{len(sub)} compute node(s) ({_ops_text([c.node for c in sub])}) are inside If/Loop/Scan "
            f"subgraphs ({_examples(sorted({c.scope.path for c in sub}))}): onnxruntime 1.32's "
            "quantize_static never quantizes them (QDQ skips subgraphs; QOperator with EnableSubgraph "
            "has no calibration ranges there and fails). After lift_constant_weights(), use "
            "quantize_subgraph_weights() on the quantized model for int8 weights, or "
            "quantize_dynamic(extra_options={'EnableSubgraph': True})"
        )
    return reasons


# ---------------------------------------------------------------------- coverage


QuantHow = Literal["qdq", "weights-only", "qoperator", "dynamic", "none"]


class NodeCoverage(_Frozen):
    name: str  # "<subgraph path>/<node>" inside subgraphs
    op_type: str
    quantized: bool
    how: QuantHow
    detail: str


class QuantCoverage(_Frozen):
    """How many of the float model's quantizable compute nodes the int8 model quantized."""

    total: int
    quantized: int
    unquantized: list[str]  # float compute nodes left in float, by name
    by_op: dict[str, list[int]]  # op -> [quantized, total]
    nodes: list[NodeCoverage]

    @property
    def ratio(self) -> float:
        return self.quantized / self.total if self.total else 0.0


def _is_quant_int(scope: _Scope, name: str) -> bool:
    """``name`` is an integer (int4..int16) initializer or Constant in scope."""
    info = scope.constant_info(name)
    return info is not None and (dtype_name(info[0]) or "") in _QUANT_INT_DTYPES


def _dq_of_int_weight(scope: _Scope, name: str) -> bool:
    """``name`` is produced by DequantizeLinear of an integer initializer/Constant."""
    node = scope.producer(name)
    if node is None or not is_op(node, "DequantizeLinear", frozenset({"", "ai.onnx", _MS_DOMAIN})):
        return False
    owner = scope.resolve(name) or scope
    return bool(node.input) and _is_quant_int(owner, node.input[0])


def _from_dq(scope: _Scope, name: str) -> bool:
    node = scope.producer(name)
    return node is not None and node.op_type == "DequantizeLinear"


def _quant_op_how(node: NodeProto) -> QuantHow | None:
    """How an op computes on quantized data; None for float ops and for Q/DQ themselves."""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return None
    if node.op_type in _WEIGHTS_ONLY_OPS:
        return "weights-only"
    if node.domain in DEFAULT_DOMAINS | {_MS_DOMAIN}:
        if node.op_type.startswith("QLinear") or node.op_type in _QOPERATOR_OPS:
            return "qoperator"
        if _is_integer_op(node) or node.op_type in _DYNAMIC_OPS:
            return "dynamic"
    return None


def _match(
    fnode: NodeProto, q_scope: _Scope, aliases: Sequence[str] = ()
) -> tuple[NodeProto | None, NodeProto | None]:
    """(quantized op replacing ``fnode``, node of the same op type standing for it) in ``q_scope``.

    ``aliases``: other names the node's output may take (QDQ drops a Relu/Clip after it
    and gives the node the activation's output name)."""
    same = lambda n: n.op_type == fnode.op_type and _norm_domain(n.domain) == _norm_domain(fnode.domain)  # noqa: E731
    if fnode.name:
        # onnxruntime keeps the name (QDQ), or names the replacement "<name>_quant"
        # (QOperator, dynamic) / "<name>_MatMul_quant" (dynamic Gemm).
        named = {fnode.name, fnode.name + "_quant", fnode.name + "_MatMul_quant"}
        hits = [n for n in q_scope.graph.node if n.name in named]
        for n in hits:
            if _quant_op_how(n):
                return n, None
        for n in hits:
            if n.name == fnode.name and same(n):
                return None, n
    out = fnode.output[0] if fnode.output else ""
    if not out:
        return None, None
    replaced = {out + "_quantized", out + "_output_quantized", out + "_MatMul_output_quantized"}
    kept = {name + suffix for name in (out, *aliases) for suffix in ("", "_QuantizeLinear_Input")}
    for n in q_scope.graph.node:
        if _quant_op_how(n) and any(o in replaced or o in kept for o in n.output if o):
            return n, None
    if not fnode.name:
        for n in q_scope.graph.node:
            if same(n) and any(o in kept for o in n.output if o):
                return None, n
    return None, None


def _judge(f: _Compute, q_scope: _Scope | None, dynamic_model: bool) -> tuple[bool, QuantHow, str]:
    if q_scope is None:
        return False, "none", "its graph is missing from the quantized model"
    fnode = f.node
    aliases = []
    if fnode.output and len(users := f.scope.consumers.get(fnode.output[0], [])) == 1:
        if users[0].op_type in _REMOVABLE_ACTIVATIONS and users[0].output:
            aliases.append(users[0].output[0])
    replacement, same_op = _match(fnode, q_scope, aliases)
    if replacement is not None:
        how = _quant_op_how(replacement)
        assert how is not None
        label = replacement.name or replacement.output[0]
        return True, how, f"replaced by {op_key(replacement.op_type, replacement.domain)} {label!r}"
    if same_op is None:
        return False, "none", f"no node matching {_node_key(fnode)!r} in the quantized model"

    slots = _COMPUTE_WEIGHT_SLOTS[(_norm_domain(fnode.domain), fnode.op_type)]
    q_inputs = list(same_op.input)
    if f.weight_slots:
        weight_ok = all(
            s < len(q_inputs)
            and (_dq_of_int_weight(q_scope, q_inputs[s]) or _is_quant_int(q_scope, q_inputs[s]))
            for s in f.weight_slots
        )
        if not weight_ok:
            return False, "none", "its weight is still float"
        if any(_is_quant_int(q_scope, q_inputs[s]) for s in f.weight_slots):
            # GatherQuant-style: the op reads the int8 table itself.
            return True, ("dynamic" if dynamic_model else "qoperator"), "reads an int8 weight directly"
        others = [i for idx, i in enumerate(q_inputs) if i and idx not in f.weight_slots]
        acts_q = any(_from_dq(q_scope, i) for i in others)
        out_q = any(
            n.op_type == "QuantizeLinear"
            for o in same_op.output
            if o
            for n in q_scope.consumers.get(o, [])
        )
        if acts_q or out_q:
            return True, "qdq", "int8 weight and quantized activations (QDQ)"
        return True, "weights-only", "int8 weight, float activations"
    # No constant weight (e.g. attention's Q.K^T): quantized when both operands are.
    operands = [q_inputs[s] for s in sorted(slots)[:2] if s < len(q_inputs) and q_inputs[s]]
    if operands and all(_from_dq(q_scope, i) for i in operands):
        return True, "qdq", "both operands dequantized (QDQ)"
    return False, "none", "its inputs are not quantized"


def count_quantized_nodes(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> QuantCoverage:
    """Which quantizable compute nodes of ``float_model`` ended up quantized in ``quant_model``.

    Pass the float model exactly as it went into the quantizer (e.g. after
    :func:`lift_constant_weights`). A node counts as quantized when the int8 model
    replaced it by a quantized op (QLinear*, *Integer, QGemm, DynamicQuantizeLSTM, ...,
    matched by node name or output name), or kept it with its weight fed by
    DequantizeLinear of an int8/uint8 initializer (QDQ, or weights-only when no
    activation is quantized), or, for weightless MatMuls, with both operands
    dequantized. Subgraphs are included. Nodes are matched by name, so name them
    before quantizing (unnamed nodes are matched by output name, which QDQ may rename).
    """
    q_scopes = {s.key: s for s in _walk_scopes(quant_model.graph)}
    dynamic_model = any(
        n.op_type in ("DynamicQuantizeLinear", *_DYNAMIC_OPS) for n in (r.node for r in iter_nodes(quant_model.graph))
    )
    rows: list[NodeCoverage] = []
    for f in _compute_nodes(float_model.graph):
        quantized, how, detail = _judge(f, q_scopes.get(f.scope.key), dynamic_model)
        rows.append(
            NodeCoverage(
                name=f.display,
                op_type=op_key(f.node.op_type, f.node.domain),
                quantized=quantized,
                how=how,
                detail=detail,
            )
        )
    by_op: dict[str, list[int]] = {}
    for row in rows:
        entry = by_op.setdefault(row.op_type, [0, 0])
        entry[0] += int(row.quantized)
        entry[1] += 1
    return QuantCoverage(
        total=len(rows),
        quantized=sum(r.quantized for r in rows),
        unquantized=[r.name for r in rows if not r.quantized],
        by_op=dict(sorted(by_op.items())),
        nodes=rows,
    )


# -------------------------------------------------------- subgraph weights (int8)


_WEIGHT_ONLY_TARGETS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def _weight_axis(node: NodeProto, slot: int, ndim: int) -> int | None:
    if node.op_type == "Conv":
        return 0 if ndim >= 3 else None
    if node.op_type == "ConvTranspose":
        return 1 if ndim >= 3 else None
    if ndim < 2:
        return None
    if node.op_type == "Gemm":
        trans = next((a.i for a in node.attribute if a.name == ("transB" if slot == 1 else "transA")), 0)
        if slot == 1:
            return 0 if trans else 1
        return 1 if trans else 0
    if node.op_type == "MatMul":
        return ndim - 1 if slot == 1 else ndim - 2
    return None


def _all_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()
    for scope in _walk_scopes(model.graph):
        g = scope.graph
        names.update(t.name for t in g.initializer)
        names.update(v.name for v in (*g.input, *g.output, *g.value_info))
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
            names.add(node.name)
    return names


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _uses_below(graph: GraphProto, name: str) -> list[tuple[NodeProto, bool]]:
    """Every use of ``name`` in ``graph``: (node, True) at the node's own inputs, (node, False)
    when a nested subgraph of the node reads it."""
    uses: list[tuple[NodeProto, bool]] = []
    for node in graph.node:
        if name in node.input:
            uses.append((node, True))
        for _, sub in subgraphs(node):
            if _uses_below(sub, name):
                uses.append((node, False))
    return uses


def quantize_subgraph_weights(
    model: onnx.ModelProto, *, per_channel: bool = True, min_elements: int = 16
) -> tuple[onnx.ModelProto, list[str]]:
    """A new model whose subgraph Conv/ConvTranspose/MatMul/Gemm weights are stored as int8.

    onnxruntime 1.32's ``quantize_static`` leaves every node inside If/Loop/Scan bodies in
    float (see the module docstring). This stores each float32 weight that is an
    initializer of such a subgraph (run :func:`lift_constant_weights` first) as a
    symmetric int8 initializer plus ``DequantizeLinear`` feeding the same tensor name:
    weights-only quantization, activations stay float. Use it on the quantized model.
    A weight is converted only when every use of it in its graph is a weight input of
    those ops. Returns the model and the converted weights as "<graph path>/<name>".
    """
    opset = default_opset(model)
    if opset < 10:
        raise InputError(
            f"opset {opset} has no DequantizeLinear",
            f"upgrade the model to opset >= {MIN_OPSET} first",
        )
    per_channel = per_channel and opset >= MIN_OPSET
    result = onnx.ModelProto()
    result.CopyFrom(model)
    taken = _all_names(result)
    done: list[str] = []
    # Innermost graphs first: rewriting a graph's node list re-creates its nodes, so a nested
    # body edited after its parent would be edited in a detached copy.
    for scope in reversed(list(_walk_scopes(result.graph))):
        if not scope.key:
            continue
        graph = scope.graph
        new_nodes: list[NodeProto] = []
        for tensor in list(graph.initializer):
            if tensor.data_type != TensorProto.FLOAT or uses_external_data(tensor):
                continue
            uses = _uses_below(graph, tensor.name)
            axes: set[int | None] = set()
            ok = bool(uses)
            for node, direct in uses:
                slots = [i for i, n in enumerate(node.input) if n == tensor.name]
                if (
                    not direct
                    or _norm_domain(node.domain) != ""
                    or node.op_type not in _WEIGHT_ONLY_TARGETS
                    or any(s not in _COMPUTE_WEIGHT_SLOTS[("", node.op_type)][:2] for s in slots)
                ):
                    ok = False
                    break
                axes.update(_weight_axis(node, s, len(tensor.dims)) for s in slots)
            if not ok or int(np.prod(tensor.dims)) < min_elements:
                continue
            weights = numpy_helper.to_array(tensor).astype(np.float32)
            axis = axes.pop() if per_channel and len(axes) == 1 else None
            if axis is None:
                scale = np.array(max(float(np.abs(weights).max(initial=0.0)), 1e-12) / 127.0, np.float32)
                shaped = scale
            else:
                reduce = tuple(i for i in range(weights.ndim) if i != axis)
                scale = (np.maximum(np.abs(weights).max(axis=reduce), 1e-12) / 127.0).astype(np.float32)
                shaped = scale.reshape([-1 if i == axis else 1 for i in range(weights.ndim)])
            q = np.clip(np.round(weights / shaped), -127, 127).astype(np.int8)
            zero = np.zeros(scale.shape, np.int8)
            q_name = _fresh(f"{tensor.name}_quantized", taken)
            s_name = _fresh(f"{tensor.name}_scale", taken)
            z_name = _fresh(f"{tensor.name}_zero_point", taken)
            graph.initializer.remove(tensor)
            graph.initializer.extend(
                [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name),
                 numpy_helper.from_array(zero, z_name)]
            )
            attrs = {"axis": axis} if axis is not None else {}
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear", [q_name, s_name, z_name], [tensor.name],
                    name=_fresh(f"{tensor.name}_DequantizeLinear", taken), **attrs,
                )
            )
            done.append(join_path(scope.path, tensor.name))
        if new_nodes:
            # They read initializers only, so putting them first keeps the order topological.
            nodes = list(graph.node)
            del graph.node[:]
            graph.node.extend(new_nodes + nodes)
    return result, done
