"""What onnxruntime's basic-level graph optimizers make of a graph before it runs it.

At its basic level onnxruntime folds constants, drops no-op nodes (Identity, Dropout, a Cast to the same type),
folds a Conv's following Add, Mul or BatchNormalization of constants into the Conv, and pushes each Transpose
through the ops after it (elementwise ops, reductions, other Transposes) wherever that lets it cancel against
another, rewriting constants to match. None of it shows in the model's own graph: the nodes it drops or folds never
run, and the ops a Transpose passes run on permuted shapes. Measured (AMD EPYC, onnxruntime 1.32, one thread):
basic-pitch's constant-Q transform, where a Transpose pushed through a Mul by a [309,1,1] constant leaves the Mul on
[1,172,309,2] x [1,1,309,1], a broadcasting loop of 53 K runs of two elements (0.57-0.93 ms, priced 0.015 ms at the
model's own shapes), and two Transposes gone; PP-OCR's direction classifier, whose 18 bias Adds after its Convs
(each bias reshaped in the graph) onnxruntime folds into them (priced as Adds of their own: the estimate 10% over
the measurement).

With a QDQ model it also propagates quantization: a QuantizeLinear after a data-movement op (a Slice, a Transpose,
a Reshape) is copied ahead of it, so the op runs in 8 bits between a DequantizeLinear and a QuantizeLinear (fused at
its extended level) and the copy, where it reads float data, is a kernel of its own: a detector's Focus layer then
quantizes its whole input image once per Slice.

What it does turns on the whole graph (a Transpose is pushed only where something downstream cancels it), so it is
read from onnxruntime itself: the graph optimized at its basic level (saved by a session that never runs), its nodes
matched to the model's by name (every node renamed after its index first, so unnamed or repeated names still match).
A node gone from that graph counts as removed unless a node onnxruntime created in its place touches its tensors
(a Focus layer's Slices and Concat turned into one SpaceToDepth still cost that op), and a Transpose only while
onnxruntime created none (one moved rather than cancelled comes back under a new name). Best effort: nothing where
the weights are not in the file, the model is too large to copy, or onnxruntime refuses it.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgeopt.graph.onnx_protos import real_input_names
from edgeopt.graph.onnx_shapes import TensorInfo, loadable_again, resolve_shapes

log = logging.getLogger(__name__)

__all__ = ["BasicRewrites", "basic_rewrites"]

_NAME_PREFIX = "edgeopt_node_"

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BasicRewrites:
    """``input_shapes``: per node index, the shapes its inputs have once onnxruntime pushed Transposes through it
    (only nodes whose shapes differ from the model's). ``removed``: the indices of the nodes it dropped or folded
    into others (never run)."""

    input_shapes: Mapping[int, tuple[Shape | None, ...]] = field(default_factory=dict)
    removed: frozenset[int] = frozenset()
    # QDQ propagation: per node index, the elements of the float tensors onnxruntime quantizes anew in front of it
    # (a QuantizeLinear it created, copying the one after the node), and the float nodes it leaves between a
    # DequantizeLinear and a QuantizeLinear of one scale, which its extended level then runs in 8 bits
    quantized_elements: Mapping[int, int] = field(default_factory=dict)
    int8_nodes: frozenset[int] = frozenset()


def _optimized(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` as onnxruntime's basic-level optimizers leave it (None where onnxruntime refuses it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    # its weights written apart and never read back: only the graph and the initializers' dims are needed
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    with tempfile.TemporaryDirectory(prefix="edgeopt-optimized-") as folder:
        options.optimized_model_filepath = str(Path(folder) / "model.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return onnx.load(options.optimized_model_filepath, load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the model's own graph in place
            log.debug("onnxruntime's optimized graph unavailable: %s", exc)
            return None


def _index(node: onnx.NodeProto) -> int | None:
    """The model's node index a node of the optimized graph was renamed after (None: onnxruntime created it)."""
    suffix = node.name[len(_NAME_PREFIX):] if node.name.startswith(_NAME_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def _removed(graph: onnx.GraphProto, optimized: onnx.GraphProto) -> frozenset[int]:
    """The model's nodes gone from ``optimized`` and not replaced by a node onnxruntime created (see the module
    doc)."""
    kept = {index for node in optimized.node if (index := _index(node)) is not None}
    created = [node for node in optimized.node if _index(node) is None]
    touched = {name for node in created for name in (*node.input, *node.output) if name}
    gone = {index for index in range(len(graph.node)) if index not in kept}
    replaced: set[int] = set()
    frontier = {index for index in gone if touched & {*graph.node[index].input, *graph.node[index].output}}
    while frontier:  # and the gone nodes that fed or read those, as one replaced group
        replaced |= frontier
        names = {name for index in frontier for name in (*graph.node[index].input, *graph.node[index].output)}
        frontier = {index for index in gone - replaced
                    if names & {*graph.node[index].input, *graph.node[index].output}}
    moved = any(node.op_type == "Transpose" for node in created)
    return frozenset(index for index in gone - replaced
                     if not (moved and graph.node[index].op_type == "Transpose"))


# ops onnxruntime's QDQ selectors run in 8 bits between a DequantizeLinear and a QuantizeLinear of one scale,
# dropping both (its DropQDQ rules; moving data, not computing with it)
DATA_MOVEMENT_OPS = frozenset({"Gather", "Reshape", "Expand", "Flatten", "Transpose", "MaxPool", "Resize", "Squeeze",
                               "Unsqueeze", "Slice", "Tile", "SpaceToDepth", "DepthToSpace"})


def _model_name(graph: onnx.GraphProto, producer: Mapping[str, onnx.NodeProto], name: str) -> str:
    """The model's own name of a tensor of the optimized graph (onnxruntime renames the output a QuantizeLinear it
    inserts reads: ``concat`` becomes ``concat_pre_q``), by the model's node that produces it."""
    node = producer.get(name)
    index = _index(node) if node is not None else None
    if index is None or index >= len(graph.node):
        return name
    position = list(node.output).index(name)
    original = graph.node[index].output
    return original[position] if position < len(original) else name


def _propagated(graph: onnx.GraphProto, optimized: onnx.GraphProto, shapes: Mapping[str, TensorInfo]
                ) -> tuple[dict[int, int], frozenset[int], frozenset[int]]:
    """What onnxruntime's QDQ propagation did (see BasicRewrites): (quantized elements per node index, the nodes
    now run in 8 bits, the model's QuantizeLinear nodes those absorb)."""
    producer = {name: node for node in optimized.node for name in node.output if name}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in optimized.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in optimized.output}
    initializers = {tensor.name for tensor in optimized.initializer}

    def created_quantize(name: str) -> onnx.NodeProto | None:  # the QuantizeLinear it created behind a DQ
        dequantize = producer.get(name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or _index(dequantize) is not None:
            return None
        quantize = producer.get(dequantize.input[0])
        return quantize if quantize is not None and quantize.op_type == "QuantizeLinear" \
            and _index(quantize) is None else None

    int8: set[int] = set()
    absorbed: set[int] = set()
    fed: dict[int, list[onnx.NodeProto]] = {}  # per node: the QuantizeLinear nodes onnxruntime created ahead of it
    for node in optimized.node:
        index = _index(node)
        if index is None or index >= len(graph.node):
            continue
        fresh = [q for name in node.input if name and (q := created_quantize(name)) is not None]
        if fresh:
            fed[index] = fresh
        data = [name for name in node.input if name and name not in initializers]
        if not fresh or node.op_type not in DATA_MOVEMENT_OPS or node.domain not in ("", "ai.onnx") or not data:
            continue
        if not all((p := producer.get(name)) is not None and p.op_type == "DequantizeLinear" for name in data[:1]):
            continue
        readers = [reader for name in node.output if name for reader in consumers.get(name, [])]
        if readers and not outputs & set(node.output) and all(r.op_type == "QuantizeLinear" for r in readers):
            int8.add(index)
            absorbed.update(i for r in readers if (i := _index(r)) is not None)
    # a created QuantizeLinear is a kernel of its own where it reads float data; one between two 8-bit nodes joins
    # their QDQ groups
    quantized: dict[int, int] = {}
    for index, fresh in fed.items():
        for quantize in fresh:
            source = producer.get(quantize.input[0])
            if source is not None and (source.op_type == "DequantizeLinear" or _index(source) in int8):
                continue
            info = shapes.get(_model_name(graph, producer, quantize.input[0]))
            if info is not None and info.shape is not None:
                quantized[index] = quantized.get(index, 0) + math.prod(int(d) for d in info.shape)
    return quantized, frozenset(int8), frozenset(absorbed)


def _pushed_shapes(graph: onnx.GraphProto, optimized: onnx.ModelProto, shapes: Mapping[str, TensorInfo]
                   ) -> dict[int, tuple[Shape | None, ...]]:
    """Per node index, its input shapes in ``optimized`` where they differ from the model's (``shapes``)."""
    input_dims = {}
    for name in real_input_names(graph):
        info = shapes.get(name)
        if info is None or info.shape is None:
            return {}
        input_dims[name] = tuple(int(d) for d in info.shape)
    try:
        after = resolve_shapes(optimized, input_dims)
    except Exception as exc:  # noqa: BLE001 - as above
        log.debug("shapes of onnxruntime's optimized graph unavailable: %s", exc)
        return {}

    def shape_of(found: Mapping[str, TensorInfo], name: str) -> Shape | None:
        info = found.get(name)
        return tuple(int(d) for d in info.shape) if info is not None and info.shape is not None else None

    moved: dict[int, tuple[Shape | None, ...]] = {}
    for node in optimized.graph.node:
        index = _index(node)
        if index is None or index >= len(graph.node):
            continue
        before = tuple(shape_of(shapes, name) if name else None for name in graph.node[index].input)
        now = tuple(shape_of(after, name) if name else None for name in node.input)
        if len(now) == len(before) and now != before and None not in now:
            moved[index] = now
    return moved


def basic_rewrites(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo]) -> BasicRewrites:
    """What onnxruntime's basic-level optimizers do to ``model`` (the adapter's analysed model, ``shapes`` its
    resolved shapes): see the module doc."""
    graph = model.graph
    if not graph.node or not loadable_again(model):
        return BasicRewrites()
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    for index, node in enumerate(renamed.graph.node):
        node.name = f"{_NAME_PREFIX}{index}"
    optimized = _optimized(renamed)
    if optimized is None:
        return BasicRewrites()
    # shapes change only where a Transpose moved: inferred again only then
    transposes = any(node.op_type == "Transpose" and node.domain in ("", "ai.onnx") for node in graph.node)
    quantized, int8, absorbed = _propagated(graph, optimized.graph, shapes)
    return BasicRewrites(input_shapes=_pushed_shapes(graph, optimized, shapes) if transposes else {},
                         removed=_removed(graph, optimized.graph) | absorbed, quantized_elements=quantized,
                         int8_nodes=int8)
