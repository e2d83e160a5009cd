"""Per-op times for .tflite files: every operator of the main subgraph cut out into a model of its own.

The TFLite Python interpreters (ai-edge-litert, tflite-runtime, tensorflow.lite) expose no op profiler,
so the device runner times each operator alone: it runs the whole model once keeping every intermediate
tensor, feeds each single-op model the values that operator saw there, and times it with the same
interpreter, threads and delegate. The single-op models are made here, on the host, because a device
may have only an interpreter (no schema module, no flatbuffers): they travel as one .npz bundle
(``op<i>`` arrays of the model bytes and a ``manifest`` of JSON), read without pickle.

Each op model keeps the operator's constant inputs (weights, biases, shape tensors) as constants and
takes its other inputs as model inputs, so its kernel does what it did in the whole model.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np

from edgeopt.formats.tflite import IDENTIFIER, load_tflite, node_name, schema

# ops that call other subgraphs or hold state between calls: timing them alone would time something else
SUBGRAPH_OPS = frozenset({"WHILE", "IF", "CALL_ONCE", "CALL", "STABLEHLO_WHILE", "STABLEHLO_CASE",
                          "STABLEHLO_REDUCE", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SCATTER", "STABLEHLO_SORT"})
STATE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "HASHTABLE", "HASHTABLE_FIND",
                       "HASHTABLE_IMPORT", "HASHTABLE_SIZE"})
_TWO_GB = 2**31


def op_models_bundle(path: Path) -> bytes:
    """The .npz bundle of one model per operator of ``path``'s main subgraph (see the module doc). Operators
    that cannot run alone are listed in the manifest with the reason instead of a model."""
    path = Path(path)
    view = load_tflite(path)  # validated first: the object API below has no bounds checks of its own
    if view.size_bytes >= _TWO_GB:
        raise ValueError("files over 2 GB keep their weights outside the flatbuffer; per-op times are not cut "
                         "from them")
    s = schema()
    import flatbuffers

    model = s.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    graph = model.subgraphs[0]
    entries: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    for index, (op, described) in enumerate(zip(graph.operators or [], view.main.operators)):
        entry = {"index": index, "node": node_name(described.op, index), "op_type": described.op}
        reason = _why_not_alone(described, view.main)
        if reason:
            entries.append({**entry, "skipped": reason})
            continue
        single, inputs = _single_op_model(s, model, graph, op)
        builder = flatbuffers.Builder(1024)
        builder.Finish(single.Pack(builder), file_identifier=IDENTIFIER)
        key = f"op{index}"
        arrays[key] = np.frombuffer(bytes(builder.Output()), dtype=np.uint8)
        entries.append({**entry, "key": key, "inputs": inputs})
    arrays["manifest"] = np.frombuffer(json.dumps(entries).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _why_not_alone(op, graph) -> str | None:
    if op.custom:
        return "a custom op"
    if op.op in SUBGRAPH_OPS:
        return "calls other subgraphs"
    if op.op in STATE_OPS or any(i >= 0 and graph.tensors[i].variable for i in op.inputs):
        return "keeps state between calls"
    return None


def _single_op_model(s, model, graph, op):
    """A model of ``op`` alone and, in its input order, the whole model's tensor indices that feed it."""
    buffers = [s.BufferT()]  # buffer 0: the empty sentinel of every activation
    tensors: list = []
    remap: dict[int, int] = {}
    inputs: list[int] = []

    def take(original: int) -> int:
        if original < 0:
            return original
        if original not in remap:
            tensor = copy.copy(graph.tensors[original])
            stored = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
            if stored is not None and stored.data is not None and len(stored.data):
                buffers.append(s.BufferT(data=stored.data))
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
            remap[original] = len(tensors)
            tensors.append(tensor)
        return remap[original]

    single_op = copy.copy(op)
    single_op.opcodeIndex = 0
    single_op.inputs = [take(int(i)) for i in (op.inputs if op.inputs is not None else [])]
    for original in (op.inputs if op.inputs is not None else []):
        original = int(original)
        if original >= 0 and tensors[remap[original]].buffer == 0 and original not in inputs:
            inputs.append(original)
    single_op.outputs = [take(int(i)) for i in (op.outputs if op.outputs is not None else [])]
    if op.intermediates is not None:
        single_op.intermediates = [take(int(i)) for i in op.intermediates]
    subgraph = s.SubGraphT()
    subgraph.tensors, subgraph.operators = tensors, [single_op]
    subgraph.inputs = [remap[i] for i in inputs]
    subgraph.outputs = [remap[int(i)] for i in op.outputs if int(i) >= 0]
    subgraph.name = b"main"
    single = s.ModelT()
    single.version = model.version
    single.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
    single.subgraphs, single.buffers = [subgraph], buffers
    single.description = b"edgeopt: one operator for per-op timing"
    return single, inputs
