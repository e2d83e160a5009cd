"""Side-by-side latency of several models in one process: interleaved runs, medians."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.runtime.onnxruntime_runner import OnnxRuntimeRunner


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    threads: int


def compare_latency(
    models: dict[str, bytes | Path],
    feeds: dict[str, np.ndarray],
    *,
    threads: int = 1,
    warmup: int = 5,
    min_runs: int = 15,
    max_runs: int = 300,
    budget_s: float = 6.0,
) -> dict[str, LatencyStats]:
    """Run every model once per round (A, B, C, A, B, C, ...) so that load and clock
    drift hit them alike; stop after ``max_runs`` rounds or the time budget."""
    runners = {label: OnnxRuntimeRunner(model, label=label, threads=threads) for label, model in models.items()}
    per_runner_feeds = {label: {s.name: feeds[s.name] for s in r.input_specs()} for label, r in runners.items()}
    for _ in range(warmup):
        for label, runner in runners.items():
            runner.session.run(None, per_runner_feeds[label])
    samples: dict[str, list[float]] = {label: [] for label in runners}
    started = time.perf_counter()
    rounds = 0
    while rounds < max_runs and (rounds < min_runs or time.perf_counter() - started < budget_s):
        for label, runner in runners.items():
            t0 = time.perf_counter()
            runner.session.run(None, per_runner_feeds[label])
            samples[label].append((time.perf_counter() - t0) * 1000)
        rounds += 1
    return {
        label: LatencyStats(median_ms=statistics.median(values), p90_ms=float(np.percentile(values, 90)),
                            mean_ms=statistics.fmean(values), runs=len(values), threads=threads)
        for label, values in samples.items()
    }
