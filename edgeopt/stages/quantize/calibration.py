"""Activation statistics for static quantization: one streaming pass, shared by every candidate.

``collect_activation_statistics`` runs the float model once over the calibration batches with the
activations onnxruntime's calibrator would ask for exposed as outputs, and keeps running statistics
per tensor only (min, max, and optionally a histogram whose range grows by powers of two). One batch
and its activations are alive at a time, whatever the number of samples (issue 22).

``ActivationStatistics.tensors_data(method)`` turns them into onnxruntime's ``TensorsData`` for
min/max, percentile or entropy ranges; the quantizer hands those to ``quantize_static`` as a
calibration cache, so onnxruntime never runs its own calibrator. Excluding nodes, the activation
type, reduce_range and the op types do not change the float activations, so every candidate and
every mixed-precision step of a search reuses one pass.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeopt.errors import InputError
from edgeopt.events import Events
from edgeopt.formats.onnx import weightless_copy
from edgeopt.fsutil import temporary_folder

if TYPE_CHECKING:
    from onnxruntime.quantization.calibrate import TensorsData

Feeds = dict[str, np.ndarray]
# "per-activation": each tensor's range by the least expected quantization error (``least_error_range``).
CalibrationMethodName = Literal["minmax", "percentile", "entropy", "per-activation"]

# Signed bins over [-bound, bound). The bound is at most twice the largest magnitude seen, so a
# side keeps >= 1024 bins over the data: as fine as onnxruntime's 2048 |x| bins within 2x.
HISTOGRAM_BINS = 4096
# onnxruntime's percentile default (create_calibrator).
DEFAULT_PERCENTILE = 99.999
# u8 and s8 activations alike: 256 levels over their range (reduce_range narrows weights only).
ACTIVATION_LEVELS = 256
# Enough KL candidates to place the threshold within ~0.4% of the range; more only costs time.
_MAX_KL_CANDIDATES = 256
# Large activations are histogrammed in slices so the index temporaries stay small.
_CHUNK = 1 << 20
_FLOAT_TYPES = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.FLOAT16: np.dtype(np.float16)}


# -- batch sources ---------------------------------------------------------------------------------


@runtime_checkable
class BatchSource(Protocol):
    """Calibration feeds that can be walked more than once: every ``iter()`` starts over and
    yields one feed dict at a time. A list is one; so is a ``BatchStream`` that re-reads its data."""

    def __iter__(self) -> Iterator[Feeds]: ...


@dataclass(frozen=True)
class BatchStream:
    """A ``BatchSource`` over a function that opens the data afresh, e.g.
    ``BatchStream(lambda: dataset.batches(16), samples=dataset.count, batch_size=16)``.
    ``samples`` and ``batch_size`` only make progress read in samples."""

    open: Callable[[], Iterable[Feeds]]
    samples: int | None = None
    batch_size: int | None = None

    def __iter__(self) -> Iterator[Feeds]:
        return iter(self.open())


CalibrationBatches = BatchSource | Callable[[], Iterable[Feeds]]


def walk(batches: CalibrationBatches) -> Iterator[Feeds]:
    """A fresh iterator over ``batches`` (a re-iterable, or a function returning an iterable)."""
    if callable(batches) and not isinstance(batches, Iterable):
        return iter(batches())
    return iter(batches)


def reiterable(batches: CalibrationBatches) -> CalibrationBatches:
    """``batches`` itself, refused when it is a one-shot iterator (a generator): a search walks
    the calibration data more than once and would silently see nothing the second time."""
    if isinstance(batches, Iterator):
        raise TypeError("calibration batches must be re-iterable: pass a list, a BatchStream or a function "
                        "returning a fresh iterator, not a generator")
    return batches


def head(batches: CalibrationBatches | None, count: int) -> list[Feeds]:
    """The first ``count`` feeds, read without walking the rest (none without batches)."""
    return [] if batches is None else list(itertools.islice(walk(batches), count))


# -- running statistics ----------------------------------------------------------------------------


class RunningHistogram:
    """Counts of finite values in ``bins`` equal bins over [-bound, bound).

    The bound is the smallest power of two above the largest magnitude seen, so it only grows by
    powers of two: old bins merge exactly into new ones, and bin widths are powers of two, so
    binning is exact arithmetic. The counts therefore depend on the values only, never on how
    they were batched, and memory is fixed per tensor whatever the number of batches.
    """

    def __init__(self, bins: int = HISTOGRAM_BINS) -> None:
        if bins % 2 or bins < 4:
            raise ValueError("the histogram needs an even number of bins (at least 4)")
        self.bins = bins
        self.bound = 0.0
        self.counts = np.zeros(bins, dtype=np.int64)
        self.zeros = 0  # values seen while every value so far was 0 (no bound to bin them by yet)

    @property
    def width(self) -> float:
        return 2 * self.bound / self.bins

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def add(self, values: np.ndarray, peak: float) -> None:
        """Add finite ``values`` whose largest magnitude is ``peak``."""
        if values.size == 0:
            return
        if peak == 0:
            if self.bound == 0:
                self.zeros += values.size
            else:
                self.counts[self.bins // 2] += values.size
            return
        bound = math.ldexp(1.0, math.frexp(peak)[1])  # the smallest power of two above peak
        if self.bound == 0:
            self.bound = bound
            self.counts[self.bins // 2] += self.zeros
            self.zeros = 0
        elif bound > self.bound:
            self._grow(int(bound / self.bound))
        half = self.bins // 2
        scale = half / self.bound  # a power of two: x * scale is exact in float64
        flat = values.reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            position = flat[start:start + _CHUNK].astype(np.float64)
            position *= scale
            np.floor(position, out=position)  # before adding the offset, which could round
            index = position.astype(np.intp)
            index += half
            np.clip(index, 0, self.bins - 1, out=index)  # a guard: |x| < bound already keeps it in range
            self.counts += np.bincount(index, minlength=self.bins)

    def _grow(self, factor: int) -> None:
        half = self.bins // 2
        merged = np.zeros_like(self.counts)
        if factor < self.bins:
            span = self.bins // factor  # the old range covers this many new bins around zero
            merged[half - span // 2:half + span // 2] = self.counts.reshape(span, factor).sum(axis=1)
        else:  # the old range fits in the two bins beside zero
            merged[half - 1] = self.counts[:half].sum()
            merged[half] = self.counts[half:].sum()
        self.counts = merged
        self.bound *= factor

    def magnitudes(self) -> tuple[np.ndarray, float]:
        """Counts of |x| in ``bins / 2`` bins of ``width`` from zero."""
        half = self.bins // 2
        counts = self.counts[half:] + self.counts[:half][::-1]
        counts[0] += self.zeros
        return counts, self.width

    def around_zero(self, extent: float) -> tuple[np.ndarray, float]:
        """The signed counts trimmed to the fewest bins per side that still cover ``extent``."""
        half = self.bins // 2
        if self.bound == 0:
            return np.array([0, self.zeros], dtype=np.int64), 0.0
        side = min(half, math.floor(extent / self.width) + 1)  # x lies in bin floor(x / width)
        counts = self.counts[half - side:half + side].copy()
        counts[side] += self.zeros
        return counts, self.width


@dataclass
class TensorStatistics:
    """What one pass saw of one float activation."""

    dtype: np.dtype
    lowest: np.ndarray | None = None  # 0-d, in the tensor's dtype; None until a non-NaN value
    highest: np.ndarray | None = None
    elements: int = 0
    nonfinite: int = 0  # NaN and ±inf values: in lowest/highest (inf only), never in the histogram
    histogram: RunningHistogram | None = None

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        if value.size == 0:
            return
        self.elements += value.size
        low, high = value.min(), value.max()  # NaN-propagating, and much faster than nanmin
        if np.isfinite(low) and np.isfinite(high):
            finite, peak = value, max(-float(low), float(high))
        else:  # the slow path, only for tensors holding NaN or ±inf
            finite = value[np.isfinite(value)]
            self.nonfinite += value.size - finite.size
            peak = float(np.max(np.abs(finite))) if finite.size else 0.0
            ordered = value[~np.isnan(value)]
            if ordered.size == 0:
                return
            low, high = ordered.min(), ordered.max()
        self.lowest = low if self.lowest is None else np.minimum(self.lowest, low)
        self.highest = high if self.highest is None else np.maximum(self.highest, high)
        if self.histogram is not None and finite.size:
            self.histogram.add(finite, peak)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) as 0-d arrays of the tensor's dtype; (0, 0) for a tensor with only NaN."""
        zero = np.zeros((), dtype=self.dtype)
        low = zero if self.lowest is None else np.asarray(self.lowest, dtype=self.dtype)
        high = zero if self.highest is None else np.asarray(self.highest, dtype=self.dtype)
        return low, high


