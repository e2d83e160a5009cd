"""Sample inputs where a run has no data of its own to feed (parity checks, timing, random calibration).

``InputPlan`` is what a run feeds: the resolved shapes, the fills for inputs the data lacks, the
value ranges of the data, and a stream's state pairs. Its ``sample(seed)`` makes feeds the way
the data looks: floats drawn from the data's mean and spread (clipped to its range), integer and
bool inputs copied from the data or filled; without data, floats are standard normal. Integer
inputs are never random: without data or a fill they are refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.data.dataset import Dataset, fill_for
from edgeopt.data.resolve import ResolvedInput, ResolvedInputs
from edgeopt.data.specs import Fill, InputSpec, batch_axis_of, is_batch_axis, numpy_dtype
from edgeopt.errors import InputError

RANDOM_SOURCE = "random (no calibration data)"


class FillChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str  # the fill, described ("zeros", "9", ...)
    why: str  # what chose it ("--fill", "the data lacks it", ...)


class InputsSummary(BaseModel):
    """How a run's inputs were sized and filled (the load stage's ``resolved_inputs``)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[ResolvedInput]
    fills: dict[str, FillChoice] = {}
    state_pairs: dict[str, str] = {}
    notes: list[str] = []


@dataclass(frozen=True)
class ValueRange:
    mean: float
    std: float
    low: float
    high: float


