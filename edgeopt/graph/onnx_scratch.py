"""Scratch buffers onnxruntime's CPU kernels take from the arena while they run, which no tensor of the model shows.

An int8 convolution whose input channels are not a multiple of 4 (an RGB stem, a 1- or 6-channel input) cannot
take MLAS's symmetric channels-last kernel, which reads its input through an indirection buffer and writes 8-bit
outputs directly; it runs im2col and a GEMM instead, whose 32-bit accumulators for the whole output are a buffer of
their own. Measured with onnxruntime 1.32 (AMD EPYC, one thread; a QDQ Conv to 64 channels on a 64x64 map, 3x3 or
1x1 kernel): the run holds 1.2 MiB more than its tensors at 1, 2, 3 or 6 input channels, 0.0-0.1 MiB at 4, 8, 12,
16 or 24, for 1.0 MiB of int32 accumulators; at 32 and 128 output channels, and on a 128x128 map, the excess follows
the accumulators' size (0.7 / 1.4 / 1.8 MiB for 0.5 / 2.0 / 2.0 MiB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from edgeopt.graph.model import RuntimeTensor, Tensor, tensor_size_bytes
from edgeopt.graph.onnx_execution import NodeExecution
from edgeopt.graph.onnx_protos import DEFAULT_DOMAINS
from edgeopt.graph.onnx_shapes import TensorInfo

SYMMETRIC_CHANNEL_MULTIPLE = 4


def int8_conv_accumulators(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo],
                           execution: Sequence[NodeExecution]) -> list[RuntimeTensor]:
    """The int32 accumulator buffer of each int8 Conv (QDQ or QLinearConv, one group) whose input channels are not a
    multiple of 4, live while it runs."""
    found = []
    for index, (node, row) in enumerate(zip(model.graph.node, execution, strict=True)):
        if node.op_type not in ("Conv", "QLinearConv") or node.domain not in DEFAULT_DOMAINS \
                or row.role != "compute" or row.dtype != "int8" or not node.input or not node.output:
            continue
        group = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
        source, result = shapes.get(node.input[0]), shapes.get(node.output[0])
        if group != 1 or source is None or result is None or source.shape is None or result.shape is None \
                or len(source.shape) < 3:
            continue
        if int(source.shape[1]) % SYMMETRIC_CHANNEL_MULTIPLE == 0:
            continue
        accumulators = tensor_size_bytes(Tensor(node.output[0], result.shape, "int32"))
        found.append(RuntimeTensor(f"{node.output[0]}@accumulators", index, index, accumulators or 0))
    return found
