"""The prune stage as the pipeline runs it: structured pruning (and fine-tuning) of the torch module, or
of the ONNX graph converted to torch, re-exported and parity-checked against the pruned module. From here
on the pruned model is the reference: later stages are held against it, not the source."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from edgeopt.errors import InputError
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
        if context.config.finetune is not None and context.config.prune is None:
            raise InputError("--finetune trains the pruned model, but nothing is pruned",
                             "add --prune RATIO (e.g. 0.5)")
        return context.config.prune is not None

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        from edgeopt.stages.prune.stage import module_from_onnx, run_module, run_prune_stage
        from edgeopt.stages.prune.structured import preferred_channel_multiple
        from edgeopt.targets import load_target

        config, settings = context.config, context.config.prune
        current, reference = model.proto, context.reference
        with context.stage("prune", f"Pruning {settings.ratio:.0%} of the channels") as record:
            targets = [load_target(name, context.targets_dir()) for name in config.targets]
            multiple, why = ((settings.channel_multiple, "set explicitly") if settings.channel_multiple
                             else preferred_channel_multiple(targets[0]))
            prune = settings.model_copy(update={"channel_multiple": multiple})
            record.options = {**prune.model_dump(mode="json"), "channel_multiple_reason": why,
                              "finetune": config.finetune.model_dump(mode="json") if config.finetune else None}
            torch_module = _prunable_torch_module(context.facts.get("torch_source"))
            if torch_module is not None:
                module, output_names = torch_module, context.facts.get("output_names")
                record.details.path = "torch source"
            else:  # an ONNX source, or a TorchScript / .pt2 archive: prune through the exported graph
                module, names, output_names, skipped = module_from_onnx(current, settings.allow_unprunable)
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
        assert prune is not None  # an "ok" prune record has its result
        return {"pruning": PruningSummary(
            ratio=config.prune.ratio, params_before=prune.params_before, params_after=prune.params_after,
            macs_before=prune.macs_before, macs_after=prune.macs_after, channel_multiple=prune.channel_multiple,
            steps=details.steps, not_faster=details.not_faster, attention=prune.attention,
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
