"""Per-step figures for the pruning report (ONNX-level, so every step is counted the same way)
and the "pruning did not make it faster" flags. No torch needed here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.stages.common.speed_rule import describe_change, describe_ratio, percent

# Less than this fraction faster counts as "not faster": below the noise of host timing and of
# the per-kernel overheads the static estimate adds.
NOT_FASTER_MARGIN = 0.05


class ModelFigures(BaseModel):
    """One row of the report: a model at one step (unpruned, pruned, fine-tuned, quantized)."""

    model_config = ConfigDict(extra="forbid")

    step: str
    params: int
    macs: int
    size_bytes: int
    estimated_latency_ms: dict[str, float | None] = {}  # per requested target (static roofline)
    host_latency_ms: float | None = None  # measured here (interleaved medians, see runtime/latency.py)
    host_latency_ratio: float | None = None  # to the unpruned float model, median of per-round ratios
    accuracy: float | None = None  # with labels: top-1; else None (see fidelity)
    fidelity: float | None = None  # mean cosine to the unpruned model's outputs, when measured


def onnx_figures(step: str, model: onnx.ModelProto, targets: Sequence[Any] = (),
                 input_shapes: Mapping[str, Sequence[int]] | None = None,
                 targets_dir: Path | None = None) -> ModelFigures:
    """Parameters, MACs, serialized size and a static latency estimate per ``TargetProfile``
    (an accelerator's unsupported nodes priced on its host CPU, as `profile` does)."""
    from edgeopt.analysis.profile import static_profile
    from edgeopt.analysis.summary import summarize_graph
    from edgeopt.targets import host_cpu_of

    present = {value.name for value in model.graph.input}  # simplification may drop unused inputs
    input_shapes = {name: dims for name, dims in (input_shapes or {}).items() if name in present}
    summary = summarize_graph(model, input_shapes)
    estimates: dict[str, float | None] = {}
    for target in targets:
        estimates[target.name] = static_profile(model, target, input_shapes,
                                                cpu_target=host_cpu_of(target, targets_dir)).latency_ms
    return ModelFigures(step=step, params=summary.parameter_count, macs=summary.macs_total,
                        size_bytes=model.ByteSize(), estimated_latency_ms=estimates)


def flag_not_faster(before: ModelFigures, after: ModelFigures, *, margin: float = NOT_FASTER_MARGIN) -> list[str]:
    """Warnings for every target (and the host) where ``after`` is not at least ``margin`` faster."""
    flags = []
    for target, old in before.estimated_latency_ms.items():
        new = after.estimated_latency_ms.get(target)
        if old and new is not None and new > old * (1 - margin):
            flags.append(f"{after.step}: not {percent(margin)} faster on {target} (estimated {old:.3f} → {new:.3f} "
                         f"ms, {describe_change(new / old)}): the removed channels do not shorten the kernels' "
                         "critical path there")
    if after.host_latency_ratio is not None:
        ratio = after.host_latency_ratio
    elif before.host_latency_ms and after.host_latency_ms is not None:
        ratio = after.host_latency_ms / before.host_latency_ms
    else:
        ratio = None
    if ratio is not None and ratio > 1 - margin:
        flags.append(f"{after.step}: not {percent(margin)} faster on this host (measured "
                     f"{describe_ratio(ratio, 'the unpruned model')})")
    return flags
