"""A static estimate against a measurement of the same model: in total and per op type (measured
kernels mapped back to the graph's nodes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgeopt.analysis.profile import StaticProfile
from edgeopt.runtime.measure import Measurement


# onnxruntime's NCHWc reorders have no node in the model: estimated and measured, they share one row
LAYOUT_COPY = "ReorderInput/ReorderOutput"
_LAYOUT_COPIES = frozenset({"ReorderInput", "ReorderOutput"})


class OpTypeComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    estimated_ms: float
    measured_ms: float
    ratio: float | None  # estimated / measured


class EstimateVsMeasurement(BaseModel):
    """Per op type and in total, for one target against one measurement."""

    model_config = ConfigDict(extra="forbid")

    target: str
    threads: int
    device: str = "host"
    total: OpTypeComparison
    by_op_type: dict[str, OpTypeComparison]


def compare(estimate: StaticProfile, measurement: Measurement) -> EstimateVsMeasurement | None:
    """Estimated vs measured time per op type, where both exist."""
    if estimate.latency_ms is None:
        return None
    op_of = {n.name: n.op_type for n in estimate.nodes}
    estimated: dict[str, float] = {}
    for node in estimate.nodes:
        if node.time_us:
            own = node.time_us - node.layout_copy_us - (node.overhead_us if node.layout_copy_us else 0.0)
            estimated[node.op_type] = estimated.get(node.op_type, 0.0) + own / 1000
        if node.layout_copy_us:
            estimated[LAYOUT_COPY] = (estimated.get(LAYOUT_COPY, 0.0)
                                      + (node.layout_copy_us + node.overhead_us) / 1000)
    measured: dict[str, float] = {}
    for op in measurement.per_op or []:
        op_type = next((op_of[n] for n in op.source_nodes if n in op_of), op.op_type or "?")
        if op_type in _LAYOUT_COPIES:
            op_type = LAYOUT_COPY
        per_run_us = op.median_us if op.median_us is not None else op.total_us / max(1, op.calls)
        measured[op_type] = measured.get(op_type, 0.0) + per_run_us / 1000
    by_op = {}
    for op_type in sorted(set(estimated) | set(measured)):
        est, meas = estimated.get(op_type, 0.0), measured.get(op_type, 0.0)
        by_op[op_type] = OpTypeComparison(estimated_ms=est, measured_ms=meas, ratio=est / meas if meas > 0 else None)
    total_measured = measurement.latency_ms.p50
    total = OpTypeComparison(estimated_ms=estimate.latency_ms, measured_ms=total_measured,
                             ratio=estimate.latency_ms / total_measured if total_measured > 0 else None)
    return EstimateVsMeasurement(target=estimate.target, threads=measurement.threads, total=total,
                                 by_op_type=by_op)
