"""Memory as the TFLite interpreter allocates it: a ``.tflite`` model's peak RSS increase, part by part.

The same parts as the device runner measures (over a baseline taken with the interpreter module imported):

* **interpreter**: the interpreter object and its op resolver, 4.3 MiB (5.1 MiB with XNNPACK's thread pool
  and caches) for a model of three ops, and about 20 KiB per op (ai-edge-litert 2.3.0, x86_64);
* **weights**: the file is mapped, so each weight read is resident once; XNNPACK (LiteRT's default CPU
  delegate) packs the weights of the ops it takes into its own buffers, a second copy;
* **activation arena**: the liveness plan's peak (TFLite's arena planner reuses buffers the same way);
* **convolution scratch**: TFLite's builtin convolution kernels unfold their input (im2col) into one scratch
  tensor per call, shared through the arena: the largest, ``output pixels x kernel taps x input channels``
  elements. XNNPACK instead keeps, per convolution, an indirection buffer of one pointer per output pixel and
  kernel tap, for every convolution with more than one tap, all held at once.

Fitted on, and so checked only in-sample against, the device runner's measurements of four files with and
without XNNPACK (x86_64 AVX2, 2026-12-04): basic-pitch's ``nmp.tflite`` (222 ops, its long 1-D convolutions'
scratch 150+ MiB), the README's digits32 CNN converted by litert-torch as float and as full int8 (15 ops),
and a three-op test model: all within -9%..+2%. Not validated out of sample, so the estimate carries no
error band.
"""

from __future__ import annotations

import math

from edgeopt.analysis.memory import MemoryPlan
from edgeopt.analysis.runtime_memory import MemoryPart, RuntimeMemoryEstimate
from edgeopt.graph.model import Graph, bits_per_element

MiB = 1 << 20
INTERPRETER_BYTES = {True: int(5.1 * MiB), False: int(4.3 * MiB)}  # by XNNPACK on / off
PER_OP_BYTES = 20 * 1024
POINTER_BYTES = 8
CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")
SOURCE = ("edgeopt's model of the TFLite interpreter (interpreter, mapped weights and XNNPACK's packed copy, arena, "
          "convolution scratch), fitted in-sample on four files: no validated error band")


def _convolution_scratch(graph: Graph, xnnpack: bool) -> int:
    """XNNPACK's indirection buffers (all held) or the builtin kernels' largest im2col buffer (bytes)."""
    scratch = []
    for node in graph.nodes:
        if node.op_type not in CONVOLUTIONS or node.role != "compute" or len(node.inputs) < 2:
            continue
        weights, output = graph.tensors.get(node.inputs[1]), graph.tensors.get(node.outputs[0])
        if weights is None or output is None or not weights.shape or not output.shape or len(weights.shape) != 4:
            continue
        pixels = math.prod(int(d) for d in output.shape[:-1])
        taps = int(weights.shape[1]) * int(weights.shape[2])
        if xnnpack:
            scratch.append(pixels * taps * POINTER_BYTES if taps > 1 else 0)
        elif taps > 1:
            channels = int(weights.shape[3]) if node.op_type == "CONV_2D" else 1
            bits = bits_per_element(graph.tensors[node.inputs[0]].dtype) if node.inputs[0] in graph.tensors else 32
            scratch.append(pixels * taps * channels * (bits or 32) // 8)
    if not scratch:
        return 0
    return sum(scratch) if xnnpack else max(scratch)


def estimate_tflite_memory(graph: Graph, plan: MemoryPlan, xnnpack: bool = True) -> RuntimeMemoryEstimate:
    """The peak RSS increase of running ``graph`` (a .tflite main subgraph) in the interpreter (module doc)."""
    weights = plan.weight_bytes * (2 if xnnpack else 1)
    arena = plan.peak_activation_bytes
    scratch = _convolution_scratch(graph, xnnpack)
    delegate = "XNNPACK" if xnnpack else "builtin kernels"
    ops = sum(1 for node in graph.nodes if node.role != "constant")
    interpreter = INTERPRETER_BYTES[xnnpack] + PER_OP_BYTES * max(0, ops - 3)
    parts = [
        MemoryPart(key="session", label=f"interpreter ({delegate}; {ops} ops)", bytes=interpreter),
        MemoryPart(key="weights", label="weights: the mapped file" + (" and XNNPACK's packed copy" if xnnpack else ""),
                   bytes=weights),
        MemoryPart(key="arena", label="activation arena (the planned peak)", bytes=arena),
        MemoryPart(key="scratch", label="convolution scratch: " + ("XNNPACK's indirection buffers, all held"
                                                                   if xnnpack else "the largest im2col buffer"),
                   bytes=scratch),
    ]
    load_peak = interpreter + weights
    peak = load_peak + arena + scratch
    return RuntimeMemoryEstimate(parts=parts, load_peak_increase_bytes=load_peak, run_peak_increase_bytes=peak,
                                 peak_increase_bytes=peak, baseline_bytes=None, total_bytes=None, source=SOURCE)
