"""How a convolution's speed falls as its GEMM narrows: an int8 one with its reduction depth (input channels per
group x kernel area), a float one off onnxruntime's NCHWc path with its output positions per image.

onnxruntime's int8 convolutions run a GEMM over ``depth`` products per output (packed in blocks the VNNI/dot-product
instructions take four at a time): a shallow one, as a network's RGB stem, spends most of its time outside the
products. Measured on an AVX-512 VNNI host (onnxruntime 1.32.0, one thread, a 3x3 Conv with its Q/DQ, 64x64 maps):
at 3, 8, 16, 32 and 64 input channels (depth 27 to 576) int8 ran 54, 186, 296, 406 and 621 GOPS; fp32 110, 141,
181, 189 and 216, so only int8 is modelled here.

The rate is modelled as ``depth / (depth + k0)`` of a limit between two measured anchors of the kernel family: its
reference model (a 64-channel 3x3 Conv, depth 576; the 1x1 class's 128 channels) and shallower ones
(``conv.32ch@int8`` and ``conv.16ch@int8``: the reference at 32 and 16 input channels, depth 288 and 144;
``conv.shallow@int8``: 3 input channels, depth 27; ``conv.1x1.shallow@int8``: 16), each segment through the
anchors on either side of a convolution's depth (below the shallowest, the shallowest segment's curve; where a
segment falls faster than in proportion to depth, the power law through its ends). One curve
through the stem and the reference alone does not hold on every CPU: on an AMD EPYC (Zen 4, AVX-512 VNNI) the 3x3
ratios to depth 576 at depths 27, 72, 144, 216, 288 and 432 were 0.17, 0.51, 0.71, 0.82, 0.88 and 0.96, where that
curve gives 0.17, 0.37, 0.58, 0.71, 0.81 and 0.91 (on the Intel host above it fits: 0.65 at 288, measured 0.65);
the 1x1 family's ratios there (0.30 to 0.90 at depths 16 to 96) lie on its two-anchor curve within 1%. A
convolution at least as deep as its reference keeps the reference's efficiency.

A float Conv that onnxruntime's NCHWc transformer does not take (a 1-D convolution, or input channels that are not
a multiple of the 8- or 16-channel block) runs im2col and one GEMM per image, whose columns are the image's output
positions: measured on an AVX-512 host (one thread, 128 -> 128 channels, kernel 3) at 4, 16, 64 and 256 positions,
12.7, 43.8, 65 and 79 G MACs/s; a batch of 64 four-position images ran at the four-position rate. The same
``n / (n + k0)`` curve through the class's reference (``conv.gemm``, 56x56 = 3136 positions) and a short model
(``conv.gemm.short``: a batch of 1-D maps of 8 positions) prices it.

An LSTM pays a fixed cost per call and per step beside its products, so one over few steps (a streaming model
called once per frame) runs slower per MAC: measured (one thread, 128 inputs and hidden units) at 1, 2, 4, 8 and
32 steps, 11.7, 17.9, 25.7, 30.9 and 34.0 G MACs/s, which ``steps / (steps + k0)`` with k0 = 2.1 follows within
8%. Its anchors: the ``lstm`` class (32 steps) and ``lstm.step`` (the same cell over one step).
"""

from __future__ import annotations


import math
from collections.abc import Iterable

__all__ = ["DEPTH_ANCHORS", "GEMM_POSITIONS_ANCHOR", "LSTM_STEPS_ANCHOR", "anchored_factor", "depth_factor",
           "shallow_k0"]

# kernel family (the Conv's class) -> (reference depth, its shallower anchors: (model's key, depth), deepest first;
# calibration solves them in this order, each segment's upper end already solved)
DEPTH_ANCHORS: dict[str | None, tuple[int, tuple[tuple[str, int], ...]]] = {
    None: (64 * 3 * 3, (("conv.32ch@int8", 32 * 3 * 3), ("conv.16ch@int8", 16 * 3 * 3),
                        ("conv.shallow@int8", 3 * 3 * 3))),
    "1x1": (128, (("conv.1x1.shallow@int8", 16),)),
}


# (reference positions, short model's key, its positions) for the float GEMM path ("gemm" class)
GEMM_POSITIONS_ANCHOR: tuple[int, str, int] = (56 * 56, "conv.gemm.short", 8)
# (reference steps, one-step model's key, its steps) for an LSTM over few time steps
LSTM_STEPS_ANCHOR: tuple[int, str, int] = (32, "lstm.step", 1)


LINEAR_K0 = 1e9  # the model's limit: efficiency in proportion to depth


def shallow_k0(reference: float, shallow: float, reference_depth: int, shallow_depth: int) -> float | None:
    """``k0`` of ``depth / (depth + k0)`` through both points (efficiencies at the two depths); None where the
    shallow one is not slower; the linear limit where it is slower than the model can express (so that the
    price of the shallow model falls steadily as its efficiency rises, which calibration's bisection needs)."""
    ratio = shallow / reference
    if not 0 < ratio < 1:
        return None
    if ratio * reference_depth <= shallow_depth:
        return LINEAR_K0
    return min(LINEAR_K0, shallow_depth * reference_depth * (1 - ratio) / (ratio * reference_depth - shallow_depth))


def depth_factor(depth: int, reference_depth: int, k0: float) -> float:
    """The efficiency at ``depth`` over the reference's (1 at or beyond the reference depth)."""
    if depth >= reference_depth:
        return 1.0
    return (depth / (depth + k0)) / (reference_depth / (reference_depth + k0))


def anchored_factor(size: int, reference_size: int, reference: float, anchors: Iterable[tuple[int, float | None]]
                    ) -> float:
    """The efficiency at ``size`` over the reference's, on the ``n / (n + k0)`` curve through the two measured
    anchors (``(size, efficiency)``, the reference among them) on either side of it; below the smallest, the
    curve through the two smallest. 1 at or beyond the reference size, or where nothing shallower was measured;
    never above 1 (an anchor measured faster than the reference)."""
    if size >= reference_size or reference <= 0:
        return 1.0
    points = sorted({(s, e) for s, e in anchors if e and 0 < s < reference_size} | {(reference_size, reference)})
    if len(points) < 2:
        return 1.0
    upper = max(1, next(i for i, (s, _e) in enumerate(points) if s >= size))
    (low_size, low), (high_size, high) = points[upper - 1], points[upper]
    k0 = shallow_k0(high, low, high_size, low_size)
    if k0 is None:
        factor = 1.0
    elif k0 >= LINEAR_K0:
        # a drop steeper than in proportion to size (an RGB stem against a 16-channel anchor), which the curve cannot
        # make: the power law through both anchors
        factor = (size / high_size) ** (math.log(high / low) / math.log(high_size / low_size))
    else:
        factor = depth_factor(size, high_size, k0)
    return min(1.0, factor * high / reference)
