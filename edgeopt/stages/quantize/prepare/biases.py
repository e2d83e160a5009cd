"""One bias initializer per compute node, under a name nothing else in the graph can collide with.

Why: onnxruntime's QDQ quantizer gives each Conv/Gemm its own int32 bias (the bias scale is input scale x
weight scale, which differ per node). When two nodes share one bias initializer it copies it as
``f"{name}{k}"`` (``QDQQuantizer._dup_initializer`` in 1.32), checking only initializer names. A
TensorFlow export names tensors ``…/conv1d_25`` and ``…/conv1d_252`` side by side, so the copy takes
the name of a node output: the quantized file wires the bias into the wrong node and does not load
(basic-pitch's ``nmp.onnx``: "Invalid attribute perm {0, 2, 3, 1}, input shape = {36}"). Giving each
node its own copy first leaves the quantizer nothing to rename.
"""

from __future__ import annotations

from collections import Counter

import onnx

from edgeopt.graph.onnx_protos import is_op
from edgeopt.stages.quantize.prepare.scopes import all_names

_BIASED_OPS = ("Conv", "ConvTranspose", "Gemm")


def unshare_biases(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A model whose main-graph Conv/ConvTranspose/Gemm nodes each read a bias initializer no other node
    input reads (the input model is returned as it is when none is shared), and the new bias names."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers = Counter(name for node in graph.node for name in node.input)
    shared = [index for index, node in enumerate(graph.node)
              if any(is_op(node, op) for op in _BIASED_OPS) and len(node.input) > 2
              and node.input[2] in initializers and readers[node.input[2]] > 1]
    if not shared:
        return model, []
    result = onnx.ModelProto()
    result.CopyFrom(model)
    taken = all_names(result)
    kept_first: set[str] = set()
    created: list[str] = []
    for index in shared:
        node = result.graph.node[index]
        bias = node.input[2]
        if bias not in kept_first:  # the first reader keeps the original
            kept_first.add(bias)
            continue
        count = 1
        while f"{bias}__bias{count}" in taken:
            count += 1
        name = f"{bias}__bias{count}"
        copy = result.graph.initializer.add()
        copy.CopyFrom(initializers[bias])
        copy.name = name
        node.input[2] = name
        taken.add(name)
        created.append(name)
    return result, created
