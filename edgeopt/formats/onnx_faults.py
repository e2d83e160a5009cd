"""Structural faults of an ONNX graph: what makes it invalid, every one of them, each named.

onnx.checker stops at its first complaint and complains about much that onnxruntime runs fine (published
models often fail it), so its line stays a warning. A fault here is what no runtime can run:

- a node reads a tensor that nothing produces (no node, graph input or initializer; for a subgraph, nor
  its outer scopes);
- a graph output that nothing produces;
- a tensor written twice (by two nodes, or by a node and a graph input or initializer);
- a node its operator's schema refuses (an unknown op, an unknown attribute), or a shape or type conflict
  ONNX shape inference finds in strict mode, where onnxruntime refuses the model too (it is asked: what it
  accepts stays the checker's warning).

``inspect`` lists them and marks the model invalid, and ``profile`` and ``convert`` refuse it with the
same line (``invalid_graph_error``).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeopt.errors import ModelLoadError

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
# Beyond this many faults the line says how many more there are
SHOWN_FAULTS = 8


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"#{index} ({node.op_type}, unnamed)"


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for index, graph in enumerate(attr.graphs):
                yield f"{attr.name}[{index}]", graph


def _walk(graph: onnx.GraphProto, outer: frozenset[str], where: str, faults: list[str]) -> None:
    declared = [i.name for i in graph.input] + [t.name for t in graph.initializer] + \
        [t.values.name for t in graph.sparse_initializer]
    written: dict[str, str] = {name: "a graph input or initializer" for name in declared if name}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if not name:
                continue
            if name in written:
                faults.append(f"{where}tensor {name!r} is written by node {_label(node, index)} and by "
                              f"{written[name]}")
            else:
                written[name] = f"node {_label(node, index)}"
    visible = outer | set(written)
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in visible:
                faults.append(f"{where}node {_label(node, index)} reads tensor {name!r}, which no node produces "
                              "and which is no graph input or initializer")
        for attr_name, subgraph in _subgraphs(node):
            _walk(subgraph, frozenset(visible), f"{where}{_label(node, index)}.{attr_name}: ", faults)
    for output in graph.output:
        if output.name and output.name not in visible:
            faults.append(f"{where}graph output {output.name!r} is produced by no node")


def graph_faults(model: onnx.ModelProto, path: Path | None = None) -> list[str]:
    """Every structural fault of ``model`` (see the module doc), as lines naming the tensor and the node."""
    faults: list[str] = []
    _walk(model.graph, frozenset(), "", faults)
    if faults:
        return faults  # shape inference would only repeat them as missing shapes
    # each node against its operator's schema (unknown ops, attributes), then shape and type conflicts: faults
    # only where onnxruntime refuses the model too (it runs much that the checker complains about)
    suspects = _node_faults(model)
    conflict = _shape_conflict(model) if not suspects else None
    if conflict:
        suspects.append(f"shape inference: {conflict}")
    if suspects and not _runtime_loads(model, path):
        faults.extend(suspects)
    return faults


def _node_faults(model: onnx.ModelProto) -> list[str]:
    """Every node (subgraphs' too) that fails its operator schema: an unknown op, an unknown attribute."""
    context = onnx.checker.C.CheckerContext()
    context.ir_version = model.ir_version
    context.opset_imports = {entry.domain: entry.version for entry in model.opset_import}
    found: list[str] = []

    def visit(graph: onnx.GraphProto, where: str) -> None:
        for index, node in enumerate(graph.node):
            if node.domain not in STANDARD_DOMAINS:
                continue  # contrib and custom ops: the runtime that registers them judges them
            try:
                onnx.checker.check_node(node, context)
            except (onnx.checker.ValidationError, ValueError) as exc:
                found.append(f"{where}node {_label(node, index)}: {' '.join(str(exc).split())[:200]}")
            for attr_name, subgraph in _subgraphs(node):
                visit(subgraph, f"{where}{_label(node, index)}.{attr_name}: ")

    visit(model.graph, "")
    return found


# Initializers larger than this go to shape inference as dims and type only: it needs their values only
# where a shape is computed from them (Reshape's shape, Slice's starts), which are small.
VALUES_KEPT_BYTES = 4096


def _copy_fields(source, target, skip: str) -> None:
    """Every set field of ``source`` into ``target`` but ``skip`` (protobuf messages of one type)."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _without_weight_values(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its large initializers' values left out (their names, types and dims kept), built without
    copying them: inference on a 500 MB model must not hold it twice."""
    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    _copy_fields(model.graph, light.graph, skip="initializer")
    for tensor in model.graph.initializer:
        if tensor.ByteSize() <= VALUES_KEPT_BYTES:
            light.graph.initializer.add().CopyFrom(tensor)
        else:
            light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    return light


def _shape_conflict(model: onnx.ModelProto) -> str | None:
    light = _without_weight_values(model)
    from edgeopt.formats.onnx import PROTOBUF_LIMIT_BYTES

    if light.ByteSize() >= PROTOBUF_LIMIT_BYTES:
        return None
    try:
        onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        text = " ".join(str(exc).split())
        return text[:300] or type(exc).__name__
    except Exception:  # an op inference cannot handle (a custom domain's): not the model's fault
        return None
    return None


def _runtime_loads(model: onnx.ModelProto, path: Path | None) -> bool:
    """Whether onnxruntime accepts the graph (the judge where shape inference complains)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        source = str(path) if path is not None else model.SerializeToString()
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own exception types for every load failure
        return False
    return True


def invalid_graph_error(path: Path | str, faults: list[str]) -> ModelLoadError:
    """The one line ``profile`` and ``convert`` refuse an invalid graph with (``inspect`` lists the same)."""
    shown = "; ".join(faults[:SHOWN_FAULTS])
    more = f"; and {len(faults) - SHOWN_FAULTS} more" if len(faults) > SHOWN_FAULTS else ""
    count = f"{len(faults)} fault{'s' if len(faults) != 1 else ''}"
    return ModelLoadError(f"{path} is not a valid ONNX graph ({count}): {shown}{more}",
                          "fix the export that wrote it; edgeopt inspect lists every fault")
