"""A stage's record in the run report: status, its cost (wall time, peak RSS), options, the files it
wrote, parity checks, warnings and details."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgeopt.formats.artifact import ModelArtifact
from edgeopt.stages.common.parity import ParityCheck

StageStatus = Literal["ok", "skipped", "fallback", "failed"]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    details: dict[str, Any] = {}
