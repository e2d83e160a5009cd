"""int8 storage for the weights of compute nodes inside If/Loop/Scan bodies after static quantization
(onnxruntime's static quantizer leaves subgraphs float)."""


from __future__ import annotations

import numpy as np
import onnx
from onnx import (
    GraphProto,
    NodeProto,
    TensorProto,
    helper,
    numpy_helper,
)

from edgeopt.graph.onnx_protos import (
    join_path,
    subgraphs,
    uses_external_data,
)
from edgeopt.errors import InputError
from edgeopt.formats.onnx import MIN_OPSET, default_opset
from edgeopt.stages.quantize.prepare.scopes import COMPUTE_WEIGHT_SLOTS, all_names, norm_domain, walk_scopes

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
    taken = all_names(result)
    done: list[str] = []
    # Innermost graphs first: rewriting a graph's node list re-creates its nodes, so a nested
    # body edited after its parent would be edited in a detached copy.
    for scope in reversed(list(walk_scopes(result.graph))):
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
                    or norm_domain(node.domain) != ""
                    or node.op_type not in _WEIGHT_ONLY_TARGETS
                    or any(s not in COMPUTE_WEIGHT_SLOTS[("", node.op_type)][:2] for s in slots)
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
