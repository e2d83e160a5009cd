"""An ONNX model as the neutral graph (graph.model), as onnxruntime's CPU provider runs it: model-local
functions inlined, symbolic input dims resolved (data.resolve), shapes inferred, MACs counted (onnx_macs),
execution and QDQ fusion decided (onnx_execution), ONNX op types mapped to kinds (onnx_kinds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from edgeopt.data.specs import InputSpec
from edgeopt.errors import InputError
from edgeopt.graph.model import FLOAT_EXEC_DTYPES, Graph, Node, RuntimeTensor, Tensor
from edgeopt.graph.onnx_branches import inline_taken_branches
from edgeopt.graph.onnx_execution import analyse_execution
from edgeopt.graph.onnx_kinds import onnx_kind
from edgeopt.graph.onnx_layout import (
    layout_copy_bytes,
    nchwc_conv_blocks,
    nchwc_plain_input_blocks,
)
from edgeopt.graph.onnx_macs import NodeCost, attribute, compute_macs, get_op_cost
from edgeopt.graph.onnx_protos import (
    DEFAULT_DOMAINS,
    constant_bytes,
    constant_tensor,
    dtype_name,
    inline_functions,
    is_op,
    iter_graphs,
    op_key,
    outer_names,
    real_input_names,
    small_constant,
    stored_tensors,
    tensor_bytes,
    weight_names,
)
from edgeopt.graph.onnx_basic_rewrites import basic_rewrites
from edgeopt.graph.onnx_requantize import requantized_elements
from edgeopt.graph.onnx_scratch import int8_conv_scratch
from edgeopt.graph.onnx_shapes import (
    TensorInfo,
    model_inputs,
    resolve_shapes_with_error,
)

# Default-domain ops that do real arithmetic but have no MAC cost function: unknown.
_UNCOSTED_DEFAULT_OPS = frozenset({"Attention", "DeformConv", "DFT", "STFT"})
# com.microsoft ops without a MAC cost function that are elementwise/normalisation
# (memory-bound, costed by bytes). Other contrib ops without a cost function are unknown.
_MEMORY_BOUND_CONTRIB_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConcat",
        "QLinearSoftmax",
        "QLinearWhere",
        "QLinearReduceMean",
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "QuickGelu",
        "BiasAdd",
        "SkipLayerNormalization",
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "NhwcMaxPool",
    }
)


def complete_input_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[Any, Sequence[int]] | None
) -> tuple[dict[str, Sequence[int]], list[str]]:
    """Concrete shapes for every input (data.resolve: the given shapes, shared dim names, the model's
    metadata, a batch axis at 1), or InputError naming each dim without a size and the flag for it."""
    from edgeopt.data.resolve import metadata_dict, resolve_inputs

    given = dict(input_shapes or {})
    declared = []
    for tensor in model_inputs(model):
        if (tensor.dtype or "").startswith(("sequence", "optional", "map")):
            continue  # no shape to set
        if tensor.shape is None and tensor.name not in given:
            raise InputError(f"input '{tensor.name}' has no declared shape",
                             f"pass --input-shape {tensor.name}=DIMxDIM...")
        shape = tensor.shape if tensor.shape is not None else tuple("?" for _ in given[tensor.name])
        declared.append(InputSpec(tensor.name, tuple(shape), tensor.dtype or "float32"))
    resolved = resolve_inputs(declared, shapes=given,
                              metadata=metadata_dict([(p.key, p.value) for p in model.metadata_props]))
    return resolved.shapes, list(resolved.notes)


def _op_known(op_type: str, domain: str) -> bool:
    if get_op_cost(op_type, domain) is not None:
        return True
    if domain in DEFAULT_DOMAINS:
        return op_type not in _UNCOSTED_DEFAULT_OPS and onnx.defs.has(op_type)
    return domain == "com.microsoft" and op_type in _MEMORY_BOUND_CONTRIB_OPS


def _split_rows(rows: Sequence[NodeCost]) -> list[tuple[NodeCost, list[NodeCost]]]:
    """compute_macs rows grouped per main-graph node: (its row, its subgraph rows)."""
    grouped: list[tuple[NodeCost, list[NodeCost]]] = []
    for row in rows:
        if not row.subgraph_path:
            grouped.append((row, []))
        elif grouped:
            grouped[-1][1].append(row)
    return grouped


def _node_macs(own: NodeCost, body: Sequence[NodeCost]) -> tuple[int | None, str | None]:
    """(MACs, why unknown) of a main-graph node, its subgraph bodies included."""
    key = op_key(own.op_type, own.domain)
    if not _op_known(own.op_type, own.domain):
        return None, f"no cost model for op {key}"
    if own.macs is None:
        return None, f"shapes needed for the MACs of {key} are unknown"
    unknown = [r.qualified_name for r in body if r.weight and (r.macs is None or not _op_known(r.op_type, r.domain))]
    if unknown:
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        return None, f"its subgraph has nodes of unknown cost: {shown}"
    return own.macs + sum(r.macs * r.weight for r in body if r.macs), None


_ROW_PRODUCTS = frozenset({"MatMul", "Gemm", "QLinearMatMul", "QGemm", "FusedMatMul", "FusedGemm"})


RECURRENT_CELLS = {("", "LSTM"), ("", "GRU"), ("", "RNN"), ("com.microsoft", "DynamicQuantizeLSTM")}


def recurrent_steps(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> int | None:
    """The sequence length a recurrent cell steps through (X is [seq, batch, input], or [batch, seq, input]
    under ``layout`` 1), where its shape is known."""
    if (node.domain if node.domain != "ai.onnx" else "", node.op_type) not in RECURRENT_CELLS or not node.input:
        return None
    info = shapes.get(node.input[0])
    shape = info.shape if info is not None else None
    if shape is None or len(shape) != 3:
        return None
    batch_first = any(a.name == "layout" and a.i == 1 for a in node.attribute)
    steps = shape[1] if batch_first else shape[0]
    return steps if isinstance(steps, int) and steps > 0 else None


def resize_class(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> str | None:
    """None for the nearest-neighbour upsampling onnxruntime runs on its fast path (asymmetric coordinates, every
    scale 1 or 2: a detector's FPN), "nearest" for any other nearest-neighbour Resize (its generic loop), "linear"
    for linear and cubic modes. Measured at one thread (AMD EPYC): 0.19-0.25 ns per output element on the fast
    path, 0.6-0.8 on the generic one (half-pixel coordinates, a scale of 8), 1.4 linear."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def text(name: str, default: str) -> str:
        value = attributes.get(name, default)
        return value.decode() if isinstance(value, bytes) else str(value)

    if text("mode", "nearest") != "nearest":
        return "linear"
    source, result = shapes.get(node.input[0]) if node.input else None, shapes.get(node.output[0])
    dims = (source.shape, result.shape) if source is not None and result is not None else (None, None)
    scales_fast = (dims[0] is not None and dims[1] is not None and len(dims[0]) == len(dims[1])
                   and all(isinstance(a, int) and isinstance(b, int) and a > 0 and b in (a, 2 * a)
                           for a, b in zip(*dims)))
    return None if scales_fast and text("coordinate_transformation_mode", "half_pixel") == "asymmetric" else "nearest"


def conv_class(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> str | None:
    """"depthwise", "narrow" (under 4 output channels per group), "thin" (4 to 15), "1x1" or None (dense) for a
    Conv; "integer_u8" / "integer_s8" for the kernels of dynamic quantization (ConvInteger, MatMulInteger: im2col
    and an integer GEMM, no blocked layout) by their weights' type, which picks the kernel (measured on an
    AVX-512 VNNI host: a ConvInteger with s8 weights 4.5x slower than with u8, a MatMulInteger 6x faster),
    "integer" where that type is unknown; "row" for a matrix product of one row (batch-1 fully connected
    layers: a GEMV, whose int8 kernel pays per output column); a target may state "conv.depthwise",
    "matmul.row@int8" and so on."""
    if node.op_type in ("ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
        suffix = {"uint8": "_u8", "int8": "_s8"}.get(weight.dtype if weight is not None else None, "")
        return "integer" + suffix
    if node.op_type in _ROW_PRODUCTS and node.input:
        first = shapes.get(node.input[0])
        rows = first.shape[:-1] if first is not None and first.shape else None
        if rows is not None and len(first.shape) >= 2 and all(isinstance(d, int) for d in rows) and \
                math.prod(rows) == 1:
            return "row"
        return None
    if node.op_type not in ("Conv", "FusedConv") or len(node.input) < 2:
        return None
    weight = shapes.get(node.input[1])
    dims = weight.shape if weight is not None else None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if dims and group > 1 and len(dims) >= 2 and dims[1] == 1:
        return "depthwise"
    outputs = dims[0] // max(1, group) if dims else None
    if outputs is not None and outputs < 16:
        return "narrow" if outputs < 4 else "thin"
    if dims and len(dims) > 2 and all(d == 1 for d in dims[2:]):
        return "1x1"
    return None


SMALL_CHUNK_ELEMENTS = 16  # a chunk up to this many elements costs a copy call of its own, not its bytes


def concat_chunks(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> tuple[str, int] | None:
    """(class, chunks) of a float Concat that copies small chunks: onnxruntime copies each input's block after the
    axis once per position before it, a call per chunk. Measured at one thread (AMD EPYC, onnxruntime 1.32): 0.3-0.6
    ns per chunk where every chunk is one element ("elements": basic-pitch's harmonic stacking, 425 K of them, 0.25
    ms where its bytes priced 0.02), 2.5-3 ns per chunk of 2 to 16 elements ("chunked": a YOLO head's boxes, scores
    and classes along the last axis), bytes beyond. ``chunks``: the chunks of up to SMALL_CHUNK_ELEMENTS."""
    if not is_op(node, "Concat") or not node.output:
        return None
    result = shapes.get(node.output[0])
    sources = [shapes.get(name) for name in node.input if name]
    if result is None or result.shape is None or not sources or any(
            info is None or info.shape is None or len(info.shape) != len(result.shape) for info in sources):
        return None
    rank = len(result.shape)
    axis = attribute(node, "axis", 0) % max(rank, 1)
    outer = math.prod(int(d) for d in result.shape[:axis])
    sizes = [math.prod(int(d) for d in info.shape[axis:]) for info in sources if info is not None]
    small = [size for size in sizes if 0 < size <= SMALL_CHUNK_ELEMENTS]
    if not small or outer <= 1:
        return None
    return ("elements" if all(size == 1 for size in sizes) else "chunked"), outer * len(small)


def slice_class(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo],
                constants: Mapping[str, onnx.TensorProto]) -> str | None:
    """"strided" for a Slice that steps along its input's last axis (a YOLO Focus layer's ``x[..., ::2, ::2]``):
    onnxruntime copies it element by element. Measured at one thread (AMD EPYC, onnxruntime 1.32): 0.9-1.0 ns per
    output element in float, 2.1 in 8-bit, against 0.03-0.12 for rows copied whole (a step on an outer axis only)."""
    source = shapes.get(node.input[0]) if node.input else None
    if len(node.input) < 5 or not node.input[4] or source is None or source.shape is None:
        return None  # opset 1-9 Slice, or no steps: every step is 1
    steps = small_constant(constants.get(node.input[4]))
    axes = small_constant(constants.get(node.input[3])) if node.input[3] else None
    if steps is None or (node.input[3] and axes is None):
        return None
    step_values = [int(v) for v in steps.reshape(-1)]
    rank = len(source.shape)
    axis_values = ([int(v) % rank for v in axes.reshape(-1)] if axes is not None
                   else list(range(len(step_values))))
    return "strided" if any(axis == rank - 1 and step != 1 for axis, step in zip(axis_values, step_values)) else None


def where_class(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo]) -> str | None:
    """None for a Where whose condition has an element per output element, "broadcast" for one whose condition
    is broadcast (a mask row over attention scores): what a second full-size value costs turns on it (AMD EPYC,
    one thread, 8 x 128 x 128 outputs, one full value -> two: 0.6 -> 1.9 ns per element with a full condition in
    runs, 3.6 -> 7.2 with a random one, 0.9 -> 1.35 with a broadcast row; the bytes alone would be about 0.1)."""
    condition, result = (shapes.get(node.input[0]) if node.input else None), shapes.get(node.output[0])
    if condition is None or result is None or condition.shape is None or result.shape is None:
        return None
    sizes = [math.prod(shape) if all(isinstance(d, int) for d in shape) else None
             for shape in (condition.shape, result.shape)]
    return "broadcast" if None not in sizes and sizes[0] < sizes[1] else None


def op_class(node: onnx.NodeProto, shapes: Mapping[str, TensorInfo],
             constants: Mapping[str, onnx.TensorProto] | None = None) -> str | None:
    """The class that refines a node's kind where its kernel's speed turns on more than its op: a Conv's or a
    matrix product's (conv_class), a Resize's loop (resize_class), a Where's condition (where_class), a Slice's
    stride (slice_class; ``constants``: the model's initializers, by name)."""
    if node.domain in ("", "ai.onnx") and node.op_type == "Resize":
        return resize_class(node, shapes)
    if node.domain in ("", "ai.onnx") and node.op_type == "Slice":
        return slice_class(node, shapes, constants or {})
    if node.domain in ("", "ai.onnx") and node.op_type == "Where":
        return where_class(node, shapes)
    return conv_class(node, shapes)


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
            const = constant_tensor(node) if is_op(node, "Constant") and node.output else None
            if const is not None:
                add(dtype_name(const[1]), constant_bytes(node))
    return dict(sorted(acc.items(), key=lambda kv: (-kv[1], kv[0])))


_WINDOWED_POOLS = frozenset({"MaxPool", "AveragePool", "NhwcMaxPool", "QLinearAveragePool"})


def _window_taps(node: onnx.NodeProto) -> int | None:
    """A pool's window taps (Node.window_taps): its kernel_shape's elements."""
    if node.op_type not in _WINDOWED_POOLS:
        return None
    kernel = attribute(node, "kernel_shape")
    return math.prod(kernel) if kernel and all(k > 0 for k in kernel) else None


def _conv_path(node: onnx.NodeProto, row: Any, shapes: Mapping[str, TensorInfo], weights: set[str]) -> dict[str, Any]:
    """A float Conv's NCHWc blocks, those at which it reads a plain input, and output positions per image
    (Node.nchwc_blocks, nchwc_plain_input_blocks, output_positions)."""
    if not (is_op(node, "Conv") and row.runs_alone and row.dtype == "fp32" and len(node.input) > 1):
        return {}
    output = shapes.get(node.output[0]) if node.output else None
    positions = math.prod(output.shape[2:]) if output is not None and output.shape and len(output.shape) > 2 \
        else None
    weight = shapes.get(node.input[1])
    return {"nchwc_blocks": nchwc_conv_blocks(node, weight, weights),
            "nchwc_plain_input_blocks": nchwc_plain_input_blocks(node, weight, weights), "output_positions": positions,
            "valid_kernel_rows": valid_kernel_rows(node, shapes.get(node.input[0]), weight, output)}


def valid_kernel_rows(node: onnx.NodeProto, x: TensorInfo | None, weight: TensorInfo | None,
                      y: TensorInfo | None) -> float | None:
    """The share of a 2-D Conv's kernel rows that read inside its input, over its output rows (the rest read the
    top and bottom padding); None for a one-row kernel or where a shape is unknown."""
    if x is None or weight is None or y is None or not x.shape or not weight.shape or not y.shape \
            or len(x.shape) != 4 or len(weight.shape) != 4 or len(y.shape) != 4:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    rows_in, rows_out, kernel = x.shape[2], y.shape[2], weight.shape[2]
    if kernel <= 1 or rows_out <= 0:
        return None
    stride = (list(attrs.get("strides") or [1, 1]) + [1])[0]
    dilation = (list(attrs.get("dilations") or [1, 1]) + [1])[0]
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max(0, (rows_out - 1) * stride + (kernel - 1) * dilation + 1 - rows_in)
        top = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    elif auto_pad == "VALID":
        top = 0
    else:
        top = (list(attrs.get("pads") or [0, 0, 0, 0]) + [0])[0]
    inside = sum(1 for row in range(rows_out) for tap in range(kernel)
                 if 0 <= row * stride - top + tap * dilation < rows_in)
    return inside / (rows_out * kernel)


def _runtime_dtype(dtype: str | None, int8: bool) -> str | None:
    """A float node onnxruntime's QDQ propagation leaves between a DequantizeLinear and a QuantizeLinear runs in 8
    bits (graph.onnx_basic_rewrites)."""
    return "int8" if int8 and dtype in FLOAT_EXEC_DTYPES else dtype


def _dropped_aliases(graph: onnx.GraphProto, shapes: Mapping[str, TensorInfo], removed: frozenset[int]
                     ) -> dict[str, str]:
    """The outputs of nodes onnxruntime drops (graph.onnx_basic_rewrites) as the tensors that stand for them at run
    time: a cancelled Transpose's, a folded bias Add's output is its first input's data (same element count), never
    allocated apart."""
    found = {}
    for index in removed:
        node = graph.node[index]
        if len(node.output) != 1 or not node.input or not node.input[0]:
            continue
        source, result = shapes.get(node.input[0]), shapes.get(node.output[0])
        if source is not None and result is not None and source.shape is not None and result.shape is not None \
                and math.prod(source.shape) == math.prod(result.shape) and source.dtype == result.dtype:
            found[node.output[0]] = node.input[0]
    return found


def to_graph(model: onnx.ModelProto, input_shapes: Mapping[Any, Sequence[int]] | None = None, *,
             shapes: Mapping[str, TensorInfo] | None = None,
             input_values: Mapping[str, np.ndarray] | None = None) -> Graph:
    """The neutral graph of ``model`` at ``input_shapes`` (see the module doc). ``shapes``: already
    resolved shapes of the same (function-inlined) model. ``input_values``: inputs whose values the run will
    have (fills, integer inputs' data), which decide If conditions (onnx_branches). The model is not mutated;
    external data is not read. Raises InputError when a symbolic dim has no size."""
    loaded = inline_functions(model)
    analysed = loaded
    warnings: list[str] = []
    branches = None
    if shapes is None:
        complete, assumptions = complete_input_shapes(analysed, input_shapes)
        branches = inline_taken_branches(analysed, complete, input_values)
        analysed = branches.model
        assumptions.extend(branches.notes)
        warnings.extend(branches.warnings)
        shapes, inference_error = resolve_shapes_with_error(analysed, complete)
        if inference_error:
            warnings.append(f"ONNX shape inference failed, shapes are partial: {inference_error}")
    else:
        assumptions = []
    macs_report = compute_macs(analysed, shapes=shapes)
    if macs_report.trip_count_unknown:
        warnings.append("a loop's trip count is unknown: its body's MACs are counted once")
    graph = analysed.graph
    weights = weight_names(graph)
    execution = analyse_execution(analysed, shapes, weights)
    grouped = _split_rows(macs_report.rows)
    # small constants the kernels' choices turn on (quantization parameters, a Slice's steps)
    stored = stored_tensors(graph)
    requantized = requantized_elements(analysed, shapes, execution.nodes, stored)
    rewrites = basic_rewrites(analysed, shapes)  # what onnxruntime's basic optimizers drop, fold and move
    nodes = []
    for row, node in zip(execution.nodes, graph.node, strict=True):
        macs, reason = (0, None)
        if row.runs_alone:
            macs, reason = _node_macs(*grouped[row.index]) if row.index < len(grouped) else (None, "no MAC count")
        gathered = node.input[0] if (node.op_type == "Gather" and node.input and node.input[0] in weights) else None
        # an int8 Concat (QLinearConcat) loops its own way: priced by what it requantizes (onnx_requantize)
        chunked = concat_chunks(node, shapes) if row.runs_alone and row.dtype != "int8" else None
        nodes.append(Node(
            index=row.index, name=row.name, op_type=node.op_type, domain=node.domain,
            kind=onnx_kind(node.op_type, node.domain),
            inputs=tuple(node.input), outputs=tuple(node.output), role=row.role,
            dtype=_runtime_dtype(row.dtype, row.index in rewrites.int8_nodes),
            attached_to=row.attached_to, qdq_fused=row.qdq_fused, macs=macs, cost_unknown_reason=reason,
            op_class=chunked[0] if chunked else op_class(node, shapes, stored),
            outer_reads=tuple(sorted(outer_names(node))),
            reads_rows_of=gathered, recurrent_steps=recurrent_steps(node, shapes),
            window_taps=_window_taps(node), requantized_elements=requantized.get(row.index),
            copy_chunks=chunked[1] if chunked else None,
            runtime_input_shapes=rewrites.input_shapes.get(row.index),
            runtime_removed=row.index in rewrites.removed and row.runs_alone,
            runtime_quantized_elements=rewrites.quantized_elements.get(row.index),
            **_conv_path(node, row, shapes, weights)))
    inputs = tuple(real_input_names(graph))
    padded: dict[int, dict[str, int]] = {}  # per NCHWc block: the tensors its padding enlarges, and their bytes
    created: dict[int, tuple[RuntimeTensor, ...]] = {}  # per block: the tensors the layout copies write
    channels_last: dict[int, tuple[tuple[str, int], ...]] = {}  # the int8 convolutions' Transposes
    copies = layout_copy_bytes(analysed, shapes, execution.nodes, weights, padded, created, channels_last)
    # and the x86 kernels' scratch beside them (the int8 kernels' were measured on x86 only)
    scratch = tuple(int8_conv_scratch(analysed, shapes, execution.nodes, stored))
    created = {block: tensors + scratch for block, tensors in created.items()}
    return Graph(
        format="onnx",
        nodes=tuple(nodes),
        tensors={name: Tensor(name, info.shape, info.dtype) for name, info in shapes.items()},
        weights=frozenset(weights),
        inputs=inputs,
        outputs=tuple(vi.name for vi in graph.output),
        input_shapes={t.name: tuple(info.shape) for t in model_inputs(analysed)
                      if (info := shapes.get(t.name)) is not None and info.shape is not None},
        weight_bytes_by_dtype=weight_bytes_by_dtype(loaded),  # every branch's: all are loaded
        aliases={**execution.aliases, **_dropped_aliases(graph, shapes, rewrites.removed)},
        layout_copy_bytes=copies,
        channels_last_copies=channels_last,
        layout_tensor_bytes=padded,
        runtime_tensors=created,
        assumptions=tuple(assumptions),
        warnings=tuple(warnings),
        dormant_nodes=branches.dormant_nodes if branches else 0,
        branch_runs=branches.runs if branches else 0,
        dormant_weights=branches.dormant_weights if branches else 0,
        dormant_weight_bytes=branches.dormant_weight_bytes if branches else 0,
        dormant_folded_bytes=branches.dormant_folded_bytes if branches else 0,
        subgraph_tensors=frozenset(branches.subgraph_tensors) if branches else frozenset(),
    )
