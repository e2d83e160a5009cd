"""Choosing the int8 model to ship: candidates, fidelity floor, mixed precision, latency.

For each candidate recipe: quantize, refuse degenerate results (does not load, nothing
quantized, bigger than the float model), measure fidelity on held-out data with each output's task
metric (metrics.py), and when it is below the floor keep quantizer groups in float: ranked by the
measured effect of reverting each one alone on the task metric, reverted greedily until the floor is
met (the accuracy-control idea of NNCF), within a time budget. On the host target the surviving
candidates and the float model are timed side by side; an int8 model that is not faster is not
shipped unless the user insists.

The float model's outputs on the evaluation data are computed once and reused by every candidate and
every mixed-precision step; a candidate's outputs are judged batch by batch and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.errors import InputError, VerificationError
from edgeopt.events import Events
from edgeopt.stages.quantize.calibration import BatchSource, StatisticsCache, head
from edgeopt.stages.quantize.fidelity import Fidelity, FidelityRun
from edgeopt.stages.quantize.mixed_precision import MixedPrecisionStep, RevertEffect, revert_until_floor
from edgeopt.stages.quantize.techniques import choose_techniques
from edgeopt.metrics import MetricPlan
from edgeopt.stages.quantize.recipes import (
    COMPUTE_OPS,
    QuantizeMode,
    Recipe,
    candidate_recipes,
)
from edgeopt.stages.quantize.sensitivity import (
    ensure_node_names,
    exclusion_group,
    up_front_exclusions,
)
from edgeopt.stages.quantize.speed_fallback import (
    SpeedTrial,
    keep_slow_layers_float,
    profile_node_costs,
    slower_in_int8,
)
from edgeopt.runtime.latency import LatencyStats, compare_latency
from edgeopt.runtime.runner import open_runner
from edgeopt.targets import TargetProfile

# Below this latency ratio an int8 model counts as faster; between it and 1.0 is noise.
FASTER_THAN_FLOAT = 0.95
# Latency ratios this close (relative) are the same speed: fidelity decides between them.
SAME_SPEED = 0.03


class QuantizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: QuantizeMode = "auto"
    min_cosine: float = 0.99
    min_top1: float | None = None
    overrides: dict[str, Any] = {}
    force_int8: bool = False
    measure_latency: bool = True
    threads: int = 1
    latency_budget_s: float = 8.0
    # {output or "*": metric spec} (metrics.py); unset outputs get the default for their shape.
    metrics: dict[str, str] = {}
    # Try SmoothQuant / cross-layer equalization / bias correction (kept only where the task metric gains).
    techniques: bool = True
    # Wall-time budget for ranking and reverting groups (mixed precision), per candidate.
    mixed_precision_budget_s: float = 240.0
    # Where latency is measured: keep in float the layers whose int8 kernels are slower.
    speed_fallback: bool = True


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    recipe: Recipe
    reason: str
    status: Literal["ok", "below-floor", "rejected"] = "ok"
    rejection: str | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    quantized_nodes: int | None = None
    quantizable_nodes: int | None = None
    float_nodes: list[str] = []
    mixed_precision: list[MixedPrecisionStep] = []
    mixed_precision_ranking: list[RevertEffect] = []
    mixed_precision_stop: str | None = None  # why reverting stopped
    speed_fallback: list[SpeedTrial] = []
    fidelity: Fidelity | None = None
    latency: LatencyStats | None = None
    latency_ratio: float | None = None


class QuantizeOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str
    target: str
    chosen: str | None = None  # candidate name, None when the float model ships
    shipped: Literal["int8", "float"] = "float"
    reason: str = ""
    candidates: list[Candidate] = []
    float_latency: LatencyStats | None = None
    latency_measured_on: str | None = None  # "host", a device's name, or None (not timed)
    speed_fallback_profiled_on: str | None = None  # where the per-node ranking was profiled
    float_size_bytes: int = 0
    floor: dict[str, float | None] = {}
    # Which metric judged each output, its floor, and why it was chosen.
    metrics: list[dict[str, Any]] = []
    prepare: dict[str, Any] = {}
    warnings: list[str] = []


Batches = list[dict[str, np.ndarray]]


def _outputs_per_batch(model_bytes: bytes, batches: Batches, label: str,
                       state_pairs: dict[str, str] | None = None):
    """Every output per batch, in order, one batch at a time; a stream (``state_pairs``) carries the
    model's own state from call to call, so its errors accumulate as they do in use."""
    from edgeopt.data import run_stream

    runner = open_runner(model_bytes, label=label)
    for _fed, result in run_stream(runner.run, batches, state_pairs or {}):
        yield [np.asarray(value) if np.ndim(value) else np.asarray(value).reshape(1) for value in result.values()]


