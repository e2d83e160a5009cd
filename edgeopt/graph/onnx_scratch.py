"""Scratch buffers onnxruntime's CPU kernels take from the arena while they run, which no tensor of the model shows.

An int8 convolution (QLinearConv, onnxruntime 1.32's ``quantization/qlinearconv.cc``) takes, for the duration of
its run, from the session's arena (its temp-space allocator, which the memory pattern does not trace):

* **an indirection buffer**, one pointer per kernel tap per output pixel, for the whole output image, wherever
  MLAS's symmetric kernel reads its input through one (a kernel larger than 1x1, or a stride or padding) and
  for every depthwise convolution. Measured with onnxruntime 1.32 (AMD EPYC, one thread): a QDQ 3x3 Conv from
  12 to 24 channels on a 208x208 map holds 3.1 MiB more than its 1x1 twin (9 x 43 264 pointers: 3.0 MiB);
* **its int32 accumulators for the whole output**, where the symmetric kernel is not taken (input channels not a
  multiple of 4, an RGB stem, a 1- or 6-channel input; a depthwise convolution whose channels are not a
  multiple of 16): it runs a GEMM whose 32-bit results are requantized after. At 1, 2, 3 or 6 input channels a
  QDQ Conv to 64 channels on a 64x64 map held 1.2 MiB more than at 4, 8, 12, 16 or 24, for 1.0 MiB of
  accumulators;
* **an im2col buffer** beside those accumulators where that GEMM needs one (a kernel larger than 1x1, or a
  stride or padding): one byte per kernel tap per input channel per output pixel (3 to 24 channels at 3x3 on a
  208x208 map: 1.4 MiB more than the 1x1 twin, for 1.1 MiB).

Weights that are not signed 8-bit with zero zero points never take the symmetric kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import onnx

from edgeopt.graph.model import RuntimeTensor
from edgeopt.graph.onnx_execution import NodeExecution
from edgeopt.graph.onnx_macs import attribute
from edgeopt.graph.onnx_protos import DEFAULT_DOMAINS, small_constant
from edgeopt.graph.onnx_shapes import TensorInfo

SYMMETRIC_CHANNEL_MULTIPLE = 4  # MLAS's symmetric kernel reads input channels in fours
SYMMETRIC_DEPTHWISE_MULTIPLE = 16  # ... and its depthwise kernel channels in sixteens (x86)
POINTER_BYTES = 8  # 64-bit targets


def _symmetric_weights(node: onnx.NodeProto, producers: Mapping[str, onnx.NodeProto],
                       shapes: Mapping[str, TensorInfo], stored: Mapping[str, onnx.TensorProto]) -> bool:
    """Signed 8-bit weights with every zero point 0 (or none given): what MLAS's symmetric kernel needs. A weight
    the model computes (not found) counts as symmetric, as quantizers write them."""
    if node.op_type == "QLinearConv":
        weight, zero_point = node.input[3], (node.input[5] if len(node.input) > 5 else "")
    else:
        producer = producers.get(node.input[1])
        if producer is None or producer.op_type != "DequantizeLinear":
            return True
        weight, zero_point = producer.input[0], (producer.input[2] if len(producer.input) > 2 else "")
    info = shapes.get(weight)
    if info is not None and info.dtype not in (None, "int8"):
        return False
    values = small_constant(stored.get(zero_point)) if zero_point else None
    return values is None or not values.any()


def int8_conv_scratch(model: onnx.ModelProto, shapes: Mapping[str, TensorInfo], execution: Sequence[NodeExecution],
                      stored: Mapping[str, onnx.TensorProto]) -> list[RuntimeTensor]:
    """The scratch of each int8 Conv (QDQ or QLinearConv), live while it runs: its indirection buffer, or its int32
    accumulators and im2col buffer (module docstring; ``stored``: onnx_protos.stored_tensors of the graph)."""
    producers = {name: node for node in model.graph.node for name in node.output}
    found = []
    for index, (node, row) in enumerate(zip(model.graph.node, execution, strict=True)):
        if node.op_type not in ("Conv", "QLinearConv") or node.domain not in DEFAULT_DOMAINS \
                or row.role != "compute" or row.dtype != "int8" or len(node.input) < 2 or not node.output:
            continue
        source, result = shapes.get(node.input[0]), shapes.get(node.output[0])
        if source is None or result is None or source.shape is None or result.shape is None \
                or len(source.shape) < 3 or len(result.shape) != len(source.shape):
            continue
        channels, outputs = int(source.shape[1]), int(result.shape[1])
        group = int(attribute(node, "group", 1))
        weight = shapes.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
        kernel = [int(d) for d in weight.shape[2:]] if weight is not None and weight.shape is not None else []
        kernel = list(attribute(node, "kernel_shape", kernel))
        if not kernel or group < 1 or channels % group or outputs % group:
            continue
        taps = math.prod(kernel)
        pixels = math.prod(int(d) for d in result.shape[2:])
        depthwise = group > 1 and channels == group and outputs == group
        if group > 1 and not depthwise:
            continue  # grouped convolutions: not measured
        pointwise = taps == 1 and set(attribute(node, "strides", [1])) <= {1} \
            and not any(attribute(node, "pads", [0]))
        symmetric = _symmetric_weights(node, producers, shapes, stored) and (
            channels % SYMMETRIC_DEPTHWISE_MULTIPLE == 0 if depthwise else channels % SYMMETRIC_CHANNEL_MULTIPLE == 0)
        name = node.output[0]
        if depthwise or (symmetric and not pointwise):
            found.append(RuntimeTensor(f"{name}@indirection", index, index, POINTER_BYTES * taps * pixels,
                                       kernel_scratch=True))
        if not symmetric:
            found.append(RuntimeTensor(f"{name}@accumulators", index, index, 4 * outputs * pixels, kernel_scratch=True))
            if not depthwise and not pointwise:
                found.append(RuntimeTensor(f"{name}@im2col", index, index, channels * taps * pixels,
                                           kernel_scratch=True))
    return found
