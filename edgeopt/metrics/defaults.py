"""The default metric for an output, from its name, shape, dtype and the float model's first values."""

from __future__ import annotations

import numpy as np

from edgeopt.config.metric_spec import MetricSpec

_EMBEDDING_NAMES = ("emb", "pool", "sentence", "vector", "feature", "feat", "hidden", "encod")
_MASK_NAMES = ("mask", "prob", "seg", "map", "heat", "sigmoid")
_SEQUENCE_NAMES = ("ctc", "logit", "seq", "char", "token", "softmax")


def default_metric(name: str, sample: np.ndarray, has_labels: bool) -> tuple[MetricSpec, str]:
    """The metric that suits an output, judged from its name, shape, dtype and the float model's values
    on the first batch; with the reason, which is printed and recorded."""
    array = np.asarray(sample)
    lowered = name.lower()
    if array.dtype.kind in "iub":
        return MetricSpec("exact"), "integer/bool output: exact agreement"
    if array.ndim <= 1:
        return MetricSpec("cosine"), "one value per sample: cosine across samples"
    finite = array[np.isfinite(array)]
    in_unit = finite.size > 0 and float(finite.min()) >= 0 and float(finite.max()) <= 1
    last = array.shape[-1]
    if array.ndim == 2:
        rows = array.reshape(array.shape[0], -1).astype(np.float64)
        if detection_axis(array[None], any_count=True) == 2 and not any(word in lowered for word in _EMBEDDING_NAMES):
            return MetricSpec("detection"), (f"one box beside {last - 4} score column(s) per sample: matched "
                                             "detections")
        if any(word in lowered for word in _EMBEDDING_NAMES) or _unit_norm_rows(rows):
            return MetricSpec("retrieval"), f"[N, {last}] embedding: nearest-neighbour agreement"
        if 2 <= last <= 1000:
            with_labels = " (labels given: accuracy)" if has_labels else ""
            return (MetricSpec("accuracy") if has_labels else MetricSpec("top1")), \
                f"[N, {last}] class scores: top-1{with_labels}"
        return MetricSpec("cosine"), f"[N, {last}] wide vector: per-sample cosine"
    if array.ndim == 3:
        attributes = detection_axis(array)
        if attributes is not None and not any(word in lowered for word in _SEQUENCE_NAMES + _EMBEDDING_NAMES):
            count = array.shape[attributes]
            return MetricSpec("detection"), (f"boxes beside {count - 4} score column(s) on axis {attributes}: "
                                             "matched detections")
        embedding_named = any(word in lowered for word in _EMBEDDING_NAMES)  # "token_embeddings" is not CTC
        if 2 <= last <= 20000 and not embedding_named and (any(word in lowered for word in _SEQUENCE_NAMES)
                                                           or _distribution_rows(array)):
            return MetricSpec("sequence"), f"per-step class scores over {last} classes: per-step agreement"
        if in_unit and not embedding_named:
            # independent sigmoids per step (note or tag posteriorgrams): what is used is the map above a
            # threshold, and a cosine over mostly-empty maps is dominated by their noise floor
            return MetricSpec("iou", param=0.5), (f"{list(array.shape[1:])} map of probabilities (not one "
                                                  "distribution per step): IoU above 0.5")
        return MetricSpec("cosine"), f"{list(array.shape[1:])} per-sample features: per-sample cosine"
    if array.ndim == 4 and (in_unit or any(word in lowered for word in _MASK_NAMES)) and array.shape[1] <= 4:
        threshold = 0.5 if in_unit else 0.0
        return MetricSpec("iou", param=threshold), (f"{array.shape[1]}-channel map of "
                                                    f"{'probabilities' if in_unit else 'logits'}: mask IoU "
                                                    f"above {threshold:g}")
    return MetricSpec("cosine"), f"{list(array.shape[1:])} tensor: per-sample cosine"


def _unit_norm_rows(rows: np.ndarray) -> bool:
    norms = np.linalg.norm(rows, axis=1)
    return rows.shape[1] >= 16 and bool(np.all(np.abs(norms - 1) < 1e-3))


def _distribution_rows(array: np.ndarray) -> bool:
    """Softmax rows (non-negative, sum 1) or log-softmax rows (logsumexp 0)."""
    rows = array.reshape(-1, array.shape[-1]).astype(np.float64)[:256]
    if not np.all(np.isfinite(rows)):
        return False
    if np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1, atol=1e-3):
        return True
    peak = rows.max(axis=1, keepdims=True)
    logsumexp = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
    return bool(np.all(rows <= 1e-6)) and np.allclose(logsumexp, 0, atol=1e-3)


def detection_axis(array: np.ndarray, any_count: bool = False) -> int | None:
    """The attribute axis of a [N, anchors, 4+C] (or [N, 4+C, anchors]) head: 4 box columns of wide
    range beside score columns within [0, 1]; None when the output does not look like one.
    ``any_count``: however few anchors there are (one box per sample)."""
    for axis in (2, 1):
        count, other = array.shape[axis], array.shape[3 - axis]
        if not 5 <= count <= 400 or (other < count // 2 and not any_count):
            continue
        moved = np.moveaxis(array, axis, -1).reshape(-1, count)
        finite = moved[np.all(np.isfinite(moved), axis=1)]
        if finite.shape[0] == 0:
            continue
        scores = finite[:, 4:]
        boxes = finite[:, :4]
        if float(scores.min()) >= 0 and float(scores.max()) <= 1 and float(np.abs(boxes).max()) > 2:
            return axis
    return None
