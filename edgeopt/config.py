"""Run settings as data: what the CLI builds from flags and the pipeline consumes.

Unknown keys are rejected so a typo never silently disables a setting. (The
edgeopt.toml / [tool.edgeopt] file loader arrives with budgets; it fills these same
models.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ParityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(3, ge=1, le=100)
    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)
    min_cosine: float = Field(0.9999, ge=-1, le=1)
    seed: int = 0


class ConvertConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    output_dir: str
    input_shapes: dict[str, list[int]] = {}  # "" key: the only input
    input_dtypes: dict[str, str] = {}
    opset: int | None = None
    dynamic_batch: bool = True
    simplify: bool = True
    weights: str | None = None
    trust_pickle: bool = False
    keep_failed: bool = False
    parity: ParityConfig = ParityConfig()