@dataclass
class ActivationStatistics:
    """Per-tensor statistics of one calibration pass over one model (by its sha256)."""

    tensors: dict[str, TensorStatistics]
    model_sha256: str
    batches: int = 0
    samples: int | None = None
    has_histograms: bool = False

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: tuple(float(v) for v in stats.bounds()) for name, stats in self.tensors.items()}

    def matches(self, model: onnx.ModelProto) -> bool:
        return model_fingerprint(model) == self.model_sha256

    def for_bias_variant(self, model: onnx.ModelProto) -> ActivationStatistics:
        """These statistics for ``model``: the model they were collected on with only Conv biases changed
        (bias correction redone for another recipe). Those shifts are small beside the activations' ranges;
        a second calibration pass per recipe would cost far more than it changes."""
        return replace(self, model_sha256=model_fingerprint(model))

    def tensors_data(self, method: CalibrationMethodName = "minmax", *, percentile: float = DEFAULT_PERCENTILE,
                     levels: int = ACTIVATION_LEVELS) -> TensorsData:
        """onnxruntime's ``TensorsData`` for ``method``, as its own calibrators would shape them.

        - minmax: (lowest, highest), as 1-element arrays like onnxruntime's MinMaxCalibrater.
        - percentile: symmetric like onnxruntime's default: t = the ``percentile`` of |x|, the range
          (-t, t) clipped to (lowest, highest).
        - per-activation: per tensor, whichever of min/max, percentile (99.99, 99.999) and entropy
          gives the least expected squared quantization error on its histogram (``least_error_range``).
        - entropy: the threshold of least KL divergence (``entropy_threshold``), clipped to
          (lowest, highest). onnxruntime 1.32's quantize_static builds its entropy histogram with as
          many bins as it quantizes to (128), so its "entropy" ranges are exactly min/max; this one
          searches (with ``levels`` >= the histogram's bins it gives min/max too).
        """
        from onnxruntime.quantization.calibrate import (
            CalibrationMethod,
            TensorData,
            TensorsData,
        )

        enum = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy, "per-activation": CalibrationMethod.MinMax}[method]
        if method != "minmax" and not self.has_histograms:
            raise ValueError(f"{method} ranges need histograms: collect the statistics with histograms=True")
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be within [0, 100], got {percentile}")
        data = {}
        for name, stats in self.tensors.items():
            low, high = stats.bounds()
            if not (np.isfinite(low) and np.isfinite(high)):
                # ±inf (masked_fill(-inf) masks) has no int8 scale: such tensors are kept float
                # (sensitivity.up_front_exclusions); a range here would only make onnxruntime divide by inf.
                continue
            if method == "minmax":
                data[name] = TensorData(lowest=low.reshape(1), highest=high.reshape(1))
                continue
            if method == "per-activation":
                _chosen, clipped_low, clipped_high = least_error_range(stats, levels)
                data[name] = TensorData(lowest=np.asarray(clipped_low, dtype=stats.dtype),
                                        highest=np.asarray(clipped_high, dtype=stats.dtype))
                continue
            if method == "percentile":
                threshold = percentile_threshold(stats.histogram, percentile)
            else:
                threshold = entropy_threshold(stats.histogram, float(low), float(high), levels)
            clipped_low = np.asarray(max(-threshold, float(low)), dtype=stats.dtype)
            clipped_high = np.asarray(min(threshold, float(high)), dtype=stats.dtype)
            data[name] = TensorData(lowest=clipped_low, highest=clipped_high)
        return TensorsData(enum, data)


    def methods_chosen(self, levels: int = ACTIVATION_LEVELS) -> dict[str, int]:
        """How many tensors each method's range won for "per-activation" (for the report)."""
        counts: dict[str, int] = {}
        for stats in self.tensors.values():
            low, high = stats.bounds()
            if np.isfinite(low) and np.isfinite(high) and stats.histogram is not None:
                chosen = least_error_range(stats, levels)[0]
                counts[chosen] = counts.get(chosen, 0) + 1
        return counts


