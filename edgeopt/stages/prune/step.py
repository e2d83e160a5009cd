"""The prune stage as the pipeline runs it: structured pruning (and fine-tuning) of the torch module, or
of the ONNX graph converted to torch, re-exported and parity-checked against the pruned module. From here
on the pruned model is the reference: later stages are held against it, not the source."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from edgeopt.formats.onnx import default_opset, load_onnx
from edgeopt.stages.common.context import Reference, StageContext, StageModel
from edgeopt.stages.prune.details import PruneDetails  # noqa: F401 (registers the stage's details)
from edgeopt.stages.prune.metrics import ModelFigures
from edgeopt.stages.prune.structured import HeadChange


class FinetuneOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs_run: int
    best_epoch: int
    stopped_early: bool
    best_val_accuracy: float | None
    distilled: bool


class PruningSummary(BaseModel):
    """The per-step table (unpruned, pruned, fine-tuned, quantized) and what pruning removed (the report's
    summary.pruning)."""

    model_config = ConfigDict(extra="forbid")

    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    channel_multiple: int | None
    steps: list[ModelFigures]
    not_faster: list[str] = []
    attention: list[HeadChange] = []
    finetune: FinetuneOutcome | None = None


class PruneStage:
    name = "prune"

    def applies(self, context: StageContext) -> bool:
        # --finetune alone trains the model as it is (a factory built with new --factory-arg values: tune's
        # architecture trials), through the same steps without the pruning one
        return context.config.prune is not None or context.config.finetune is not None

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        from edgeopt.stages.prune.stage import module_from_onnx, run_module, run_prune_stage
        from edgeopt.stages.prune.structured import preferred_channel_multiple
        from edgeopt.targets import load_target

        config, settings = context.config, context.config.prune
        current, reference = model.proto, context.reference
        title = f"Pruning {settings.ratio:.0%} of the channels" if settings else "Fine-tuning (nothing pruned)"
        with context.stage("prune", title) as record:
            targets = [load_target(name, context.targets_dir()) for name in config.targets]
            prune = None
            record.options = {"finetune": config.finetune.model_dump(mode="json") if config.finetune else None}
            if settings is not None:
                multiple, why = ((settings.channel_multiple, "set explicitly") if settings.channel_multiple
                                 else preferred_channel_multiple(targets[0]))
                prune = settings.model_copy(update={"channel_multiple": multiple})
                record.options.update({**prune.model_dump(mode="json"), "channel_multiple_reason": why})
            torch_module = _prunable_torch_module(context.facts.get("torch_source"))
            if torch_module is not None:
                module, output_names = torch_module, context.facts.get("output_names")
                record.details.path = "torch source"
            else:  # an ONNX source, or a TorchScript / .pt2 archive: prune through the exported graph
                module, names, output_names, skipped = module_from_onnx(
                    current, settings.allow_unprunable if settings else False)
                if skipped:
                    record.status = "skipped"
                    record.warnings.append(f"{skipped}; continuing unpruned (--allow-unprunable)")
                    return model
                if names != [s.name for s in reference.specs]:
                    reference = Reference(reference.plan, reference.compute, order=list(names))
                record.details.path = "ONNX graph converted to torch"
            specs = reference.specs
            export_path = context.work_dir / ".prune-export.onnx"
            try:
                result = run_prune_stage(
                    module, current, specs, prune, config.finetune, targets=targets, out_path=export_path,
                    opset=config.opset or default_opset(current), dynamic_batch=config.dynamic_batch,
                    output_names=output_names or [o.name for o in current.graph.output],
                    eval_set=_labelled_eval_set(context, [s.name for s in specs]),
                    events=context.events.scoped("prune"),
                    latency_threads=config.quantize.threads, targets_dir=context.targets_dir(),
                    timing_feeds=reference.sample(config.parity.seed + 1, None)[0])
                pruned = load_onnx(export_path, check=False).model
            finally:
                export_path.unlink(missing_ok=True)
            context.facts["unpruned"] = current
            context.facts["torch_module"] = result.module  # what --format tflite converts
            context.facts["prune_accuracy_set"] = result.accuracy_set
            record.details = result.details.model_copy(update={"path": record.details.path})
            record.warnings.extend(result.warnings)
            context.reference = Reference(reference.plan, run_module(result.module, specs),
                                          order=[s.name for s in specs])
            return context.save_checked(record, "prune", pruned, context.reference)

    def summary(self, final: Any, context: StageContext) -> dict[str, Any]:
        """The per-step table (unpruned, pruned, fine-tuned, quantized) for the report's summary."""
        from edgeopt.stages.prune.stage import quantized_step
        from edgeopt.targets import load_target

        record = context.record("prune")
        unpruned = context.facts.get("unpruned")
        if record is None or record.status != "ok" or unpruned is None:
            return {}
        details = record.details
        quantize = context.record("quantize")
        config = context.config
        if quantize is not None and getattr(quantize.details, "shipped", None) == "int8":
            targets = [load_target(name, context.targets_dir()) for name in config.targets]
            record.warnings.extend(quantized_step(
                details, final, unpruned.SerializeToString(), targets, context.reference.specs,
                context.facts.get("prune_accuracy_set"), config.quantize.threads, context.targets_dir(),
                timing_feeds=context.plan.sample(config.parity.seed + 1, None)))
        prune, finetune = details.prune, details.finetune
        first, last = details.steps[0], details.steps[-1]
        return {"pruning": PruningSummary(  # fine-tuning alone: ratio 0, the architecture as it came
            ratio=config.prune.ratio if config.prune else 0.0,
            params_before=prune.params_before if prune else first.params,
            params_after=prune.params_after if prune else last.params,
            macs_before=prune.macs_before if prune else first.macs,
            macs_after=prune.macs_after if prune else last.macs,
            channel_multiple=prune.channel_multiple if prune else None,
            steps=details.steps, not_faster=details.not_faster, attention=prune.attention if prune else [],
            finetune=None if finetune is None else FinetuneOutcome(
                epochs_run=finetune.epochs_run, best_epoch=finetune.best_epoch, stopped_early=finetune.stopped_early,
                best_val_accuracy=finetune.best_val_accuracy, distilled=finetune.distilled))}


def _prunable_torch_module(source: Any) -> Any:
    """The source's nn.Module (factories and full pickles); None for TorchScript / .pt2 archives."""
    if source is None:
        return None
    import torch

    module = source.module
    if isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
        return module
    return None


def _labelled_eval_set(context: StageContext, names: list[str]) -> Any:
    """The quantization eval data as the prune stage's accuracy set, when it has labels."""
    from edgeopt.stages.prune.stage import EvalSet

    data = context.facts.get("quantization_data")
    if data is None:
        return None
    evaluation = data[1]
    if evaluation is None or evaluation.labels is None or any(n not in evaluation.arrays for n in names):
        return None
    return EvalSet(evaluation, names, evaluation.source)
