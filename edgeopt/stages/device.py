"""The device stage (``--ssh``): the final model, and its float baseline when int8 ships, measured on the
device, its numbers compared with the estimate for the target the device is an instance of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgeopt.analysis.comparison import EstimateVsMeasurement
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.onnx import load_onnx
from edgeopt.runtime.measure import Measurement, Upload
from edgeopt.stages.common.context import StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, absent, register_details

_FLOAT_STAGES = ("simplify", "prune", "opset", "export", "load")


class DeviceSummary(BaseModel):
    """The final model measured on the --ssh device (the report's summary.device)."""

    model_config = ConfigDict(extra="forbid")

    host: str
    target: str | None = None  # None only in reports of early versions (report.schema.upgrade fills it)
    threads: int = 1
    p50_ms: float
    p90_ms: float | None = None
    peak_rss_increase_bytes: int | None = None
    device: dict[str, Any] = {}  # cpu_model, board, machine, cpu_count as the device reported them
    float_p50_ms: float | None = None  # the float baseline, when int8 shipped
    ratio_to_float: float | None = None


@register_details("device")
class DeviceDetails(StageDetails):
    measurements: dict[str, Measurement] = {}  # "final", and "float_baseline" when int8 shipped
    summary: DeviceSummary | None = Field(None, exclude_if=absent)
    comparisons: list[EstimateVsMeasurement] = []  # per op type, against the device's target estimate


class DeviceStage:
    name = "device"

    def applies(self, context: StageContext) -> bool:
        return context.device is not None

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        from edgeopt.analysis.comparison import compare
        from edgeopt.runtime.measure import map_op_names

        device, settings = context.device, context.config.device
        profile = context.record("profile")
        estimates = getattr(profile.details, "estimates", {}) if profile else {}
        with context.stage("device", f"Profiling on {device.name}") as record:
            record.options = {"ssh": settings.ssh, "runs": settings.runs, "threads": settings.threads}
            models = {"final": context.final_files(model.proto)[0]}
            quantize = context.record("quantize")
            baseline = _float_baseline_path(context) if quantize is not None and \
                getattr(quantize.details, "shipped", None) == "int8" else None
            if baseline is not None:
                models["float_baseline"] = baseline
            feeds = context.plan.sample(context.config.parity.seed, None)
            measurements: dict[str, Measurement] = {}
            for label, path in models.items():
                context.events.scoped("device").note(f"measuring {label}")
                run = device.measure(path, feeds, context.events.scoped("device", device=f"{device.name} ({label})"))
                graph = load_onnx(path, load_external_data=False, check=False).model  # node names only
                map_op_names(run.measurement, [(n.name, n.op_type, list(n.input), list(n.output))
                                               for n in graph.graph.node])
                measurements[label] = run.measurement.model_copy(update={"outputs": None, "ssh": Upload(
                    host=device.name, uploaded_bytes=run.uploaded_bytes, model_cached=run.model_cached)})
            final = measurements["final"]
            target = settings.target or context.config.targets[0]
            summary = DeviceSummary(
                host=settings.ssh, target=target, threads=settings.threads, p50_ms=final.latency_ms.p50,
                p90_ms=final.latency_ms.p90, peak_rss_increase_bytes=final.memory.peak_rss_increase_bytes,
                device={k: final.device.get(k) for k in ("cpu_model", "cpu_cores", "board", "machine", "cpu_count")})
            if "float_baseline" in measurements:
                float_p50 = measurements["float_baseline"].latency_ms.p50
                summary.float_p50_ms = float_p50
                summary.ratio_to_float = final.latency_ms.p50 / float_p50 if float_p50 > 0 else None
            comparisons = []
            for name, estimate in estimates.items():
                if name != target:  # the device is an instance of one target, not of all of them
                    continue
                comparison = compare(estimate, final)
                if comparison is not None:
                    comparisons.append(comparison.model_copy(update={"device": settings.ssh}))
            record.details = DeviceDetails(measurements=measurements, summary=summary, comparisons=comparisons)
            context.facts["device_summary"] = summary
        return model

    def summary(self, final: Any, context: StageContext) -> dict[str, Any]:
        summary = context.facts.get("device_summary")
        return {"device": summary} if summary is not None else {}


def _float_baseline_path(context: StageContext) -> Path | None:
    """The last float graph this run produced (the int8 model was made from it)."""
    for record in reversed(context.records):
        if record.name in _FLOAT_STAGES and record.outputs:
            return Path(record.outputs[-1].path)
    source = context.source
    return Path(source.path) if source is not None and source.format is ModelFormat.ONNX else None
