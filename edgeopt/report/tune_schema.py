"""`OUT/tune.json` as a typed document (written by edgeopt.tune.run), for the HTML report's tuning section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TUNE_SCHEMA_VERSION = 1


class TuneTrial(BaseModel):
    model_config = ConfigDict(extra="ignore")

    number: int
    state: str  # complete | fail | running | waiting
    params: dict[str, Any] = {}
    values: dict[str, float | None] | None = None
    constraints: list[float] = []
    checks: list[str] = []
    feasible: bool = False
    error: str | None = None
    shipped: str | None = None
    same_as: int | None = None


class TuneDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["tune"]
    schema_version: Literal[1]
    study: str
    sampler: str
    seed: int
    objectives: list[str]
    space: dict[str, Any]
    budgets: list[str] = []
    trials: list[TuneTrial]
    front: list[int] = []
    winner: dict[str, Any] | None = None
    nearest_miss: dict[str, Any] | None = None
    float_models: dict[str, int] = {}
    stopped_by: str = ""