def least_error_range(stats: TensorStatistics, levels: int = ACTIVATION_LEVELS) -> tuple[str, float, float]:
    """(method, low, high): of the min/max, percentile (99.99, 99.999) and entropy ranges, the one with the
    least expected squared error on the tensor's histogram: values inside the range cost the rounding
    noise of its step (step²/12), values outside cost their distance to the range, squared. Min/max wins
    ties, so a tensor without outliers keeps its full range."""
    low, high = float(stats.bounds()[0]), float(stats.bounds()[1])
    histogram = stats.histogram
    if histogram is None or histogram.bound == 0 or high <= low:
        return "minmax", low, high
    thresholds = {"minmax": max(-low, high), "percentile-99.99": percentile_threshold(histogram, 99.99),
                  "percentile-99.999": percentile_threshold(histogram, 99.999),
                  "entropy": entropy_threshold(histogram, low, high, levels)}
    centres = (np.arange(histogram.bins) - histogram.bins // 2 + 0.5) * histogram.width
    counts = histogram.counts.astype(np.float64)
    best = ("minmax", low, high, math.inf)
    for name, threshold in thresholds.items():
        clipped_low, clipped_high = max(-threshold, low), min(threshold, high)
        lo, hi = min(clipped_low, 0.0), max(clipped_high, 0.0)  # onnxruntime keeps zero representable
        if hi <= lo:
            continue
        step = (hi - lo) / (levels - 1)
        outside = np.where(centres < lo, lo - centres, np.where(centres > hi, centres - hi, 0.0))
        error = float(np.sum(counts * np.where(outside > 0, outside ** 2, step * step / 12)))
        if error < best[3] * (1 - 1e-9):  # strictly better: min/max, tried first, wins ties
            best = (name, clipped_low, clipped_high, error)
    return best[0], best[1], best[2]


def model_fingerprint(model: onnx.ModelProto) -> str:
    """sha256 over the graph, node by node and weight by weight: no serialized copy of the whole model."""
    digest = hashlib.sha256()
    graph = model.graph
    for tensor in graph.initializer:
        digest.update(f"{tensor.name}:{tensor.data_type}:{list(tensor.dims)}".encode())
        digest.update(tensor.raw_data if tensor.HasField("raw_data") else tensor.SerializeToString())
    for part in (*graph.node, *graph.input, *graph.output, *graph.sparse_initializer):
        digest.update(part.SerializeToString())
    return digest.hexdigest()


# -- thresholds from histograms --------------------------------------------------------------------


def percentile_threshold(histogram: RunningHistogram, percentile: float) -> float:
    """The upper edge of the |x| bin where the cumulative count reaches ``percentile``: the range
    holds at least that share of the values (onnxruntime takes the bin's lower edge)."""
    counts, width = histogram.magnitudes()
    total = int(counts.sum())
    if total == 0 or width == 0:
        return 0.0
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, total * percentile / 100.0, side="left"))
    return (min(index, counts.size - 1) + 1) * width


