"""An input's values, checked and converted chunk by chunk: the data never has to be in memory whole.

``ValueCheck`` refuses NaN/Inf and unsafe casts (values too large for the model's float type,
non-integral or out-of-range values for an integer type, bools other than 0/1). Its counts add up over
the chunks, so a refusal names the same numbers a check of the whole array would. ``convert`` is the
cast itself, applied per read once the check has passed. ``ValueStats`` are the running mean, spread and
range of a float input (Chan's pairwise merge), for ``InputPlan``'s sample feeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeopt.data.specs import InputSpec
from edgeopt.errors import InputError


def target_dtype(spec: InputSpec) -> np.dtype:
    """The numpy dtype data is converted to for ``spec``; an InputError for types data cannot feed."""
    name = "float32" if spec.dtype == "bfloat16" else spec.dtype  # numpy has no bfloat16
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise InputError(f"model input {spec.name!r} has type {spec.dtype}, which calibration data cannot feed",
                         "only numeric and bool inputs can be calibrated")
    return dtype


def convert(chunk: np.ndarray, target: np.dtype) -> np.ndarray:
    """``chunk`` in ``target`` (checked beforehand by ``ValueCheck``), C-contiguous."""
    if chunk.dtype == target:
        return np.ascontiguousarray(chunk)
    if target.kind == "f":
        with np.errstate(over="ignore"):  # ValueCheck has refused overflow already, in words
            return np.ascontiguousarray(chunk.astype(target))
    return np.ascontiguousarray(chunk, dtype=target)


class ValueCheck:
    """The checks of one input's values (``add`` each chunk in order, then ``refusal``)."""

    def __init__(self, spec: InputSpec, dtype: np.dtype, where: str) -> None:
        self.name, self.where = spec.name, where
        self.target, self.kind = target_dtype(spec), np.dtype(dtype).kind
        if spec.quantized and self.kind == "f":
            # real values for an integer input with a scale (a fully int8 TFLite image): kept real, quantized
            # with the input's own scale where they feed the interpreter
            self.target = np.dtype("float32")
        self.nan = self.inf = self.not_bool = self.fractional = 0
        self.largest: float | None = None  # largest magnitude among chunks that overflow the target
        self.example: float | None = None  # the first non-integral value
        self.low = self.high = None
        self.kind_refusal = None if self.kind in "biuf" else InputError(
            f"{where}: input {spec.name!r} holds {np.dtype(dtype)} data, which cannot feed a {self.target} input",
            "store numbers (integers, floats or bools)")

    def add(self, chunk: np.ndarray) -> np.ndarray:
        """Check ``chunk`` and return it converted to the model's dtype."""
        if self.kind_refusal is not None:
            raise self.kind_refusal
        if chunk.size == 0:
            return convert(chunk, self.target)
        if self.kind == "f":
            self.nan += int(np.count_nonzero(np.isnan(chunk)))
            self.inf += int(np.count_nonzero(np.isinf(chunk)))
        with np.errstate(invalid="ignore", over="ignore"):  # bad values are refused below, in words
            result = convert(chunk, self.target)
        if self.target.kind == "f":
            if chunk.dtype != self.target and not np.isfinite(result).all():
                largest = float(np.max(np.abs(chunk)))  # the largest overall overflows too: it is in such a chunk
                self.largest = largest if self.largest is None else max(self.largest, largest)
        elif self.target.kind == "b":
            if self.kind != "b":
                self.not_bool += int(np.count_nonzero((chunk != 0) & (chunk != 1)))
        else:
            if self.kind == "f":
                fractional = chunk != np.floor(chunk)
                bad = int(np.count_nonzero(fractional))
                if bad and self.example is None:
                    self.example = float(chunk[fractional].flat[0])
                self.fractional += bad
            low, high = chunk.min(), chunk.max()
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
        return result

    def refusal(self) -> InputError | None:
        """The first problem found, in the order a whole-array check reports them (None: all is well)."""
        name, where, target = self.name, self.where, self.target
        if self.kind_refusal is not None:
            return self.kind_refusal
        if self.nan or self.inf:
            return InputError(f"{where}: input {name!r} has {self.nan} NaN and {self.inf} infinite values",
                              "remove or repair those samples; calibration needs finite numbers")
        if target.kind == "f":
            if self.largest is not None:
                return InputError(f"{where}: input {name!r} has values too large for {target} "
                                  f"(largest magnitude {self.largest:g})", f"scale the data into the range of {target}")
            return None
        if target.kind == "b":
            if self.not_bool:
                return InputError(f"{where}: input {name!r} is bool in the model but the data has {self.not_bool} "
                                  "values other than 0 and 1", "store 0/1 or True/False")
            return None
        if self.fractional:
            return InputError(
                f"{where}: input {name!r} is {target} in the model but the data has {self.fractional} non-integral "
                f"values (e.g. {self.example:g})",
                f"store integer values (token ids, indices) as {target}",
            )
        if self.low is None:
            return None
        info = np.iinfo(target)
        low, high = self.low, self.high
        too_low = float(low) < float(info.min) if self.kind == "f" else int(low) < info.min
        too_high = float(high) >= float(info.max + 1) if self.kind == "f" else int(high) > info.max
        if too_low or too_high:
            return InputError(
                f"{where}: input {name!r} has values from {low} to {high}, outside the range of {target} "
                f"({info.min} to {info.max})",
                f"store values that fit in {target}",
            )
        return None


@dataclass(frozen=True)
class ValueStats:
    """Mean, standard deviation, minimum and maximum of an input's values (as float64)."""

    mean: float
    std: float
    low: float
    high: float


class StatsAccumulator:
    """``ValueStats`` over chunks: per chunk sums in float64, merged pairwise (Chan et al.), so the
    result matches a whole-array mean/std to rounding."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, chunk: np.ndarray) -> None:
        if chunk.size == 0:
            return
        values = chunk.astype(np.float64)  # a copy, squared in place: one float64 buffer per chunk
        count, mean = values.size, float(values.mean())
        values -= mean
        np.square(values, out=values)
        m2 = float(values.sum())
        del values
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        self.low, self.high = min(self.low, float(chunk.min())), max(self.high, float(chunk.max()))

    def result(self) -> ValueStats | None:
        if not self.count:
            return None
        return ValueStats(self.mean, math.sqrt(max(self.m2, 0.0) / self.count), self.low, self.high)