def _first_samples(reference: list[list[np.ndarray]], enough: int = 64) -> list[np.ndarray]:
    """The float outputs of the first batches (about ``enough`` samples), joined per output where their
    shapes allow: what default metrics are chosen from (one sample says little about an output)."""
    if not reference:
        return []
    taken, count = [], 0
    for outputs in reference:
        taken.append(outputs)
        count += int(outputs[0].shape[0]) if outputs and outputs[0].ndim else 1
        if count >= enough:
            break
    joined = []
    for index in range(len(taken[0])):
        parts = [outputs[index] for outputs in taken]
        same = all(p.ndim >= 1 and p.shape[1:] == parts[0].shape[1:] for p in parts)
        joined.append(np.concatenate(parts) if same else parts[0])
    return joined


def _batch_labels(labels: np.ndarray | list | None, reference: list[list[np.ndarray]]) -> list[np.ndarray | None]:
    """Labels per evaluation batch: given per batch, or one array cut by each batch's sample count."""
    if labels is None:
        return [None] * len(reference)
    if isinstance(labels, list):
        return labels
    cuts, start = [], 0
    for outputs in reference:
        count = int(outputs[0].shape[0]) if outputs and outputs[0].ndim else 1
        cuts.append(labels[start:start + count])
        start += count
    return cuts


