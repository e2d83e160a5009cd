"""The profile report (``edgeopt profile -o``, ``--json``): estimates per target, measurements here and on
devices, estimate vs measurement, and each device's outputs against this machine's. Versioned; the HTML page
and the gate read it through these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgeopt import __version__
from edgeopt.analysis.comparison import EstimateVsMeasurement
from edgeopt.analysis.profile import StaticProfile
from edgeopt.data.samples import InputsSummary
from edgeopt.errors import InputError, validated_document
from edgeopt.formats.artifact import ModelArtifact
from edgeopt.runtime.measure import Measurement
from edgeopt.stages.common.records import absent, utc_now
from edgeopt.metrics.fidelity import OutputFidelity

PROFILE_SCHEMA_VERSION = 1


class DeviceOutputs(BaseModel):
    """A device's outputs against this machine's on the same samples (--inputs)."""

    model_config = ConfigDict(extra="forbid")

    samples: int
    outputs: list[OutputFidelity] = []
    worst_cosine: float | None = None  # worst per-output agreement (exact agreement, else cosine)
    skipped: str | None = Field(None, exclude_if=absent)  # why they were not compared

    @property
    def worst_output(self) -> OutputFidelity | None:
        return min(self.outputs, key=lambda o: o.cosine_mean, default=None)


class InputsUsed(BaseModel):
    """The samples the measurements ran on."""

    model_config = ConfigDict(extra="forbid")

    source: str
    samples_used: int
    sha256: str | None = Field(None, exclude_if=absent)
    samples_available: int | None = Field(None, exclude_if=absent)
    layouts: dict[str, str] | None = Field(None, exclude_if=absent)


class ProfileReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = PROFILE_SCHEMA_VERSION
    kind: str = "profile"
    created_at: str = Field(default_factory=utc_now)
    edgeopt_version: str = __version__
    model: ModelArtifact
    input_shapes: dict[str, list[int]] = {}
    estimates: dict[str, StaticProfile] = {}
    measurements: dict[str, list[Measurement]] = {}  # "host", and each device's name
    comparisons: list[EstimateVsMeasurement] = []
    # --inputs: each device's outputs compared with this machine's on the same samples
    device_fidelity: dict[str, DeviceOutputs] = {}
    inputs: InputsUsed | None = None  # where the measured inputs came from (--inputs, or random)
    resolved_inputs: InputsSummary | None = None  # shapes with each dim's source, fills, state pairs
    warnings: list[str] = []


def profile_report_from_json(raw: Any, where: str) -> ProfileReport:
    """A parsed profile report document (``where`` names it in errors), validated."""
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != PROFILE_SCHEMA_VERSION:
        raise InputError(f"{where} has profile report schema version {version!r}; this edgeopt reads version "
                         f"{PROFILE_SCHEMA_VERSION}", "regenerate it with this edgeopt version (edgeopt profile -o)")
    return validated_document(ProfileReport, raw, where, "profile report", "regenerate it")
