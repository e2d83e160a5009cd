"""What the int8 search is asked (QuantizeOptions) and what it records (one Candidate per recipe tried, the
QuantizeOutcome that ships one of them or the float model): the quantize stage's report details."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgeopt.metrics.fidelity import Fidelity
from edgeopt.runtime.latency import LatencyStats
from edgeopt.stages.quantize.mixed_precision import MixedPrecisionStep, RevertEffect
from edgeopt.stages.quantize.prepare.coverage import QuantCoverage
from edgeopt.stages.quantize.recipes import QuantizeMode, Recipe
from edgeopt.stages.quantize.speed_fallback import SpeedTrial


class QuantizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: QuantizeMode = "auto"
    min_cosine: float | None = None  # None: DEFAULT_MIN_COSINE where no task metric judges (Fidelity.meets)
    min_top1: float | None = None
    overrides: dict[str, Any] = {}
    force_int8: bool = False
    min_speedup: float = 0.05  # int8 ships where timed only when at least this much faster (speed_rule.py)
    measure_latency: bool = True
    threads: int = 1
    latency_budget_s: float = 8.0
    # {output or "*": metric spec} (metrics.py); unset outputs get the default for their shape.
    metrics: dict[str, str] = {}
    # Try SmoothQuant / cross-layer equalization / bias correction (kept only where the task metric gains).
    techniques: bool = True
    # Wall-time budget for ranking and reverting groups (mixed precision), for the whole search, and for
    # the search up to the end of mixed precision (timing comes after): mixed precision gets what is left.
    mixed_precision_budget_s: float = 180.0
    search_budget_s: float = 240.0
    # Where latency is measured: keep in float the layers whose int8 kernels are slower.
    speed_fallback: bool = True
    # Quantizer groups kept in float in every candidate by the SQNR ranking, whatever the floor says.
    keep_float: int = 0


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    recipe: Recipe
    reason: str
    status: Literal["ok", "below-floor", "rejected"] = "ok"
    rejection: str | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    quantized_nodes: int | None = None
    quantizable_nodes: int | None = None
    # HardSwish/HardSigmoid the int8 model runs on int8 kernels (hard_activations.py; onnxruntime has none)
    int8_activations: list[str] = []
    float_nodes: list[str] = []
    kept_float_by_setting: list[str] = []  # --keep-float's groups (also in float_nodes)
    mixed_precision: list[MixedPrecisionStep] = []
    mixed_precision_ranking: list[RevertEffect] = []
    mixed_precision_stop: str | None = None  # why reverting stopped
    speed_fallback: list[SpeedTrial] = []
    speed_fallback_suspects: list[str] = []  # layers its profile found slower in int8, worst first
    fidelity: Fidelity | None = None
    latency: LatencyStats | None = None
    latency_ratio: float | None = None

    def cover(self, coverage: QuantCoverage) -> None:
        """Record what ``coverage`` counted of this candidate's int8 model."""
        self.quantized_nodes, self.quantizable_nodes = coverage.quantized, coverage.total
        self.int8_activations = list(coverage.int8_activations)


class QuantizeOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str
    target: str
    chosen: str | None = None  # candidate name, None when the float model ships
    shipped: Literal["int8", "float"] = "float"
    reason: str = ""
    candidates: list[Candidate] = []
    float_latency: LatencyStats | None = None
    latency_measured_on: str | None = None  # "host", a device's name, or None (not timed)
    speed_fallback_profiled_on: str | None = None  # where the per-node ranking was profiled
    float_size_bytes: int = 0
    floor: dict[str, float | None] = {}
    # Which metric judged each output, its floor, and why it was chosen.
    metrics: list[dict[str, Any]] = []
    prepare: dict[str, Any] = {}
    warnings: list[str] = []
