"""Choosing the int8 model to ship: candidates, fidelity floor, mixed precision, latency.

For each candidate recipe: quantize, refuse degenerate results (does not load, nothing quantized, bigger than
the float model), measure fidelity on held-out data with each output's task metric (metrics.py), and below the
floor keep quantizer groups in float (mixed_precision.py, within a time budget). On the host (or a device) the
surviving candidates and float are timed side by side; int8 that is not faster ships only if the user insists.

The evaluation data is walked afresh, one batch alive at a time, wherever it is used (issue 22): its
inputs are never kept. The float model's outputs on it are computed once and kept, one entry per batch,
for every candidate and mixed-precision step to be compared with; a candidate's are judged and dropped.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import onnx

from edgeopt.errors import InputError, VerificationError
from edgeopt.formats.onnx import save_onnx
from edgeopt.events import Events
from edgeopt.stages.quantize.calibration import BatchSource, BatchStream, StatisticsCache, walk
from edgeopt.metrics.fidelity import Fidelity, FidelityRun, metric_floors
from edgeopt.stages.quantize.names import compact_added_names, graph_names, without_value_info_size
from edgeopt.stages.quantize.store import ModelStore
from edgeopt.stages.quantize.mixed_precision import keep_most_sensitive, revert_until_floor
from edgeopt.stages.quantize.techniques import BiasCorrection, choose_techniques
from edgeopt.metrics import MetricHookError, MetricPlan
from edgeopt.metrics.detection import image_size_of
from edgeopt.stages.quantize.outcome import Candidate, QuantizeOptions, QuantizeOutcome
from edgeopt.stages.quantize.recipes import Recipe, candidate_recipes
from edgeopt.stages.quantize.sensitivity import ensure_node_names, exclusion_group, up_front_exclusions
from edgeopt.stages.quantize.speed_fallback import (
    int8_layers,
    keep_slow_layers_float,
    profile_node_costs,
    slower_in_int8,
    with_activations,
)
from edgeopt.runtime.latency import LatencyStats
from edgeopt.stages.common.speed_rule import describe_ratio, fast_enough, percent, speed_refusal
from edgeopt.stages.quantize.timing import against_float, confirm_against_float
from edgeopt.runtime.runner import ModelSource, open_runner
from edgeopt.targets import TargetProfile

# Latency ratios this close (relative) are the same speed: fidelity decides between them.
SAME_SPEED = 0.03
# A confirmed ratio this close to the speed rule's line (1 - min_speedup) is timed once more (timing.py)
BORDERLINE = 0.04


Feeds = dict[str, np.ndarray]
# Evaluation data: a re-iterable BatchSource (a list, a BatchStream) of feed dicts or (feeds, labels) pairs.
Evaluation = BatchSource


def _labelled(evaluation: Evaluation, count: int | None = None) -> Iterator[tuple[Feeds, Any]]:
    """(feeds, labels or None) per evaluation batch, read afresh, the first ``count`` only when given.
    No name here holds a batch while the next one is read (issue 22: one batch alive at a time)."""
    items = itertools.islice(walk(evaluation), count)
    while (item := next(items, None)) is not None:
        pair = item if isinstance(item, tuple) else (item, None)
        del item
        yield pair
        del pair


def _feeds(evaluation: Evaluation, count: int | None = None) -> Iterator[Feeds]:
    """The feeds of ``_labelled``, labels dropped."""
    pairs = _labelled(evaluation, count)
    while (pair := next(pairs, None)) is not None:
        feeds = pair[0]
        del pair
        yield feeds
        del feeds


def _first_feeds(evaluation: Evaluation) -> Feeds:
    """The first evaluation batch, read when needed (timing, profiles) rather than held all search long."""
    first = next(_feeds(evaluation, 1), None)
    if first is None:
        raise InputError("the evaluation data yielded no batch", "give at least one evaluation sample")
    return first


def _outputs_per_batch(model_bytes: ModelSource, evaluation: Evaluation, label: str,
                       state_pairs: dict[str, str] | None = None, unreadable: list[Exception] | None = None
                       ) -> Iterator[tuple[list[np.ndarray], Any]]:
    """(every output, the batch's labels) per evaluation batch, in order, one batch at a time; a stream
    (``state_pairs``) carries the model's own state from call to call, so its errors accumulate as they
    do in use. An error reading the data is added to ``unreadable`` as it passes, so that a caller can tell
    it from the model's."""
    from edgeopt.data import run_stream

    runner = open_runner(model_bytes, label=label)
    labels: deque = deque()  # run_stream takes feeds only: each batch's labels wait here for its outputs

    def feeds() -> Iterator[Feeds]:
        pairs = _labelled(evaluation)
        while (pair := _read(pairs, unreadable)) is not None:
            labels.append(pair[1])
            feed = pair[0]
            del pair
            yield feed
            del feed

    stream = run_stream(runner.run, feeds(), state_pairs or {})
    while (ran := next(stream, None)) is not None:
        result = ran[1]
        del ran  # (holds the fed batch)
        yield ([np.asarray(value) if np.ndim(value) else np.asarray(value).reshape(1) for value in result.values()],
               labels.popleft())


def _samples_in(outputs: list[np.ndarray]) -> int:
    """The samples of one batch, read from its outputs (axis 0 of the first; a scalar output is one)."""
    return int(outputs[0].shape[0]) if outputs and outputs[0].ndim else 1


def _read(pairs: Iterator, unreadable: list[Exception] | None):
    """The next of ``pairs`` (None at the end), noting an error the data raises in ``unreadable``."""
    try:
        return next(pairs, None)
    except Exception as exc:
        if unreadable is not None:
            unreadable.append(exc)
        raise


def _first_samples(reference: list[list[np.ndarray]], enough: int = 64) -> list[np.ndarray]:
    """The float outputs of the first batches (about ``enough`` samples), joined per output where their
    shapes allow: what default metrics are chosen from (one sample says little about an output)."""
    if not reference:
        return []
    taken, count = [], 0
    for outputs in reference:
        taken.append(outputs)
        count += _samples_in(outputs)
        if count >= enough:
            break
    joined = []
    for index in range(len(taken[0])):
        parts = [outputs[index] for outputs in taken]
        same = all(p.ndim >= 1 and p.shape[1:] == parts[0].shape[1:] for p in parts)
        joined.append(np.concatenate(parts) if same else parts[0])
    return joined


def _batch_labels(labels: np.ndarray | list | None, reference: list[list[np.ndarray]]) -> list[np.ndarray | None]:
    """Labels given beside the evaluation, per batch: given per batch, or one array cut by each batch's
    sample count (views: nothing is copied)."""
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
    evaluation: Evaluation,
    labels: np.ndarray | list[np.ndarray | None] | None = None,
    timing_feeds: dict[str, np.ndarray] | None = None,
    events: Events | None = None,
    device_latency: Callable[[dict[str, ModelSource], dict[str, np.ndarray]], dict[str, LatencyStats]] | None = None,
    device_name: str | None = None,
    device_node_costs: Callable[[ModelSource, str], dict[str, float]] | None = None,
    state_pairs: dict[str, str] | None = None,
    scratch_dir: Path | None = None,
) -> tuple[onnx.ModelProto | None, QuantizeOutcome]:
    """Returns (model to ship or None for "ship the float model", outcome for the report).

    Latency decides between faithful candidates when it can be measured where the model will
    run: on this machine for the ``host`` target, or on a device through ``device_latency``
    (models by label, feeds → stats with ratios to "float"), whatever the target. The speed
    fallback ranks layers by ``device_node_costs`` (model bytes, label → µs per node) when given,
    else by a profile on this machine. ``state_pairs`` ({output: input}) makes the evaluation a
    stream: each model carries its own recurrent state from one batch to the next.

    ``evaluation`` is walked afresh, batch by batch, wherever it is used (a list, or a ``BatchStream``
    that re-reads its data), so one batch of inputs is alive at a time; its items are feed dicts or
    (feeds, labels) pairs. ``labels`` may instead be given beside it: one array over the evaluation
    samples, or one per batch. The float model's outputs are kept, once per batch, for every candidate
    to be compared with (outputs only: the inputs are read again). ``timing_feeds`` default to the
    first evaluation batch, read when timing starts.
    """
    events, started = events or Events(), time.monotonic()
    progress = events.note
    from edgeopt.stages.quantize.prepare import (
        already_quantized,
        check_quantizable,
        count_quantized_nodes,
        lift_constant_weights,
        spatial_means_as_global_pool,
        unshare_biases,
    )
    from edgeopt.stages.quantize.quantizer import quantize

    outcome = QuantizeOutcome(mode=options.mode, target=target.name,
                              floor={"min_cosine": options.min_cosine, "min_top1": options.min_top1})
    prepared, lift = lift_constant_weights(ensure_node_names(float_model))
    prepared, pooled = spatial_means_as_global_pool(prepared)
    prepared, own_biases = unshare_biases(prepared)
    outcome.prepare = {"lifted_constants": lift.model_dump(mode="json")}
    if pooled:
        outcome.prepare["spatial_means_as_global_pool"] = pooled
    if own_biases:
        outcome.prepare["biases_unshared"] = own_biases
    reasons = check_quantizable(prepared)
    if reasons:
        outcome.warnings.extend(reasons)
    quantized = already_quantized(prepared)
    if quantized is not None:
        # Quantizing int8 again stacks the errors, and onnxruntime's quantizer breaks on such graphs.
        if options.mode in ("static", "dynamic", "weights-only"):
            raise InputError(f"the model is already quantized ({quantized})",
                             "start from the float model, or pass --quantize none to keep this one")
        outcome.reason = f"kept the model as it came: it is already quantized ({quantized})"
        return None, outcome
    # The float model every session opens: a file in ``scratch_dir`` (the stage's work folder) rather than
    # its serialized bytes held all search long (issue 22: a copy of the weights less).
    float_source: ModelSource = (save_onnx(prepared, scratch_dir / "quantize-float.onnx")[0]
                                 if scratch_dir is not None else prepared.SerializeToString())
    # Sizes are compared as the files ship: no value_info, the quantizer's added names short (names.py).
    outcome.float_size_bytes = without_value_info_size(prepared)
    float_names = graph_names(prepared)
    reference, labelled = [], False
    for outputs, batch_labels in _outputs_per_batch(float_source, evaluation, "float model", state_pairs):
        reference.append(outputs)
        labelled = labelled or batch_labels is not None
    if not reference:
        raise InputError("the evaluation data yielded no batch", "give at least one evaluation sample")
    output_names = [o.name for o in prepared.graph.output]
    evaluation_samples = sum(_samples_in(outputs) for outputs in reference)
    given_labels = _batch_labels(labels, reference)
    floors = metric_floors(options.min_cosine, options.min_top1)
    first_feeds = next(_feeds(evaluation, 1), {})
    plan = MetricPlan(output_names, _first_samples(reference), options.metrics,
                      has_labels=labelled or any(b is not None for b in given_labels), floors=floors,
                      image_size=image_size_of(first_feeds))
    del first_feeds
    outcome.metrics = plan.describe()
    for judged in outcome.metrics:
        where = "every output" if judged["output"] == "*" else f"output {judged['output']}"
        progress(f"{where}: judged by {judged['metric']} (floor {judged['floor']:g}; {judged['chosen']})")
    op_histogram: dict[str, int] = {}
    for node in prepared.graph.node:
        op_histogram[node.op_type] = op_histogram.get(node.op_type, 0) + 1
    choices = candidate_recipes(target, options.mode, has_calibration=bool(calibration),
                                op_histogram=op_histogram, overrides=options.overrides)
    # One calibration pass per float model serves every static candidate and re-quantization (they differ in
    # nodes excluded, op types and quantized types, never in the float activations); histograms when asked for.
    passes = StatisticsCache(calibration, events=events, histograms=options.techniques or any(
        c.recipe.mode == "static" and c.recipe.calibration != "minmax" for c in choices)) if calibration else None
    float_up_front = up_front_exclusions(prepared, calibration if calibration else _feeds(evaluation))
    # The feeds alone, walked afresh (the SQNR ranking); timing feeds are read when timing starts, not held.
    eval_feeds = BatchStream(partial(_feeds, evaluation))

    def timing_batch() -> Feeds:
        return timing_feeds if timing_feeds is not None else _first_feeds(evaluation)
    if float_up_front:
        outcome.prepare["kept_float_up_front"] = float_up_front
    quantized_models = ModelStore(scratch_dir)
    # The float model the quantizer gets: ``prepared``, or what the techniques that helped made of it;
    # bias correction is redone for each recipe's quantized Convs (its ranges stay the corrected model's).
    source = [prepared]
    correction: list[BiasCorrection | None] = [None]

    def evaluate(recipe: Recipe, model_in: onnx.ModelProto | None = None, batches: int | None = None
                 ) -> tuple[bytes | None, Fidelity | None, str | None, Any]:
        """Quantize ``recipe`` and judge it on the evaluation data (its first ``batches`` only, if given)."""
        float_in = model_in if model_in is not None else source[0]
        try:
            statistics = (passes.get(float_in, histograms=recipe.calibration != "minmax")
                          if passes is not None and recipe.mode == "static" else None)
            if model_in is None and correction[0] is not None and recipe.mode == "static":
                variant = correction[0].for_recipe(float_in, recipe)
                if variant is not float_in:
                    float_in, statistics = variant, statistics and statistics.for_bias_variant(variant)
            from_file = float_in is prepared and isinstance(float_source, Path)
            model = quantize(float_in, recipe, calibration, statistics=statistics,
                             model_file=float_source if from_file else None)
        except VerificationError:
            raise
        except Exception as exc:  # the quantizer raises many kinds of errors on odd graphs
            return None, None, f"quantizer failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", None
        data = model.SerializeToString()
        coverage = count_quantized_nodes(prepared, model)
        if coverage.quantized == 0:
            return None, None, "no node was quantized (nothing this recipe can quantize in the graph)", coverage
        return judge(data, recipe.name, coverage, batches)

    def judge(data: bytes, name: str, coverage: Any, batches: int | None = None):
        """The candidate's task metrics over the evaluation data (or its first ``batches``), batch by batch."""
        part = batches is not None and batches < len(reference)
        run = FidelityRun(output_names, plan)
        unreadable: list[Exception] = []  # the data's own errors (read as the candidate runs): never the model's
        walked = seen = 0
        try:
            for got, batch_labels in _outputs_per_batch(data, evaluation, f"int8 model ({name})", state_pairs,
                                                        unreadable):
                if part and walked == batches:
                    break
                if walked == len(reference):
                    walked += 1  # one batch more than the float model saw
                    break
                run.update(reference[walked], got, batch_labels if batch_labels is not None else given_labels[walked])
                seen += _samples_in(reference[walked])
                walked += 1
                events.progress(seen, evaluation_samples, f"evaluating {name}: {seen}/{evaluation_samples} samples")
        except MetricHookError:
            raise  # the user's to fix; a model onnxruntime cannot load or run only rejects this candidate
        except Exception as exc:
            if any(exc is error for error in unreadable):
                raise
            return None, None, f"onnxruntime cannot run the int8 model: {getattr(exc, 'message', exc)}", coverage
        if walked != (batches if part else len(reference)):
            raise InputError(f"the evaluation data gave {len(reference)} batches on its first pass, then "
                             f"{'more' if walked > len(reference) else walked}",
                             "evaluation data must read the same on every pass")
        return data, run.result(), None, coverage

    first_static = next((c.recipe for c in choices if c.recipe.mode == "static"), None)
    if first_static is not None and calibration and options.techniques:
        source[0], method, outcome.prepare["techniques"], correction[0] = choose_techniques(
            prepared, first_static.excluding(list(float_up_front)), calibration, evaluate, progress,
            statistics_of=partial(passes.get, histograms=True) if "calibration" not in options.overrides else None)
        passes.retain(source[0], prepared)
        if method != first_static.calibration:  # ranges per activation measured better: every static recipe
            choices = [c.model_copy(update={"recipe": c.recipe.model_copy(update={"calibration": method})})
                       if c.recipe.mode == "static" else c for c in choices]
    # Every candidate plainly first; mixed precision only where no candidate meets the floor as it is,
    # most promising first, within one time budget for the whole search.
    below: list[tuple[Candidate, bytes, Fidelity]] = []
    for choice in choices:
        recipe = choice.recipe
        if recipe.mode == "static" and float_up_front:
            recipe = recipe.excluding(list(float_up_front))
        progress(f"quantizing: {recipe.name}")
        candidate = Candidate(name=recipe.name, recipe=recipe, reason=choice.reason)
        outcome.candidates.append(candidate)
        data, fidelity, rejection, coverage = evaluate(recipe)
        if data is not None and options.keep_float and recipe.mode in ("static", "dynamic"):
            data, fidelity, rejection, coverage, recipe = keep_most_sensitive(
                source[0], (data, fidelity, rejection, coverage), recipe, candidate, eval_feeds, options.keep_float,
                evaluate, progress)
        if coverage is not None:
            candidate.cover(coverage)
        if data is None:
            candidate.status, candidate.rejection = "rejected", rejection
            continue
        if fidelity.meets(options.min_cosine, options.min_top1) or recipe.mode not in ("static", "dynamic"):
            _settle(candidate, data, fidelity, recipe, outcome.float_size_bytes, float_names, quantized_models,
                    options)
        else:
            below.append((candidate, data, fidelity))
    deadline = min(time.monotonic() + options.mixed_precision_budget_s, started + options.search_budget_s)
    # (a faithful dynamic candidate does not count: on conv graphs it is often far slower than static int8)
    faithful = any(c.name in quantized_models and c.recipe.mode == "static" for c in outcome.candidates)
    for candidate, data, fidelity in sorted(below, key=lambda item: -item[2].margin):
        recipe = candidate.recipe
        remaining = deadline - time.monotonic()
        if faithful or remaining <= 0:
            candidate.mixed_precision_stop = (
                "not tried: another candidate meets the floor" if faithful else
                f"not tried: the time budget (mixed precision {options.mixed_precision_budget_s:g} s, "
                f"the search {options.search_budget_s:g} s) was used up")
        else:
            # (the float model the quantizer saw: its activations are what int8 ones are matched with)
            data, fidelity, recipe = revert_until_floor(
                source[0], data, fidelity, recipe, candidate, eval_feeds,
                options.model_copy(update={"mixed_precision_budget_s": remaining}), evaluate, progress,
                evaluation_batches=len(reference))
        _settle(candidate, data, fidelity, recipe, outcome.float_size_bytes, float_names, quantized_models, options)
        faithful = faithful or (candidate.name in quantized_models and candidate.recipe.mode == "static")

    passing = [c for c in outcome.candidates if c.status == "ok"]
    timed = (target.name == "host" or device_latency is not None) and options.measure_latency
    where = f"on {device_name}" if device_latency is not None else "on this machine"
    outcome.latency_measured_on = device_name if device_latency is not None else ("host" if timed else None)
    if passing and timed:
        progress(f"timing float vs int8 {where}")
        models = {"float": float_source, **{c.name: quantized_models[c.name] for c in passing}}
        stats = against_float(models, timing_batch(), options, device_latency, in_pairs=True)  # memory: 2 sessions
        outcome.float_latency = stats["float"]
        for c in passing:
            c.latency = stats[c.name]
            c.latency_ratio = round(stats[c.name].ratio_to_reference or 1.0, 4)
        fastest = min(passing, key=lambda c: c.latency_ratio or 1e9)
        if options.speed_fallback and fastest.recipe.mode == "static":
            _speed_fallback(prepared, float_source, fastest, quantized_models, outcome, options, evaluate,
                            timing_batch, device_latency, device_node_costs, events)

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
                                    "lower the floor that refused them (--metric OUTPUT=METRIC@FLOOR, or "
                                    "--min-cosine / --min-top1), add calibration data, or use --quantize auto")
        outcome.reason = f"kept the float model: no int8 candidate was usable ({summary})"
        return None, outcome
    if timed:
        fastest_ratio = min(c.latency_ratio or 1e9 for c in passing)
        # Candidates within timing noise of the fastest are equally fast: the most faithful of them ships.
        equally_fast = [c for c in passing if (c.latency_ratio or 1e9) <= fastest_ratio * (1 + SAME_SPEED)]
        best = max(equally_fast, key=lambda c: (c.fidelity.margin if c.fidelity else -1e9, -(c.latency_ratio or 1e9)))
        confirmed = ""
        if best.latency_ratio is not None and (len(passing) > 1 or best.speed_fallback):
            # the best of several noisy timings: timed again beside float alone (timing.py)
            first = best.latency_ratio
            best.latency = confirm_against_float(best.name, quantized_models[best.name], float_source,
                                                 timing_batch(), options, device_latency)
            best.latency_ratio = round(best.latency.ratio_to_reference or 1.0, 4)
            confirmed = f"it won its round at {first:.2f}x, timed again beside float alone"
            if abs(best.latency_ratio - (1 - options.min_speedup)) <= BORDERLINE:
                # within a shared machine's run-to-run noise of the rule's line: one more timing decides with the
                # first (their geometric mean), so the same model does not ship int8 on one run and float on the next
                again = confirm_against_float(best.name, quantized_models[best.name], float_source, timing_batch(),
                                              options, device_latency)
                ratios = (best.latency_ratio, again.ratio_to_reference or 1.0)
                best.latency = again
                best.latency_ratio = round(math.sqrt(ratios[0] * ratios[1]), 4)
                confirmed += (f" ({ratios[0]:.3f}x, near the {1 - options.min_speedup:.2f}x line, then {ratios[1]:.3f}x: "
                              f"{best.latency_ratio:.3f}x judged)")
        if best.latency_ratio is not None and not fast_enough(best.latency_ratio, options.min_speedup) and not (
                explicit or options.force_int8):
            outcome.reason = (f"kept the float model: its fastest faithful int8 candidate ({best.name}"
                              + (f"; {confirmed}" if confirmed else "") + ") "
                              + speed_refusal(best.latency_ratio, options.min_speedup, where))
            return None, outcome
        outcome.reason = (f"{best.name}: fastest candidate meeting the fidelity floor (the most faithful "
                          f"within {SAME_SPEED:.0%}) "
                          f"({best.latency_ratio:.2f}x float latency {where}, {best.size_ratio:.2f}x size"
                          + (f"; {confirmed}" if confirmed else "") + ")")
        if best.latency_ratio is not None and not fast_enough(best.latency_ratio, options.min_speedup):
            outcome.warnings.append(f"the shipped int8 model is not {percent(options.min_speedup)} faster than float: "
                                    f"{describe_ratio(best.latency_ratio)} {where}")
    else:
        best = passing[0]
        twin = next((c for c in passing[1:] if c.recipe.weight_range_twin_of(best.recipe)), None)
        if twin is not None and twin.fidelity is not None and best.fidelity is not None and \
                twin.fidelity.margin > best.fidelity.margin:
            best = twin  # the measured error decides between 7-bit and 8-bit weights, not the ISA rule
        outcome.reason = f"{best.name}: first candidate meeting the fidelity floor for target {target.name} " \
                         f"({best.reason})"
    outcome.chosen, outcome.shipped = best.name, "int8"
    model = onnx.ModelProto()
    model.ParseFromString(compact_added_names(quantized_models.bytes_of(best.name), float_names))
    return model, outcome


