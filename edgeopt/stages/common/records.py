"""A stage's record in the run report: status, timing, options, the files it wrote, parity checks,
warnings and details."""

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
    duration_s: float
    inputs: list[ModelArtifact] = []
    outputs: list[ModelArtifact] = []
    options: dict[str, Any] = {}
    parity: list[ParityCheck] = []
    warnings: list[str] = []
    details: dict[str, Any] = {}
