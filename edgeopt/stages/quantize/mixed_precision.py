"""Mixed precision: quantizer groups reverted to float until the task metric meets its floor.

The SQNR activation matching (sensitivity.py, one pass) names the groups that add the most error; each
of the first ``MAX_RANKED_GROUPS`` is then reverted *alone* and the task metric measured, so groups are
ranked by the margin they buy on the task (the idea of NNCF's accuracy-control algorithm), not by a
tensor statistic. They are reverted cumulatively in that order, one per step, until the floor is met,
the ranking is used up, or the time budget ends. The ranking, every step and why it stopped are
recorded on the candidate.
"""

from __future__ import annotations

import itertools
import time

import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.stages.quantize.calibration import BatchSource, walk
from edgeopt.metrics.fidelity import Fidelity
from edgeopt.stages.quantize.sensitivity import exclusion_group, rank_sensitive_nodes

# Groups whose solo revert is measured (the SQNR ranking picks them, the task metric orders them).
MAX_RANKED_GROUPS = 12
MAX_MIXED_PRECISION_STEPS = 12
# Cumulative reverts in a row that leave the task metric where it was end the search for this candidate.
MAX_FLAT_STEPS = 2
# Evaluation batches the SQNR matching runs over: it only names candidates, the task metric orders them.
RANKING_BATCHES = 8


class MixedPrecisionStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    float_nodes: list[str]
    worst_cosine: float
    meets_floor: bool
    margin: float | None = None  # the decisive task metric's distance to its floor
    verdict: str | None = None


