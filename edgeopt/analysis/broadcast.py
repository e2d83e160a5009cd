"""How onnxruntime's CPU kernels walk a broadcasting elementwise op: in runs of contiguous elements ("spans"), with
a fixed cost per run on top of the cost per element.

onnxruntime's ``Broadcaster`` (core/providers/cpu/math/element_wise_ops.h) walks the two input shapes from the
innermost axis and merges axes into one run for as long as neither input switches between stepping through its
data and repeating one value; its inner loop then covers ``min`` of the two inputs' innermost run lengths. Axes
of size 1 in both inputs are skipped only while both inputs still have axes left, so a rank-4 tensor whose last
axis is 1 times a rank-1 constant of one value runs in spans of one element. Measured with onnxruntime 1.32.0 on
an x86 host (one thread), 53 K elements each:

    [1,172,309,1] x [1]          374 µs   (spans of 1)
    [1,172,309,1] x [1,1,1,1]      8 µs   (one span: the both-1 axis is skipped)
    [1,172,309,4] x [4]          421 µs   (spans of 4, four times the elements)
    [1,309,172,2] x [1]           12 µs   (one span)

basic-pitch's batch-normalization Mul and Add on a ``[N,H,W,1]`` map take 0.45 ms each for this reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["BROADCASTING_OPS", "innermost_span", "span_count"]

# ONNX ops onnxruntime's CPU provider runs through that Broadcaster (two inputs)
BROADCASTING_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "PRelu", "Equal", "Less",
                              "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift"})


class _Runs:
    """One input's runs from the innermost axis out: (steps through its data, elements of the output covered)."""

    def __init__(self, axis: int, largest: int) -> None:
        self.runs = [[axis > 1, largest]]

    def append(self, axis: int, largest: int) -> None:
        stepping = self.runs[-1][0]
        if axis > 1 and not stepping:
            self.runs.append([True, 1])
        elif axis <= 1 and largest > 1 and stepping:
            self.runs.append([False, 1])
        self.runs[-1][1] *= largest


def innermost_span(first: Sequence[int], second: Sequence[int]) -> int:
    """Output elements per run of onnxruntime's broadcasting loop for inputs of these shapes (the whole output
    when the shapes are equal)."""
    if list(first) == list(second):
        return max(1, math.prod(first))
    a, b = list(reversed(first)), list(reversed(second))
    shorter = min(len(a), len(b))
    index = 0
    if shorter == 0:  # a scalar: it repeats over the other input's innermost axis
        axis = (b or a or [1])[0]
        runs_a, runs_b = (_Runs(1, axis), _Runs(axis, axis)) if not a else (_Runs(axis, axis), _Runs(1, axis))
        index = 1
    else:
        while True:
            largest = max(a[index], b[index])
            if largest <= 1 and index + 1 < shorter:  # both 1 and more axes to come: skipped
                index += 1
                continue
            runs_a, runs_b = _Runs(a[index], largest), _Runs(b[index], largest)
            index += 1
            break
    for position in range(index, max(len(a), len(b))):
        size_a = a[position] if position < len(a) else 1
        size_b = b[position] if position < len(b) else 1
        largest = max(size_a, size_b)
        runs_a.append(size_a, largest)
        runs_b.append(size_b, largest)
    return max(1, min(runs_a.runs[0][1], runs_b.runs[0][1]))


def span_count(first: Sequence[int] | None, second: Sequence[int] | None) -> int | None:
    """Runs of the broadcasting loop over the whole output (None when a shape is unknown)."""
    if first is None or second is None or any(d < 0 for d in [*first, *second]):
        return None
    rank = max(len(first), len(second))
    padded = [[1] * (rank - len(shape)) + list(shape) for shape in (first, second)]
    output = math.prod(max(x, y) for x, y in zip(*padded))
    if output == 0:
        return 0
    return output // innermost_span(first, second)
