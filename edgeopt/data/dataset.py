"""``Dataset``: model inputs for calibration, evaluation, fine-tuning and measurement, one type for all.

Each input's array has samples along axis 0, in one of two layouts (``layout_of``):

- **batch axis**: the array has the model input's rank and its axis 0 *is* the model's axis 0, a
  batch axis. Feeds slice rows: ``batch_size`` rows where the batch axis is symbolic, exactly B where
  the model fixes it to B (a final partial batch is dropped).
- **sample axis**: the array has the model input's rank + 1; axis 0 counts samples and each sample is
  one whole model input (a scalar input's samples are stored as shape ``(S,)``). Feeds are one sample.
  This is the layout for models with no batch axis (``[time, features]``), for recurrent state
  (``[layers, batch, hidden]``) and for scalars.

Inputs the data lacks may have a ``Fill`` (zeros, ones, a number): it is materialised per feed at the
resolved shape, following the feed's batch size where its axis 0 is a batch axis.

The arrays are sources (data.sources), not arrays in memory: a file's rows are read when a feed needs
them, so feeding a calibration set of any size holds about one batch. Everything that looks at all
the data (the content hash, value statistics) makes one streaming pass; ``take`` and ``split`` select
rows without reading them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt.data.sources import ArraySource, MemorySource, RowsSource, Scratch, frozen, row_chunks
from edgeopt.data.specs import Fill, InputSpec, batch_axis_of, format_shape, numpy_dtype
from edgeopt.data.values import StatsAccumulator, ValueStats
from edgeopt.errors import InputError

Layout = Literal["batch", "samples"]


def _absent(value: object) -> bool:
    return value is None


class ArrayFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: list[int]
    dtype: str


class DatasetSummary(BaseModel):
    """A dataset as reports describe it; ``random`` (calibration on random inputs) and ``batch_size`` (the
    batch it was run at) are set by the stage that used it."""

    model_config = ConfigDict(extra="forbid")

    source: str
    count: int
    sha256: str
    labels: bool
    inputs: dict[str, ArrayFacts]
    layouts: dict[str, str] = {}
    fills: dict[str, str] | None = Field(None, exclude_if=_absent)
    random: bool | None = Field(None, exclude_if=_absent)
    batch_size: int | None = Field(None, exclude_if=_absent)


class QuantizationData(BaseModel):
    """The data quantization calibrates and evaluates on, as the report describes it."""

    model_config = ConfigDict(extra="forbid")

    calibration: DatasetSummary | None = Field(None, exclude_if=_absent)
    eval: DatasetSummary | None = Field(None, exclude_if=_absent)


@dataclass(frozen=True)
class FilledInput:
    """An input the data lacks: its fill, its resolved shape, and whether axis 0 follows the feed's batch."""

    fill: Fill
    shape: tuple[int, ...]
    dtype: str
    batch_axis: int | None  # the axis that follows the feed's batch size (None: the shape as resolved)
    reason: str  # "--fill", "default: zeros for a float input the data lacks"

    def materialise(self, batch: int | None) -> np.ndarray:
        shape = self.shape
        if self.batch_axis is not None and batch is not None and shape:
            shape = (*shape[:self.batch_axis], batch, *shape[self.batch_axis + 1:])
        return np.full(shape, self.fill.value, dtype=numpy_dtype(self.dtype))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Model inputs with samples along axis 0, optional labels, fills for absent inputs, a content hash.

    Build one with ``load_dataset``, ``random_dataset`` or ``Dataset.from_arrays`` (which computes
    ``count`` and ``sha256`` and makes the arrays read-only so the hash stays true). ``arrays`` holds
    one ``ArraySource`` per input (``np.asarray`` reads one whole; feeds read rows). ``input_specs``
    (the model's inputs) tells ``batches`` how to feed each array; without it every array is treated
    as having a free batch axis. Equality is identity: compare ``sha256`` to compare contents.
    ``close()`` removes the temporary files of the data it was read from (also done at exit); the
    datasets derived from it (take, split, with_fills) share them.
    """

    arrays: dict[str, ArraySource] = field(repr=False)
    labels: np.ndarray | None = field(repr=False)
    count: int
    sha256: str
    source: str
    input_specs: tuple[InputSpec, ...] = field(default=(), repr=False)
    fills: Mapping[str, FilledInput] = field(default_factory=dict, repr=False)
    # the hash of the arrays and labels before the fills: with_fills adds fills without a pass over the data
    content: ContentHash | None = field(default=None, repr=False)
    stats: dict[str, ValueStats | None] = field(default_factory=dict, repr=False)  # value_stats, cached
    scratch: tuple[Scratch, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.arrays or self.count < 1:
            raise ValueError("a Dataset needs at least one input array and one sample")
        if any(not isinstance(array, ArraySource) for array in self.arrays.values()):
            object.__setattr__(self, "arrays", {name: array if isinstance(array, ArraySource)
                                                else MemorySource(frozen(array)) for name, array in self.arrays.items()})
        for name, array in self.arrays.items():
            if array.ndim == 0 or array.shape[0] != self.count:
                raise ValueError(f"array {name!r} has shape {array.shape}, expected {self.count} samples on axis 0")
        if self.labels is not None and (self.labels.ndim == 0 or len(self.labels) != self.count):
            raise ValueError(f"labels have shape {self.labels.shape}, expected {self.count} entries")

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray | ArraySource],
        labels: np.ndarray | None = None,
        *,
        source: str,
        input_specs: Sequence[InputSpec] = (),
        fills: Mapping[str, FilledInput] | None = None,
        scratch: Sequence[Scratch] = (),
    ) -> Dataset:
        """Wrap already-checked arrays or sources (samples on axis 0), hashing them in one streaming pass.
        Takes ownership of arrays: they become read-only."""
        if not arrays:
            raise ValueError("a Dataset needs at least one input array")
        owned = {name: array if isinstance(array, ArraySource) else MemorySource(frozen(array))
                 for name, array in arrays.items()}
        owned_labels = frozen(labels) if labels is not None else None
        first = next(iter(owned.values()))
        count = int(first.shape[0]) if first.ndim else 0
        fills = dict(fills or {})
        content = ContentHash.of(owned, owned_labels)
        return cls(owned, owned_labels, count, content.hexdigest(fills), source, tuple(input_specs), fills,
                   content, {}, tuple(scratch))

    def close(self) -> None:
        """Remove the temporary files behind this dataset (and the datasets derived from it)."""
        for scratch in self.scratch:
            scratch.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layouts ---------------------------------------------------------------------------

    @property
    def missing(self) -> list[str]:
        """Inputs of the model with neither an array nor a fill."""
        return [s.name for s in self.input_specs if s.name not in self.arrays and s.name not in self.fills]

    def layout_of(self, name: str) -> Layout:
        spec = next((s for s in self.input_specs if s.name == name), None)
        if spec is None or self.arrays[name].ndim != len(spec.shape) + 1:
            return "batch"
        return "samples"

    def describe_layouts(self) -> dict[str, str]:
        """Per input, the rule used to read it (printed and recorded in report.json)."""
        described: dict[str, str] = {}
        for spec in self.input_specs:
            if spec.name in self.fills:
                filled = self.fills[spec.name]
                described[spec.name] = f"not in the data: {filled.fill.describe()} ({filled.reason})"
                continue
            array = self.arrays[spec.name]
            per_sample = format_shape(array.shape[1:])
            if not spec.shape:
                described[spec.name] = f"sample axis: {self.count} scalar values"
            elif self.layout_of(spec.name) == "samples":
                described[spec.name] = (f"sample axis: {self.count} samples, each a whole {per_sample} input "
                                        f"(data {format_shape(array.shape)})")
            else:
                described[spec.name] = (f"batch axis: data axis 0 is the model's axis 0 ({spec.shape[0]}), "
                                        f"{self.count} rows of {per_sample}")
        return described

    def sample_shape(self, name: str) -> tuple[int, ...]:
        """The model input's shape one sample gives (the batch axis as stored: 1 row)."""
        array = self.arrays[name]
        return tuple(array.shape[1:]) if self.layout_of(name) == "samples" else (1, *array.shape[1:])

    def with_fills(self, fills: Mapping[str, FilledInput]) -> Dataset:
        """The same data with more fills (the data is not read again: its hash is kept up to the fills)."""
        merged = {**self.fills, **fills}
        content = self.content or ContentHash.of(self.arrays, self.labels)
        return Dataset(dict(self.arrays), self.labels, self.count, content.hexdigest(merged), self.source,
                       self.input_specs, merged, content, self.stats, self.scratch)

    def value_stats(self, name: str) -> ValueStats | None:
        """Mean, spread and range of input ``name``'s values (one streaming pass, then cached)."""
        if name not in self.stats:
            accumulator = StatsAccumulator()
            for chunk in row_chunks(self.arrays[name]):
                accumulator.add(chunk)
                del chunk
            self.stats[name] = accumulator.result()
        return self.stats[name]

    # -- feeding ---------------------------------------------------------------------------

    @property
    def samples_per_run(self) -> int | None:
        """How many samples each model run takes when the model fixes it (None: the batch axis is free).
        Only the inputs the data holds decide: a fill follows the feed."""
        return _samples_per_run(self.arrays, self.input_specs)

    def effective_batch_size(self, batch_size: int) -> int:
        """Samples per model run: ``batch_size`` unless the model fixes it (see module doc)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch size must be a positive integer, got {batch_size!r}", "use 1 or more")
        fixed = _samples_per_run(self.arrays, self.input_specs)
        return fixed if fixed is not None else batch_size

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for the model, in sample order (see the module doc for how each layout is fed).
        Feeds are read-only: fresh arrays read for this feed from files, views of in-memory arrays;
        nothing here keeps a feed once it is handed out. Fills are materialised per feed."""
        for start, stop, whole in self._spans(batch_size):
            yield self._feed(start, stop, whole)

    def labelled_batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """``batches`` paired with the labels of the same samples (None without labels)."""
        for start, stop, whole in self._spans(batch_size):
            yield self._feed(start, stop, whole), None if self.labels is None else self.labels[start:stop]

    def _spans(self, batch_size: int) -> Iterator[tuple[int, int, set[str]]]:
        """(start, stop, inputs fed one whole sample at a time) per feed, after the checks."""
        missing = self.missing
        if missing:
            raise InputError(f"the data has no values for input {', '.join(repr(m) for m in missing)}",
                             "add it to the data, or give it a value with --fill NAME=zeros|ones|VALUE")
        step = self.effective_batch_size(batch_size)
        whole = whole_inputs(self.arrays, self.input_specs)
        fixed = _samples_per_run(self.arrays, self.input_specs)
        if fixed is not None and fixed > 1 and self.count < fixed:
            raise InputError(
                f"the model runs {fixed} samples at a time (fixed batch axis) but the dataset has only {self.count}",
                f"give at least {fixed} samples",
            )
        stop_at = self.count - self.count % step if fixed is not None and fixed > 1 else self.count
        for start in range(0, stop_at, step):
            yield start, min(start + step, self.count), whole

    def _feed(self, start: int, stop: int, whole: set[str]) -> dict[str, np.ndarray]:
        feed = {}
        for name, array in self.arrays.items():
            rows = array.read(start, start + 1)[0, ...] if name in whole else array.read(start, stop)
            rows.flags.writeable = False
            feed[name] = rows
        batched = next((name for name in self.arrays if name not in whole), None)
        rows = feed[batched].shape[0] if batched is not None else None
        for name, filled in self.fills.items():
            feed[name] = filled.materialise(rows)
        return feed

    def rows(self, index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The samples at ``index`` (in that order) as one feed, with their labels: for training loops that
        shuffle. Only those rows are read; fills are materialised for them."""
        index = np.asarray(index, dtype=np.intp)
        feed = {}
        for name, array in self.arrays.items():
            rows = array.take(index)
            rows.flags.writeable = False
            feed[name] = rows
        for name, filled in self.fills.items():
            feed[name] = filled.materialise(len(index))
        return feed, None if self.labels is None else self.labels[index]

    # -- subsets ---------------------------------------------------------------------------

    def take(self, indices: Iterable[int] | np.ndarray) -> Dataset:
        """The samples at ``indices`` (in the given order), as a new Dataset with its own hash."""
        index = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise TypeError("take() needs a flat sequence of integer indices")
        if index.size == 0:
            raise ValueError("take() needs at least one index")
        if index.min() < -self.count or index.max() >= self.count:
            raise IndexError(f"take(): index out of range for a dataset of {self.count} samples")
        return self._subset(index.astype(np.intp), f"{self.source} [{index.size} of {self.count} samples]")

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Deterministic random split into (kept, held out); both parts have >= 1 sample.

        The held-out part has ``round(count * holdout_fraction)`` samples, clamped to
        [1, count - 1]; each part keeps the original sample order.
        """
        if self.count < 2:
            raise InputError(
                f"cannot split {self.count} sample into a calibration part and a holdout part",
                "give at least 2 samples, or pass separate evaluation data with --eval",
            )
        if (isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float))
                or not math.isfinite(holdout_fraction) or not 0 < holdout_fraction < 1):
            raise InputError(
                f"holdout fraction must be between 0 and 1 (exclusive), got {holdout_fraction!r}",
                "e.g. 0.2 holds out a fifth of the samples",
            )
        held = min(max(round(self.count * holdout_fraction), 1), self.count - 1)
        order = np.random.default_rng(seed).permutation(self.count)
        kept_index, held_index = np.sort(order[held:]), np.sort(order[:held])
        note = f"split {holdout_fraction:g} seed {seed}"
        return (self._subset(kept_index, f"{self.source} [{note}: {kept_index.size} kept]"),
                self._subset(held_index, f"{self.source} [{note}: {held_index.size} held out]"))

    def _subset(self, index: np.ndarray, source: str) -> Dataset:
        """The rows at ``index``, selected without reading them (the new hash reads them, streaming)."""
        index = np.where(index < 0, index + self.count, index).astype(np.intp)
        labels = self.labels[index] if self.labels is not None else None
        arrays = {name: RowsSource(array.base, np.asarray(array.index)[index]) if isinstance(array, RowsSource)
                  else RowsSource(array, index) for name, array in self.arrays.items()}
        return Dataset.from_arrays(arrays, labels, source=source, input_specs=self.input_specs, fills=self.fills,
                                   scratch=self.scratch)

    def summary(self) -> DatasetSummary:
        """The dataset as reports describe it."""
        return DatasetSummary(
            source=self.source, count=self.count, sha256=self.sha256, labels=self.labels is not None,
            inputs={name: ArrayFacts(shape=list(array.shape), dtype=array.dtype.name)
                    for name, array in self.arrays.items()},
            layouts=self.describe_layouts(),
            fills={name: f.fill.describe() for name, f in self.fills.items()} if self.fills else None)


