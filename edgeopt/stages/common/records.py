"""A stage's record in the run report: status, its cost (wall time, peak RSS), options, the files it
wrote, parity checks, warnings and its details, a model each stage declares (``StageDetails``) and
registers under its name (``register_details``): a record is read back with its stage's model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, model_validator

from edgeopt.formats.artifact import ModelArtifact
from edgeopt.stages.common.parity import ParityCheck

StageStatus = Literal["ok", "skipped", "fallback", "failed"]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def absent(value: object) -> bool:
    """For ``Field(exclude_if=absent)``: a detail a stage did not set is left out of the report."""
    return value is None


class StageDetails(BaseModel):
    """What one stage reports beyond the common record fields: each stage subclasses it."""

    model_config = ConfigDict(extra="forbid")


class OpenDetails(StageDetails):
    """The details of a stage that registered no model (a user's own stage): any JSON object."""

    model_config = ConfigDict(extra="allow")


_DETAILS: dict[str, type[StageDetails]] = {}
Details = TypeVar("Details", bound=type[StageDetails])


def register_details(stage: str) -> Callable[[Details], Details]:
    """Class decorator: ``stage``'s records hold (and are read back with) this details model."""

    def register(model: Details) -> Details:
        _DETAILS[stage] = model
        return model

    return register


def details_model(stage: str) -> type[StageDetails]:
    return _DETAILS.get(stage, OpenDetails)


def registered_details() -> dict[str, type[StageDetails]]:
    return dict(_DETAILS)


class StageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: StageStatus
    started_at: str
    duration_s: float  # wall time
    # The process's peak resident memory while the stage ran, and how far the stage raised it over where it
    # started (see runtime/rss.py). scope "stage": the high-water mark was reset at the stage's start, so the
    # peak is the stage's own and the increase is peak - resident at the start; "process" (no reset possible):
    # the lifetime peak at the stage's end, and how much the stage raised it. None: not measured (older reports).
    peak_rss_bytes: int | None = None
    peak_rss_increase_bytes: int | None = None
    peak_rss_scope: Literal["stage", "process"] | None = None
    inputs: list[ModelArtifact] = []
    outputs: list[ModelArtifact] = []
    options: dict[str, Any] = {}
    parity: list[ParityCheck] = []
    warnings: list[str] = []
    details: SerializeAsAny[StageDetails] = Field(default_factory=OpenDetails)

    @model_validator(mode="before")
    @classmethod
    def _details_of_the_stage(cls, data: Any) -> Any:
        """Details given as a mapping (a report read back, or a new record) become the stage's model."""
        if isinstance(data, dict) and not isinstance(data.get("details"), StageDetails):
            return {**data, "details": details_model(str(data.get("name"))).model_validate(data.get("details") or {})}
        return data