class RevertEffect(BaseModel):
    """One quantizer group reverted to float alone, and what it did to the task metric."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[str]
    margin: float | None  # None: the trial could not be evaluated
    effect: float | None  # margin gained over the all-int8 candidate
    batches: int | None = None  # judged on the first this many evaluation batches (None: all of them)


def revert_until_floor(prepared, data, fidelity, recipe, candidate, evaluation: BatchSource, options, evaluate,
                       progress, evaluation_batches: int | None = None):
    """Revert quantizer groups to float until the task metric meets its floor (``evaluation``: the feeds,
    re-iterable; the first ``RANKING_BATCHES`` are read, one at a time).

    1. The SQNR activation matching (one pass) names the groups that add the most error;
    2. each of the first ``MAX_RANKED_GROUPS`` is reverted alone and the task metric measured on the first
       ``RANKING_BATCHES`` of the ``evaluation_batches`` (a ranking needs the order, not the full count;
       on a detector over large images this is most of the time mixed precision takes): groups are
       ranked by the margin they buy (what NNCF's accuracy control does), so the order follows the
       task, not a tensor statistic;
    3. groups are reverted cumulatively in that order, one per step, until the floor is met, the
       ranking is used up, or the time budget ends. The best step is kept.

    Returns (model bytes, fidelity, recipe) of the best step, or the inputs unchanged."""
    started = time.monotonic()
    budget = options.mixed_precision_budget_s

    def out_of_time() -> bool:
        return time.monotonic() - started > budget

    groups = sensitive_groups(prepared, data, recipe, evaluation, MAX_RANKED_GROUPS)
    best = (data, fidelity, recipe)
    if not groups:
        candidate.mixed_precision_stop = "no quantized node adds measurable error"
        return best
    ranked: list[RevertEffect] = []
    part = RANKING_BATCHES if evaluation_batches is not None and evaluation_batches > RANKING_BATCHES else None
    baseline = fidelity
    if part is not None:  # the all-int8 candidate on the same part: effects compare like with like
        _data, baseline, _rejection, _coverage = evaluate(recipe, batches=part)
        baseline = baseline or fidelity
    for index, group in enumerate(groups):
        if out_of_time():
            candidate.mixed_precision_stop = f"time budget ({budget:g} s) ended while ranking"
            break
        progress(f"mixed precision: ranking group {index + 1}/{len(groups)} by the task metric")
        trial_recipe = recipe.excluding(list(group))
        trial_data, trial_fidelity, _rejection, _coverage = evaluate(trial_recipe, batches=part)
        margin = trial_fidelity.margin if trial_fidelity is not None else None
        ranked.append(RevertEffect(nodes=list(group), margin=margin, batches=part, effect=None if margin is None else
                                   round(trial_fidelity.smooth_margin - baseline.smooth_margin, 6)))
        if part is not None and trial_fidelity is not None and trial_fidelity.meets(options.min_cosine,
                                                                                    options.min_top1):
            # meets the floor on the part: judged on all the data before it counts
            trial_data, trial_fidelity, _rejection, _coverage = evaluate(trial_recipe)
        elif part is not None:
            continue  # a margin on the part is not comparable with ``best``'s
        if trial_fidelity is not None and trial_fidelity.margin > best[1].margin:
            best = (trial_data, trial_fidelity, trial_recipe)
        if trial_fidelity is not None and trial_fidelity.meets(options.min_cosine, options.min_top1):
            # One group alone is enough: the cheapest fix there is.
            candidate.mixed_precision.append(step_record(list(group), trial_fidelity, True))
            candidate.mixed_precision_ranking = ranked
            candidate.mixed_precision_stop = "floor met by reverting one group"
            return best
    # Groups that measurably help go first, best first; unmeasured and harmful ones last.
    ranked.sort(key=lambda r: -(r.effect if r.effect is not None else -1e9))
    candidate.mixed_precision_ranking = ranked
    reverted: list[str] = []
    highest, flat = fidelity.smooth_margin, 0  # the best smooth margin on all the data so far
    for effect in ranked[:MAX_MIXED_PRECISION_STEPS]:
        if effect.effect is None or effect.effect <= 0:
            candidate.mixed_precision_stop = candidate.mixed_precision_stop or \
                "no further group improves the task metric on its own"
            break
        if out_of_time():
            candidate.mixed_precision_stop = f"time budget ({budget:g} s) ended"
            break
        reverted = sorted(set(reverted) | set(effect.nodes))
        progress(f"mixed precision: keeping {len(reverted)} node(s) in float")
        trial = recipe.excluding(reverted)
        trial_data, trial_fidelity, _rejection, _coverage = evaluate(trial)
        if trial_data is None:
            candidate.mixed_precision_stop = "a step could not be quantized or run"
            break
        meets = trial_fidelity.meets(options.min_cosine, options.min_top1)
        candidate.mixed_precision.append(step_record(reverted, trial_fidelity, meets))
        if meets or trial_fidelity.margin > best[1].margin:  # keep the best step: a later one may lose
            best = (trial_data, trial_fidelity, trial)
        if meets:
            candidate.mixed_precision_stop = f"floor met after {len(candidate.mixed_precision)} step(s)"
            break
        # A ranking (on part of the data) that predicts gains the full data does not show: stop early.
        flat = flat + 1 if trial_fidelity.smooth_margin <= highest + 1e-6 else 0
        highest = max(highest, trial_fidelity.smooth_margin)
        if flat >= MAX_FLAT_STEPS:
            candidate.mixed_precision_stop = (f"{MAX_FLAT_STEPS} reverts in a row did not raise the task metric "
                                              "on all the evaluation data")
            break
    else:
        candidate.mixed_precision_stop = candidate.mixed_precision_stop or "ranked groups used up"
    return best


def sensitive_groups(prepared: onnx.ModelProto, data: bytes, recipe, evaluation: BatchSource,
                     limit: int) -> list[tuple[str, ...]]:
    """The quantizer groups of ``data`` (``recipe`` quantizing ``prepared``) that lose the most SQNR, worst
    first, at most ``limit``: one pass over the first ``RANKING_BATCHES`` of ``evaluation``."""
    quant = onnx.ModelProto()
    quant.ParseFromString(data)
    chains: dict[str, list[str]] = {}
    sensitive = rank_sensitive_nodes(prepared, quant, lambda: itertools.islice(walk(evaluation), RANKING_BATCHES),
                                     chains)
    groups: list[tuple[str, ...]] = []
    for name, _score in sensitive:
        members = {member for node in (name, *chains.get(name, ())) for member in exclusion_group(prepared, node)}
        group = tuple(sorted(members - set(recipe.nodes_to_exclude)))
        if group and group not in groups:
            groups.append(group)
        if len(groups) >= limit:
            break
    return groups


def keep_most_sensitive(prepared, judged, recipe, candidate, evaluation: BatchSource, count: int, evaluate,
                        progress):
    """``--keep-float N``: the candidate requantized with its ``count`` most sensitive quantizer groups in float
    (accuracy bought with speed, whatever the floor says; a dimension `edgeopt tune` searches). ``judged``:
    (data, fidelity, rejection, coverage) of the all-int8 candidate, returned as it is when no group loses
    measurable accuracy. Returns those four and the recipe."""
    groups = sensitive_groups(prepared, judged[0], recipe, evaluation, count)
    if not groups:
        return (*judged, recipe)
    nodes = sorted({name for group in groups for name in group})
    progress(f"keeping the {len(groups)} most sensitive quantizer group(s) in float ({len(nodes)} node(s))")
    candidate.kept_float_by_setting = nodes
    recipe = recipe.excluding(nodes)
    return (*evaluate(recipe), recipe)


def step_record(nodes: list[str], fidelity: Fidelity, meets: bool) -> MixedPrecisionStep:
    return MixedPrecisionStep(float_nodes=list(nodes), worst_cosine=fidelity.worst_cosine, meets_floor=meets,
                              margin=round(fidelity.margin, 6), verdict=fidelity.verdict())
