"""The quantize stage's memory budget: before any quantizing, the expected peak (analysis/footprint.py) at the
calibration batch, held to ``--max-memory`` (default: a share of the memory available now). Over it, the
largest smaller batch that fits is used; when even batch 1 (or the batch the model fixes) does not fit, the run
is refused with the number and the flag, rather than killed by the kernel half-way."""

from __future__ import annotations

import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.analysis.footprint import (
    MemoryEstimate,
    activation_sizes,
    estimate_quantize_memory,
    largest_batch_within,
)
from edgeopt.errors import EdgeoptError, InputError
from edgeopt.events import Events
from edgeopt.runtime.rss import available_memory_bytes, current_rss_bytes

# The default limit's share of MemAvailable: the rest is headroom for the estimate's error and other processes.
AVAILABLE_SHARE = 0.7
MIB = 1024 * 1024


class MemoryBudget(BaseModel):
    """What the quantize stage expected and chose (its record's ``details.memory``)."""

    model_config = ConfigDict(extra="forbid")

    calibration_batch: int  # the batch calibration runs at
    requested_batch: int  # --calib-batch, or the batch the model fixes (1 for a stream)
    limit_bytes: int | None = None
    limit: str | None = None  # where the limit came from
    estimate: MemoryEstimate | None = None  # at calibration_batch
    requested_estimate_bytes: int | None = None  # at requested_batch, when a smaller one was chosen
    unavailable: str | None = None  # why there is no estimate
    warning: str | None = None  # the batch was lowered to fit


def mib(value: int) -> str:
    return f"{value / MIB:,.1f} MiB" if value < 10 * MIB else f"{value / MIB:,.0f} MiB"


def _limit(max_memory: int | None) -> tuple[int | None, str | None]:
    if max_memory is not None:
        return max_memory, f"--max-memory {mib(max_memory)}"
    available = available_memory_bytes()
    if available is None:
        return None, None
    return int(available * AVAILABLE_SHARE), f"{AVAILABLE_SHARE:.0%} of the {mib(available)} available"


def plan_calibration_batch(model: onnx.ModelProto, input_shapes: dict[str, list[int]], batch: int, *,
                           free: bool, max_memory: int | None, events: Events) -> MemoryBudget:
    """The calibration batch to use (``batch`` or less, when ``free``) and the estimate behind it. Raises
    InputError when nothing fits. The estimate is best effort: a graph it cannot size keeps ``batch``."""
    limit, source = _limit(max_memory)
    budget = MemoryBudget(calibration_batch=batch, requested_batch=batch, limit_bytes=limit, limit=source)
    try:
        sizes = activation_sizes(model, input_shapes)
    except EdgeoptError as exc:
        budget.unavailable = exc.message
        events.note(f"no memory estimate ({exc.message})")
        return budget
    weights, resident = model.ByteSize(), current_rss_bytes()
    estimate = estimate_quantize_memory(weights, sizes, batch, resident)
    if limit is not None and estimate.expected_peak_bytes > limit:
        fitting = largest_batch_within(weights, sizes, batch - 1, limit, resident) if free and batch > 1 else None
        if fitting is None:
            why = "even at calibration batch 1" if free or batch == 1 else \
                f"at calibration batch {batch}, which the model fixes"
            lowest = estimate_quantize_memory(weights, sizes, 1 if free else batch, resident).expected_peak_bytes
            raise InputError(f"quantizing is expected to need ~{mib(lowest)} {why}, more than {source}",
                             "raise --max-memory SIZE, free memory, or quantize on a larger machine")
        budget.requested_estimate_bytes = estimate.expected_peak_bytes
        estimate = estimate_quantize_memory(weights, sizes, fitting, resident)
        budget.calibration_batch = fitting
        budget.warning = (f"calibration batch {batch} → {fitting}: ~{mib(budget.requested_estimate_bytes)} "
                          f"expected at {batch} exceeds {source}")
        events.note(budget.warning)
    budget.estimate = estimate
    events.note(f"expected peak memory ~{mib(estimate.expected_peak_bytes)} at calibration batch "
                f"{budget.calibration_batch}")
    return budget
