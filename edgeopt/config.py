"""Run settings as data: what the CLI builds from flags and the pipeline consumes.

Unknown keys are rejected so a typo never silently disables a setting. (The
edgeopt.toml / [tool.edgeopt] file loader arrives with budgets; it fills these same
models.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ParityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(3, ge=1, le=100)
    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)
    min_cosine: float = Field(0.9999, ge=-1, le=1)
    seed: int = 0


class QuantizeConfig(BaseModel):
    """int8 quantization settings; None fields mean "the target decides"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "static", "dynamic", "weights-only", "none"] = "auto"
    calib: str | None = None
    eval: str | None = None
    calib_preprocess: str | None = None  # image folders: size=224x224,mean=...,std=...,layout=NCHW,order=RGB
    max_calib_samples: int | None = Field(None, ge=1)
    allow_random_calibration: bool = False
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    min_cosine: float = Field(0.99, ge=-1, le=1)
    min_top1: float | None = Field(None, ge=0, le=1)
    force_int8: bool = False
    activation_type: Literal["u8", "s8"] | None = None
    weight_type: Literal["s8", "u8"] | None = None
    per_channel: bool | None = None
    calibration_method: Literal["minmax", "entropy", "percentile"] | None = None
    format: Literal["qdq", "qoperator"] | None = None
    threads: int = Field(1, ge=1)


class DeviceConfig(BaseModel):
    """A device reached over SSH: it profiles the final model and decides whether int8 is faster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssh: str  # ~/.ssh/config alias, user@host or user@host:port
    python: str = "python3"
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    cache_dir: str = "~/.cache/edgeopt"
    runs: int = Field(50, ge=1)
    threads: int = Field(1, ge=1)


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
    # The first target picks the quantization recipe; every target gets a static profile.
    targets: list[str] = Field(default_factory=lambda: ["host"], min_length=1)
    targets_dir: str | None = None
    quantize: QuantizeConfig = QuantizeConfig()
    device: DeviceConfig | None = None
