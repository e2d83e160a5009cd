"""Which metric judges which output (``MetricPlan``), and one candidate's verdicts (``Judgement``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.config.metric_spec import ALL_OUTPUTS, MetricSpec, parse_metric_spec
from edgeopt.errors import InputError
from edgeopt.metrics.accumulators import load_hook, make_metric
from edgeopt.metrics.defaults import default_metric
from edgeopt.metrics.detection import HeadLayout, infer_layout

# Margins are compared across metrics (which output is worst): dB are brought to a fraction's scale.
_MARGIN_SCALE = {"sqnr": 40.0}


class MetricResult(BaseModel):
    """One output's (or a whole-model hook's) verdict: what judged it, the score, the floor."""

    model_config = ConfigDict(extra="forbid")

    output: str  # an output name, or "*" for a whole-model hook
    metric: str
    score: float
    floor: float
    passed: bool
    chosen: str  # "default: <why>" or "configured"
    details: dict[str, float | int | str | None] = {}

    @property
    def margin(self) -> float:
        """Distance above the floor, on a fraction's scale (negative: below)."""
        if not math.isfinite(self.score):
            return -math.inf if self.score < 0 or math.isnan(self.score) else math.inf
        return (self.score - self.floor) / _MARGIN_SCALE.get(self.metric, 1.0)


@dataclass(frozen=True)
class JudgedOutput:
    output: str  # "*": a whole-model hook
    spec: MetricSpec
    chosen: str
    layout: HeadLayout | None = None  # how a detection output is read


class MetricPlan:
    """Which metric judges which output, decided once from the float model's first batch of outputs
    (defaults) and the configured specs ({output or "*": spec text}); ``judge`` runs a fresh set of
    accumulators for one candidate. ``image_size``: the (height, width) of the model's image input, which
    tells a detector's stride pyramid."""

    def __init__(self, output_names: list[str], first_outputs: list[np.ndarray], configured: Mapping[str, str],
                 *, has_labels: bool, floors: Mapping[str, float] | None = None,
                 image_size: tuple[int, int] | None = None) -> None:
        unknown = sorted(set(configured) - set(output_names) - {ALL_OUTPUTS})
        if unknown:
            raise InputError(f"--metric names output(s) {', '.join(map(repr, unknown))} that the model does not "
                             "have", f"outputs are: {', '.join(output_names)}")
        specs = {key: parse_metric_spec(text if key == ALL_OUTPUTS else f"{key}={text}")[1]
                 for key, text in configured.items()}
        # A floor given for a metric (--min-cosine, --min-top1) holds wherever that metric judges without its own.
        specs = {key: MetricSpec(spec.metric, spec.param, (floors or {})[spec.metric])
                 if spec.floor is None and spec.metric in (floors or {}) else spec for key, spec in specs.items()}
        self.judged: list[JudgedOutput] = []
        everywhere = specs.get(ALL_OUTPUTS)
        whole_model_hook = everywhere is not None and everywhere.is_hook
        if whole_model_hook:
            # The user's function judges the model: only outputs named on their own add a metric.
            self.judged.append(JudgedOutput(ALL_OUTPUTS, everywhere, "configured (every output)"))
            everywhere = None
        for name, sample in zip(output_names, first_outputs):
            if whole_model_hook and name not in specs:
                continue
            if name in specs:
                spec, chosen = specs[name], "configured"
            elif everywhere is not None:
                spec, chosen = everywhere, "configured (every output)"
            else:
                spec, why = default_metric(name, sample, has_labels)
                if spec.metric in (floors or {}):
                    spec = MetricSpec(spec.metric, spec.param, floors[spec.metric])
                chosen = f"default: {why}"
            if spec.metric == "accuracy" and not has_labels:
                raise InputError(f"--metric accuracy for output {name!r} needs labels in the evaluation data",
                                 "add a 'labels' array to --eval (or --calib), or use top1")
            layout = None
            if spec.metric == "detection":
                layout = infer_layout(sample, image_size)
                chosen = f"{chosen}; read as {layout.describe()}"
            self.judged.append(JudgedOutput(name, spec, chosen, layout))
        for judged in self.judged:
            if judged.spec.is_hook:
                load_hook(judged.spec.metric)  # fail now, not after quantizing
        self.output_names = output_names

    def describe(self) -> list[dict[str, Any]]:
        return [{"output": j.output, "metric": j.spec.metric, "param": j.spec.param,
                 "floor": j.spec.resolved_floor, "chosen": j.chosen} for j in self.judged]

    def judge(self) -> Judgement:
        return Judgement(self)


class Judgement:
    """One candidate's accumulators: feed it batch by batch, then read the results."""

    def __init__(self, plan: MetricPlan) -> None:
        self.plan = plan
        self.metrics = [make_metric(j.spec, j.layout) for j in plan.judged]

    def update(self, reference: list[np.ndarray], candidate: list[np.ndarray], labels: np.ndarray | None) -> None:
        by_name_ref = dict(zip(self.plan.output_names, reference))
        by_name_cand = dict(zip(self.plan.output_names, candidate))
        for judged, metric in zip(self.plan.judged, self.metrics):
            if judged.output == ALL_OUTPUTS:
                metric.update(by_name_ref, by_name_cand, labels)
            else:
                metric.update(by_name_ref[judged.output], by_name_cand[judged.output], labels)

    def results(self) -> list[MetricResult]:
        results = []
        for judged, metric in zip(self.plan.judged, self.metrics):
            score, details = metric.result()
            score = score if math.isfinite(score) else (-1e9 if not score > 0 else 1e9)
            floor = judged.spec.resolved_floor
            results.append(MetricResult(output=judged.output, metric=judged.spec.metric, score=round(score, 6),
                                        floor=floor, passed=score >= floor, chosen=judged.chosen,
                                        details={k: v for k, v in details.items() if v is not None}))
        return results
