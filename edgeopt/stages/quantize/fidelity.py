"""How close an int8 model's outputs are to the float model's, on held-out data."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.numeric import channel_cosines


class OutputFidelity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cosine_mean: float  # per-sample cosine similarity, averaged
    cosine_min: float
    # Worst last-axis channel (cosine over all other axes): catches a concatenated output
    # whose small-scale part (e.g. scores beside boxes) collapsed while the whole looks fine.
    channel_cosine_min: float | None = None
    worst_channel: int | None = None
    sqnr_db: float  # signal-to-quantization-noise ratio over the whole output
    max_abs_error: float
    top1_agreement: float | None = None  # classifier-like outputs only
    # Integer/bool outputs (class ids, masks): the fraction of elements that match exactly.
    # A cosine says nothing there (any two positive class ids have cosine 1).
    exact_agreement: float | None = None

    @property
    def floor_cosine(self) -> float:
        """What the fidelity floor is held against."""
        if self.exact_agreement is not None:
            return self.exact_agreement
        if self.channel_cosine_min is None:
            return self.cosine_mean
        return min(self.cosine_mean, self.channel_cosine_min)


class Fidelity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int
    outputs: list[OutputFidelity]
    accuracy_reference: float | None = None  # with labels: task accuracy of the float model
    accuracy_candidate: float | None = None

    @property
    def worst_cosine(self) -> float:
        return min((o.floor_cosine for o in self.outputs), default=1.0)

    def meets(self, min_cosine: float, min_top1: float | None = None) -> bool:
        if any(o.floor_cosine < min_cosine for o in self.outputs):
            return False
        if min_top1 is not None and any(o.top1_agreement is not None and o.top1_agreement < min_top1
                                        for o in self.outputs):
            return False
        return True


def _per_sample_cosine(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    ref2 = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(-1, 1)
    cand2 = cand.reshape(ref2.shape)
    dot = np.sum(ref2 * cand2, axis=1)
    norms = np.linalg.norm(ref2, axis=1) * np.linalg.norm(cand2, axis=1)
    both_zero = (np.linalg.norm(ref2, axis=1) == 0) & (np.linalg.norm(cand2, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 0.0)
    return np.where(both_zero, 1.0, cosine)


def is_classifier_like(array: np.ndarray) -> bool:
    """[N, C] float scores with a handful-to-thousands of classes."""
    return array.ndim == 2 and 2 <= array.shape[1] <= 10000 and array.dtype.kind == "f"


def compare_outputs(name: str, reference: np.ndarray, candidate: np.ndarray) -> OutputFidelity:
    raw_ref, raw_cand = np.asarray(reference), np.asarray(candidate)
    if raw_ref.dtype.kind in "iub" and raw_ref.shape == raw_cand.shape:
        agreement = float(np.mean(raw_ref == raw_cand)) if raw_ref.size else 1.0
        errors = np.abs(raw_ref.astype(np.float64) - raw_cand.astype(np.float64))
        return OutputFidelity(name=name, cosine_mean=agreement, cosine_min=agreement, sqnr_db=math.inf
                              if agreement == 1.0 else -math.inf, max_abs_error=float(errors.max()) if errors.size
                              else 0.0, exact_agreement=agreement)
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return OutputFidelity(name=name, cosine_mean=0.0, cosine_min=0.0, sqnr_db=-math.inf,
                              max_abs_error=math.inf)
    if ref.ndim == 0:
        ref, cand = ref.reshape(1), cand.reshape(1)
    finite = np.isfinite(cand).all()
    cosine = _per_sample_cosine(ref, cand) if finite else np.zeros(1)
    noise = float(np.sum((ref - cand) ** 2)) if finite else math.inf
    signal = float(np.sum(ref**2))
    if noise == 0:
        sqnr = math.inf
    elif signal == 0 or not math.isfinite(noise):
        sqnr = -math.inf
    else:
        sqnr = 10 * math.log10(signal / noise)
    channel_min, worst_channel = channel_cosines(ref, cand) if finite else (0.0, None)
    top1 = None
    if is_classifier_like(np.asarray(reference)):
        top1 = float(np.mean(np.argmax(ref, axis=1) == np.argmax(cand, axis=1)))
    return OutputFidelity(
        name=name, cosine_mean=float(np.mean(cosine)), cosine_min=float(np.min(cosine)), sqnr_db=sqnr,
        channel_cosine_min=channel_min, worst_channel=worst_channel,
        max_abs_error=float(np.max(np.abs(ref - cand))) if finite and ref.size else (0.0 if finite else math.inf),
        top1_agreement=top1,
    )


def measure_fidelity(
    output_names: list[str],
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    labels: np.ndarray | None = None,
) -> Fidelity:
    """``reference``/``candidate``: one array per output, samples stacked on axis 0."""
    outputs = [compare_outputs(n, r, c) for n, r, c in zip(output_names, reference, candidate)]
    samples = int(reference[0].shape[0]) if reference and reference[0].ndim else 1
    fidelity = Fidelity(samples=samples, outputs=outputs)
    if labels is not None:
        index = next((i for i, r in enumerate(reference) if is_classifier_like(r) and r.shape[0] == len(labels)), None)
        if index is not None:
            fidelity.accuracy_reference = float(np.mean(np.argmax(reference[index], axis=1) == labels))
            fidelity.accuracy_candidate = float(np.mean(np.argmax(candidate[index], axis=1) == labels))
    return fidelity
