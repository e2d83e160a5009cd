"""Timing int8 candidates against the float model, here or on a device, and confirming the winner's ratio.

The candidate that ships is the fastest of a round in which every faithful candidate was timed (and the best
of the speed fallback's trials): the minimum of several noisy ratios, so biased low. basic-pitch's int8
model won its round at 0.94x of float and measured 1.03x in the benchmark's own interleaved timing. The
winner is therefore timed again beside float alone, and that fresh ratio is what the speed rule judges; where it
lies within run-to-run noise of the rule's line, once more, and the two are judged together (search.BORDERLINE)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeopt.runtime.latency import LatencyStats, compare_latency

DeviceLatency = Callable[[dict[str, Any], dict[str, np.ndarray]], dict[str, LatencyStats]]


def against_float(models: dict[str, Any], feeds: dict[str, np.ndarray], options: Any,
                  device_latency: DeviceLatency | None, **timing: float | bool) -> dict[str, LatencyStats]:
    """Side-by-side latency with ratios to the model labelled "float": on the device when a
    ``device_latency`` is given (its own rounds), else on this machine (``timing``: compare_latency's
    min_time_s / budget_s; the budget defaults to the options')."""
    if device_latency is not None:
        return device_latency(models, feeds)
    timing.setdefault("budget_s", options.latency_budget_s)
    return compare_latency(models, feeds, reference="float", threads=options.threads, **timing)


def confirm_against_float(name: str, int8_model: Any, float_model: Any, feeds: dict[str, np.ndarray], options: Any,
                          device_latency: DeviceLatency | None) -> LatencyStats:
    """``int8_model`` timed again beside the float model alone (in pairs: two sessions in memory)."""
    return against_float({"float": float_model, name: int8_model}, feeds, options, device_latency,
                         in_pairs=True)[name]
