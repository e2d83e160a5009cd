"""The load stage: read the source (an ONNX file, or a PyTorch source for the export stage), size its
inputs (data.resolve), read and check the calibration / evaluation data, and compute the source's
reference outputs that every later graph is held to. Runs before any conversion work, so bad input
fails fast and nothing is written."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from pydantic import Field

from edgeopt.data import (
    Dataset, ImagePreprocessing, InputPlan, InputSpec, apply_user_shapes, check_state_pairs, fill_plan, load_dataset,
    metadata_dict,
    parse_dims, parse_fills, parse_state_pairs, resolve_inputs,
)
from edgeopt.errors import InputError
from edgeopt.formats.artifact import ModelArtifact, ModelFormat
from edgeopt.formats.onnx import LoadedOnnx, default_opset, free_input_dims, load_onnx
from edgeopt.stages.common.context import Reference, StageContext, StageModel, cast_feeds
from edgeopt.data.dataset import QuantizationData
from edgeopt.data.samples import InputsSummary
from edgeopt.stages.common.records import StageDetails, StageRecord, absent, register_details


@register_details("load")
class LoadDetails(StageDetails):
    """The source as read: its inputs (and outputs, for torch), how they were sized, the data quantization
    will use. Fields of the other source kind are left out."""

    kind: str | None = Field(None, exclude_if=absent)  # a torch source, described
    opset: int | None = Field(None, exclude_if=absent)  # an ONNX source's
    inputs: list[str] = []
    outputs: list[str] | int | None = Field(None, exclude_if=absent)  # a torch source's names, else their count
    external_files: list[str] | None = Field(None, exclude_if=absent)
    freed_dims: list[str] | None = Field(None, exclude_if=absent)  # -1 / 0 input dims made symbolic
    weights: ModelArtifact | None = Field(None, exclude_if=absent)  # a factory's state_dict
    resolved_inputs: InputsSummary | None = Field(None, exclude_if=absent)
    quantization_data: QuantizationData | None = Field(None, exclude_if=absent)


class LoadStage:
    name = "load"

    def applies(self, context: StageContext) -> bool:
        return True

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        if context.config.factory_args and context.source_format is not ModelFormat.TORCH_FACTORY:
            raise InputError("--factory-arg only applies to a factory source (pkg.module:function)",
                             "drop --factory-arg, or pass the model's factory")
        if context.source_format is ModelFormat.ONNX:
            return _load_onnx(context)
        _load_torch(context)
        return None  # the export stage makes the ONNX graph


def _input_shapes(context: StageContext) -> dict[str | None, tuple[int, ...]]:
    return {(k or None): tuple(v) for k, v in context.config.input_shapes.items()}


def _load_onnx(context: StageContext) -> StageModel:
    from edgeopt.graph.onnx_shapes import declared_input_specs

    path = context.source_path
    with context.stage("load", "Loading ONNX model") as record:
        loaded = load_onnx(path)
        loaded.require_valid()
        if loaded.checker_error:
            record.warnings.append(f"onnx.checker: {loaded.checker_error}")
        # -1 / 0 input dims (paddle2onnx and older exporters) mean "any size": onnxruntime enforces
        # a 0, so the graph gets real symbolic dims before anything runs it.
        model, freed = free_input_dims(loaded.model)
        if freed:
            record.details.freed_dims = freed
        runner = _SourceRunner(_runtime_source(loaded, context, model if freed else None), label=str(path))
        plan = plan_inputs(context, declared_input_specs(model),
                           metadata_dict([(p.key, p.value) for p in model.metadata_props]), record)
        if plan.state_pairs:
            check_state_pairs(plan.state_pairs, plan.specs, [o.name for o in model.graph.output])
        reference = Reference(plan, runner)
        reference.sample(context.config.parity.seed, None)  # the source must run on these inputs
        context.reference = reference
        record.details.opset = default_opset(model)
        record.details.inputs = [s.describe() for s in plan.specs]
        record.details.external_files = [f.location for f in loaded.external_files]
        context.source.opset = default_opset(model)
    return StageModel(model)


def _load_torch(context: StageContext) -> None:
    from pathlib import Path

    from edgeopt.formats.torch import load_torch_source
    from edgeopt.formats.torch_onnx import output_names_from, run_torch_named, torch_input_specs

    config = context.config
    with context.stage("load", "Loading PyTorch model") as record:
        weights = Path(config.weights) if config.weights else None
        source = load_torch_source(config.source, context.source_format, weights=weights,
                                   trust_pickle=config.trust_pickle, factory_args=dict(config.factory_args))
        specs = torch_input_specs(source, _input_shapes(context), dict(config.input_dtypes))
        declared = [InputSpec(s.name, ("batch", *s.shape[1:]) if config.dynamic_batch and s.shape else s.shape,
                              s.dtype) for s in specs]
        plan = plan_inputs(context, declared, {}, record, shapes={s.name: tuple(s.shape) for s in specs})
        output_keys: list[str | None] = []  # names from the outputs' dict keys, seen on the first run

        def run_source(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            named = run_torch_named(source, specs, feeds)
            if not output_keys:
                output_keys.extend(name for name, _ in named)
            return [array for _, array in named]

        reference = Reference(plan, run_source)
        context.reference = reference
        context.facts["torch_source"] = source
        context.facts["torch_specs"] = specs
        _feeds, outputs = reference.sample(config.parity.seed, None)
        output_names = output_names_from(list(zip(output_keys, outputs)))
        if plan.state_pairs:
            check_state_pairs(plan.state_pairs, plan.specs, output_names or [])
        context.facts["output_names"] = output_names
        context.facts["output_count"] = len(outputs)
        record.details.kind = source.description
        record.details.inputs = [s.describe() for s in specs]
        record.details.outputs = output_names or len(outputs)
        if weights is not None:
            context.source.external_files = [str(weights)]
            record.details.weights = ModelArtifact.from_file(weights, ModelFormat.TORCH_PICKLE)


class _SourceRunner:
    """The source model run on one sample: a session opened for the call and closed after it. Reference
    computes each sample once (three by default), and a session kept open for the whole run would hold
    the weights, their pre-packed copies and the arena of its largest batch through every later stage
    (issue 22: 230 MB for a 54 MB model)."""

    def __init__(self, source: Any, label: str) -> None:
        from edgeopt.runtime.runner import open_runner

        self.source, self.label = source, label
        # opened now, so that a source that cannot load fails in the load stage; it serves the first sample
        self._first: Any = open_runner(source, label=label)

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from edgeopt.runtime.runner import open_runner

        runner, self._first = self._first or open_runner(self.source, label=self.label), None
        return list(runner.run(cast_feeds(feeds, runner)).values())


def _runtime_source(loaded: LoadedOnnx, context: StageContext, changed: onnx.ModelProto | None) -> Any:
    """What onnxruntime opens for the source: its file where the file is what runs, else the changed
    graph saved once in the work folder (a path: no serialized copy stays in memory)."""
    if changed is None:
        return loaded.path
    from edgeopt.formats.onnx import save_onnx

    return save_onnx(changed, context.work_dir / "source-inputs-freed.onnx")[0]


# -- inputs and data ------------------------------------------------------------------------------------


def plan_inputs(context: StageContext, declared: list[InputSpec], metadata: dict[str, str], load_record: StageRecord,
                shapes: dict[str | None, tuple[int, ...]] | None = None) -> InputPlan:
    """Read --calib / --eval against the model's inputs, resolve every symbolic dim (flags, then the
    data, then the model's metadata; data.resolve), fill the inputs the data lacks, and keep the
    quantization data."""
    config, settings = context.config, context.config.quantize
    shapes = _input_shapes(context) if shapes is None else shapes
    dims, fills = parse_dims(dict(config.dims)), parse_fills(dict(config.fills))
    loading = apply_user_shapes(declared, shapes, dims, dict(config.input_dtypes), keep_batch_free=True)
    preprocessing = ImagePreprocessing.parse(settings.calib_preprocess) if settings.calib_preprocess else None
    names = [s.name for s in declared]
    calibration = load_dataset(settings.calib, loading, preprocessing=preprocessing,
                               max_samples=settings.max_calib_samples, optional=names) if settings.calib else None
    evaluation = load_dataset(settings.eval, loading, preprocessing=preprocessing,
                              optional=names) if settings.eval else None
    resolved = resolve_inputs(declared, shapes=shapes, dims=dims, dtypes=dict(config.input_dtypes),
                              data=[calibration, evaluation], metadata=metadata)
    chosen, warnings = fill_plan(declared, resolved, [calibration, evaluation], fills)
    plan = InputPlan(resolved, chosen, state_pairs=parse_state_pairs(dict(config.state_pairs)), warnings=warnings)
    plan.learn_values(calibration)
    plan.learn_values(evaluation)
    calibration = plan.with_fills(calibration) if calibration is not None else None
    evaluation = plan.with_fills(evaluation) if evaluation is not None else None
    load_record.warnings.extend(warnings)
    load_record.details.resolved_inputs = plan.summary()
    context.plan = plan
    for note in resolved.notes:
        context.events.scoped("load").note(note)
    _keep_quantization_data(context, plan, calibration, evaluation, load_record)
    return plan


def _keep_quantization_data(context: StageContext, plan: InputPlan, calibration: Dataset | None,
                            evaluation: Dataset | None, load_record: StageRecord) -> None:
    settings = context.config.quantize
    if settings.mode == "none" or (settings.mode == "auto" and not settings.calib
                                   and not settings.allow_random_calibration):
        return
    if settings.mode == "static" and not settings.calib and not settings.allow_random_calibration:
        raise InputError("--quantize static needs calibration data",
                         "pass --calib DATA (a .npz keyed by input name), or --quantize dynamic")
    data = _quantization_data(context, plan, calibration, evaluation)
    context.facts["quantization_data"] = data
    load_record.details.quantization_data = data[2]


def _quantization_data(context: StageContext, plan: InputPlan, calibration: Dataset | None,
                       evaluation: Dataset | None) -> tuple[Any, Any, QuantizationData, list[str]]:
    """(calibration, evaluation, report details, warnings) per --calib / --eval / random."""
    settings = context.config.quantize
    seed = context.config.parity.seed
    warnings: list[str] = []
    details = QuantizationData()
    if calibration is None and settings.allow_random_calibration:
        calibration = plan.random_dataset(64, seed=seed)
        warnings.append("RANDOM CALIBRATION: activation ranges come from random inputs, not real data; "
                        "the int8 model's accuracy is unknown. Do not ship it.")
    if evaluation is not None:
        details.eval = evaluation.summary()
    elif calibration is not None and calibration.count >= 10 and not plan.state_pairs:
        calibration, evaluation = calibration.split(settings.holdout_fraction, seed=0)
        details.eval = evaluation.summary().model_copy(
            update={"source": f"held out from calibration ({settings.holdout_fraction:.0%})"})
    elif calibration is not None and calibration.count >= 10:
        # A stream's samples are in time order: hold out its tail, not a random subset.
        held = max(1, round(calibration.count * settings.holdout_fraction))
        calibration, evaluation = (calibration.take(range(calibration.count - held)),
                                   calibration.take(range(calibration.count - held, calibration.count)))
        details.eval = evaluation.summary().model_copy(
            update={"source": f"the last {held} samples of the calibration stream"})
    elif calibration is not None:
        evaluation = calibration
        warnings.append(f"only {calibration.count} calibration samples: fidelity is measured on the "
                        "calibration data itself (pass --eval DATA for an honest figure)")
        details.eval = evaluation.summary().model_copy(
            update={"source": "the calibration data (too few samples to hold out)"})
    else:
        evaluation = plan.random_dataset(16, seed=seed + 1)
        details.eval = evaluation.summary().model_copy(update={"source": "random inputs (no --calib/--eval)"})
    if calibration is not None:
        details.calibration = calibration.summary().model_copy(update={"random": settings.calib is None})
    return calibration, evaluation, details, warnings
