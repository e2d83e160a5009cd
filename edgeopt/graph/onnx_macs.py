"""Multiply-accumulate counts per node, with a registry of per-op cost functions.

Only ops whose work is dominated by multiply-accumulates have a cost function
(convolutions, matrix products, recurrent cells); every other op (elementwise,
pooling, normalisation, bias adds) counts 0 MACs. Adding an op is one small function::

    @register_op_cost("Dense", domain="my.domain")
    def _dense(node, shapes):  # x (..., K) times a (K, units) weight
        x = input_shape(node, shapes, 0)
        units = attribute(node, "units")
        return None if x is None or units is None else math.prod(x) * units

A cost function returns None when the shapes it needs are unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import onnx
from onnx import GraphProto, NodeProto

from edgeopt.graph.onnx_protos import (
    DEFAULT_DOMAINS,
    inline_functions,
    is_op,
    join_path,
    node_name,
    op_key,
    subgraphs,
)
from edgeopt.graph.onnx_shapes import TensorInfo, resolve_shapes

__all__ = [
    "CostFn",
    "MacsReport",
    "NodeCost",
    "attribute",
    "compute_macs",
    "get_op_cost",
    "input_shape",
    "macs_by_op_type",
    "output_shape",
    "register_op_cost",
    "total_macs",
]

Shape = tuple[int, ...]
CostFn = Callable[[NodeProto, Mapping[str, TensorInfo]], int | None]

_REGISTRY: dict[tuple[str, str], CostFn] = {}


def _domain(domain: str) -> str:
    return "" if domain in DEFAULT_DOMAINS else domain


def register_op_cost(op_type: str, domain: str = "") -> Callable[[CostFn], CostFn]:
    """Decorator registering ``fn(node, shapes) -> int | None`` as the MAC count of an op.

    A later registration for the same (domain, op_type) replaces the earlier one,
    so users can override the built-in counts.
    """

    def decorator(fn: CostFn) -> CostFn:
        _REGISTRY[(_domain(domain), op_type)] = fn
        return fn

    return decorator


def get_op_cost(op_type: str, domain: str = "") -> CostFn | None:
    """The registered cost function for an op, or None (the op then counts 0 MACs)."""
    return _REGISTRY.get((_domain(domain), op_type))


# ------------------------------------------------------------ helpers for cost fns


def _shape_of(name: str, shapes: Mapping[str, TensorInfo]) -> Shape | None:
    info = shapes.get(name) if name else None
    return info.shape if info is not None else None


def input_shape(node: NodeProto, shapes: Mapping[str, TensorInfo], index: int) -> Shape | None:
    """Shape of the node's ``index``-th input, None if absent or unknown."""
    return _shape_of(node.input[index], shapes) if index < len(node.input) else None


def output_shape(node: NodeProto, shapes: Mapping[str, TensorInfo], index: int = 0) -> Shape | None:
    """Shape of the node's ``index``-th output, None if absent or unknown."""
    return _shape_of(node.output[index], shapes) if index < len(node.output) else None