def _settle(candidate: Candidate, data: bytes, fidelity: Fidelity, recipe: Recipe, float_size: int,
            float_names: frozenset[str], quantized_models: ModelStore, options: QuantizeOptions) -> None:
    """Record a candidate's final model: ok (kept for timing), too big, or below the floor."""
    candidate.fidelity, candidate.recipe = fidelity, recipe
    candidate.float_nodes = list(recipe.nodes_to_exclude)
    candidate.size_bytes = len(compact_added_names(data, float_names))
    candidate.size_ratio = round(candidate.size_bytes / float_size, 4)
    if candidate.size_bytes > float_size:
        candidate.status, candidate.rejection = "rejected", (
            f"the int8 model is larger than the float model ({candidate.size_bytes} > {float_size} bytes)")
    elif (shortfall := fidelity.shortfall(options.min_cosine, options.min_top1)) is not None:
        candidate.status, candidate.rejection = "below-floor", f"fidelity below the floor: {shortfall}"
    else:
        quantized_models[candidate.name] = data


def _speed_fallback(prepared, float_source, candidate, quantized_models, outcome, options, evaluate, timing_batch,
                    device_latency, device_node_costs, events) -> None:
    """Keep the layers whose int8 kernels are slower in float (speed_fallback.py); on success the
    candidate's model, recipe, fidelity and latency (re-timed against float) are replaced. Profiles and
    timings run on ``timing_batch()`` (one batch, read for each measurement and dropped after it)."""

    def time_against(current: bytes, trial: bytes) -> float:
        # The current model is the reference, under the reference label "float".
        stats = against_float({"float": current, "trial": trial}, timing_batch(), options, device_latency,
                               min_time_s=min(1.0, options.latency_budget_s / 4), budget_s=options.latency_budget_s / 2)
        return stats["trial"].ratio_to_reference or 1.0

    from edgeopt.runtime.measure import MeasurementError

    progress = events.note
    int8_model = quantized_models[candidate.name]
    progress("profiling float and int8 kernels")
    outcome.speed_fallback_profiled_on = outcome.latency_measured_on if device_node_costs is not None else "host"
    try:
        if device_node_costs is not None:
            float_costs, int8_costs = device_node_costs(float_source, "float"), device_node_costs(int8_model, "int8")
        else:
            float_costs = profile_node_costs(float_source, label="float", threads=options.threads,
                                             feeds=timing_batch())
            int8_costs = profile_node_costs(int8_model, label="int8", threads=options.threads, feeds=timing_batch())
    except MeasurementError as exc:  # an optimisation that cannot profile is skipped, not fatal
        outcome.warnings.append(f"speed fallback skipped: profiling failed ({exc.message})")
        return
    layers, elementwise = int8_layers(prepared, int8_model, candidate.recipe.nodes_to_exclude)
    suspects = slower_in_int8(float_costs, with_activations(prepared, float_costs, int8_costs, layers), layers)
    candidate.speed_fallback_suspects = [name for name, _, _ in suspects]
    data, recipe, fidelity, coverage, trials = keep_slow_layers_float(
        suspects, int8_model, candidate.recipe, evaluate=evaluate, time_against=time_against, events=events,
        meets_floor=lambda f: f.meets(options.min_cosine, options.min_top1),
        # an elementwise node goes float alone (its consumers, a big Conv say, keep their int8 kernels)
        exclusion_group=lambda name: [name] if name in elementwise else exclusion_group(prepared, name))
    candidate.speed_fallback = trials
    if fidelity is None:
        return
    progress("timing float vs int8 with the slow layers in float")
    stats = against_float({"float": float_source, "int8": data}, timing_batch(), options, device_latency)
    del quantized_models[candidate.name]
    candidate.name, candidate.recipe, candidate.fidelity = recipe.name, recipe, fidelity
    candidate.float_nodes = list(recipe.nodes_to_exclude)
    candidate.cover(coverage)
    candidate.size_bytes = len(compact_added_names(data, graph_names(prepared)))
    candidate.size_ratio = round(candidate.size_bytes / outcome.float_size_bytes, 4)
    candidate.latency, candidate.latency_ratio = stats["int8"], round(stats["int8"].ratio_to_reference or 1.0, 4)
    outcome.float_latency = stats["float"]
    quantized_models[candidate.name] = data
