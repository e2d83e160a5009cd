"""The metrics as accumulators: ``update`` per batch, ``result`` → (score, details) at the end."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edgeopt.config.metric_spec import MetricSpec
from edgeopt.errors import InputError
from edgeopt.metrics.detection import Detection, HeadLayout
from edgeopt.numeric import row_cosines


class MetricHookError(InputError):
    """A user's metric function failed: the user's to fix, never a reason to drop a candidate."""


# A channel whose int8 spread is below this share of its float spread has collapsed (flattened).
COLLAPSED_SPREAD = 0.5
# Channels whose float spread is below this share of the output's widest channel carry no signal.
_SILENT_CHANNEL = 1e-4


class Metric:
    """update(reference batch, candidate batch, labels batch or None); result() → (score, details)."""

    def update(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> None:
        raise NotImplementedError

    def result(self) -> tuple[float, dict[str, Any]]:
        raise NotImplementedError


def _as_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)


class _Cosine(Metric):
    """Mean per-sample cosine, and a variance-collapse guard per channel (the last axis up to rank 3,
    axis 1 beyond): a channel whose int8 spread shrank below half its float spread has collapsed, as
    class scores do beside pixel boxes under one scale. Noise only ever adds spread, so a noisy
    embedding dimension or an empty column of a probability map is not a collapse."""

    def __init__(self) -> None:
        self.cosines: list[np.ndarray] = []
        self.moments: list[np.ndarray] | None = None  # n, Σref, Σref², Σcand, Σcand² per channel
        self.non_finite = False

    def update(self, reference, candidate, labels) -> None:
        ref, cand = _as_rows(reference), _as_rows(candidate)
        if not np.all(np.isfinite(cand)):
            self.non_finite = True
            return
        self.cosines.append(row_cosines(ref, cand))
        raw = np.asarray(reference)
        if raw.ndim >= 2:
            axis = raw.ndim - 1 if raw.ndim <= 3 else 1
            r = np.moveaxis(np.asarray(reference, np.float64), axis, -1).reshape(-1, raw.shape[axis])
            c = np.moveaxis(np.asarray(candidate, np.float64), axis, -1).reshape(r.shape)
            moments = [np.full(r.shape[1], r.shape[0], np.float64), r.sum(0), (r * r).sum(0), c.sum(0),
                       (c * c).sum(0)]
            self.moments = moments if self.moments is None else [a + b for a, b in zip(self.moments, moments)]

    def result(self):
        if self.non_finite:
            return 0.0, {"non_finite": "the int8 model produced NaN or inf"}
        values = np.concatenate(self.cosines) if self.cosines else np.ones(1)
        details: dict[str, Any] = {"cosine_min": round(float(values.min()), 6)}
        score = float(values.mean())
        if self.moments is not None:
            count, ref_sum, ref_sq, cand_sum, cand_sq = self.moments
            ref_spread = np.sqrt(np.maximum(ref_sq / count - (ref_sum / count) ** 2, 0))
            cand_spread = np.sqrt(np.maximum(cand_sq / count - (cand_sum / count) ** 2, 0))
            widest = float(ref_spread.max()) if ref_spread.size else 0.0
            carrying = ref_spread > max(_SILENT_CHANNEL * widest, 1e-12)
            if widest > 0 and np.any(carrying):
                ratio = np.where(carrying, cand_spread / np.where(carrying, ref_spread, 1), np.inf)
                worst = int(np.argmin(ratio))
                details["worst_channel"], details["worst_channel_spread"] = worst, round(float(ratio[worst]), 4)
                collapsed = np.flatnonzero(ratio < COLLAPSED_SPREAD)
                if collapsed.size:
                    details["collapsed_channels"] = ",".join(str(int(i)) for i in collapsed[:20])
                    # A collapsed channel fails the output whatever the mean says.
                    score = min(score, float(ratio[worst]))
        return score, details


class _Top1(Metric):
    """Argmax agreement along the last axis, over every leading position (classes, or steps)."""

    def __init__(self) -> None:
        self.agree = 0
        self.total = 0

    def update(self, reference, candidate, labels) -> None:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        if ref.ndim == 0 or ref.shape != cand.shape:
            self.total += max(1, ref.size)
            return
        same = np.argmax(ref, axis=-1) == np.argmax(np.where(np.isfinite(cand), cand, -np.inf), axis=-1)
        self.agree += int(np.sum(same))
        self.total += int(same.size)

    def result(self):
        return (self.agree / self.total if self.total else 1.0), {"positions": self.total}


class _Accuracy(Metric):
    """Task accuracy against labels; the score is 1 minus the accuracy int8 loses (gains count 0)."""

    def __init__(self) -> None:
        self.right_reference = 0
        self.right_candidate = 0
        self.total = 0

    def update(self, reference, candidate, labels) -> None:
        if labels is None:
            raise ValueError("accuracy needs labels")
        labels = np.asarray(labels).reshape(-1)
        ref_class = np.argmax(np.asarray(reference).reshape(len(labels), -1), axis=1)
        cand_class = np.argmax(np.asarray(candidate).reshape(len(labels), -1), axis=1)
        self.right_reference += int(np.sum(ref_class == labels))
        self.right_candidate += int(np.sum(cand_class == labels))
        self.total += len(labels)

    def result(self):
        if not self.total:
            return 1.0, {}
        ref, cand = self.right_reference / self.total, self.right_candidate / self.total
        return 1.0 - max(0.0, ref - cand), {"accuracy_float": round(ref, 6), "accuracy_int8": round(cand, 6)}


class _Retrieval(Metric):
    """Nearest-neighbour agreement: for each sample, is its nearest other sample (cosine) the same
    with int8 embeddings as with float ones? Keeps one embedding per sample."""

    def __init__(self) -> None:
        self.reference: list[np.ndarray] = []
        self.candidate: list[np.ndarray] = []

    def update(self, reference, candidate, labels) -> None:
        self.reference.append(_as_rows(reference).astype(np.float32))
        self.candidate.append(_as_rows(candidate).astype(np.float32))

    def result(self):
        ref, cand = np.concatenate(self.reference), np.concatenate(self.candidate)
        if not np.all(np.isfinite(cand)):
            return 0.0, {"non_finite": "the int8 model produced NaN or inf"}
        if len(ref) < 3:
            cosine = _Cosine()
            cosine.update(ref, cand, None)
            score, _ = cosine.result()
            return score, {"note": "fewer than 3 samples: per-sample cosine instead"}
        float_similarity = _similarity(ref)
        float_nearest = np.argmax(float_similarity, axis=1)
        int8_nearest = np.argmax(_similarity(cand), axis=1)
        rows = np.arange(len(ref))
        # Neighbours the float model itself can barely tell apart count as the same answer.
        same = float_similarity[rows, int8_nearest] >= float_similarity[rows, float_nearest] - RETRIEVAL_TIE
        return float(np.mean(same)), {"samples": int(len(ref)), "exact_neighbour": round(float(
            np.mean(float_nearest == int8_nearest)), 6)}


# Cosine gap under which two neighbours are a tie for the float model (retrieval agreement).
RETRIEVAL_TIE = 0.002


def _similarity(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity


class _IoU(Metric):
    """IoU of the masks above the threshold, summed over samples (an empty pair agrees)."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.intersection = 0
        self.union = 0

    def update(self, reference, candidate, labels) -> None:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        if self.threshold is None:
            finite = ref[np.isfinite(ref)]
            self.threshold = 0.5 if finite.size and finite.min() >= 0 and finite.max() <= 1 else 0.0
        ref_mask = ref > self.threshold
        cand_mask = np.where(np.isfinite(cand), cand, -np.inf) > self.threshold
        self.intersection += int(np.sum(ref_mask & cand_mask))
        self.union += int(np.sum(ref_mask | cand_mask))

    def result(self):
        return (self.intersection / self.union if self.union else 1.0), {
            "threshold": self.threshold, "foreground": self.union}


