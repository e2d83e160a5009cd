"""The run report: one JSON document per run, under a versioned schema.

Later stages (quantize, profile, gate, tune) add their own stage records and
top-level sections; readers must check ``schema_version`` first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.errors import InputError, first_validation_error
from edgeopt.stages.common.parity import OutputParity, ParityCheck  # noqa: F401 (part of the report schema)
from edgeopt.stages.common.records import StageRecord, utc_now  # noqa: F401 (part of the report schema)
from edgeopt.formats.artifact import ModelArtifact
from edgeopt.fsutil import write_text_atomic

SCHEMA_VERSION = 1


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
