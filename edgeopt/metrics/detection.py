"""The ``detection`` metric: F1 of the detections a user would see, float against int8.

A detector's output is read the way its family's post-processing reads it, since that decides which
boxes a user gets:

- the attribute axis: ``[N, anchors, 4+C]`` (YOLOv5, YOLOX) or ``[N, 4+C, anchors]`` (YOLOv8 and later);
- raw grid offsets: a YOLOX export without its decode (``decode_in_inference=False``, the default of its
  ONNX export) gives per-cell offsets and log sizes, which only become boxes once decoded over the stride
  pyramid (8, 16, 32). Read as boxes, such offsets all overlap, and matching them measures noise;
- objectness: with anchors on axis 1 over a stride pyramid (1 or 3 anchors per cell), column 4 is the
  objectness and a detection's confidence is objectness x class score (YOLOv5, YOLOX). Their class
  scores are conditional probabilities, arbitrary on background cells: read as plain scores, every
  background cell passes the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.metrics.defaults import detection_axis

PYRAMIDS = ((8, 16, 32), (8, 16, 32, 64))
# Raw centre offsets are cell fractions (about -0.5..1.5); decoded centres spread over the image.
_RAW_OFFSET_LIMIT = 4.0


@dataclass(frozen=True)
class HeadLayout:
    axis: int  # the attribute axis of the [N, ., .] output
    objectness: bool  # column 4 multiplies the class scores
    grid: tuple[tuple[int, int, int], ...] = ()  # (stride, rows, cols) per level when boxes are raw offsets

    def describe(self) -> str:
        parts = ["attributes last" if self.axis == 2 else "attributes first"]
        if self.objectness:
            parts.append("column 4 as objectness (confidence = objectness x class score)")
        if self.grid:
            strides = "/".join(str(stride) for stride, _, _ in self.grid)
            parts.append(f"raw grid offsets decoded over strides {strides}")
        return "; ".join(parts)


def _pyramid(anchors: int, image_size: tuple[int, int] | None) -> tuple[tuple[tuple[int, int, int], ...], int] | None:
    """The stride pyramid and anchors per cell (1 or 3) whose cells count ``anchors``, for the image size
    given, else for a square image; None when no pyramid fits."""
    for strides in PYRAMIDS:
        for per_cell in (1, 3):
            sizes = [image_size] if image_size else []
            if not image_size:
                cells = anchors / per_cell / sum(1 / stride**2 for stride in strides)
                side = int(round(cells**0.5))
                sizes.append((side, side))
            for height, width in sizes:
                grid = tuple((stride, -(-height // stride), -(-width // stride)) for stride in strides)
                if per_cell * sum(rows * cols for _, rows, cols in grid) == anchors:
                    return grid, per_cell
    return None


def infer_layout(reference: np.ndarray, image_size: tuple[int, int] | None = None) -> HeadLayout:
    """How to read a detector output, from the float model's values on the first batches and the image
    size of the model's input (when it has one)."""
    array = np.asarray(reference)
    if array.ndim == 2:
        return HeadLayout(axis=2, objectness=False)
    axis = detection_axis(array) or 2
    if axis != 2:
        return HeadLayout(axis=axis, objectness=False)
    anchors, count = array.shape[1], array.shape[2]
    pyramid = _pyramid(anchors, image_size)
    if pyramid is None:
        return HeadLayout(axis=2, objectness=False)
    grid, per_cell = pyramid
    centres = np.abs(array[..., :2].astype(np.float64))
    raw = per_cell == 1 and float(np.mean(centres[np.isfinite(centres)] > _RAW_OFFSET_LIMIT)) < 0.01
    return HeadLayout(axis=2, objectness=count >= 6, grid=grid if raw else ())


def _decode_grid(rows: np.ndarray, grid: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """YOLOX's decode: centre = (offset + cell) x stride, size = exp(log size) x stride."""
    cells, strides = [], []
    for stride, height, width in grid:
        ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((height * width, 1), float(stride)))
    cell, stride = np.concatenate(cells), np.concatenate(strides)
    boxes = rows[:, :4].copy()
    boxes[:, :2] = (boxes[:, :2] + cell) * stride
    boxes[:, 2:4] = np.exp(np.clip(boxes[:, 2:4], -10, 10)) * stride
    return boxes


