"""Choosing the int8 model to ship: candidates, fidelity floor, mixed precision, latency.

For each candidate recipe: quantize, refuse degenerate results (does not load, nothing
quantized, bigger than the float model), measure fidelity on held-out data, and when it
is below the floor keep the most sensitive nodes in float, step by step. On the host
target the surviving candidates and the float model are timed side by side; an int8
model that is not faster is not shipped unless the user insists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.errors import InputError, VerificationError
from edgeopt.events import Events
from edgeopt.stages.quantize.fidelity import Fidelity, measure_fidelity
from edgeopt.stages.quantize.recipes import (
    COMPUTE_OPS,
    QuantizeMode,
    Recipe,
    candidate_recipes,
)
from edgeopt.stages.quantize.sensitivity import (
    ensure_node_names,
    exclusion_group,
    rank_sensitive_nodes,
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

MAX_MIXED_PRECISION_STEPS = 6
# Below this latency ratio an int8 model counts as faster; between it and 1.0 is noise.
FASTER_THAN_FLOAT = 0.95


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
    # Where latency is measured: keep in float the layers whose int8 kernels are slower.
    speed_fallback: bool = True


class MixedPrecisionStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    float_nodes: list[str]
    worst_cosine: float
    meets_floor: bool


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
    prepare: dict[str, Any] = {}
    warnings: list[str] = []


Batches = list[dict[str, np.ndarray]]


def _run_all(model_bytes: bytes, batches: Batches, label: str,
             state_pairs: dict[str, str] | None = None) -> list[np.ndarray]:
    """Every output over ``batches``, concatenated; a stream (``state_pairs``) carries the model's own
    state from call to call, so its errors accumulate as they do in use."""
    from edgeopt.data import run_stream

    runner = open_runner(model_bytes, label=label)
    per_output: list[list[np.ndarray]] = []
    for _fed, result in run_stream(runner.run, batches, state_pairs or {}):
        outputs = list(result.values())
        if not per_output:
            per_output = [[] for _ in outputs]
        for slot, value in zip(per_output, outputs):
            slot.append(np.asarray(value) if np.ndim(value) else np.asarray(value).reshape(1))
    return [np.concatenate(chunks, axis=0) for chunks in per_output]


def search(
    float_model: onnx.ModelProto,
    *,
    target: TargetProfile,
    options: QuantizeOptions,
    calibration: Batches | None,
    evaluation: Batches,
    labels: np.ndarray | None,
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
    stream: each model carries its own recurrent state from one batch to the next.
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
    reference = _run_all(float_bytes, evaluation, "float model", state_pairs)
    output_names = [o.name for o in prepared.graph.output]
    op_histogram: dict[str, int] = {}
    for node in prepared.graph.node:
        op_histogram[node.op_type] = op_histogram.get(node.op_type, 0) + 1
    choices = candidate_recipes(target, options.mode, has_calibration=bool(calibration),
                                op_histogram=op_histogram, overrides=options.overrides)
    float_up_front = up_front_exclusions(prepared, calibration or evaluation)
    if float_up_front:
        outcome.prepare["kept_float_up_front"] = float_up_front
    quantized_models: dict[str, bytes] = {}

    def evaluate(recipe: Recipe) -> tuple[bytes | None, Fidelity | None, str | None, Any]:
        try:
            model = quantize(prepared, recipe, calibration)
        except VerificationError:
            raise
        except Exception as exc:  # the quantizer raises many kinds of errors on odd graphs
            return None, None, f"quantizer failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", None
        data = model.SerializeToString()
        coverage = count_quantized_nodes(prepared, model)
        if coverage.quantized == 0:
            return None, None, "no node was quantized (nothing this recipe can quantize in the graph)", coverage
        try:
            got = _run_all(data, evaluation, f"int8 model ({recipe.name})", state_pairs)
        except Exception as exc:
            return None, None, f"onnxruntime cannot run the int8 model: {getattr(exc, 'message', exc)}", coverage
        return data, measure_fidelity(output_names, reference, got, labels), None, coverage

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
        if not meets and recipe.mode == "static":
            data, fidelity, recipe = _mixed_precision(prepared, data, fidelity, recipe, candidate, evaluation,
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
            candidate.rejection = (f"fidelity below the floor: worst output cosine {fidelity.worst_cosine:.4f} "
                                   f"< {options.min_cosine}")
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
        best = min(passing, key=lambda c: c.latency_ratio or 1e9)
        if best.latency_ratio is not None and best.latency_ratio > FASTER_THAN_FLOAT and not (
                explicit or options.force_int8):
            outcome.reason = (f"kept the float model: the fastest faithful int8 candidate ({best.name}) runs at "
                              f"{best.latency_ratio:.2f}x of float {where}; pass --force-int8 to ship it")
            return None, outcome
        outcome.reason = (f"{best.name}: fastest candidate meeting the fidelity floor "
                          f"({best.latency_ratio:.2f}x float latency {where}, {best.size_ratio:.2f}x size)")
        if best.latency_ratio is not None and best.latency_ratio > FASTER_THAN_FLOAT:
            outcome.warnings.append(f"the shipped int8 model is not faster than float ({best.latency_ratio:.2f}x)")
    else:
        best = passing[0]
        outcome.reason = f"{best.name}: first candidate meeting the fidelity floor for target {target.name} " \
                         f"({best.reason})"
    outcome.chosen, outcome.shipped = best.name, "int8"
    model = onnx.ModelProto()
    model.ParseFromString(quantized_models[best.name])
    return model, outcome


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


def _mixed_precision(prepared, data, fidelity, recipe, candidate, evaluation, options, evaluate, progress):
    """Keep the nodes that lose the most SQNR in float until the floor is met.

    Returns (model bytes, fidelity, recipe) of the last step tried, or the inputs
    unchanged when no step could be made."""
    quant = onnx.ModelProto()
    quant.ParseFromString(data)
    ranking = rank_sensitive_nodes(prepared, quant, evaluation[: max(1, min(len(evaluation), 8))])
    best = (data, fidelity, recipe)
    count = 1
    stalled = 0
    for _ in range(MAX_MIXED_PRECISION_STEPS):
        if not ranking:
            break
        chosen = sorted({member for name, _ in ranking[:count] for member in exclusion_group(prepared, name)})
        progress(f"mixed precision: keeping {len(chosen)} node(s) in float")
        trial = recipe.excluding(chosen)
        trial_data, trial_fidelity, _rejection, _coverage = evaluate(trial)
        if trial_data is None:
            break
        meets = trial_fidelity.meets(options.min_cosine, options.min_top1)
        candidate.mixed_precision.append(MixedPrecisionStep(
            float_nodes=chosen, worst_cosine=trial_fidelity.worst_cosine, meets_floor=meets))
        improved = trial_fidelity.worst_cosine > best[1].worst_cosine + 1e-4
        if improved or meets:  # keep the best step: a later one may lose fidelity
            best = (trial_data, trial_fidelity, trial)
        stalled = 0 if improved else stalled + 1
        if meets or count >= len(ranking) or stalled >= 2:  # two steps that buy nothing: stop paying for more
            break
        count = min(len(ranking), count * 2)
    return best
