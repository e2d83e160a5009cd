"""Budgets + measured facts → verdicts, and the verdicts as tables: text, JSON, JUnit XML,
Markdown (a pull-request comment) and GitHub Actions annotations.

Pure: the facts (sizes, estimates, measurements, accuracy, the baseline's numbers) are
gathered by ``gate.facts``; nothing here reads a model or runs anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgeopt.config.settings import Budget
from edgeopt.units import format_bytes, format_count, format_in_unit_of

Status = Literal["pass", "fail", "error", "skip"]

# metric → (budget field, unit, higher is worse)
LIMITS: dict[str, tuple[str, str, bool]] = {
    "size": ("max_size", "bytes", True),
    "compressed_size": ("max_compressed_size", "bytes", True),
    "params": ("max_params", "count", True),
    "macs": ("max_macs", "count", True),
    "latency_ms": ("max_latency_ms", "ms", True),
    "peak_memory": ("max_peak_memory", "bytes", True),
    "accuracy": ("min_accuracy", "fraction", False),
    "accuracy_drop": ("max_accuracy_drop", "points", True),
    "fidelity": ("min_fidelity", "cosine", False),
}


class Fact(BaseModel):
    """One number about an artifact, with where it came from; ``value`` None means unavailable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float | None
    source: str = ""  # "file", "report", "estimate for rpi4b", "measured on pi4-a", ...
    missing_reason: str | None = None
    # latency and peak memory: estimated or measured (growth compares like with like)
    kind: Literal["estimated", "measured"] | None = None
    error: float | None = None  # an estimate's expected relative error (0.33: ±33%), where validated


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: str
    artifact: str
    target: str | None
    metric: str
    kind: Literal["limit", "growth"] = "limit"
    # bytes and counts stay integers (exact); latency, fractions and growth are floats
    limit: int | float | None
    limit_text: str
    actual: float | None
    actual_text: str
    unit: str
    source: str = ""
    baseline: float | None = None
    delta: float | None = None
    delta_pct: float | None = None
    status: Status
    message: str
    line: int | None = None


class GateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "gate"
    schema_version: int = 1
    passed: bool
    exit_code: int
    config: str | None = None
    report: str | None = None
    baseline: str | None = None
    checks: list[Check]
    contributors: dict[str, Any] = {}  # budget label → top initializers / nodes (and their growth)
    warnings: list[str] = []


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return format_bytes(value)
    if unit == "count":
        return format_count(value)
    if unit == "ms":
        return f"{value:.3g} ms" if value < 100 else f"{value:.1f} ms"
    if unit in ("fraction", "points"):
        return f"{value * 100:.2f}%" if unit == "fraction" else f"{value * 100:.2f} pt"
    return f"{value:.4f}"


def _as_written(value: float, unit: str, written: str | None, limit: bool = False) -> str:
    """A size or count limit as its budget wrote it, and a value in that limit's unit, the exact whole number
    beside each ("30.492 kB (30,492 B)"); other values as ``format_value`` shows them."""
    if unit in ("bytes", "count") and written:
        shown = format_in_unit_of(value, written, unit)
        exact = f"{int(value):,} B" if unit == "bytes" else f"{int(value):,}"
        if shown is not None:
            if shown == exact:  # written in bytes: nothing to convert
                return exact
            return f"{written if limit else shown} ({exact})"
    return format_value(value, unit)


def _delta(actual: float | None, baseline: float | None) -> tuple[float | None, float | None]:
    if actual is None or baseline is None:
        return None, None
    delta = actual - baseline
    return delta, (delta / baseline * 100 if baseline else None)


def evaluate_budget(budget: Budget, facts: dict[str, Fact], baseline: dict[str, float] | None,
                    line: int | None = None) -> list[Check]:
    """Every limit of ``budget`` against ``facts`` (metric → Fact), plus growth over ``baseline``."""
    checks: list[Check] = []
    for metric, (field, unit, higher_is_worse) in LIMITS.items():
        limit = getattr(budget, field)
        if limit is None:
            continue
        fact = facts.get(metric) or Fact(value=None, missing_reason="not available")
        base = (baseline or {}).get(metric)
        delta, pct = _delta(fact.value, base)
        op = "≤" if higher_is_worse else "≥"
        written = budget.written(field)
        limit_shown = _as_written(limit, unit, written, limit=True)
        limit_text = f"{op} {limit_shown}"
        actual_text = (_as_written(fact.value, unit, written) if fact.value is not None else "-") \
            + (f" ±{fact.error:.0%}" if fact.error else "")
        undecided = _undecided(budget, metric, fact, limit, unit) if fact.value is not None else None
        if fact.value is None:
            status: Status = "error"
            message = f"{metric}: {fact.missing_reason or 'not available'}"
        elif undecided:
            status, message = "error", undecided
        else:
            ok = fact.value <= limit if higher_is_worse else fact.value >= limit
            status = "pass" if ok else "fail"
            word = "within" if ok else ("exceeds" if higher_is_worse else "below")
            message = f"{metric} {actual_text} {word} {field} {limit_shown}"
        checks.append(Check(budget=budget.label, artifact=budget.artifact, target=budget.target, metric=metric,
                            limit=limit, limit_text=limit_text, actual=fact.value,
                            actual_text=actual_text, unit=unit, source=fact.source,
                            baseline=base, delta=delta, delta_pct=pct, status=status, message=message, line=line))
    checks += _growth_checks(budget, facts, baseline, line)
    return checks