class _Sqnr(Metric):
    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def update(self, reference, candidate, labels) -> None:
        ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((ref - cand) ** 2)) if np.all(np.isfinite(cand)) else math.inf

    def result(self):
        if self.noise == 0:
            return 100.0, {}
        if self.signal == 0 or not math.isfinite(self.noise):
            return -100.0, {}
        return min(100.0, 10 * math.log10(self.signal / self.noise)), {}


class _Exact(Metric):
    def __init__(self) -> None:
        self.same = 0
        self.total = 0

    def update(self, reference, candidate, labels) -> None:
        ref, cand = np.asarray(reference), np.asarray(candidate)
        if ref.shape != cand.shape:
            self.total += max(1, ref.size)
            return
        self.same += int(np.sum(ref == cand))
        self.total += int(ref.size)

    def result(self):
        return (self.same / self.total if self.total else 1.0), {}


class _Hook(Metric):
    """A user function over the whole evaluation set of its output(s)."""

    def __init__(self, function: Callable[..., Any], text: str) -> None:
        self.function, self.text = function, text
        self.reference: list[Any] = []
        self.candidate: list[Any] = []
        self.labels: list[np.ndarray] = []

    def update(self, reference, candidate, labels) -> None:
        self.reference.append(reference)
        self.candidate.append(candidate)
        if labels is not None:
            self.labels.append(np.asarray(labels))

    def result(self):
        def joined(parts):
            if parts and isinstance(parts[0], Mapping):
                return {name: np.concatenate([np.atleast_1d(p[name]) for p in parts]) for name in parts[0]}
            return np.concatenate([np.atleast_1d(p) for p in parts]) if parts else np.empty(0)

        labels = np.concatenate(self.labels) if self.labels else None
        try:
            value = self.function(joined(self.reference), joined(self.candidate), labels)
            score = float(value)
        except Exception as exc:
            raise MetricHookError(f"metric hook {self.text} failed: {type(exc).__name__}: {exc}",
                             "the hook gets (float outputs, int8 outputs, labels or None) and returns a number") \
                from exc
        return score, {}


def load_hook(text: str) -> Callable[..., Any]:
    module_name, _, function_name = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise InputError(f"metric hook {text}: cannot import {module_name!r} ({type(exc).__name__}: {exc})",
                         "put the module on PYTHONPATH (or install it) and name it as package.module:function") \
            from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InputError(f"metric hook {text}: {module_name} has no function {function_name!r}",
                         "name it as package.module:function")
    return function


def make_metric(spec: MetricSpec, layout: HeadLayout | None = None) -> Metric:
    if spec.is_hook:
        return _Hook(load_hook(spec.metric), spec.metric)
    factories: dict[str, Callable[[], Metric]] = {
        "top1": _Top1, "sequence": _Top1, "accuracy": _Accuracy, "cosine": _Cosine, "retrieval": _Retrieval,
        "iou": lambda: _IoU(spec.param), "detection": lambda: Detection(spec.param, layout), "sqnr": _Sqnr,
        "exact": _Exact,
    }
    return factories[spec.metric]()
