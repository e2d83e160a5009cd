"""The run report: one JSON document per run, under a versioned schema.

Version 2 types the summary (``RunSummary``: each part is the model of the stage that produced it);
its JSON is the same as version 1's, so version 1 reports load unchanged (``upgrade``). The JSON
schema is exported from the models (``report_json_schema``) and kept in ``docs/report.schema.json``
(a test checks it is current). Readers go through ``read_report`` / ``report_from_json``.

Optional fields added later within a version keep it (each stage's peak RSS): every earlier version-2
document is still a valid one. The models forbid unknown keys, so an edgeopt older than such a field
refuses a newer report, naming that key, rather than misreading it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from edgeopt.analysis.summary import TensorSpec

from edgeopt.errors import InputError, validated_document
from edgeopt.stages.common.parity import OutputParity, ParityCheck  # noqa: F401 (part of the report schema)
from edgeopt.stages.common.records import StageRecord, registered_details, utc_now  # noqa: F401 (report schema)
from edgeopt.formats.artifact import ModelArtifact
from edgeopt.fsutil import write_text_atomic
from edgeopt.stages import load, opset, simplify, widen  # noqa: F401 (register their details models)
from edgeopt.stages.export import step  # noqa: F401 (registers its details model)
from edgeopt.stages.device import DeviceSummary
from edgeopt.stages.profile import TargetVerdict
from edgeopt.stages.prune.step import PruningSummary
from edgeopt.stages.quantize.step import QuantizationSummary

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


class ParitySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: int
    all_passed: bool
    max_abs_diff: float
    min_cosine: float | None


class RunSummary(BaseModel):
    """The final model in figures, and what each stage decided (``report.summary``)."""

    model_config = ConfigDict(extra="forbid")

    size_bytes: int | None = None
    gzip_size_bytes: int | None = None
    opset: int | None = None
    nodes: int | None = None
    parameter_count: int | None = None
    macs_total: int | None = None
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    quantization: QuantizationSummary = QuantizationSummary()
    targets: dict[str, TargetVerdict] = {}
    pruning: PruningSummary | None = None
    device: DeviceSummary | None = None
    parity: ParitySummary | None = None

    @model_serializer(mode="wrap")
    def _without_absent_sections(self, handler: Any) -> dict[str, Any]:
        """Sections a run did not have are left out, as version 1 wrote them."""
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in ("pruning", "device", "parity")}


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
    summary: RunSummary = RunSummary()
    warnings: list[str] = []

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def write(self, path: Path) -> None:
        write_text_atomic(Path(path), self.to_json())


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A report document of any readable version as the current version (1 -> 2: same JSON, typed)."""
    if raw.get("schema_version") != 1:
        return raw
    raw = {**raw, "schema_version": 2}
    summary = raw.get("summary")
    device = summary.get("device") if isinstance(summary, dict) else None
    if isinstance(device, dict) and not device.get("target"):  # early version-1 reports had no device target
        targets = (raw.get("config") or {}).get("targets") or []
        raw["summary"] = {**summary, "device": {**device, "target": targets[0] if targets else None}}
    return raw


def report_from_json(raw: Any, where: str) -> Report:
    """A parsed report document (``where`` names it in errors), validated as the current version."""
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS:
        raise InputError(
            f"{where} has report schema version {version!r}; this edgeopt reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}", "regenerate the report with this edgeopt version")
    return validated_document(Report, upgrade(raw), where, "report", "regenerate it")


def read_report(path: Path) -> Report:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"report not found: {path}", "run `edgeopt convert` first or fix the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable JSON report: {exc}", "regenerate it") from None
    return report_from_json(raw, str(path))


def report_json_schema() -> dict[str, Any]:
    """The JSON schema of the convert report, from the models (``docs/report.schema.json``). A stage
    record's ``details`` is the model its stage registered (by the record's ``name``; ``x-details-by-stage``)."""
    from pydantic.json_schema import models_json_schema

    schema = Report.model_json_schema(mode="validation")
    # edgeopt's own stages: a stage added at run time (a plugin, a test) is not part of the published schema
    by_stage = {name: model for name, model in sorted(registered_details().items())
                if model.__module__.startswith("edgeopt.")}
    _, details = models_json_schema([(model, "validation") for model in by_stage.values()],
                                    ref_template="#/$defs/{model}")
    schema["$defs"].update(details.get("$defs", {}))
    schema["$defs"]["StageRecord"]["properties"]["details"] = {
        "anyOf": [{"$ref": f"#/$defs/{model.__name__}"} for model in by_stage.values()] + [{"type": "object"}],
        "description": "the details model of the record's stage (an object for a stage that registered none)",
        "x-details-by-stage": {name: model.__name__ for name, model in by_stage.items()}}
    schema["$id"] = f"https://edgeopt.dev/schema/report-v{SCHEMA_VERSION}.json"
    return schema