def _undecided(budget: Budget, metric: str, fact: Fact, limit: float, unit: str) -> str | None:
    """Why an estimate cannot decide this limit when the budget asks for a measured figure then
    (``when_estimate_uncertain = "require-measured"``): no validated error band, or a band across the limit."""
    if budget.when_estimate_uncertain != "require-measured" or fact.kind != "estimated":
        return None
    how = (f"measure it on {budget.target or 'the target'} (`edgeopt convert --ssh HOST`, or `edgeopt profile --ssh "
           "HOST -o FILE` listed in [gate] profile_reports)")
    if fact.error is None:
        return (f"{metric}: the estimate ({fact.source or 'static'}) has no validated error band on this target, "
                f"and this budget requires a measured figure then: {how}")
    low, high = fact.value * (1 - fact.error), fact.value * (1 + fact.error)
    if low <= limit < high:
        return (f"{metric} {format_value(fact.value, unit)} ±{fact.error:.0%} (between {format_value(low, unit)} and "
                f"{format_value(high, unit)}) spans the limit {format_value(limit, unit)}: the estimate cannot "
                f"decide; {how}")
    return None


def _growth_checks(budget: Budget, facts: dict[str, Fact], baseline: dict[str, float] | None,
                   line: int | None) -> list[Check]:
    if not budget.max_growth:
        return []
    if "*" in budget.max_growth:
        # "+5%" applies to every growable metric this budget limits (size when it limits none)
        limited = [m for m in ("size", "compressed_size", "params", "macs", "latency_ms", "peak_memory")
                   if getattr(budget, LIMITS[m][0]) is not None] or ["size"]
        allowed = {metric: budget.max_growth["*"] for metric in limited}
    else:
        allowed = dict(budget.max_growth)
    checks = []
    for metric, growth in allowed.items():
        unit = LIMITS[metric][1]
        fact = facts.get(metric) or Fact(value=None, missing_reason="not available")
        base = (baseline or {}).get(metric)
        delta, pct = _delta(fact.value, base)
        limit_text = f"≤ +{growth * 100:g}% vs baseline"
        limit = None if base is None else base * (1 + growth)
        if baseline is None:
            status: Status = "skip"
            message = "max_growth not checked: no baseline (pass --baseline, or set [gate] baseline)"
        elif base is None:
            # a budget or artifact the baseline predates, or a number of another kind there
            # (an estimate vs a measurement): nothing like-for-like to grow from
            kind = f" {fact.kind}" if fact.kind else ""
            status, message = "skip", f"max_growth not checked: the baseline has no{kind} {metric} for this budget"
        elif fact.value is None:
            status, message = "error", f"{metric}: {fact.missing_reason or 'not available'}"
        else:
            ok = fact.value <= limit * (1 + 1e-12) or (base == 0 and fact.value == 0)
            status = "pass" if ok else "fail"
            change = f"{pct:+.2f}%" if pct is not None else f"{delta:+g}"
            message = (f"{metric} grew {change} over the baseline ({format_value(base, unit)} → "
                       f"{format_value(fact.value, unit)}), allowed +{growth * 100:g}%")
        checks.append(Check(budget=budget.label, artifact=budget.artifact, target=budget.target, metric=metric,
                            kind="growth", limit=limit, limit_text=limit_text, actual=fact.value,
                            actual_text=format_value(fact.value, unit), unit=unit, source=fact.source,
                            baseline=base, delta=delta, delta_pct=pct, status=status, message=message, line=line))
    return checks


def verdict(checks: list[Check]) -> tuple[bool, int]:
    """(passed, exit code): 0 all pass, 1 a budget exceeded, 2 a number could not be found."""
    if any(c.status == "error" for c in checks):
        return False, 2
    if any(c.status == "fail" for c in checks):
        return False, 1
    return True, 0


# -- renderings ------------------------------------------------------------------------------------
