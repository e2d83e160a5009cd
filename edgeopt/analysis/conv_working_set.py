"""How a float depthwise convolution slows down once its maps no longer fit in the caches.

onnxruntime's blocked (NCHWc) depthwise kernel does few multiply-adds per byte, so it runs at its compute rate only
while the map it reads and the map it writes stay in cache. Beyond that it waits on memory, and at a lower rate
than a plain copy achieves. Measured on an AMD EPYC VM (Zen 4, 2 MiB L2 per core, 32 MiB L3 shared with other
tenants; onnxruntime 1.32, one thread, chains of 3x3 depthwise Convs, without the reorders at their ends), by the
bytes one Conv reads and writes: 70-95 G FLOP/s up to 6 MiB, 65-73 at 12 MiB, 36-37 at 20-25 MiB, 30 at 49 MiB.
The calibration's reference model (128 channels at 56x56, 3 MiB) prices the first range. Priced with it alone, a
chain of 16-channel Convs at 400x400 (PP-OCR and PicoDet backbones at full resolution) came out 45% fast.

Calibration times the same kernel at two larger working sets (``WORKING_SET_ANCHORS``, solved through the estimate
so that their reorders are priced apart). A Conv's efficiency is interpolated between the anchors log-linearly in
its bytes, clamped to the largest one beyond it. Its efficiency never rises above the reference's, and nothing
changes at or below the reference's size.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgeopt.targets import log_linear_at

__all__ = ["DEPTHWISE_REFERENCE_BYTES", "WORKING_SET_ANCHORS", "WORKING_SET_CHANNELS", "WORKING_SET_MODELS",
           "working_set_factor"]

# bytes one Conv of runtime.class_bench's conv.depthwise model reads and writes (128 channels, 56x56, fp32)
DEPTHWISE_REFERENCE_BYTES = 2 * 4 * 128 * 56 * 56
# the class models runtime.class_bench times: (key, side of their square maps), each of WORKING_SET_CHANNELS
WORKING_SET_CHANNELS = 32
WORKING_SET_MODELS: tuple[tuple[str, int], ...] = (("conv.depthwise.ws12", 224), ("conv.depthwise.ws25", 320))
# (class model's key, bytes one of its Convs reads and writes, fp32)
WORKING_SET_ANCHORS: tuple[tuple[str, int], ...] = tuple(
    (key, 2 * 4 * WORKING_SET_CHANNELS * side * side) for key, side in WORKING_SET_MODELS)


def working_set_factor(nbytes: int, reference_bytes: int, reference: float,
                       anchors: Iterable[tuple[int, float | None]]) -> float:
    """The efficiency at ``nbytes`` over the reference's: log-linear in the bytes between the measured points
    (``(bytes, efficiency)``, the reference among them), the largest one's beyond it. 1 at or below the reference's
    size, or where no larger point was measured; never above 1."""
    if nbytes <= reference_bytes or reference <= 0:
        return 1.0
    points = sorted({(size, value) for size, value in anchors if value and value > 0 and size > reference_bytes}
                    | {(reference_bytes, reference)})
    if len(points) < 2:
        return 1.0
    return min(1.0, log_linear_at(points, nbytes) / reference)
