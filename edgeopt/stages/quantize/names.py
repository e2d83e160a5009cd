"""Short names for what the quantizer added to a graph.

onnxruntime names every tensor and node it adds after the float tensor it serves: ``<name>_scale``,
``<name>_zero_point``, ``<name>_QuantizeLinear``, ``<name>_QuantizeLinear_Output``,
``<name>_DequantizeLinear_Output``... about nine copies of the name per quantized tensor. A TensorFlow
export's names run to 100-200 characters, so on a small model the names outweigh the weights: basic-pitch's
230 KB model became a 390 KB int8 file, 263 KB of it names. The added names carry nothing a user reads
(the float model's own names stay as they were), so the shipped file gets short ones.
"""

from __future__ import annotations

import itertools

import onnx

from edgeopt.graph.onnx_protos import iter_nodes, subgraphs
from edgeopt.stages.quantize.prepare.scopes import all_names


def graph_names(model: onnx.ModelProto) -> frozenset[str]:
    """Every tensor and node name of a model, subgraphs included."""
    return frozenset(all_names(model))


def compact_added_names(data: bytes, original: frozenset[str]) -> bytes:
    """``data`` (a serialized quantized model) with every main-graph tensor and node name that is not in
    ``original`` (the float model's names) renamed to a short unique one, and without ``value_info``
    (shapes runtimes infer again). Names read inside subgraphs are left alone."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    inner: set[str] = set()
    for node in graph.node:
        for _, sub in subgraphs(node):
            for ref in iter_nodes(sub):
                inner.update((*ref.node.input, *ref.node.output))
    taken = all_names(model)
    fresh = (name for name in (f"q{index}" for index in itertools.count()) if name not in taken)
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in original or name in inner:
            return name
        if name not in renamed:
            renamed[name] = next(fresh)
        return renamed[name]

    for node in graph.node:
        inputs, outputs = [short(name) for name in node.input], [short(name) for name in node.output]
        del node.input[:], node.output[:]
        node.input.extend(inputs)
        node.output.extend(outputs)
        if node.name and node.name not in original:
            node.name = next(fresh)
    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for value in (*graph.input, *graph.output):
        value.name = short(value.name)
    del graph.value_info[:]
    return model.SerializeToString()


def without_value_info_size(model: onnx.ModelProto) -> int:
    """The serialized size of ``model`` without its ``value_info`` (as it ships), without copying it
    (to a byte or two: the graph's own length prefix may shrink too)."""
    dropped = sum(_field_size(value.ByteSize()) for value in model.graph.value_info)
    return model.ByteSize() - dropped


def _field_size(length: int) -> int:
    """A length-delimited field's bytes: one tag byte, the varint length, the payload."""
    varint = 1
    while length >> (7 * varint):
        varint += 1
    return 1 + varint + length
