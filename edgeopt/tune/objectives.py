"""What a trial scores and whether it is feasible, read from its convert reports with the gate's own facts,
so a budget means the same number in `edgeopt gate` and in `edgeopt tune`.

- ``metric`` (maximized): task accuracy where the evaluation data has labels, else the fidelity the
  quantization stage judged (worst output), times the pruned model's agreement with the unpruned one;
- ``latency`` (minimized): on the run's first target, measured where the run measured it (``--ssh``, or
  ``--measure`` on the host), else estimated;
- ``size`` (minimized): the model's bytes as shipped;
- ``memory`` (minimized): the peak memory on the first target.

Budgets become constraints: one value per limit, ``(actual - limit) / |limit|`` for a maximum and
``(limit - actual) / |limit|`` for a minimum, feasible at or below 0 (Optuna's convention); a number the
trial cannot produce counts as a violation of 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.config.settings import Budget
from edgeopt.gate.checks import Fact, evaluate_budget
from edgeopt.gate.facts import ArtifactFacts, facts_for
from edgeopt.report.profile_schema import ProfileReport
from edgeopt.report.schema import Report

DIRECTIONS = {"metric": "maximize", "latency": "minimize", "size": "minimize", "memory": "minimize"}
FACT_OF = {"latency": "latency_ms", "size": "size", "memory": "peak_memory"}
UNKNOWN_VIOLATION = 1.0


@dataclass
class TrialScore:
    values: dict[str, float | None]  # objective name -> value (None: the trial could not produce it)
    constraints: list[float] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # one line per budget limit, as the gate words it
    metric_source: str = ""

    @property
    def feasible(self) -> bool:
        return all(c <= 0 for c in self.constraints)

    @property
    def violation(self) -> float:
        return sum(max(0.0, c) for c in self.constraints)


def _probe(target: str) -> Budget:
    """A budget that limits nothing the trial does not have anyway: only to read the facts for ``target``."""
    return Budget(artifact="model.onnx", target=target, max_size=1 << 62)


def score(model: Path, report: Report, float_report: Report | None, target: str, budgets: list[Budget],
          targets_dir: Path | None = None, profiles: list[ProfileReport] | None = None) -> TrialScore:
    """The trial's objectives and constraints. ``float_report``: the run that pruned (and fine-tuned) the
    float model this trial quantized, whose agreement and accuracy drop carry into the trial's; ``profiles``:
    measurements of the trial's model (``--measure``), preferred to the estimate as the gate prefers them."""
    artifact = ArtifactFacts(model, targets_dir, input_shapes=dict(report.config.get("input_shapes") or {}),
                             dims=dict(report.config.get("dims") or {}))

    def facts(budget: Budget) -> dict[str, Fact]:
        found, _all = facts_for(budget, artifact, report, None, profiles or [])
        if float_report is not None:
            found = _with_pruning(found, float_report, budget)
        return found

    probe = facts(_probe(target))
    values: dict[str, float | None] = {name: probe[fact].value if fact in probe else None
                                       for name, fact in FACT_OF.items()}
    accuracy = probe.get("accuracy")
    pruned = report.summary.pruning.steps[-1] if report.summary.pruning and report.summary.pruning.steps else None
    if accuracy is not None and accuracy.value is not None:
        values["metric"], source = accuracy.value, "accuracy (labels)"
    elif pruned is not None and pruned.accuracy is not None:  # a float run: pruning measured it on the labels
        values["metric"], source = pruned.accuracy, f"accuracy (labels, {pruned.step} model)"
    else:
        values["metric"], source = probe["fidelity"].value, probe["fidelity"].source
    result = TrialScore(values=values, metric_source=source)
    for budget in budgets:
        for check in evaluate_budget(budget, facts(budget), None):
            if check.kind != "limit":
                continue
            if check.actual is None or check.status == "error" or check.limit is None:
                result.constraints.append(UNKNOWN_VIOLATION)
            else:
                scale = abs(float(check.limit)) or 1.0
                at_most = check.limit_text.startswith("≤")
                over = (check.actual - check.limit) if at_most else (check.limit - check.actual)
                result.constraints.append(over / scale)
            result.checks.append(f"{check.budget}: {check.message}")
    return result


def _with_pruning(found: dict[str, Fact], float_report: Report, budget: Budget) -> dict[str, Fact]:
    """The quantized run only knows the float model it started from; pruning's own loss comes from the run
    that made that model: accuracy drops add up, agreements multiply."""
    from edgeopt.gate.facts import report_facts

    earlier = report_facts(float_report, budget)
    found = dict(found)
    drop, before = found.get("accuracy_drop"), earlier.get("accuracy_drop")
    if drop is not None and drop.value is not None and before is not None and before.value is not None:
        found["accuracy_drop"] = Fact(value=drop.value + before.value, source="pruning + quantization")
    agreement, pruned = found.get("fidelity"), earlier.get("fidelity")
    if agreement is not None and agreement.value is not None and pruned is not None and pruned.value is not None:
        found["fidelity"] = Fact(value=agreement.value * pruned.value,
                                 source="agreement with the unpruned model x int8 fidelity")
    return found


def dominates(a: dict[str, float], b: dict[str, float], objectives: list[str]) -> bool:
    better = False
    for name in objectives:
        x, y = a[name], b[name]
        if DIRECTIONS[name] == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(rows: list[Any], objectives: list[str], values: Any) -> list[Any]:
    """The rows no other row dominates (``values(row)`` gives its objective values)."""
    return [row for row in rows
            if not any(dominates(values(other), values(row), objectives) for other in rows if other is not row)]


def ranking_key(objectives: list[str], objective: str | None) -> Any:
    """Sort key of a feasible trial's values, best first: the single objective, else the objectives in order
    (the task metric first by default: the best model that meets the budgets)."""
    order = [objective] if objective else objectives
    return lambda v: tuple(-v[name] if DIRECTIONS[name] == "maximize" else v[name] for name in order)
