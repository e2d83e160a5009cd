"""Side-by-side latency of several models in one process: interleaved runs, medians.

Every round runs each model once, in an order rotated from round to round (a fixed
order penalises whichever model follows the slowest). Rounds continue for at least
``min_time_s`` and ``min_runs``, at most ``budget_s``: tiny models get thousands of
rounds, big ones a few dozen. ``ratio_to`` compares each model with a reference by
the median of per-round ratios, which cancels drift that hits a whole round.

With ``burst`` > 1 each model runs that many times in a row per round and the round's
sample is the burst's median: steady-state latency, caches warm with the model's own
weights, as in an inference loop (and in TFLite's benchmark_model). With 1, every run
follows another model's run, so its weights start cold in the caches.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.runtime.runner import open_runner


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    threads: int
    ratio_to_reference: float | None = None  # median of per-round ratios; None for the reference itself


def compare_latency(
    models: dict[str, bytes | Path],
    feeds: dict[str, np.ndarray],
    *,
    reference: str | None = None,
    threads: int = 1,
    warmup: int = 5,
    min_runs: int = 20,
    min_time_s: float = 1.5,
    budget_s: float = 8.0,
    max_runs: int = 20000,
    burst: int = 1,
    in_pairs: bool = False,
) -> dict[str, LatencyStats]:
    """Each model's latency, timed side by side (rounds in a rotating order); ratios to ``reference``
    are medians of per-round ratios. ``in_pairs`` (with a reference): each other model is timed against
    the reference alone, so only two sessions are open at once (their weights and pre-packed copies);
    the reference's figures pool its runs over all pairs."""
    timing = {"threads": threads, "warmup": warmup, "min_runs": min_runs, "min_time_s": min_time_s,
              "budget_s": budget_s, "max_runs": max_runs, "burst": burst}
    if not in_pairs or reference is None or len(models) <= 2:
        samples = _side_by_side(models, feeds, **timing)
        return {label: _stats(values, samples.get(reference) if label != reference else None, threads, burst)
                for label, values in samples.items()}
    stats: dict[str, LatencyStats] = {}
    pooled: list[float] = []
    for label in (name for name in models if name != reference):
        pair = _side_by_side({reference: models[reference], label: models[label]}, feeds, **timing)
        stats[label] = _stats(pair[label], pair[reference], threads, burst)
        pooled += pair[reference]
    return {reference: _stats(pooled, None, threads, burst), **stats}


def _stats(values: list[float], reference: list[float] | None, threads: int, burst: int) -> LatencyStats:
    ratio = None
    if reference is not None:
        ratio = statistics.median(v / r for v, r in zip(values, reference) if r > 0)
    return LatencyStats(median_ms=statistics.median(values), p90_ms=float(np.percentile(values, 90)),
                        mean_ms=statistics.fmean(values), runs=len(values) * max(1, burst), threads=threads,
                        ratio_to_reference=ratio)


def _side_by_side(models: dict[str, bytes | Path], feeds: dict[str, np.ndarray], *, threads: int, warmup: int,
                  min_runs: int, min_time_s: float, budget_s: float, max_runs: int, burst: int
                  ) -> dict[str, list[float]]:
    """Per-round times (ms; the median of each burst) of every model, in rotating order."""
    runners = {label: open_runner(model, label=label, threads=threads) for label, model in models.items()}
    per_runner_feeds = {label: {s.name: feeds[s.name] for s in r.input_specs()} for label, r in runners.items()}
    labels = list(runners)
    for _ in range(warmup):
        for label in labels:
            runners[label].session.run(None, per_runner_feeds[label])
    samples: dict[str, list[float]] = {label: [] for label in labels}
    started = time.perf_counter()
    rounds = 0
    while rounds < max_runs:
        elapsed = time.perf_counter() - started
        if rounds >= min_runs and elapsed >= min_time_s or elapsed >= budget_s and rounds >= 3:
            break
        shift = rounds % len(labels)
        for label in labels[shift:] + labels[:shift]:
            session, inputs = runners[label].session, per_runner_feeds[label]
            burst_ms = []
            for _ in range(max(1, burst)):
                t0 = time.perf_counter()
                session.run(None, inputs)
                burst_ms.append((time.perf_counter() - t0) * 1000)
            samples[label].append(statistics.median(burst_ms))
        rounds += 1
    return samples
