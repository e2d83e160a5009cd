"""Cheap trials first: successive halving of the training budget, staged by edgeopt itself because Optuna's
pruners do not work for multi-objective studies.

A trial that trains (fine-tuning, architecture trials) runs at rising budgets: with ``epochs`` E and factor η,
``E/η²``, ``E/η``, then ``E``. After each cheaper rung it goes on only when it ranks in the top ``1/η`` of every
result at that rung so far (at least the best one goes on, so the first trial always reaches the full
budget). Ranking: trials that meet the budgets before those that do not (less violation first), then by
non-dominated front over the objectives, then by the objectives in order. A trial that stops early keeps its
cheap result in the study (the sampler learns from it) but cannot be the winner or on the front: only
full-budget results are compared with each other.
"""

from __future__ import annotations

from typing import Any

from edgeopt.tune.objectives import dominates, ranking_key

MAX_RUNGS = 3


def budgets(epochs: int, eta: int) -> list[int]:
    """Epochs per rung, ascending, the last the full budget: [1, 3, 9] for 9 epochs and η = 3."""
    if eta < 2 or epochs < eta:
        return [epochs]
    rungs = [epochs]
    while len(rungs) < MAX_RUNGS and rungs[0] // eta >= 1:
        rungs.insert(0, rungs[0] // eta)
    return rungs


def _front_index(values: list[dict[str, float]], objectives: list[str]) -> list[int]:
    """The non-dominated front each result belongs to (0: on the Pareto front)."""
    index = [-1] * len(values)
    remaining = set(range(len(values)))
    front = 0
    while remaining:
        current = {i for i in remaining
                   if not any(dominates(values[j], values[i], objectives) for j in remaining if j != i)}
        for i in current:
            index[i] = front
        remaining -= current
        front += 1
    return index


def goes_on(results: list[tuple[int, dict[str, float], list[float]]], number: int, objectives: list[str],
            objective: str | None, eta: int) -> bool:
    """Whether trial ``number`` ranks in the top 1/η of ``results`` ((trial, values, constraints) at one rung,
    its own included)."""
    values = [v for _n, v, _c in results]
    fronts = _front_index(values, [objective] if objective else objectives)
    key = ranking_key(objectives, objective)
    order = sorted(range(len(results)), key=lambda i: (
        sum(max(0.0, c) for c in results[i][2]) > 0, sum(max(0.0, c) for c in results[i][2]), fronts[i],
        key(values[i])))
    position = next(p for p, i in enumerate(order) if results[i][0] == number)
    return position < max(1, len(results) // eta)


def rung_results(study: Any, rung: int) -> list[tuple[int, dict[str, float], list[float]]]:
    """Every result recorded at ``rung`` in the study (running trials' included)."""
    found = []
    for trial in study.get_trials(deepcopy=False):
        entry = trial.user_attrs.get(f"rung_{rung}")
        if entry:
            found.append((trial.number, entry["values"], entry["constraints"]))
    return found
