"""The run report: one JSON document per run, under a versioned schema.

Later stages (quantize, profile, gate, tune) add their own stage records and
top-level sections; readers must check ``schema_version`` first.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.artifact import ModelArtifact
from edgeopt.errors import InputError, first_validation_error
from edgeopt.fsutil import write_text_atomic

SCHEMA_VERSION = 1


class OutputParity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    max_abs_diff: float
    max_rel_diff: float
    cosine: float | None  # None when both outputs are all zeros or non-float
    exact: bool  # integer/bool outputs must match exactly
    passed: bool


class ParityCheck(BaseModel):
    """A produced graph compared with its source on the same inputs."""

    model_config = ConfigDict(extra="forbid")

    candidate: str  # path of the graph checked
    reference: str  # what it was compared with ("torch source", a path, ...)
    samples: int
    atol: float
    rtol: float
    min_cosine: float
    batch_sizes: list[int]
    outputs: list[OutputParity]
    passed: bool


class StageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: Literal["ok", "skipped", "fallback", "failed"]
    started_at: str
    duration_s: float
    inputs: list[ModelArtifact] = []
    outputs: list[ModelArtifact] = []
    options: dict[str, Any] = {}
    parity: list[ParityCheck] = []
    warnings: list[str] = []
    details: dict[str, Any] = {}


class Report(BaseModel):
    """Everything a later ``gate`` or ``report`` needs about one run."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    kind: str = "convert"
    created_at: str = Field(default_factory=lambda: utc_now())
    edgeopt_version: str
    tool_versions: dict[str, str] = {}
    command: list[str] = []
    config: dict[str, Any] = {}
    source: ModelArtifact | None = None
    stages: list[StageRecord] = []
    final: ModelArtifact | None = None
    summary: dict[str, Any] = {}
    warnings: list[str] = []

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def write(self, path: Path) -> None:
        write_text_atomic(Path(path), self.to_json())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_report(path: Path) -> Report:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"report not found: {path}", "run `edgeopt convert` first or fix the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable JSON report: {exc}", "regenerate it") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{path} has report schema version {version!r}; this edgeopt reads version {SCHEMA_VERSION}",
            "regenerate the report with this edgeopt version",
        )
    try:
        return Report.model_validate(raw)
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        raise InputError(f"{path}: invalid report at {where}: {message}", "regenerate it") from None
