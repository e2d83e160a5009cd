"""``Constant`` weights turned into initializers of the graph they live in (what onnxruntime's quantizer
looks up), and spatial means rewritten as GlobalAveragePool (which has an int8 kernel)."""


from __future__ import annotations

import onnx
from onnx import (
    AttributeProto,
    GraphProto,
    NodeProto,
    TensorProto,
    helper,
    numpy_helper,
)

from edgeopt.graph.onnx_protos import (
    is_op,
    iter_nodes,
    join_path,
    node_name,
    subgraphs,
    tensor_bytes,
)
from edgeopt.formats.onnx import default_opset, weightless_copy
from edgeopt.stages.quantize.prepare.scopes import FLOAT_TYPES, Frozen

# ------------------------------------------------------------------------ lifting


class LiftedGraph(Frozen):
    """Constants turned into initializers in one graph ("" is the main graph)."""

    path: str
    constants: int
    bytes: int
    names: list[str]


class LiftReport(Frozen):
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
    ``skipped``). The input model is not modified (and is returned as it is when it has no Constant
    node: no copy of its weights). Model-local functions are not touched.
    """
    if not any(is_op(ref.node, "Constant") for ref in iter_nodes(model.graph)):
        return model, LiftReport(graphs=[], total_constants=0, total_bytes=0, skipped=[], ir_version_raised_from=None)
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
    if not any(is_op(node, "ReduceMean") for node in model.graph.node):
        return model, []  # nothing to rewrite: neither shape inference nor a copy (each a copy of the weights)
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model))  # (types, not weights)
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
        if tensor is None or tensor.elem_type not in FLOAT_TYPES - {TensorProto.BFLOAT16} or rank < 3:
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