def search(
    float_model: onnx.ModelProto,
    *,
    target: TargetProfile,
    options: QuantizeOptions,
    calibration: BatchSource | None,
    evaluation: Batches,
    labels: np.ndarray | list[np.ndarray | None] | None,
    timing_feeds: dict[str, np.ndarray],
    events: Events | None = None,
    device_latency: Callable[[dict[str, bytes], dict[str, np.ndarray]], dict[str, LatencyStats]] | None = None,
    device_name: str | None = None,
    device_node_costs: Callable[[bytes, str], dict[str, float]] | None = None,
    state_pairs: dict[str, str] | None = None,
) -> tuple[onnx.ModelProto | None, QuantizeOutcome]:
    """Returns (model to ship or None for "ship the float model", outcome for the report).

    Latency decides between faithful candidates when it can be measured where the model will
    run: on this machine for the ``host`` target, or on a device through ``device_latency``
    (models by label, feeds → stats with ratios to "float"), whatever the target. The speed
    fallback ranks layers by ``device_node_costs`` (model bytes, label → µs per node) when given,
    else by a profile on this machine. ``state_pairs`` ({output: input}) makes the evaluation a
    stream: each model carries its own recurrent state from one batch to the next. ``labels``: one
    array over the evaluation samples, or one per evaluation batch.
    """
    events = events or Events()
    progress = events.note
    from edgeopt.stages.quantize.prepare import (
        check_quantizable,
        count_quantized_nodes,
        lift_constant_weights,
        spatial_means_as_global_pool,
    )
    from edgeopt.stages.quantize.quantizer import quantize

    outcome = QuantizeOutcome(mode=options.mode, target=target.name,
                              floor={"min_cosine": options.min_cosine, "min_top1": options.min_top1})
    prepared, lift = lift_constant_weights(ensure_node_names(float_model))
    prepared, pooled = spatial_means_as_global_pool(prepared)
    outcome.prepare = {"lifted_constants": lift.model_dump(mode="json")}
    if pooled:
        outcome.prepare["spatial_means_as_global_pool"] = pooled
    reasons = check_quantizable(prepared)
    if reasons:
        outcome.warnings.extend(reasons)
    float_bytes = prepared.SerializeToString()
    outcome.float_size_bytes = len(float_bytes)
    reference = list(_outputs_per_batch(float_bytes, evaluation, "float model", state_pairs))
    output_names = [o.name for o in prepared.graph.output]
    labels_per_batch = _batch_labels(labels, reference)
    floors = {"cosine": options.min_cosine, **({"top1": options.min_top1} if options.min_top1 is not None else {})}
    plan = MetricPlan(output_names, _first_samples(reference), options.metrics,
                      has_labels=any(b is not None for b in labels_per_batch), floors=floors)
    outcome.metrics = plan.describe()
    for judged in outcome.metrics:
        where = "every output" if judged["output"] == "*" else f"output {judged['output']}"
        progress(f"{where}: judged by {judged['metric']} (floor {judged['floor']:g}; {judged['chosen']})")
    op_histogram: dict[str, int] = {}
    for node in prepared.graph.node:
        op_histogram[node.op_type] = op_histogram.get(node.op_type, 0) + 1
    choices = candidate_recipes(target, options.mode, has_calibration=bool(calibration),
                                op_histogram=op_histogram, overrides=options.overrides)
    # One calibration pass per float model serves every static candidate and re-quantization: they differ in
    # nodes excluded, op types and quantized types, never in the float activations.
    passes = StatisticsCache(calibration, events=events, histograms=any(
        c.recipe.mode == "static" and c.recipe.calibration != "minmax" for c in choices)) if calibration else None
    float_up_front = up_front_exclusions(prepared, head(calibration, 2) or evaluation)
    if float_up_front:
        outcome.prepare["kept_float_up_front"] = float_up_front
    quantized_models: dict[str, bytes] = {}
    # The float model the quantizer gets: ``prepared``, or what the techniques that helped made of it.
    source = [prepared]

    def evaluate(recipe: Recipe, model_in: onnx.ModelProto | None = None
                 ) -> tuple[bytes | None, Fidelity | None, str | None, Any]:
        float_in = model_in if model_in is not None else source[0]
        try:
            statistics = passes.get(float_in) if passes is not None and recipe.mode == "static" else None
            model = quantize(float_in, recipe, calibration, statistics=statistics)
        except VerificationError:
            raise
        except Exception as exc:  # the quantizer raises many kinds of errors on odd graphs
            return None, None, f"quantizer failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", None
        data = model.SerializeToString()
        coverage = count_quantized_nodes(prepared, model)
        if coverage.quantized == 0:
            return None, None, "no node was quantized (nothing this recipe can quantize in the graph)", coverage
        return judge(data, recipe.name, coverage)

    def judge(data: bytes, name: str, coverage: Any, batches: int | None = None):
        """The candidate's task metrics over the evaluation data (or its first ``batches``), batch by batch."""
        run = FidelityRun(output_names, plan)
        count = len(evaluation) if batches is None else min(batches, len(evaluation))
        try:
            outputs = _outputs_per_batch(data, evaluation[:count], f"int8 model ({name})", state_pairs)
            for ref, got, batch_labels in zip(reference[:count], outputs, labels_per_batch[:count]):
                run.update(ref, got, batch_labels)
        except InputError:
            raise  # a metric hook that fails is the user's to fix
        except Exception as exc:
            return None, None, f"onnxruntime cannot run the int8 model: {getattr(exc, 'message', exc)}", coverage
        return data, run.result(), None, coverage

    first_static = next((c.recipe for c in choices if c.recipe.mode == "static"), None)
    if first_static is not None and calibration and options.techniques:
        source[0], outcome.prepare["techniques"] = choose_techniques(
            prepared, first_static.excluding(list(float_up_front)), calibration, evaluate, progress)
    for choice in choices:
        recipe = choice.recipe
        if recipe.mode == "static" and float_up_front:
            recipe = recipe.excluding(list(float_up_front))
        progress(f"quantizing: {recipe.name}")
        candidate = Candidate(name=recipe.name, recipe=recipe, reason=choice.reason)
        outcome.candidates.append(candidate)
        data, fidelity, rejection, coverage = evaluate(recipe)
        if coverage is not None:
            candidate.quantized_nodes, candidate.quantizable_nodes = coverage.quantized, coverage.total
        if data is None:
            candidate.status, candidate.rejection = "rejected", rejection
            continue
        meets = fidelity.meets(options.min_cosine, options.min_top1)
        if not meets and recipe.mode in ("static", "dynamic"):
            # (the float model the quantizer saw: its activations are what int8 ones are matched with)
            data, fidelity, recipe = revert_until_floor(source[0], data, fidelity, recipe, candidate, evaluation,
                                                      options, evaluate, progress)
            meets = fidelity.meets(options.min_cosine, options.min_top1)
        candidate.fidelity = fidelity
        candidate.recipe = recipe
        candidate.float_nodes = list(recipe.nodes_to_exclude)
        candidate.size_bytes = len(data)
        candidate.size_ratio = round(len(data) / len(float_bytes), 4)
        if len(data) > len(float_bytes):
            candidate.status, candidate.rejection = "rejected", (
                f"the int8 model is larger than the float model ({len(data)} > {len(float_bytes)} bytes)")
            continue
        if not meets:
            candidate.status = "below-floor"
            candidate.rejection = f"fidelity below the floor: {fidelity.verdict()}"
            continue
        quantized_models[candidate.name] = data

    passing = [c for c in outcome.candidates if c.status == "ok"]
    timed = (target.name == "host" or device_latency is not None) and options.measure_latency
    where = f"on {device_name}" if device_latency is not None else "on this machine"
    outcome.latency_measured_on = device_name if device_latency is not None else ("host" if timed else None)
    if passing and timed:
        progress(f"timing float vs int8 {where}")
        models = {"float": float_bytes, **{c.name: quantized_models[c.name] for c in passing}}
        stats = _against_float(models, timing_feeds, options, device_latency)
        outcome.float_latency = stats["float"]
        for c in passing:
            c.latency = stats[c.name]
            c.latency_ratio = round(stats[c.name].ratio_to_reference or 1.0, 4)
        fastest = min(passing, key=lambda c: c.latency_ratio or 1e9)
        if options.speed_fallback and fastest.recipe.mode == "static":
            _speed_fallback(prepared, float_bytes, fastest, quantized_models, outcome, options, evaluate,
                            timing_feeds, device_latency, device_node_costs, events)

    explicit = options.mode in ("static", "dynamic", "weights-only")
    nothing = [c for c in outcome.candidates if c.rejection and c.rejection.startswith("no node was quantized")]
    if not passing and explicit and outcome.candidates and len(nothing) == len(outcome.candidates):
        raise InputError(
            f"nothing to quantize with --quantize {options.mode}: the graph has no Conv/MatMul/Gemm/recurrent "
            "node with constant weights that this recipe covers",
            "ship the float model (--quantize none), or try another --quantize mode")
    if not passing:
        summary = "; ".join(f"{c.name}: {c.rejection}" for c in outcome.candidates) or "no recipe applies"
        if explicit:
            raise VerificationError(f"no int8 model meets the fidelity floor ({summary})",
                                    "lower --min-cosine, add calibration data, or use --quantize auto")
        outcome.reason = f"kept the float model: no int8 candidate was usable ({summary})"
        return None, outcome
    if timed:
        fastest_ratio = min(c.latency_ratio or 1e9 for c in passing)
        # Candidates within timing noise of the fastest are equally fast: the most faithful of them ships.
        equally_fast = [c for c in passing if (c.latency_ratio or 1e9) <= fastest_ratio * (1 + SAME_SPEED)]
        best = max(equally_fast, key=lambda c: (c.fidelity.margin if c.fidelity else -1e9, -(c.latency_ratio or 1e9)))
        if best.latency_ratio is not None and best.latency_ratio > FASTER_THAN_FLOAT and not (
                explicit or options.force_int8):
            outcome.reason = (f"kept the float model: the fastest faithful int8 candidate ({best.name}) runs at "
                              f"{best.latency_ratio:.2f}x of float {where}; pass --force-int8 to ship it")
            return None, outcome
        outcome.reason = (f"{best.name}: fastest candidate meeting the fidelity floor (the most faithful "
                          f"within {SAME_SPEED:.0%}) "
                          f"({best.latency_ratio:.2f}x float latency {where}, {best.size_ratio:.2f}x size)")
        if best.latency_ratio is not None and best.latency_ratio > FASTER_THAN_FLOAT:
            outcome.warnings.append(f"the shipped int8 model is not faster than float ({best.latency_ratio:.2f}x)")
    else:
        best = passing[0]
        twin = next((c for c in passing[1:] if _weight_range_twins(c.recipe, best.recipe)), None)
        if twin is not None and twin.fidelity is not None and best.fidelity is not None and \
                twin.fidelity.margin > best.fidelity.margin:
            best = twin  # the measured error decides between 7-bit and 8-bit weights, not the ISA rule
        outcome.reason = f"{best.name}: first candidate meeting the fidelity floor for target {target.name} " \
                         f"({best.reason})"
    outcome.chosen, outcome.shipped = best.name, "int8"
    model = onnx.ModelProto()
    model.ParseFromString(quantized_models[best.name])
    return model, outcome


