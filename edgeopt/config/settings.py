"""Run settings as data: what the CLI builds from flags and the pipeline consumes.

Unknown keys are rejected so a typo never silently disables a setting. The project
file (edgeopt.toml or [tool.edgeopt] in pyproject.toml) is validated by ``ProjectConfig``;
``config.project`` finds and reads it and turns errors into file:line messages.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    # Where latency is measured (host, --ssh): keep the layers whose int8 kernels are slower in float.
    speed_fallback: bool = True
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
    target: str | None = None  # the target profile this device is an instance of (default: the first target)
    python: str = "python3"
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    cache_dir: str = "~/.cache/edgeopt"
    runs: int = Field(50, ge=1)
    threads: int = Field(1, ge=1)


# -- pruning and fine-tuning (edgeopt.stages.prune applies them) --------------------------------------

Criterion = Literal["magnitude", "taylor", "bn_scale"]
Scope = Literal["global", "per_layer"]

class PruneConfig(BaseModel):
    """What to prune and how. ``ratio`` is the fraction of output channels removed from each
    prunable layer (per_layer) or across all of them ranked together (global)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float
    criterion: Criterion = "magnitude"
    scope: Scope = "per_layer"
    # Module names (as in named_modules()); None: the layers producing the model's outputs.
    ignored_layers: list[str] | None = None
    steps: int = Field(1, ge=1, le=100)
    # Kept channels are rounded to a multiple of this; None: no rounding.
    channel_multiple: int | None = Field(None, ge=1, le=1024)
    # ONNX inputs that cannot be converted to torch: continue unpruned (True) or refuse (False).
    allow_unprunable: bool = False
    # In global scope, no layer loses more than this fraction (a layer emptied breaks the model).
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)
    # Attention with separate q/k/v projections: remove whole heads ("whole"; "auto" does so where
    # such modules exist) or narrow every head ("dims"). See edgeopt/stages/prune/attention.py.
    heads: Literal["auto", "whole", "dims"] = "auto"

    @field_validator("ratio")
    @classmethod
    def _ratio_in_range(cls, value: float) -> float:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < 1):
            raise ValueError(f"the pruning ratio must be between 0 and 1 (exclusive), got {value!r}")
        return float(value)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(10, ge=1, le=10000)
    lr: float = Field(1e-3, gt=0, lt=10)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)  # L2 strength (Adam's weight decay)
    l1: float = Field(0.0, ge=0)  # L1 strength on Conv/Linear weights
    patience: int = Field(3, ge=1)  # epochs without a better validation loss before stopping
    min_delta: float = Field(0.0, ge=0)  # improvement smaller than this does not count
    batch_size: int = Field(32, ge=1)
    distill_weight: float = Field(0.0, ge=0, le=1)  # 0: no distillation; 1: teacher only
    temperature: float = Field(4.0, gt=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1)  # torch intra-op threads while training; None: leave as is

    @model_validator(mode="after")
    def _finite(self) -> FinetuneConfig:
        for name in ("lr", "weight_decay", "l1", "temperature", "min_delta"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        return self


class FinetuneSettings(FinetuneConfig):
    """Fine-tuning after pruning: the training settings plus where the data comes from."""

    data: str  # .npz with inputs and labels, or a hook pkg.mod:fn / file.py:fn returning loaders
    val: str | None = None  # a separate validation .npz; default: val_fraction of data held out
    val_fraction: float = Field(0.2, gt=0, lt=1)

    def training(self) -> FinetuneConfig:
        return FinetuneConfig(**self.model_dump(exclude={"data", "val", "val_fraction"}))


class ConvertConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    output_dir: str
    input_shapes: dict[str, list[int]] = {}  # "" key: the only input
    input_dtypes: dict[str, str] = {}
    dims: dict[str, int] = {}  # sizes of named symbolic dims (--dim seq=128)
    fills: dict[str, str | int | float] = {}  # inputs the data lacks: zeros | ones | a number (--fill)
    state_pairs: dict[str, str] = {}  # a stream: output -> the input it feeds on the next call
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
    prune: PruneConfig | None = None
    finetune: FinetuneSettings | None = None


# ---------------------------------------------------------------------------------------------
# The project file: edgeopt.toml, or [tool.edgeopt] in pyproject.toml (loaded by config/project.py)

def _whole_limit(value: object, key: str, kind: str) -> int:
    """A positive size ("4 MiB", bytes) or count ("1.2M", MACs, parameters), parsed exactly (units.py)."""
    from edgeopt.errors import InputError
    from edgeopt.units import parse_bytes, parse_count

    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or \
            (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{key} must be a size like \"4 MiB\" or a number of bytes" if kind == "size"
                         else f"{key} must be a number")
    try:
        number = (parse_bytes if kind == "size" else parse_count)(value)
    except InputError as exc:
        raise ValueError(f"{exc.message}: {exc.hint}") from None
    if number <= 0:
        raise ValueError(f"{key} must be positive")
    return number


def _fraction(value: object, key: str, *, points: bool) -> float:
    """0.98 or "98%" (accuracy); "1pt" / "1%" or 0.01 (accuracy points). A bare number is a
    fraction, so it must be below 1 for a drop (1 would allow losing everything)."""
    import re

    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number")
    if isinstance(value, (int, float)):
        number = float(value)
        if points and number >= 1:
            raise ValueError(f"{key} = {value!r} would allow a drop of {number * 100:g} points; "
                             f"write \"{value}pt\" for {value} points, or a fraction like 0.01")
    else:
        units = r"%|pt|pts|points" if points else r"%"
        match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*({units})\s*", str(value).lower())
        if not match:
            example = "\"1pt\" or 0.01" if points else "0.98 or \"98%\""
            raise ValueError(f"{key}: bad value {value!r} (use {example})")
        number = float(match.group(1)) / 100
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise ValueError(f"{key} must be between 0 and 1 (or 0% and 100%), got {value!r}")
    return number


def _growth(value: object, key: str) -> float:
    """"+5%" → 0.05. Only percentages: a bare 5 could mean +5% or +500%."""
    import re

    match = re.fullmatch(r"\s*\+?\s*(\d+(?:\.\d+)?)\s*%\s*", value) if isinstance(value, str) else None
    if match is None:
        if isinstance(value, str) and value.strip().startswith("-"):
            raise ValueError(f"{key} cannot be negative (it is the growth allowed over the baseline)")
        raise ValueError(f"{key}: bad growth {value!r} (use a percentage string like \"+5%\")")
    return float(match.group(1)) / 100


# Metrics a budget can limit: name → (unit, lower is better).
GROWTH_METRICS = ("size", "compressed_size", "params", "macs", "latency_ms", "peak_memory")


class Budget(BaseModel):
    """One ``[[budgets]]`` entry: an artifact (path or glob), optionally a target, and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: str
    target: str | None = None
    name: str | None = None  # a label for tables; default "artifact @ target"
    source: Literal["any", "estimated", "measured"] = "any"  # where latency / peak memory come from
    max_size: int | None = None
    max_compressed_size: int | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = Field(None, gt=0)
    max_peak_memory: int | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    min_fidelity: float | None = Field(None, ge=-1, le=1)
    max_growth: dict[str, float] | None = None  # metric → allowed growth over the baseline (0.05 = +5%)

    @field_validator("max_size", "max_compressed_size", "max_peak_memory", mode="before")
    @classmethod
    def _sizes(cls, value: object, info: Any) -> int | None:
        return None if value is None else _whole_limit(value, info.field_name, "size")

    @field_validator("max_params", "max_macs", mode="before")
    @classmethod
    def _counts(cls, value: object, info: Any) -> int | None:
        return None if value is None else _whole_limit(value, info.field_name, "count")

    @field_validator("min_accuracy", mode="before")
    @classmethod
    def _accuracy(cls, value: object) -> float | None:
        return None if value is None else _fraction(value, "min_accuracy", points=False)

    @field_validator("max_accuracy_drop", mode="before")
    @classmethod
    def _drop(cls, value: object) -> float | None:
        return None if value is None else _fraction(value, "max_accuracy_drop", points=True)

    @field_validator("max_growth", mode="before")
    @classmethod
    def _growths(cls, value: object) -> dict[str, float] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(GROWTH_METRICS))
            if unknown:
                raise ValueError(f"max_growth names unknown metric(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(GROWTH_METRICS)}")
            return {metric: _growth(v, f"max_growth.{metric}") for metric, v in value.items()}
        return {"*": _growth(value, "max_growth")}

    @model_validator(mode="after")
    def _consistent(self) -> "Budget":
        limits = [name for name in type(self).model_fields if name.startswith(("max_", "min_")) and
                  getattr(self, name) is not None]
        if not limits:
            raise ValueError("this budget sets no limit (max_size, max_latency_ms, min_accuracy, ...)")
        if self.source != "any" and self.max_latency_ms is None and self.max_peak_memory is None:
            raise ValueError("source applies to max_latency_ms / max_peak_memory, and neither is set")
        if (self.max_latency_ms is not None or self.max_peak_memory is not None) and self.target is None:
            raise ValueError("max_latency_ms and max_peak_memory need a target (e.g. target = \"rpi4b\")")
        if self.max_size is not None and self.max_compressed_size is not None and \
                self.max_compressed_size > self.max_size * 1.01 + 1024:
            raise ValueError(f"max_compressed_size ({self.max_compressed_size} B) is larger than max_size "
                             f"({self.max_size} B): gzip never grows a model that much; one of them is a typo")
        if self.min_accuracy is not None and self.min_accuracy == 0:
            raise ValueError("min_accuracy = 0 limits nothing")
        return self

    @property
    def label(self) -> str:
        return self.name or (f"{self.artifact} @ {self.target}" if self.target else self.artifact)


class PipelineFile(BaseModel):
    """``[pipeline]``: the convert run, as flags would give it (paths relative to the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    output: str = "out"
    weights: str | None = None
    trust_pickle: bool = False
    input_shape: str | list[int] | None = None  # the only input
    input_shapes: dict[str, str | list[int]] = {}
    input_dtypes: dict[str, str] = {}
    dims: dict[str, int] = {}
    fills: dict[str, str | int | float] = {}
    state_pairs: dict[str, str] = {}
    opset: int | None = None
    dynamic_batch: bool = True
    simplify: bool = True
    keep_failed: bool = False
    targets: list[str] = Field(default_factory=lambda: ["host"], min_length=1)
    targets_dir: str | None = None
    quantize: QuantizeConfig = QuantizeConfig()
    parity: ParityConfig = ParityConfig()
    device: DeviceConfig | None = None
    prune: PruneConfig | None = None
    finetune: FinetuneSettings | None = None


class GateSettings(BaseModel):
    """``[gate]``: where `edgeopt gate` finds the run's report and the committed baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    report: str | None = None  # default: <pipeline.output>/report.json, else out/report.json
    baseline: str | None = None  # default for --baseline: a report/baseline file or a git ref (e.g. "main")
    baseline_file: str = "edgeopt-baseline.json"  # written by --update-baseline; read from a git ref
    profile_reports: list[str] = []  # `edgeopt profile -o` files with measurements to use


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: PipelineFile | None = None
    gate: GateSettings = GateSettings()
    budgets: list[Budget] = []
