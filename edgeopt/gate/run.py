"""`edgeopt gate` as a library call: expand each budget's artifacts, gather their facts
(``facts``), compare with the baseline (``baseline``), and evaluate (``checks``).

Numbers come from the report when it describes the artifact (same sha256) and from the
artifact itself otherwise; the gate never re-runs a conversion.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.config.project import ConfigError, LoadedConfig
from edgeopt.config.settings import Budget
from edgeopt.errors import InputError
from edgeopt.events import Events
from edgeopt.gate.baseline import (
    BASELINE_KIND,
    BASELINE_SCHEMA_VERSION,
    Baseline,
    baseline_values,
    budget_key,
)
from edgeopt.gate.checks import Check, GateResult, evaluate_budget, verdict
from edgeopt.gate.facts import (
    ArtifactFacts,
    contributors_of,
    facts_for,
    read_json_object,
)
from edgeopt.report.profile_schema import profile_report_from_json
from edgeopt.report.schema import report_from_json, utc_now

# -- the run --------------------------------------------------------------------------------------------

@dataclass
class GateInputs:
    loaded: LoadedConfig
    report_path: Path | None
    profile_paths: list[Path]
    baseline: Baseline | None
    targets_dir: Path | None


def default_report_path(loaded: LoadedConfig) -> Path:
    gate = loaded.config.gate
    if gate.report:
        return loaded.resolve(gate.report)
    if loaded.config.pipeline is not None:
        return loaded.resolve(loaded.config.pipeline.output_dir) / "report.json"
    return loaded.resolve("out/report.json")


def check_budget_targets(loaded: LoadedConfig, targets_dir: Path | None) -> None:
    from edgeopt.targets import load_target

    for index, budget in enumerate(loaded.config.budgets):
        if budget.target is None:
            continue
        try:
            load_target(budget.target, targets_dir)
        except InputError as exc:
            line = loaded.line_of(("budgets", index, "target"))
            raise ConfigError(f"{loaded.path}:{line}: budgets[{index}].target: {exc.message}", exc.hint) from None


def _expand(loaded: LoadedConfig, index: int, budget: Budget) -> list[tuple[str, Path]]:
    """(name as written or matched, path) for every file the budget's artifact names."""
    pattern = str(loaded.resolve(budget.artifact))
    if glob.has_magic(budget.artifact):
        # matched under the config's folder, whose own path may hold glob characters ("proj[1]")
        root = loaded.folder if not Path(budget.artifact).is_absolute() else Path("/")
        found = glob.glob(budget.artifact if root == loaded.folder else budget.artifact.lstrip("/"),
                          root_dir=root, recursive=True)
        matches = sorted(root / p for p in found if (root / p).is_file())
    else:
        matches = [Path(pattern)] if Path(pattern).is_file() else []
    if not matches:
        line = loaded.line_of(("budgets", index, "artifact"))
        raise ConfigError(f"{loaded.path}:{line}: budgets[{index}].artifact: {budget.artifact!r} matches no file",
                          "run `edgeopt convert` first, or fix the path (relative to the config file)")
    if not glob.has_magic(budget.artifact):
        return [(budget.artifact, matches[0])]
    folder = loaded.folder.resolve()
    named = []
    for path in matches:
        try:
            named.append((path.resolve().relative_to(folder).as_posix(), path))
        except ValueError:
            named.append((str(path), path))
    return named