def entropy_threshold(histogram: RunningHistogram, lowest: float, highest: float, levels: int = ACTIVATION_LEVELS
                      ) -> float:
    """The symmetric threshold t whose int8 range (-t, t) ∩ (lowest, highest) loses least in KL
    divergence: P is the histogram over that range with the values beyond folded into its edge
    bins, Q the same bins merged into the quantizer's levels and spread back over P's non-empty
    bins (TensorRT's method, which onnxruntime's entropy calibrator follows).

    Q is modelled as edgeopt's activation quantizer really is: ``levels`` steps over the clipped
    range widened to hold zero (onnxruntime's scale rule), not 128 steps over (-t, t): for a ReLU
    output that would count a quarter of the levels and clip far too hard."""
    counts, width = histogram.around_zero(max(abs(lowest), abs(highest)))
    side = counts.size // 2
    if width == 0 or counts.sum() == 0:
        return side * width
    counts = counts.astype(np.float64)
    # The bin holding exact zeros (half of a ReLU output) would dominate P, and every merge that
    # spreads it over its neighbours would look costly: KL would pick ever narrower ranges.
    # pytorch-quantization's entropy calibrator gives that bin its neighbour's count; so do we.
    if side + 1 < counts.size:
        counts[side] = min(counts[side], counts[side + 1])
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    total = cumulative[-1]
    # the bins holding data: [first, stop)
    first = int(np.clip(side + math.floor(lowest / width), 0, counts.size - 1))
    stop = int(np.clip(side + math.floor(highest / width) + 1, first + 1, counts.size))
    stride = max(1, math.ceil(side / _MAX_KL_CANDIDATES))
    best, best_kl = side, math.inf
    for bins_per_side in range(side, 0, -stride):  # from the full range down: a tie keeps the wider
        low, high = max(side - bins_per_side, first), min(side + bins_per_side, stop)
        span_low, span_high = min(low, side), max(high, side)
        if span_high - span_low < levels and bins_per_side < side:
            # Fewer bins than levels: Q would copy P and hide what clipping loses (TensorRT starts
            # its search at as many bins as levels for the same reason).
            break
        if high <= low:  # every value lies on the other side of zero at this width: nothing kept
            continue
        kept = counts[low:high]
        reference = kept.copy()
        reference[0] += cumulative[low]
        reference[-1] += total - cumulative[high]
        level = ((np.arange(low, high) - span_low) * levels) // (span_high - span_low)
        level -= level[0]
        occupied = reference > 0
        level_mass = np.bincount(level, weights=kept)
        level_occupied = np.bincount(level, weights=occupied)
        spread = np.where(occupied, level_mass[level] / np.maximum(level_occupied[level], 1), 0.0)
        kl = _kl_divergence(reference, spread)
        if kl < best_kl:
            best, best_kl = bins_per_side, kl
    return best * width


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two non-negative count vectors; where q is empty but p is not (mass clipped
    away into a level with nothing left), q counts as a tiny share, so such cuts cost a lot."""
    p_total, q_total = p.sum(), q.sum()
    if p_total == 0:
        return 0.0
    if q_total == 0:
        return math.inf
    p = p / p_total
    q = np.maximum(q / q_total, 1e-12)
    where = p > 0
    return float(np.sum(p[where] * np.log(p[where] / q[where])))


# -- the pass --------------------------------------------------------------------------------------


def open_exposed_runner(model: onnx.ModelProto, outputs: dict[str, int], *, label: str, threads: int | None = None,
                        optimization: str = "basic"):
    """A runner for ``model`` with ``outputs`` ({tensor: ONNX element type}; a float16 tensor declared float
    would not load) as extra graph outputs, so a pass can read its activations.

    The outputs are added to ``model`` itself for as long as it takes to write it (a copy would be one more
    copy of its weights) and the model is written weight by weight beside a small graph file
    (``save_with_weights_beside``): the session is opened from that folder, and no serialized copy of the
    whole model is made (serializing one held two while it ran)."""
    from edgeopt.formats.onnx import save_with_weights_beside
    from edgeopt.runtime.runner import open_runner

    before = len(model.graph.output)
    existing = {o.name for o in model.graph.output}
    with temporary_folder("edgeopt-session-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            for name, elem in outputs.items():
                if name not in existing:
                    model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
            save_with_weights_beside(model, path)
        finally:
            del model.graph.output[before:]
        return open_runner(path, label=label, threads=threads, optimization=optimization)


def tensors_to_calibrate(model: onnx.ModelProto) -> dict[str, np.dtype]:
    """Float activations onnxruntime's calibrator would ask ranges for, with their dtypes: inputs
    and outputs of every main-graph node that ONNX shape inference types as float/float16 and
    that are not initializers (``CalibraterBase.select_tensors_to_calibrate`` with every op type,
    a superset of any ``op_types_to_quantize``)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model))  # (types, not weights)
    except Exception:  # onnxruntime's own inference is non-strict too; keep what the model declares
        inferred = model
    graph = inferred.graph
    types = {vi.name: vi.type for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    initializers = {t.name for t in graph.initializer}
    selected: dict[str, np.dtype] = {}
    for node in graph.node:
        for name in itertools.chain(node.input, node.output):
            kind = types.get(name)
            if (name and name not in initializers and kind is not None and kind.HasField("tensor_type")
                    and kind.tensor_type.elem_type in _FLOAT_TYPES):
                selected[name] = _FLOAT_TYPES[kind.tensor_type.elem_type]
    return selected


def collect_activation_statistics(
    model: onnx.ModelProto,
    batches: CalibrationBatches,
    *,
    events: Events | None = None,
    histograms: bool = True,
    threads: int | None = None,
) -> ActivationStatistics:
    """One pass over ``batches`` through ``model`` with its float activations exposed.

    Graph inputs are measured on the feeds themselves (onnxruntime may alias an input exposed as
    an output), everything else on the session's outputs. The session runs without graph
    optimisations, like onnxruntime's calibrator, so min/max match it bit for bit. Each batch and
    its outputs are dropped before the next batch is read. ``histograms=False`` keeps min/max only
    (enough for minmax ranges, and cheaper on large activations).
    """
    events = events or Events()
    selected = tensors_to_calibrate(model)
    inputs = {i.name for i in model.graph.input}
    exposed = [name for name in selected if name not in inputs]
    runner = open_exposed_runner(model, {name: TensorProto.FLOAT16 if selected[name] == np.float16 else
                                         TensorProto.FLOAT for name in exposed},
                                 label="float model (calibration)", threads=threads, optimization="none")
    stats = {name: TensorStatistics(dtype=dtype, histogram=RunningHistogram() if histograms else None)
             for name, dtype in selected.items()}
    measured_inputs = [name for name in selected if name in inputs]
    total_samples = getattr(batches, "samples", None)
    batch_size = getattr(batches, "batch_size", None)
    total_batches = len(batches) if isinstance(batches, Sized) else None
    iterator = walk(batches)
    done = 0
    while True:
        # No name outlives its batch: while the source reads batch k+1, batch k is already gone.
        feeds = next(iterator, None)
        if feeds is None:
            break
        for name in measured_inputs:
            if name in feeds:
                stats[name].update(feeds[name])
        outputs = runner.run(feeds)
        del feeds
        for name in exposed:
            if name in outputs:
                stats[name].update(outputs[name])
        del outputs
        done += 1
        _report(events, done, total_batches, total_samples, batch_size)
    if done == 0:
        raise InputError("the calibration data yielded no batch", "give at least one calibration sample")
    samples = min(done * batch_size, total_samples) if total_samples and batch_size else None
    return ActivationStatistics(stats, model_fingerprint(model), batches=done, samples=samples,
                                has_histograms=histograms)


class StatisticsCache:
    """Calibration passes shared by many quantizations: one pass per float model (by identity: a
    model that a technique transformed has activations of its own), made on first use. A pass that
    failed raises its error again instead of running again. Histograms (``histograms=True`` at
    construction allows them) are collected only when a caller asks for them: they are most of a pass's
    cost on large activations, and min/max ranges need none; a later request for them makes the pass
    again, with them."""

    def __init__(self, batches: CalibrationBatches, *, histograms: bool = True, **options: object) -> None:
        self._batches, self._options, self._histograms = reiterable(batches), options, histograms
        self._passes: dict[int, tuple[onnx.ModelProto, ActivationStatistics | Exception]] = {}

    def get(self, model: onnx.ModelProto, histograms: bool = False) -> ActivationStatistics:
        histograms = histograms and self._histograms
        cached = self._passes.get(id(model))
        if cached is None or (histograms and isinstance(cached[1], ActivationStatistics)
                              and not cached[1].has_histograms):
            try:
                found: ActivationStatistics | Exception = collect_activation_statistics(
                    model, self._batches, histograms=histograms, **self._options)
            except Exception as exc:  # kept: every later quantization of this model would fail alike
                found = exc
            self._passes[id(model)] = (model, found)  # holding the model keeps its id its own
        found = self._passes[id(model)][1]
        if isinstance(found, Exception):
            raise found
        return found

    def retain(self, *models: onnx.ModelProto) -> None:
        """Forget the passes of every other model: a technique's rejected trial model (a full copy of
        the weights) would otherwise stay alive until the search ends."""
        keep = {id(model) for model in models}
        self._passes = {key: value for key, value in self._passes.items() if key in keep}


def _report(events: Events, done: int, total_batches: int | None, total_samples: int | None,
            batch_size: int | None) -> None:
    if total_samples and batch_size:
        seen = min(done * batch_size, total_samples)
        events.progress(seen, total_samples, f"calibration: {seen}/{total_samples} samples")
    else:
        total = total_batches if total_batches is not None else done
        events.progress(done, total, f"calibration: {done}/{total} batches" if total_batches else
                        f"calibration: {done} batches")