class Detection:
    """F1 of detections matched one to one (same class, box IoU ≥ 0.5) between float and int8. A
    detection is a row whose confidence passes the threshold, after class-aware non-maximum suppression;
    boxes are read as (cx, cy, w, h). The default threshold, 0.1, is low on purpose: the marginal boxes
    are the ones int8 flips, and a decoder with any higher threshold (YOLOv5's 0.25, YOLOX's demo 0.3)
    sees a subset of what is compared here."""

    DEFAULT_THRESHOLD = 0.1
    MAX_DETECTIONS = 1000
    NMS_IOU = 0.5

    def __init__(self, threshold: float | None, layout: HeadLayout | None = None) -> None:
        self.threshold = self.DEFAULT_THRESHOLD if threshold is None else threshold
        self.layout = layout
        self.matched = 0
        self.reference_count = 0
        self.candidate_count = 0

    def update(self, reference, candidate, labels) -> None:
        ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        if ref.ndim == 2:  # one detection per sample
            ref, cand = ref[:, None, :], cand[:, None, :]
        if self.layout is None:
            self.layout = infer_layout(ref)
        ref, cand = np.moveaxis(ref, self.layout.axis, -1), np.moveaxis(cand, self.layout.axis, -1)
        for ref_rows, cand_rows in zip(ref, cand):
            ref_boxes, ref_class = self._detections(ref_rows)
            cand_boxes, cand_class = self._detections(np.where(np.isfinite(cand_rows), cand_rows, 0))
            self.reference_count += len(ref_boxes)
            self.candidate_count += len(cand_boxes)
            self.matched += match_count(ref_boxes, ref_class, cand_boxes, cand_class)

    def _detections(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detections a user would see: rows over the threshold, then class-aware non-maximum
        suppression (a raw head proposes many overlapping anchors per object; which of them survives
        near the threshold is noise, the object is not)."""
        layout = self.layout
        assert layout is not None
        if layout.objectness:
            scores = rows[:, 4:5] * rows[:, 5:]
        else:
            scores = rows[:, 4:]
        best = scores.max(axis=1) if scores.shape[1] else np.zeros(len(rows))
        keep = np.flatnonzero(best >= self.threshold)
        keep = keep[np.argsort(-best[keep], kind="stable")][: self.MAX_DETECTIONS]
        classes = np.argmax(scores[keep], axis=1) if scores.shape[1] else np.zeros(len(keep), int)
        boxes = _decode_grid(rows, layout.grid)[keep] if layout.grid else rows[keep, :4]
        corners = _corners(boxes)
        kept: list[int] = []
        suppressed = np.zeros(len(keep), bool)
        for index in range(len(keep)):
            if suppressed[index]:
                continue
            kept.append(index)
            overlap = _iou_one(corners[index], corners)
            suppressed |= (overlap > self.NMS_IOU) & (classes == classes[index])
        return boxes[kept], classes[kept]

    def result(self) -> tuple[float, dict[str, Any]]:
        total = self.reference_count + self.candidate_count
        return (2 * self.matched / total if total else 1.0), {
            "detections_float": self.reference_count, "detections_int8": self.candidate_count,
            "matched": self.matched, "score_threshold": self.threshold}


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) → (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.T
    return np.stack([cx - np.abs(w) / 2, cy - np.abs(h) / 2, cx + np.abs(w) / 2, cy + np.abs(h) / 2], axis=1)


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_count(ref_boxes, ref_class, cand_boxes, cand_class, min_iou: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU, best pairs first, same class, IoU ≥ ``min_iou``: one sort of the
    qualifying pairs (not a rescan of the whole matrix per match)."""
    if not len(ref_boxes) or not len(cand_boxes):
        return 0
    a, b = _corners(ref_boxes), _corners(cand_boxes)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(inter > 0, inter / (area_a[:, None] + area_b[None, :] - inter), 0.0)
    iou[np.asarray(ref_class)[:, None] != np.asarray(cand_class)[None, :]] = 0.0
    rows, cols = np.nonzero(iou >= min_iou)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_ref, used_cand = np.zeros(len(a), bool), np.zeros(len(b), bool)
    matched = 0
    for row, col in zip(rows[order], cols[order]):
        if not used_ref[row] and not used_cand[col]:
            used_ref[row] = used_cand[col] = True
            matched += 1
    return matched


def image_size_of(feeds: dict[str, np.ndarray]) -> tuple[int, int] | None:
    """(height, width) of the first image-like input of a batch (NCHW or NHWC with 1, 3 or 4 channels)."""
    for array in feeds.values():
        shape = np.shape(array)
        if len(shape) != 4 or np.asarray(array).dtype.kind not in "fiu":
            continue
        if shape[1] in (1, 3, 4) and shape[2] > 4 and shape[3] > 4:
            return int(shape[2]), int(shape[3])
        if shape[3] in (1, 3, 4) and shape[1] > 4 and shape[2] > 4:
            return int(shape[1]), int(shape[2])
    return None
