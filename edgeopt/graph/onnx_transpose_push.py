"""What onnxruntime's transpose optimizer makes of a graph before it runs it.

At its basic optimization level onnxruntime pushes each Transpose through the ops after it (elementwise ops,
reductions, other Transposes) wherever that lets it cancel against another, rewriting constants to match: the ops
it passes run on permuted shapes, and the Transposes it cancels never run. Neither shows in the model's own graph.
Measured (AMD EPYC, onnxruntime 1.32, one thread): basic-pitch's constant-Q transform, where a Transpose pushed
through a Mul by a [309,1,1] constant leaves the Mul on [1,172,309,2] x [1,1,309,1], a broadcasting loop of 53 K
runs of two elements (0.57-0.93 ms, priced 0.015 ms at the model's own shapes), and two Transposes gone.

Whether it pushes turns on what lies downstream (it does not push where nothing cancels), so the rewrite is read
from onnxruntime itself: the graph optimized at its basic level (saved by a session that never runs), its shapes
inferred at the resolved input sizes, its nodes matched to the model's by name (every node renamed after its index
first, so unnamed or repeated names still match). Best effort: nothing where the weights are not in the file, the
model is too large to copy, or onnxruntime refuses it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgeopt.graph.onnx_protos import real_input_names, uses_external_data
from edgeopt.graph.onnx_shapes import TensorInfo, resolve_shapes

log = logging.getLogger(__name__)

__all__ = ["TransposePush", "pushed_transposes"]

# the same bound as the shape probe's: the model is copied and loaded once more
_MAX_MODEL_BYTES = 512 * 1024 * 1024
_NAME_PREFIX = "edgeopt_node_"

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TransposePush:
    """``input_shapes``: per node index, the shapes its inputs have once onnxruntime pushed Transposes through it
    (only nodes whose shapes differ from the model's). ``removed``: the indices of Transposes it cancelled."""

    input_shapes: Mapping[int, tuple[Shape | None, ...]] = field(default_factory=dict)
    removed: frozenset[int] = frozenset()


def _optimized(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` as onnxruntime's basic-level optimizers leave it (None where onnxruntime refuses it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory(prefix="edgeopt-optimized-") as folder:
        options.optimized_model_filepath = str(Path(folder) / "model.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return onnx.load(options.optimized_model_filepath)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the model's own shapes in place
            log.debug("onnxruntime's optimized graph unavailable: %s", exc)
            return None


def pushed_transposes(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo]) -> TransposePush:
    """How onnxruntime's transpose optimizer rewrites ``model`` (the adapter's analysed model, ``shapes`` its
    resolved shapes): see the module doc."""
    graph = model.graph
    if not any(node.op_type == "Transpose" and node.domain in ("", "ai.onnx") for node in graph.node):
        return TransposePush()
    if any(uses_external_data(t) for t in graph.initializer) or model.ByteSize() > _MAX_MODEL_BYTES:
        return TransposePush()
    input_dims = {}
    for name in real_input_names(graph):
        info = shapes.get(name)
        if info is None or info.shape is None:
            return TransposePush()
        input_dims[name] = tuple(int(d) for d in info.shape)
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    for index, node in enumerate(renamed.graph.node):
        node.name = f"{_NAME_PREFIX}{index}"
    optimized = _optimized(renamed)
    if optimized is None:
        return TransposePush()
    try:
        after = resolve_shapes(optimized, input_dims)
    except Exception as exc:  # noqa: BLE001 - as above
        log.debug("shapes of onnxruntime's optimized graph unavailable: %s", exc)
        return TransposePush()

    def shape_of(found: Mapping[str, TensorInfo], name: str) -> Shape | None:
        info = found.get(name)
        return tuple(int(d) for d in info.shape) if info is not None and info.shape is not None else None

    kept: set[int] = set()
    created = 0
    moved: dict[int, tuple[Shape | None, ...]] = {}
    for node in optimized.graph.node:
        suffix = node.name[len(_NAME_PREFIX):] if node.name.startswith(_NAME_PREFIX) else ""
        if not suffix.isdigit():
            created += node.op_type == "Transpose"
            continue
        index = int(suffix)
        kept.add(index)
        if index >= len(graph.node):
            continue
        original = graph.node[index]
        before = tuple(shape_of(shapes, name) if name else None for name in original.input)
        now = tuple(shape_of(after, name) if name else None for name in node.input)
        if len(now) == len(before) and now != before and None not in now:
            moved[index] = now
    # a Transpose moved rather than cancelled comes back under a new name: claim none gone then
    removed = frozenset() if created else frozenset(
        index for index, node in enumerate(graph.node)
        if node.op_type == "Transpose" and node.domain in ("", "ai.onnx") and index not in kept)
    return TransposePush(input_shapes=moved, removed=removed)
