"""Baselines for growth budgets: a previous convert report, a baseline file written by
``--update-baseline``, or that file at a git ref (read with ``git show``, never through a shell)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.config.project import LoadedConfig
from edgeopt.config.settings import Budget
from edgeopt.errors import InputError
from edgeopt.gate.facts import read_json_object, report_facts
from edgeopt.report.schema import Report, report_from_json

BASELINE_KIND = "edgeopt-gate-baseline"
BASELINE_SCHEMA_VERSION = 1


# -- baselines ----------------------------------------------------------------------------------------

@dataclass
class Baseline:
    description: str
    values: dict[str, dict[str, float]]  # budget key → metric → value
    contributors: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: Report | None = None  # when the baseline is a convert report


def budget_key(budget: Budget, artifact: str) -> str:
    return f"{artifact}@{budget.target or ''}"


def load_baseline(spec: str, loaded: LoadedConfig) -> Baseline:
    """A file (a convert report.json or a baseline file), or a git ref holding the baseline file."""
    path = Path(spec)
    if path.is_file():
        return _baseline_from_data(read_json_object(path, "baseline"), str(path))
    beside_config = loaded.resolve(spec)
    if beside_config.is_file():  # a path written in the config file is relative to it
        return _baseline_from_data(read_json_object(beside_config, "baseline"), str(beside_config))
    if not _looks_like_ref(spec):
        raise InputError(f"baseline {spec!r} is neither a file nor a git ref", "pass a report.json, a baseline "
                                                                               "file, or a ref like main / HEAD~1")
    return _baseline_from_git(spec, loaded)


def _looks_like_ref(spec: str) -> bool:
    return bool(spec) and not spec.startswith("-") and all(c.isprintable() and not c.isspace() for c in spec)


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
    except FileNotFoundError:
        raise InputError("git is not installed, so a baseline ref cannot be read", "pass a baseline file") from None


def _baseline_from_git(ref: str, loaded: LoadedConfig) -> Baseline:
    folder = loaded.folder
    baseline_file = loaded.resolve(loaded.config.gate.baseline_file)
    top = _git(["rev-parse", "--show-toplevel"], folder)
    if top.returncode != 0:
        raise InputError(f"baseline {ref!r} is not a file, and {folder} is not in a git repository",
                         "pass a baseline file, or run inside the repository")
    root = Path(top.stdout.decode().strip())
    commit = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], folder)
    if commit.returncode != 0:
        raise InputError(f"baseline {ref!r} is not a file nor a git ref here", "check the ref (git log), or fetch it "
                                                                               "(CI checkouts are often shallow)")
    sha = commit.stdout.decode().strip()
    try:
        relative = baseline_file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise InputError(f"the baseline file {baseline_file} is outside the repository {root}",
                         "set [gate] baseline_file to a path inside it") from None
    shown = _git(["show", f"{sha}:{relative}"], folder)
    if shown.returncode != 0:
        raise InputError(f"{relative} does not exist at {ref} ({sha[:12]})",
                         "commit a baseline first: edgeopt gate --update-baseline, then git add it")
    try:
        data = json.loads(shown.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{relative} at {ref} is not valid JSON: {exc}", "recreate it with --update-baseline") from None
    return _baseline_from_data(data, f"{relative} at {ref} ({sha[:12]})")


def _baseline_from_data(data: Any, description: str) -> Baseline:
    if isinstance(data, dict) and data.get("kind") == BASELINE_KIND:
        if data.get("schema_version") != BASELINE_SCHEMA_VERSION:
            raise InputError(f"{description}: baseline schema version {data.get('schema_version')!r}, expected "
                             f"{BASELINE_SCHEMA_VERSION}", "recreate it with edgeopt gate --update-baseline")
        return Baseline(description, data.get("values", {}), data.get("contributors", {}))
    if isinstance(data, dict) and data.get("kind") == "convert":
        return Baseline(description, {}, {}, report=report_from_json(data, description))
    raise InputError(f"{description} is neither a convert report nor an edgeopt baseline file",
                     "pass OUT/report.json of an earlier run, or a file written by --update-baseline")


def baseline_values(baseline: Baseline, budget: Budget, key: str, path: Path) -> dict[str, float] | None:
    """The baseline's numbers for one budget and file: a baseline file's entry, or what a convert
    report says about its final model when this file is that model (same file name)."""
    if baseline.report is None:
        return baseline.values.get(key)
    final = baseline.report.final
    if final is None or Path(final.path).name != path.name:
        return None
    return {m: f.value for m, f in report_facts(baseline.report, budget).items() if f.value is not None}


