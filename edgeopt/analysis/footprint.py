"""The expected peak memory of quantizing an ONNX model, from the static analysis: ``graph/onnx_shapes.py``
resolves every tensor, ``memory.py`` sizes it and plans its liveness.

    expected peak = resident + weights x copies + one batch of activations per live session

``resident`` is what the process holds when quantizing starts (the caller measures it; never less than
``FIXED_OVERHEAD_BYTES``, Python with the libraries loaded). Quantizing keeps up to three onnxruntime
sessions of the model alive at once: the float model, an int8 candidate and a calibration session whose
activations are exposed as outputs; each holds its own copy of the weights, and Python holds three more
(the prepared graph, its serialized bytes, the quantizer's private copy). The float and candidate sessions
hold a batch's activations as an arena plans them (the liveness peak; the float plan stands in for the int8
one, whose tensors are no larger). The calibration session hands every exposed activation of the batch back
at once, so it holds their sum.

Every tensor's size is either proportional to the batch or independent of it, so two resolutions (batch 1
and 2) give the sizes at any batch by linear extrapolation: choosing a batch that fits costs no further
shape inference. Tensors whose size cannot be resolved count as 0 and are counted in ``unknown_tensors``
(the estimate is then low).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.analysis.memory import liveness_plan
from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.graph.onnx_shapes import model_inputs, resolve_shapes

__all__ = [
    "FIXED_OVERHEAD_BYTES",
    "PYTHON_COPIES",
    "SESSIONS",
    "ActivationSizes",
    "MemoryEstimate",
    "activation_sizes",
    "estimate_quantize_memory",
    "largest_batch_within",
]

# What a convert process holds before the model and the data count: Python 3.11 with numpy, onnx,
# onnxruntime (and its quantization tools), onnxslim and edgeopt imported, one small session run. Measured
# on this project's x86-64 Linux machine (onnxruntime 1.32, onnx 1.23, numpy 2.4) as the quantize stage's
# peak RSS when converting the 8x8 digits CNN (24k parameters): 159 MiB.
FIXED_OVERHEAD_BYTES = 160 * 1024 * 1024
# The sessions alive at once while quantizing: float, an int8 candidate, calibration (activations exposed).
SESSIONS = ("float", "candidate", "calibration")
# Copies of the weights Python holds beside the sessions' (see the module doc). Measured: quantizing a
# weight-bound MLP (80 MiB of weights, 1 MiB of activations) raised the RSS by 6.4x its weights.
PYTHON_COPIES = 3


@dataclass(frozen=True)
class ActivationSizes:
    """Activation bytes as linear functions of the batch: ``a + b * batch`` for the liveness peak of every
    node and for the sum of all activations."""

    live: tuple[tuple[int, int], ...]  # per node: (bytes independent of the batch, bytes per sample)
    total: tuple[int, int]
    unknown_tensors: int
    batch_inputs: tuple[str, ...]  # the inputs whose axis 0 follows the batch

    def peak(self, batch: int) -> int:
        return max((a + b * batch for a, b in self.live), default=0)

    def sum(self, batch: int) -> int:
        a, b = self.total
        return a + b * batch


class MemoryEstimate(BaseModel):
    """The expected peak of the quantize stage at one calibration batch, with its parts (bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int
    expected_peak_bytes: int
    resident_bytes: int  # held when quantizing starts (at least FIXED_OVERHEAD_BYTES)
    weights_bytes: int
    weight_copies: int  # sessions + Python's copies
    activation_bytes: dict[str, int]  # per live session, at ``batch``
    unknown_tensors: int = 0  # sizes not resolved, counted as 0: the estimate is then low


def _batch_inputs(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The inputs whose axis 0 the model leaves free: the batch follows it."""
    return [t.name for t in model_inputs(model)
            if t.name in shapes and t.shape and not (isinstance(t.shape[0], int) and t.shape[0] > 0)]


def _at_batch(shapes: Mapping[str, Sequence[int]], batch_inputs: Sequence[str], batch: int) -> dict[str, list[int]]:
    return {name: [batch, *dims[1:]] if name in batch_inputs else list(dims) for name, dims in shapes.items()}


def _plan(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> tuple[list[int], int, int]:
    plan = liveness_plan(to_graph(model, shapes=resolve_shapes(model, shapes)))
    return list(plan.live_bytes), sum(t.bytes or 0 for t in plan.tensors), len(plan.unknown_tensors)


def activation_sizes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> ActivationSizes:
    """The activation sizes of ``model`` at any batch; ``input_shapes`` are its inputs' resolved shapes at
    some batch (axis 0 of the inputs the model leaves free is replaced). Raises InputError for shapes the
    model refuses."""
    batch_inputs = _batch_inputs(model, input_shapes)
    live1, total1, unknown1 = _plan(model, _at_batch(input_shapes, batch_inputs, 1))
    if not batch_inputs:  # a fixed batch: the sizes do not move
        return ActivationSizes(tuple((x, 0) for x in live1), (total1, 0), unknown1, ())
    live2, total2, unknown2 = _plan(model, _at_batch(input_shapes, batch_inputs, 2))
    if unknown2 > unknown1:
        # batch 2 resolved worse than batch 1 (a shape computed for batch 1 only): scale batch 1's sizes
        return ActivationSizes(tuple((0, x) for x in live1), (0, total1), unknown1, tuple(batch_inputs))
    live = tuple((max(0, 2 * x1 - x2), max(0, x2 - x1)) for x1, x2 in zip(live1, live2))
    total = (max(0, 2 * total1 - total2), max(0, total2 - total1))
    return ActivationSizes(live, total, unknown2, tuple(batch_inputs))


def estimate_quantize_memory(weights_bytes: int, sizes: ActivationSizes, batch: int,
                             resident_bytes: int | None = None) -> MemoryEstimate:
    """The expected peak of quantizing at calibration batch ``batch`` (see the module doc); ``resident_bytes``:
    the process's RSS now (None: unknown, the fixed overhead stands in)."""
    resident = max(resident_bytes or 0, FIXED_OVERHEAD_BYTES)
    peak = sizes.peak(batch)
    activations = {"float": peak, "candidate": peak, "calibration": sizes.sum(batch)}
    copies = len(SESSIONS) + PYTHON_COPIES
    total = resident + weights_bytes * copies + sum(activations.values())
    return MemoryEstimate(batch=batch, expected_peak_bytes=total, resident_bytes=resident, weights_bytes=weights_bytes,
                          weight_copies=copies, activation_bytes=activations, unknown_tensors=sizes.unknown_tensors)


def largest_batch_within(weights_bytes: int, sizes: ActivationSizes, upto: int, limit_bytes: int,
                         resident_bytes: int | None = None) -> int | None:
    """The largest batch <= ``upto`` whose expected peak is within ``limit_bytes``; None when not even 1."""

    def fits(batch: int) -> bool:
        return estimate_quantize_memory(weights_bytes, sizes, batch, resident_bytes).expected_peak_bytes <= limit_bytes

    if not fits(1):
        return None
    low, high = 1, upto  # the estimate grows with the batch: bisect
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low