@dataclass
class InputPlan:
    """The inputs of one run: resolved shapes, fills, the data's value ranges, stream state pairs."""

    resolved: ResolvedInputs
    fills: dict[str, tuple[Fill, str]] = field(default_factory=dict)  # input -> (fill, why)
    ranges: dict[str, ValueRange] = field(default_factory=dict)  # float inputs seen in the data
    examples: dict[str, tuple[np.ndarray, bool]] = field(default_factory=dict)  # integer inputs: (data, whole)
    state_pairs: dict[str, str] = field(default_factory=dict)  # output -> the input it feeds next call
    warnings: list[str] = field(default_factory=list)

    @property
    def specs(self) -> list[InputSpec]:
        return list(self.resolved.specs)

    @property
    def declared(self) -> list[InputSpec]:
        return list(self.resolved.declared)

    def learn_values(self, dataset: Dataset | None) -> None:
        """Take value ranges (floats) and example values (integers) from ``dataset``, first come first kept."""
        if dataset is None:
            return
        for spec in self.resolved.specs:
            array = dataset.arrays.get(spec.name)
            if array is None or spec.name in self.ranges or spec.name in self.examples:
                continue
            if spec.is_integer:  # the source itself: _example reads the rows it needs
                self.examples[spec.name] = (array, dataset.layout_of(spec.name) == "samples")
            elif array.size:
                stats = dataset.value_stats(spec.name)  # kept from the load's pass, or one streaming pass
                self.ranges[spec.name] = ValueRange(stats.mean, stats.std, stats.low, stats.high)

    def with_fills(self, dataset: Dataset) -> Dataset:
        """``dataset`` with this plan's fills for the inputs it lacks."""
        by_name = {s.name: s for s in self.resolved.declared}
        shapes = {s.name: tuple(int(d) for d in s.shape) for s in self.resolved.specs}
        extra = {name: fill_for(by_name[name], shapes[name], fill, why, self.resolved.declared)
                 for name, (fill, why) in self.fills.items()
                 if name not in dataset.arrays}
        return dataset.with_fills(extra) if extra else dataset

    def known_values(self) -> dict[str, np.ndarray]:
        """Inputs whose values every run has at the resolved shapes: the filled ones, and integer inputs
        from the data's first sample (they select code paths: an If on a sample rate)."""
        known: dict[str, np.ndarray] = {}
        for spec in self.resolved.specs:
            shape = tuple(int(d) for d in spec.shape)
            if spec.name in self.fills:
                known[spec.name] = np.full(shape, self.fills[spec.name][0].value, dtype=numpy_dtype(spec.dtype))
            elif spec.is_integer and spec.name in self.examples:
                known[spec.name] = self._example(spec, shape, 0, numpy_dtype(spec.dtype))
        return known

    def sample(self, seed: int, batch: int | None = None) -> dict[str, np.ndarray]:
        """One feed at the resolved shapes (``batch`` replaces the batch axis of inputs that have one)."""
        rng = np.random.default_rng(seed)
        declared = {s.name: s for s in self.resolved.declared}
        feeds: dict[str, np.ndarray] = {}
        for spec in self.resolved.specs:
            shape = tuple(int(d) for d in spec.shape)
            axis = batch_axis_of(declared[spec.name], self.resolved.declared)
            if batch is not None and shape and axis is not None:
                shape = (*shape[:axis], batch, *shape[axis + 1:])
            dtype = numpy_dtype(spec.dtype)
            if spec.name in self.fills:
                feeds[spec.name] = np.full(shape, self.fills[spec.name][0].value, dtype=dtype)
            elif spec.is_integer:
                feeds[spec.name] = self._example(spec, shape, seed, dtype)
            elif spec.quantized:  # its whole integer range: what its scale maps onto the real signal
                info = np.iinfo(dtype)
                feeds[spec.name] = rng.integers(info.min, info.max + 1, size=shape, dtype=dtype)
            elif spec.name in self.ranges:
                value = self.ranges[spec.name]
                drawn = rng.normal(value.mean, value.std, size=shape) if value.std > 0 else np.full(shape, value.mean)
                feeds[spec.name] = np.clip(drawn, value.low, value.high).astype(dtype)
            else:
                feeds[spec.name] = rng.standard_normal(size=shape).astype(dtype)
        return feeds

    def _example(self, spec: InputSpec, shape: tuple[int, ...], seed: int, dtype: np.dtype) -> np.ndarray:
        if spec.name not in self.examples:
            raise InputError(
                f"input {spec.name!r} is {spec.dtype} and there is no data for it: integer inputs are never given "
                "random values (token ids, sample rates and indices select code paths)",
                f"pass data holding {spec.name!r} (--calib/--eval/--inputs) or its value: --fill {spec.name}=VALUE")
        array, whole = self.examples[spec.name]
        count = array.shape[0]
        if whole:
            value = np.asarray(array[seed % count])
        else:
            rows = shape[0] if shape else 1
            value = np.asarray(array[[(seed + i) % count for i in range(rows)]])
        if value.shape != shape:
            raise InputError(f"input {spec.name!r}: the data's samples have shape {value.shape}, the run needs {shape}",
                             f"give data at the run's shape, or --fill {spec.name}=VALUE")
        return value.astype(dtype)

    def random_dataset(self, count: int, seed: int) -> Dataset:
        """``count`` random samples (``--allow-random-calibration``): batch-axis inputs as rows, the others
        one whole input per sample; integer inputs only from fills or data."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"the number of random samples must be a positive integer, got {count!r}", "e.g. 64")
        declared = {s.name: s for s in self.resolved.declared}
        per_sample = [self.sample(seed + i, batch=1) for i in range(count)]
        arrays = {}
        for spec in self.resolved.specs:
            values = [feed[spec.name] for feed in per_sample]
            rows = spec.shape and (is_batch_axis(declared[spec.name]) or declared[spec.name].shape[0] == 1)
            arrays[spec.name] = np.concatenate(values) if rows else np.stack(values)
        specs = [replace(s, shape=declared[s.name].shape) for s in self.resolved.specs]
        return Dataset.from_arrays(arrays, None, source=RANDOM_SOURCE, input_specs=specs)

    def summary(self) -> InputsSummary:
        """For reports: resolved shapes with sources, fills, state pairs, notes."""
        return InputsSummary(inputs=self.resolved.summary(),
                             fills={name: FillChoice(value=fill.describe(), why=why)
                                    for name, (fill, why) in self.fills.items()},
                             state_pairs=dict(self.state_pairs), notes=list(self.resolved.notes))


def random_inputs(specs: Sequence[InputSpec], seed: int, batch: int | None = None) -> dict[str, np.ndarray]:
    """Values for tracing and example runs of a module where the values do not matter (export,
    pruning's dependency graph): floats standard normal, integers in {0, 1}. Never for parity,
    calibration or measurement: those use ``InputPlan.sample``."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(int(d) for d in spec.shape)
        if batch is not None and shape:
            shape = (batch, *shape[1:])
        if spec.dtype == "bool":
            feeds[spec.name] = np.asarray(rng.integers(0, 2, size=shape), dtype=bool)
        elif spec.is_integer:
            feeds[spec.name] = np.asarray(rng.integers(0, 2, size=shape), dtype=spec.dtype)
        else:
            feeds[spec.name] = np.asarray(rng.standard_normal(size=shape), dtype=numpy_dtype(spec.dtype))
    return feeds


def plan_without_data(resolved: ResolvedInputs, fills: Mapping[str, Fill] | None = None,
                      state_pairs: Mapping[str, str] | None = None) -> InputPlan:
    return InputPlan(resolved, {name: (fill, "--fill") for name, fill in (fills or {}).items()},
                     state_pairs=dict(state_pairs or {}))