def attribute(node: NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node attribute (ints, floats, strings decoded), or ``default``.

    Typed ``Any`` because the value's type depends on the attribute (as in the ONNX API).
    """
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _broadcast(a: Sequence[int], b: Sequence[int]) -> Shape | None:
    """Numpy broadcast of two batch shapes, None if incompatible."""
    out: list[int] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 0 not in (x, y) else 0)
    return tuple(reversed(out))


# ------------------------------------------------------------------- convolutions


def _conv_output_shape(node: NodeProto, x: Shape, w: Shape) -> Shape | None:
    """Conv output shape from attributes, for when inference did not provide it."""
    spatial = len(x) - 2
    if spatial < 1 or len(w) != len(x):
        return None
    kernel = list(attribute(node, "kernel_shape", None) or w[2:])
    strides = list(attribute(node, "strides", None) or [1] * spatial)
    dilations = list(attribute(node, "dilations", None) or [1] * spatial)
    pads = list(attribute(node, "pads", None) or [0] * (2 * spatial))
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    out = []
    for i in range(spatial):
        span = (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-x[2 + i] // strides[i]))
        elif auto_pad == "VALID":
            out.append((x[2 + i] - span) // strides[i] + 1)
        else:
            out.append((x[2 + i] + pads[i] + pads[i + spatial] - span) // strides[i] + 1)
    return (x[0], w[0], *out)


def _conv(
    node: NodeProto, shapes: Mapping[str, TensorInfo], x_index: int, w_index: int
) -> int | None:
    # Each output element takes (C / group) * prod(kernel) MACs; W is (M, C/group, k...),
    # so groups and depthwise convs need no special case. Bias adds are not MACs.
    x = input_shape(node, shapes, x_index)
    w = input_shape(node, shapes, w_index)
    if x is None or w is None or len(w) < 3:
        return None
    y = output_shape(node, shapes) or _conv_output_shape(node, x, w)
    return None if y is None else math.prod(y) * math.prod(w[1:])


@register_op_cost("Conv")
def conv_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _conv(node, shapes, 0, 1)


@register_op_cost("ConvInteger")
def conv_integer_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _conv(node, shapes, 0, 1)


@register_op_cost("QLinearConv")
def qlinear_conv_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _conv(node, shapes, 0, 3)  # x, x_scale, x_zp, w, ...


@register_op_cost("FusedConv", domain="com.microsoft")
def fused_conv_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _conv(node, shapes, 0, 1)


@register_op_cost("ConvTranspose")
def conv_transpose_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    # Every input element is scattered through a (M/group, k...) slice of W (C, M/group, k...).
    x = input_shape(node, shapes, 0)
    w = input_shape(node, shapes, 1)
    if x is None or w is None or len(w) < 3:
        return None
    return math.prod(x) * math.prod(w[1:])


# -------------------------------------------------------------- matrix products


def _gemm(a: Shape | None, b: Shape | None, trans_a: bool, trans_b: bool) -> int | None:
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    m, k = (a[1], a[0]) if trans_a else a
    n = b[0] if trans_b else b[1]
    return m * k * n


def _gemm_node(
    node: NodeProto, shapes: Mapping[str, TensorInfo], a_index: int, b_index: int
) -> int | None:
    return _gemm(
        input_shape(node, shapes, a_index),
        input_shape(node, shapes, b_index),
        bool(attribute(node, "transA", 0)),
        bool(attribute(node, "transB", 0)),
    )


@register_op_cost("Gemm")
def gemm_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _gemm_node(node, shapes, 0, 1)


@register_op_cost("FusedGemm", domain="com.microsoft")
def fused_gemm_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _gemm_node(node, shapes, 0, 1)


@register_op_cost("QGemm", domain="com.microsoft")
def qgemm_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _gemm_node(node, shapes, 0, 3)  # A, a_scale, a_zp, B, ...


def matmul(
    a: Shape | None, b: Shape | None, trans_a: bool = False, trans_b: bool = False
) -> int | None:
    """MACs of a numpy-style matmul: batched, broadcasting, 1-D operands promoted."""
    if not a or not b:  # unknown, or a 0-d operand (invalid for matmul)
        return None
    if len(a) == 1:
        a = (1, *a)
    if len(b) == 1:
        b = (*b, 1)
    if trans_a:
        a = (*a[:-2], a[-1], a[-2])
    if trans_b:
        b = (*b[:-2], b[-1], b[-2])
    batch = _broadcast(a[:-2], b[:-2])
    if batch is None:
        return None
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def _matmul_node(
    node: NodeProto, shapes: Mapping[str, TensorInfo], a_index: int, b_index: int
) -> int | None:
    return matmul(input_shape(node, shapes, a_index), input_shape(node, shapes, b_index))


@register_op_cost("MatMul")
def matmul_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _matmul_node(node, shapes, 0, 1)


@register_op_cost("MatMulInteger")
def matmul_integer_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _matmul_node(node, shapes, 0, 1)


@register_op_cost("QLinearMatMul")
def qlinear_matmul_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _matmul_node(node, shapes, 0, 3)  # a, a_scale, a_zp, b, ...


@register_op_cost("MatMulIntegerToFloat", domain="com.microsoft")
def matmul_integer_to_float_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _matmul_node(node, shapes, 0, 1)


@register_op_cost("DynamicQuantizeMatMul", domain="com.microsoft")
def dynamic_quantize_matmul_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _matmul_node(node, shapes, 0, 1)


@register_op_cost("FusedMatMul", domain="com.microsoft")
def fused_matmul_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return matmul(
        input_shape(node, shapes, 0),
        input_shape(node, shapes, 1),
        bool(attribute(node, "transA", 0)),
        bool(attribute(node, "transB", 0)),
    )


@register_op_cost("MatMulNBits", domain="com.microsoft")
def matmul_nbits_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    # B is packed (N, blocks, blob) so K and N come from the attributes.
    a = input_shape(node, shapes, 0)
    k, n = attribute(node, "K"), attribute(node, "N")
    if a is None or not a or k is None or n is None:
        return None
    return math.prod(a[:-1]) * int(k) * int(n)


def einsum(equation: str, operands: Sequence[Shape | None]) -> int | None:
    """Generic Einsum MACs: the product of the sizes of all distinct indices.

    Exact for a two-operand contraction; an upper bound for three or more operands
    (a real implementation contracts pairwise).
    """
    known = [s for s in operands if s is not None]
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(known) != len(operands) or len(terms) != len(known):
        return None
    sizes: dict[str, int] = {}
    ellipsis: Shape = ()
    for term, shape in zip(terms, known, strict=True):
        letters = term.replace("...", "")
        if "..." in term:
            n_ell = len(shape) - len(letters)
            if n_ell < 0:
                return None
            start = term.index("...")
            dims = [*shape[:start], *shape[start + n_ell :]]
            broadcast = _broadcast(ellipsis, shape[start : start + n_ell])
            if broadcast is None:
                return None
            ellipsis = broadcast
        else:
            if len(letters) != len(shape):
                return None
            dims = list(shape)
        for letter, size in zip(letters, dims, strict=True):
            # A size-1 occurrence broadcasts against the real size.
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values()) * math.prod(ellipsis)


@register_op_cost("Einsum")
def einsum_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    equation = attribute(node, "equation")
    if not isinstance(equation, str):
        return None
    return einsum(equation, [input_shape(node, shapes, i) for i in range(len(node.input))])


# -------------------------------------------------------------- recurrent cells


def _rnn(node: NodeProto, shapes: Mapping[str, TensorInfo], gates: int) -> int | None:
    # Per step, direction and batch row: gates * hidden * (input_size + hidden) MACs
    # for the X·W and H·R products. Elementwise gate math is not counted.
    x = input_shape(node, shapes, 0)
    r = input_shape(node, shapes, 2)
    if x is None or len(x) != 3:
        return None
    hidden = attribute(node, "hidden_size") or (r[2] if r is not None and len(r) == 3 else None)
    if not hidden:
        return None
    directions = 2 if attribute(node, "direction", "forward") == "bidirectional" else 1
    seq, batch = (x[1], x[0]) if attribute(node, "layout", 0) == 1 else (x[0], x[1])
    return directions * seq * batch * gates * int(hidden) * (x[2] + int(hidden))


@register_op_cost("LSTM")
def lstm_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _rnn(node, shapes, 4)


@register_op_cost("DynamicQuantizeLSTM", domain="com.microsoft")
def dynamic_quantize_lstm_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _rnn(node, shapes, 4)


@register_op_cost("GRU")
def gru_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _rnn(node, shapes, 3)


@register_op_cost("RNN")
def rnn_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    return _rnn(node, shapes, 1)


# ---------------------------------------------------------------------- the walk


@dataclass(frozen=True)
class NodeCost:
    """MACs of one node. ``macs`` is None when the shapes it needs are unknown.

    ``weight`` is how often the row counts toward totals: 1 normally, the iteration
    count inside a Scan body, 0 for the If branch that is not the larger one.
    """

    name: str
    op_type: str
    domain: str
    macs: int | None
    subgraph_path: str = ""
    weight: int = 1

    @property
    def qualified_name(self) -> str:
        """``name`` prefixed by its subgraph path, unique across the whole model."""
        return join_path(self.subgraph_path, self.name)


@dataclass(frozen=True)
class MacsReport:
    """Per-node rows plus the model total (If = larger branch, Loop body once)."""

    rows: tuple[NodeCost, ...]
    total: int
    trip_count_unknown: bool = False  # a Loop (or Scan of unknown length) was counted once
    unknown_nodes: tuple[str, ...] = ()  # qualified names of rows whose macs is None


def macs_by_op_type(rows: Sequence[NodeCost]) -> dict[str, int]:
    """Weighted MACs per op type (``com.microsoft.QGemm`` style keys), largest first."""
    totals: dict[str, int] = {}
    for row in rows:
        if row.macs and row.weight:
            key = op_key(row.op_type, row.domain)
            totals[key] = totals.get(key, 0) + row.macs * row.weight
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


def total_macs(rows: Sequence[NodeCost]) -> int:
    """Weighted total of the rows (nodes with unknown MACs count 0)."""
    return sum(row.macs * row.weight for row in rows if row.macs)


def _node_macs(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    fn = get_op_cost(node.op_type, node.domain)
    return 0 if fn is None else fn(node, shapes)


def _scan_iterations(node: NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    num_scan_inputs = attribute(node, "num_scan_inputs")
    if not num_scan_inputs or num_scan_inputs > len(node.input):
        return None
    first = input_shape(node, shapes, len(node.input) - int(num_scan_inputs))
    axes = attribute(node, "scan_input_axes") or [0]
    if first is None or not first:
        return None
    return first[int(axes[0]) % len(first)]


def _walk(
    graph: GraphProto, shapes: Mapping[str, TensorInfo], path: str
) -> tuple[list[NodeCost], bool]:
    rows: list[NodeCost] = []
    trip_unknown = False
    for index, node in enumerate(graph.node):
        name = node_name(node, index)
        rows.append(NodeCost(name, node.op_type, node.domain, _node_macs(node, shapes), path))
        attrs = subgraphs(node)
        branches = [_walk(sub, shapes, join_path(path, name, attr)) for attr, sub in attrs]
        if not branches:
            continue
        weights = [1] * len(branches)
        if is_op(node, "If"):
            # One branch runs: count the larger one (then_branch on a tie), the other at weight 0.
            sums = [total_macs(sub_rows) for sub_rows, _ in branches]
            best = max(range(len(branches)), key=lambda i: (sums[i], attrs[i][0] == "then_branch"))
            weights = [1 if i == best else 0 for i in range(len(branches))]
        elif is_op(node, "Loop"):
            trip_unknown = True
        elif is_op(node, "Scan"):
            iterations = _scan_iterations(node, shapes)
            trip_unknown = trip_unknown or iterations is None
            weights = [iterations if iterations is not None else 1] * len(branches)
        for (sub_rows, sub_unknown), weight in zip(branches, weights, strict=True):
            trip_unknown = trip_unknown or (sub_unknown and weight > 0)
            rows.extend(replace(r, weight=r.weight * weight) for r in sub_rows)
    return rows, trip_unknown


def walk_macs(graph: GraphProto, shapes: Mapping[str, TensorInfo]) -> list[NodeCost]:
    """The rows of one graph (a branch or body on its own), its nested subgraphs weighted as in compute_macs."""
    return _walk(graph, shapes, "")[0]


def compute_macs(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    shapes: Mapping[str, TensorInfo] | None = None,
    default_dim: int = 1,
) -> MacsReport:
    """Per-node MACs of ``model`` (subgraphs included) and the model total.

    ``shapes`` may be passed when already computed by :func:`resolve_shapes` on the
    same model; otherwise they are resolved from ``input_shapes``/``default_dim``.
    """
    if shapes is None:
        shapes = resolve_shapes(model, input_shapes, default_dim)
    rows, trip_unknown = _walk(inline_functions(model).graph, shapes, "")
    unknown = tuple(r.qualified_name for r in rows if r.macs is None)
    return MacsReport(tuple(rows), total_macs(rows), trip_unknown, unknown)
