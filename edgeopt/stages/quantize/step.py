"""The quantize stage as the pipeline runs it: the int8 search (search.py) over the calibration and
evaluation data the load stage read, timed on this machine or on the ``--ssh`` device."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeopt.data.dataset import QuantizationData
from edgeopt.stages.common.context import StageContext, StageModel, graph_input_shapes
from edgeopt.stages.common.records import StageDetails, absent, register_details
from edgeopt.stages.quantize.budget import MemoryBudget
from edgeopt.stages.quantize.calibration import BatchStream
from edgeopt.stages.quantize.recipes import recipe_target_of_device
from edgeopt.stages.quantize.outcome import Candidate, QuantizeOutcome


@register_details("quantize")
class QuantizeDetails(QuantizeOutcome, StageDetails):
    """The search's outcome (every candidate tried, what shipped and why), the data it ran on and the memory
    it expected (``memory``: the calibration batch chosen against --max-memory)."""

    mode: str = ""  # (set by the search; empty only in the record of a stage that failed before it)
    target: str = ""
    data: QuantizationData | None = Field(None, exclude_if=absent)
    memory: MemoryBudget | None = Field(None, exclude_if=absent)

    @property
    def chosen_candidate(self) -> Candidate | None:
        return next((c for c in self.candidates if c.name == self.chosen), None)


class QuantizationSummary(BaseModel):
    """What shipped and why, with the figures the decision rested on (the report's summary.quantization)."""

    model_config = ConfigDict(extra="forbid")

    shipped: Literal["int8", "float"] | None = "float"
    reason: str | None = None
    recipe: str | None = None
    # the figure the floor was held against: per-sample and worst-channel cosine
    worst_cosine: float | None = None
    # the task metric that decided: "output 'probs': iou 0.9712 (floor 0.95)"
    decided_by: str | None = None
    accuracy_float: float | None = None
    accuracy_int8: float | None = None
    latency_ratio: float | None = None
    # the medians the ratio came from, and where they were measured ("host", or the --ssh device)
    int8_ms: float | None = None
    float_ms: float | None = None
    latency_measured_on: str | None = None
    latency_threads: int | None = None  # the intra-op threads they were measured at
    evaluated_samples: int | None = None  # the evaluation samples fidelity was judged on
    size_ratio: float | None = None
    float_nodes: list[str] = []
    float_for_speed: list[str] = []  # of those, kept in float because their int8 kernels were slower (measured)


def _calibration_feeds(calibration: Any, batch: int, model: Any, state_pairs: dict[str, str]) -> Iterator[dict]:
    """The calibration feeds; a stream's carry the states the float model itself passes from call to call."""
    if not state_pairs:
        yield from calibration.batches(batch)
        return
    from edgeopt.data import run_stream
    from edgeopt.runtime.runner import open_runner

    runner = open_runner(model.SerializeToString(), label="the float model")
    stream = run_stream(runner.run, calibration.batches(batch), state_pairs)
    while (ran := next(stream, None)) is not None:
        fed = ran[0]
        del ran
        yield fed
        del fed  # (no batch held here while the next is read)


class QuantizeStage:
    name = "quantize"

    def applies(self, context: StageContext) -> bool:
        # exporting only: quantization starts when calibration data is given
        return context.config.quantize.mode != "none" and context.facts.get("quantization_data") is not None

    def cache_key(self, context: StageContext) -> dict:
        """Settings, target, data (by content) and where latency is measured decide the result."""
        from edgeopt.targets import load_target

        calibration, evaluation, _details, _warnings = context.facts["quantization_data"]
        target = load_target(context.config.targets[0], context.targets_dir())
        return {"quantize": context.config.quantize.model_dump(mode="json", exclude={"calib", "eval"}),
                "target": target.model_dump(mode="json", exclude={"origin"}),
                "calibration": calibration.sha256 if calibration is not None else None,
                "evaluation": evaluation.sha256, "state_pairs": context.plan.state_pairs,
                "device": context.device.name if context.device else None}

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        from edgeopt.stages.quantize.budget import plan_calibration_batch
        from edgeopt.stages.quantize.search import QuantizeOptions, search
        from edgeopt.targets import load_target

        settings = context.config.quantize
        current = model.proto
        with context.stage("quantize", "Quantizing to int8") as record:
            target = load_target(context.config.targets[0], context.targets_dir())
            calibration, evaluation, data_details, data_warnings = context.facts["quantization_data"]
            record.warnings.extend(data_warnings)
            record.options = {"mode": settings.mode, "target": target.name, "min_cosine": settings.min_cosine,
                              "min_top1": settings.min_top1, "force_int8": settings.force_int8,
                              "min_speedup": settings.min_speedup, "speed_fallback": settings.speed_fallback}
            state_pairs = context.plan.state_pairs if context.plan is not None else {}
            # a stream runs one call at a time; else --calib-batch where the data's batch axis is free, lowered
            # to what the memory budget allows (checked here, before any quantizing)
            fixed = (calibration or evaluation).samples_per_run
            batch = 1 if state_pairs else (fixed if fixed is not None else settings.calib_batch)
            budget = plan_calibration_batch(
                current, graph_input_shapes(current, context.plan.specs) if context.plan else {}, batch,
                free=not state_pairs and fixed is None, max_memory=settings.max_memory,
                events=context.events.scoped("quantize"))
            batch = budget.calibration_batch
            record.warnings.extend([budget.warning] if budget.warning else [])
            # Read afresh on each walk with one batch alive at a time: calibration is one streamed pass.
            calib_batches = BatchStream(partial(_calibration_feeds, calibration, batch, current, state_pairs),
                                        samples=calibration.count,
                                        batch_size=calibration.effective_batch_size(batch)
                                        ) if calibration is not None else None
            # Fidelity and latency at the deployment batch (1 unless the model fixes it): dynamic
            # quantization picks its scales per batch, so batch 16 would flatter it.
            deploy_batch = 1 if state_pairs or fixed is None else fixed
            # (feeds, labels) pairs read afresh on every walk: the search never holds the evaluation inputs
            eval_batches = BatchStream(partial(evaluation.labelled_batches, deploy_batch), samples=evaluation.count,
                                       batch_size=evaluation.effective_batch_size(deploy_batch))

            def timing() -> dict:
                return next(iter(eval_batches))[0]  # the first batch, read when a device profile needs it

            if data_details.eval is not None:
                data_details.eval.batch_size = deploy_batch
            overrides = {"activation_type": settings.activation_type, "weight_type": settings.weight_type,
                         "per_channel": settings.per_channel, "calibration": settings.calibration_method,
                         "format": settings.format}
            options = QuantizeOptions(mode=settings.mode, min_cosine=settings.min_cosine, min_top1=settings.min_top1,
                                      overrides={k: v for k, v in overrides.items() if v is not None},
                                      force_int8=settings.force_int8, min_speedup=settings.min_speedup,
                                      speed_fallback=settings.speed_fallback,
                                      threads=settings.threads, metrics=dict(settings.metrics),
                                      keep_float=settings.keep_float)
            events = context.events.scoped("quantize")
            device = context.device
            if device is not None:
                target, note = recipe_target_of_device(target, device.facts().get("device") or {}, device.name)
                if note:
                    record.warnings.append(note)
            quantized, outcome = search(
                current, target=target, options=options, calibration=calib_batches, evaluation=eval_batches,
                state_pairs=state_pairs, events=events,
                device_latency=(lambda models, feeds: device.latency(models, feeds, events.scoped(device=device.name)))
                if device else None,
                device_name=device.name if device else None,
                device_node_costs=(lambda data, label: device.node_costs(
                    data, label, timing(), events.scoped(device=f"{device.name} ({label})"))) if device else None,
                scratch_dir=context.work_dir)
            record.details = QuantizeDetails(**dict(outcome), data=data_details, memory=budget)
            record.warnings.extend(outcome.warnings)
            if quantized is None:
                record.status = "fallback" if outcome.candidates else "skipped"
                record.warnings.append(outcome.reason)
                return model
            context.save(record, "quantize", quantized)
            return StageModel(quantized, record.outputs[-1])

    def summary(self, final: Any, context: StageContext) -> dict[str, Any]:
        record = context.record("quantize")
        if record is None:
            return {"quantization": QuantizationSummary(shipped="float",
                                                        reason="not requested (pass --calib DATA to quantize)")}
        details = record.details
        chosen = details.chosen_candidate
        fidelity = chosen.fidelity if chosen else None
        return {"quantization": QuantizationSummary(
            shipped=details.shipped, recipe=details.chosen, reason=details.reason,
            decided_by=fidelity.verdict() if fidelity and fidelity.metrics else None,
            worst_cosine=min((min(o.cosine_mean, o.channel_cosine_min if o.channel_cosine_min is not None
                                  else o.cosine_mean) for o in fidelity.outputs), default=None)
            if fidelity else None,
            accuracy_float=fidelity.accuracy_reference if fidelity else None,
            accuracy_int8=fidelity.accuracy_candidate if fidelity else None,
            latency_ratio=chosen.latency_ratio if chosen else None,
            int8_ms=chosen.latency.median_ms if chosen and chosen.latency else None,
            float_ms=details.float_latency.median_ms if details.float_latency else None,
            latency_measured_on=details.latency_measured_on if chosen and chosen.latency else None,
            latency_threads=chosen.latency.threads if chosen and chosen.latency else None,
            evaluated_samples=fidelity.samples if fidelity else None,
            size_ratio=chosen.size_ratio if chosen else None,
            float_nodes=chosen.float_nodes if chosen else [],
            float_for_speed=sorted({n for t in (chosen.speed_fallback if chosen else []) if t.accepted
                                    for n in t.nodes}))}