class ContentHash:
    """The content hash, fed one input at a time and each input chunk by chunk: sorted keys, then per
    array its kind, key, dtype and shape (JSON) and its bytes (little-endian), then labels; ``hexdigest``
    adds the fills to a copy. The value depends only on the content, not on the files it came from."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256(b"edgeopt-dataset-v1\0")

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray | ArraySource], labels: np.ndarray | None = None) -> ContentHash:
        content = cls()
        for key in sorted(arrays):
            content.add("input", key, arrays[key])
        if labels is not None:
            content.add("labels", "", labels)
        return content

    def begin(self, kind: str, key: str, dtype: np.dtype, shape: Sequence[int]) -> None:
        header = json.dumps([kind, key, np.dtype(dtype).newbyteorder("<").str, [int(d) for d in shape]]).encode()
        self._digest.update(len(header).to_bytes(8, "little") + header)

    def rows(self, chunk: np.ndarray) -> None:
        data = np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<"))
        self._digest.update(data.reshape(-1).view(np.uint8))

    def add(self, kind: str, key: str, array: np.ndarray | ArraySource) -> None:
        self.begin(kind, key, array.dtype, array.shape)
        for chunk in row_chunks(array):
            self.rows(chunk)
            del chunk  # a loop variable would hold it while the next chunk is read

    def hexdigest(self, fills: Mapping[str, FilledInput] | None = None) -> str:
        digest = self._digest.copy()
        for key in sorted(fills or {}):
            filled = fills[key]
            digest.update(json.dumps(["fill", key, repr(filled.fill.value), list(filled.shape), filled.dtype,
                                      filled.batch_axis]).encode())
        return digest.hexdigest()


def content_sha256(arrays: Mapping[str, np.ndarray | ArraySource], labels: np.ndarray | None = None,
                   fills: Mapping[str, FilledInput] | None = None) -> str:
    """Hash over sorted keys, dtypes, shapes and bytes (little-endian), then the labels and fills
    (``ContentHash``; streaming, so sources are never read whole).

    It depends only on the content, not on the file layout it came from.
    """
    return ContentHash.of(arrays, labels).hexdigest(fills)


def fill_for(spec: InputSpec, shape: tuple[int, ...], fill: Fill, reason: str,
             peers: Sequence[InputSpec] = ()) -> FilledInput:
    """``spec`` (as declared) filled at ``shape``, its batch axis following the feed's (``peers``: the other
    inputs, whose batch axis name a state input may share)."""
    return FilledInput(fill, tuple(shape), spec.dtype, batch_axis=batch_axis_of(spec, list(peers)), reason=reason)


def whole_inputs(arrays: Mapping[str, np.ndarray | ArraySource], specs: Sequence[InputSpec]) -> set[str]:
    """Inputs stored in the sample-axis layout (one whole model input per sample)."""
    return {spec.name for spec in specs if spec.name in arrays and arrays[spec.name].ndim == len(spec.shape) + 1}


def _samples_per_run(arrays: Mapping[str, np.ndarray | ArraySource], specs: Sequence[InputSpec]) -> int | None:
    """The number of samples each model run must take, or None when the batch axis is free."""
    fixed: set[int] = set()
    whole = whole_inputs(arrays, specs)
    for spec in specs:
        if spec.name not in arrays:
            continue
        if spec.name in whole:
            fixed.add(1)
        elif _is_fixed(spec.shape[0]):
            fixed.add(int(spec.shape[0]))
    if len(fixed) > 1:  # load_dataset refuses this; only reachable with hand-built datasets
        raise InputError(f"the model's inputs need different numbers of samples per run ({sorted(fixed)})",
                         "re-export the model with one batch size for all inputs")
    return fixed.pop() if fixed else None


def _is_fixed(dim: object) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim > 0