def run_gate(inputs: GateInputs, events: Events | None = None) -> tuple[GateResult, dict[str, Any]]:
    """Evaluate every budget. Returns the result and the current numbers as a baseline document
    (what ``--update-baseline`` writes)."""
    loaded = inputs.loaded
    budgets = loaded.config.budgets
    if not budgets:
        raise ConfigError(f"{loaded.path}: no [[budgets]] to check",
                          'add e.g. [[budgets]] artifact = "out/model.onnx" max_size = "4 MiB"')
    check_budget_targets(loaded, inputs.targets_dir)
    report = None
    report_sha = None
    if inputs.report_path is not None and inputs.report_path.is_file():
        raw = read_json_object(inputs.report_path, "report")
        if raw.get("kind", "convert") != "convert":
            raise InputError(f"{inputs.report_path} is not a convert report (kind {raw.get('kind')!r})",
                             "pass OUT/report.json of edgeopt convert; profile reports go in [gate] profile_reports")
        report = report_from_json(raw, str(inputs.report_path))
        report_sha = report.final.sha256 if report.final is not None else None
    profiles = []
    for path in inputs.profile_paths:
        data = read_json_object(path, "profile report")
        if data.get("kind") != "profile":
            raise InputError(f"{path} is not an `edgeopt profile` report", "write one with edgeopt profile -o FILE")
        profiles.append(profile_report_from_json(data, str(path)))
    artifacts: dict[Path, ArtifactFacts] = {}
    checks: list[Check] = []
    values: dict[str, dict[str, float]] = {}
    contributors: dict[str, Any] = {}
    baseline_contributors: dict[str, Any] = {}
    warnings: list[str] = []
    for index, budget in enumerate(budgets):
        for name, path in _expand(loaded, index, budget):
            (events or Events()).note(f"checking {budget.label}")
            pipeline = loaded.config.pipeline
            artifact = artifacts.setdefault(path.resolve(), ArtifactFacts(
                path, inputs.targets_dir, input_shapes=dict(pipeline.input_shapes) if pipeline else {},
                dims=dict(pipeline.dims) if pipeline else {}))
            key = budget_key(budget, name)
            facts, all_facts = facts_for(budget, artifact, report if report_sha == artifact.sha256 else None,
                                      inputs.report_path if report is not None else None, profiles)
            values[key] = {m: f.value for m, f in all_facts.items() if f.value is not None}
            base = None
            if inputs.baseline is not None:
                stored = baseline_values(inputs.baseline, budget, key, path)
                if stored is None:
                    warnings.append(f"the baseline has no numbers for {key} (a new budget or file?); its growth "
                                    "is not checked")
                    stored = {}
                base = {}
                for metric, fact in facts.items():
                    # latency / peak memory: like with like (an estimate never grows into a measurement)
                    lookup = f"{metric}@{fact.kind}" if fact.kind else metric
                    if stored.get(lookup) is not None:
                        base[metric] = stored[lookup]
            shown = budget if name == budget.artifact else budget.model_copy(
                update={"name": f"{budget.name or name}" + (f" @ {budget.target}" if budget.target else "")})
            checks += evaluate_budget(shown, facts, base, loaded.budget_line(index))
            contributors[shown.label], baseline_contributors[key] = contributors_of(
                budget, artifact, inputs.baseline.contributors.get(key) if inputs.baseline else None)
    passed, exit_code = verdict(checks)
    result = GateResult(passed=passed, exit_code=exit_code, config=str(loaded.path),
                        report=str(inputs.report_path) if report is not None else None,
                        baseline=inputs.baseline.description if inputs.baseline else None, checks=checks,
                        contributors={label: c for label, c in contributors.items()
                                      if _worth_showing(label, c, checks)},
                        warnings=warnings)
    document = {"kind": BASELINE_KIND, "schema_version": BASELINE_SCHEMA_VERSION, "created_at": utc_now(),
                "report_sha256": report_sha, "values": values, "contributors": baseline_contributors}
    return result, document


def _worth_showing(label: str, contributors: dict[str, Any], checks: list[Check]) -> bool:
    """Contributors explain a failure or a change; a clean, unchanged budget needs none."""
    own = [c for c in checks if c.budget == label]
    return any(c.status != "pass" or (c.delta not in (None, 0) and c.metric in
                                      ("size", "compressed_size", "params", "latency_ms")) for c in own)