def _weight_range_twins(a: Recipe, b: Recipe) -> bool:
    """The same recipe but for reduce_range (7-bit vs 8-bit weights), nodes kept in float aside."""
    strip = {"reduce_range": False, "nodes_to_exclude": ()}
    return a.reduce_range != b.reduce_range and a.model_copy(update=strip) == b.model_copy(update=strip)


def _against_float(models: dict[str, bytes], feeds: dict[str, np.ndarray], options: QuantizeOptions,
                   device_latency: Callable[..., dict[str, LatencyStats]] | None, **timing: float
                   ) -> dict[str, LatencyStats]:
    """Side-by-side latency with ratios to the model labelled "float": on the device when a
    ``device_latency`` is given (its own rounds), else on this machine (``timing``: compare_latency's
    min_time_s / budget_s; the budget defaults to the options')."""
    if device_latency is not None:
        return device_latency(models, feeds)
    timing.setdefault("budget_s", options.latency_budget_s)
    return compare_latency(models, feeds, reference="float", threads=options.threads, **timing)


def _speed_fallback(prepared, float_bytes, candidate, quantized_models, outcome, options, evaluate, timing_feeds,
                    device_latency, device_node_costs, events) -> None:
    """Keep the layers whose int8 kernels are slower in float (speed_fallback.py); on success the
    candidate's model, recipe, fidelity and latency (re-timed against float) are replaced."""

    def time_against(current: bytes, trial: bytes) -> float:
        # The current model is the reference, under the reference label "float".
        stats = _against_float({"float": current, "trial": trial}, timing_feeds, options, device_latency,
                               min_time_s=min(1.0, options.latency_budget_s / 4), budget_s=options.latency_budget_s / 2)
        return stats["trial"].ratio_to_reference or 1.0

    from edgeopt.runtime.measure import MeasurementError

    progress = events.note
    int8_bytes = quantized_models[candidate.name]
    progress("profiling float and int8 kernels")
    outcome.speed_fallback_profiled_on = outcome.latency_measured_on if device_node_costs is not None else "host"
    try:
        if device_node_costs is not None:
            float_costs, int8_costs = device_node_costs(float_bytes, "float"), device_node_costs(int8_bytes, "int8")
        else:
            float_costs = profile_node_costs(float_bytes, label="float", threads=options.threads)
            int8_costs = profile_node_costs(int8_bytes, label="int8", threads=options.threads)
    except MeasurementError as exc:  # an optimisation that cannot profile is skipped, not fatal
        outcome.warnings.append(f"speed fallback skipped: profiling failed ({exc.message})")
        return
    quantized = {n.name for n in prepared.graph.node
                 if n.op_type in COMPUTE_OPS and n.name not in candidate.recipe.nodes_to_exclude}
    data, recipe, fidelity, coverage, trials = keep_slow_layers_float(
        slower_in_int8(float_costs, int8_costs, quantized), int8_bytes, candidate.recipe, evaluate=evaluate,
        meets_floor=lambda f: f.meets(options.min_cosine, options.min_top1), time_against=time_against,
        exclusion_group=lambda name: exclusion_group(prepared, name), events=events)
    candidate.speed_fallback = trials
    if fidelity is None:
        return
    progress("timing float vs int8 with the slow layers in float")
    stats = _against_float({"float": float_bytes, "int8": data}, timing_feeds, options, device_latency)
    del quantized_models[candidate.name]
    candidate.name, candidate.recipe, candidate.fidelity = recipe.name, recipe, fidelity
    candidate.float_nodes = list(recipe.nodes_to_exclude)
    candidate.quantized_nodes, candidate.quantizable_nodes = coverage.quantized, coverage.total
    candidate.size_bytes, candidate.size_ratio = len(data), round(len(data) / len(float_bytes), 4)
    candidate.latency, candidate.latency_ratio = stats["int8"], round(stats["int8"].ratio_to_reference or 1.0, 4)
    outcome.float_latency = stats["float"]
    quantized_models[candidate.name] = data
