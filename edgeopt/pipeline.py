"""The convert pipeline: the only module that knows the order of the stages.

source ─load─▶ reference outputs
       ─export (torch) | opset upgrade (onnx)─▶ ─simplify─▶ OUT/model.onnx + OUT/report.json

Every produced graph is parity-checked against the *source*, so errors never
accumulate silently from stage to stage. All files are written into a hidden work
folder inside OUT and renamed into place only when the run succeeds.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from edgeopt import __version__
from edgeopt.artifact import ModelArtifact, ModelFormat, sniff_format
from edgeopt.config import ConvertConfig
from edgeopt.data import (
    Dataset, InputPlan, InputSpec, apply_user_shapes, fill_plan, metadata_dict, parse_dims, parse_fills,
    resolve_inputs,
)
from edgeopt.errors import (
    EdgeoptError, InputError, ModelLoadError, OutputError, UnsupportedFormatError, VerificationError,
)
from edgeopt.export.onnx_normalize import (
    MIN_OPSET, check_requested_opset, convert_opset, default_opset, simplify,
)
from edgeopt.export.parity import Tolerance, parity_check
from edgeopt.fsutil import ensure_writable_dir, gzip_size, same_file
from edgeopt.onnx_io import LoadedOnnx, load_onnx, save_onnx
from edgeopt.report.schema import ParityCheck, Report, StageRecord, utc_now
from edgeopt.runtime.onnxruntime_runner import OnnxRuntimeRunner

FINAL_MODEL = "model.onnx"
REPORT = "report.json"
STAGE_FILES = {"export": "export.onnx", "opset": "opset.onnx", "prune": "prune.onnx",
               "simplify": "simplify.onnx", "quantize": "quantize.onnx"}


class ProgressSink(Protocol):
    def stage_started(self, name: str, description: str) -> None: ...
    def stage_finished(self, name: str, status: str) -> None: ...
    def stage_note(self, name: str, message: str) -> None: ...
    # optional: def stage_progress(self, name: str, done: int, total: int) -> None (a bar, e.g. epochs)


class _NoProgress:
    def stage_note(self, name: str, message: str) -> None:
        pass

    def stage_started(self, name: str, description: str) -> None:
        pass

    def stage_finished(self, name: str, status: str) -> None:
        pass


@dataclass
class ConvertResult:
    report: Report
    model_path: Path
    report_path: Path


@dataclass
class _Reference:
    """Source outputs for each (seed, batch) sample, computed once. Samples come from the run's
    ``InputPlan``: resolved shapes, the data's value ranges, fills for integer inputs."""

    plan: InputPlan
    compute: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    order: list[str] | None = None  # input names in the order ``compute`` takes them (default: the plan's)
    cache: dict[tuple[int, int | None], tuple[dict[str, np.ndarray], list[np.ndarray]]] = field(default_factory=dict)

    @property
    def specs(self) -> list[InputSpec]:
        by_name = {s.name: s for s in self.plan.specs}
        return [by_name[n] for n in self.order] if self.order else self.plan.specs

    def sample(self, seed: int, batch: int | None) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        key = (seed, batch)
        if key not in self.cache:
            feeds = self.plan.sample(seed, batch)
            self.cache[key] = (feeds, self.compute(feeds))
        return self.cache[key]


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "edgeopt": __version__}
    for package in ("onnx", "onnxruntime", "onnxslim", "numpy", "torch", "onnxscript"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


class _Run:
    def __init__(self, config: ConvertConfig, progress: ProgressSink, command: list[str]) -> None:
        self.config = config
        self.progress = progress
        self.tol = Tolerance(config.parity.atol, config.parity.rtol, config.parity.min_cosine)
        self.report = Report(kind="convert", edgeopt_version=__version__, tool_versions=tool_versions(),
                             command=command, config=config.model_dump(mode="json"))
        self.out_dir = Path(config.output_dir)
        self.work_dir: Path | None = None
        self.produced: list[Path] = []  # files in the work dir, named as they will be in OUT
        self.quantization_data: tuple[Any, Any, dict[str, Any], list[str]] | None = None
        self.plan: InputPlan | None = None
        self.device_summary: dict[str, Any] | None = None
        self.torch_source: Any = None  # the loaded PyTorch source, when the source is one
        self.output_names: list[str] | None = None
        self.unpruned: onnx.ModelProto | None = None
        self.prune_accuracy_set: Any = None  # the samples the prune stage measured accuracy on

    # -- stage bookkeeping ------------------------------------------------------------
    def _stage(self, name: str, description: str) -> tuple[StageRecord, float]:
        self.progress.stage_started(name, description)
        record = StageRecord(name=name, status="ok", started_at=utc_now(), duration_s=0.0)
        self.report.stages.append(record)
        return record, time.perf_counter()

    def _finish(self, record: StageRecord, started: float) -> None:
        record.duration_s = round(time.perf_counter() - started, 4)
        self.progress.stage_finished(record.name, record.status)

    # -- the run ------------------------------------------------------------------------
    def execute(self) -> ConvertResult:
        config = self.config
        check_requested_opset(config.opset)
        self._check_targets()
        fmt, source_path = self._identify_source()
        ensure_writable_dir(self.out_dir)
        self._refuse_overwriting_inputs(source_path)
        self.work_dir = Path(tempfile.mkdtemp(prefix=".edgeopt-run-", dir=self.out_dir))
        try:
            if fmt is ModelFormat.ONNX:
                current, reference = self._from_onnx(source_path)
            else:
                current, reference = self._from_torch(fmt)
            if config.finetune is not None and config.prune is None:
                raise InputError("--finetune trains the pruned model, but nothing is pruned",
                                 "add --prune RATIO (e.g. 0.5)")
            if config.prune is not None:
                current, reference = self._prune(current, reference)
            if config.simplify:
                current = self._simplify(current, reference)
            current = self._quantize(current)
            result = self._finalize(current, reference.specs)
        except BaseException as exc:
            if isinstance(exc, EdgeoptError) and config.keep_failed and self.work_dir.exists():
                exc.hint = f"{exc.hint}; intermediate files kept in {self.work_dir}" if exc.hint else \
                    f"intermediate files kept in {self.work_dir}"
            else:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            raise
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return result

    def _identify_source(self) -> tuple[ModelFormat, Path | None]:
        from edgeopt.export.torch_source import is_factory_spec

        source = self.config.source
        path = Path(source)
        if not path.exists() and is_factory_spec(source):
            self.report.source = ModelArtifact(path=source, format=ModelFormat.TORCH_FACTORY)
            return ModelFormat.TORCH_FACTORY, None
        if not path.exists():
            raise ModelLoadError(f"model not found: {source}",
                                 "check the path, or give a factory as package.module:function")
        if not path.is_file():
            raise ModelLoadError(f"{source} is not a file", "give a model file (.onnx, .pt, .pt2) or a factory")
        fmt = sniff_format(path)
        if fmt is ModelFormat.TFLITE:
            raise UnsupportedFormatError(f"{source} is a TFLite model; TFLite input is not supported yet",
                                         "export the original model to ONNX or PyTorch and convert that")
        if fmt is ModelFormat.UNKNOWN:
            raise ModelLoadError(f"cannot tell what kind of model {source} is",
                                 "edgeopt reads .onnx, TorchScript/.pt, .pt2 files and pkg.module:function factories")
        if self.config.weights and fmt is not ModelFormat.TORCH_FACTORY:
            raise ModelLoadError("--weights only applies to a factory source (pkg.module:function)",
                                 "drop --weights, or pass the factory instead of a model file")
        self.report.source = ModelArtifact.from_file(path, fmt)
        return fmt, path

    def _refuse_overwriting_inputs(self, source_path: Path | None) -> None:
        inputs = [p for p in (source_path, Path(self.config.weights) if self.config.weights else None) if p]
        if source_path is not None and source_path.suffix.lower() == ".onnx":
            try:
                inputs += [f.path for f in load_onnx(source_path, load_external_data=False, check=False).external_files]
            except EdgeoptError:
                pass  # the load stage reports it properly
        for name in (FINAL_MODEL, REPORT, *STAGE_FILES.values()):
            target = self.out_dir / name
            for candidate in (target, target.with_name(target.name + ".data")):
                if any(same_file(candidate, p) for p in inputs):
                    raise OutputError(f"writing {candidate} would overwrite the input {candidate.name}",
                                      "choose another output folder with -o")

    def _input_shapes(self) -> dict[str | None, tuple[int, ...]]:
        return {(k or None): tuple(v) for k, v in self.config.input_shapes.items()}

    # -- sources --------------------------------------------------------------------------
    def _from_onnx(self, path: Path) -> tuple[onnx.ModelProto, _Reference]:
        from edgeopt.analysis.shapes import declared_input_specs
        from edgeopt.export.onnx_normalize import free_input_dims

        record, started = self._stage("load", "Loading ONNX model")
        loaded = load_onnx(path)
        if loaded.checker_error:
            record.warnings.append(f"onnx.checker: {loaded.checker_error}")
        # -1 / 0 input dims (paddle2onnx and older exporters) mean "any size": onnxruntime enforces
        # a 0, so the graph gets real symbolic dims before anything runs it.
        model, freed = free_input_dims(loaded.model)
        if freed:
            record.details["freed_dims"] = freed
        runner = OnnxRuntimeRunner(model.SerializeToString() if freed else _runtime_source(loaded), label=str(path))
        plan = self._plan_inputs(declared_input_specs(model), metadata_dict(
            [(p.key, p.value) for p in model.metadata_props]), record)
        reference = _Reference(plan, lambda feeds: list(runner.run(_cast(feeds, runner)).values()))
        reference.sample(self.config.parity.seed, None)  # the source must run on these inputs
        record.details.update({"opset": default_opset(model), "inputs": [s.describe() for s in plan.specs],
                               "external_files": [f.location for f in loaded.external_files]})
        self.report.source.opset = default_opset(model)
        self._finish(record, started)

        current = model
        source_opset = default_opset(current)
        target_opset = self.config.opset or (MIN_OPSET if source_opset < MIN_OPSET else None)
        if target_opset is not None and target_opset != source_opset:
            record, started = self._stage("opset", f"Converting opset {source_opset} → {target_opset}")
            record.options = {"from": source_opset, "to": target_opset}
            current = convert_opset(current, target_opset)
            self._check_and_save(record, "opset", current, reference, parent=self.report.source)
            self._finish(record, started)
        return current, reference

    def _from_torch(self, fmt: ModelFormat) -> tuple[onnx.ModelProto, _Reference]:
        from edgeopt.export.torch_source import load_torch_source
        from edgeopt.export.torch_to_onnx import (
            export_torch, output_names_from, run_torch_named, torch_input_specs,
        )

        record, started = self._stage("load", "Loading PyTorch model")
        weights = Path(self.config.weights) if self.config.weights else None
        source = load_torch_source(self.config.source, fmt, weights=weights, trust_pickle=self.config.trust_pickle)
        specs = torch_input_specs(source, self._input_shapes(), dict(self.config.input_dtypes))
        declared = [InputSpec(s.name, ("batch", *s.shape[1:]) if self.config.dynamic_batch and s.shape else s.shape,
                              s.dtype) for s in specs]
        plan = self._plan_inputs(declared, {}, record, shapes={s.name: tuple(s.shape) for s in specs})
        output_keys: list[str | None] = []  # names from the outputs' dict keys, seen on the first run

        def run_source(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            named = run_torch_named(source, specs, feeds)
            if not output_keys:
                output_keys.extend(name for name, _ in named)
            return [array for _, array in named]

        reference = _Reference(plan, run_source)
        self.torch_source = source
        feeds, outputs = reference.sample(self.config.parity.seed, None)
        output_names = output_names_from(list(zip(output_keys, outputs)))
        self.output_names = output_names
        record.details.update({"kind": source.description, "inputs": [s.describe() for s in specs],
                               "outputs": output_names or len(outputs)})
        if weights is not None:
            self.report.source.external_files = [str(weights)]
            record.details["weights"] = ModelArtifact.from_file(weights, ModelFormat.TORCH_PICKLE).model_dump(mode="json")
        self._finish(record, started)

        record, started = self._stage("export", "Exporting to ONNX")
        record.options = {"opset": self.config.opset, "dynamic_batch": self.config.dynamic_batch}
        path = self.work_dir / STAGE_FILES["export"]
        result = export_torch(source, specs, path, opset=self.config.opset,
                              dynamic_batch=self.config.dynamic_batch, output_count=len(outputs),
                              output_names=output_names)
        record.details = {"exporter": result.exporter, "dynamic_batch": result.dynamic_batch,
                          "failed_attempts": result.attempts}
        record.warnings.extend(result.warnings)
        if result.exporter != "dynamo":
            record.status = "fallback"
        current = load_onnx(path, check=False).model
        if default_opset(current) < MIN_OPSET:  # only if the user's exporter choice forced it
            current = convert_opset(current, MIN_OPSET)
        self._check_and_save(record, "export", current, reference, parent=self.report.source)
        self._finish(record, started)
        return current, reference

    # -- transforms ---------------------------------------------------------------------------
    def _prune(self, current: onnx.ModelProto, reference: _Reference) -> tuple[onnx.ModelProto, _Reference]:
        """Structured pruning (and fine-tuning) of the torch module, re-exported. From here on the
        pruned model is the reference: parity checks hold later stages against it, not the source."""
        from edgeopt.prune.stage import module_from_onnx, run_module, run_prune_stage
        from edgeopt.prune.structured import preferred_channel_multiple
        from edgeopt.targets import load_target

        settings = self.config.prune
        record, started = self._stage("prune", f"Pruning {settings.ratio:.0%} of the channels")
        targets = [load_target(name, self._targets_dir()) for name in self.config.targets]
        multiple, why = ((settings.channel_multiple, "set explicitly") if settings.channel_multiple
                         else preferred_channel_multiple(targets[0]))
        prune = settings.model_copy(update={"channel_multiple": multiple})
        record.options = {**prune.model_dump(mode="json"), "channel_multiple_reason": why,
                          "finetune": self.config.finetune.model_dump(mode="json") if self.config.finetune else None}
        torch_module = self._prunable_torch_module()
        if torch_module is not None:
            module, output_names = torch_module, self.output_names
            record.details["path"] = "torch source"
        else:  # an ONNX source, or a TorchScript / .pt2 archive: prune through the exported graph
            module, names, output_names, skipped = module_from_onnx(current, settings.allow_unprunable)
            if skipped:
                record.status = "skipped"
                record.warnings.append(f"{skipped}; continuing unpruned (--allow-unprunable)")
                self._finish(record, started)
                return current, reference
            if names != [s.name for s in reference.specs]:
                reference = _Reference(reference.plan, reference.compute, order=list(names))
            record.details["path"] = "ONNX graph converted to torch"
        specs = reference.specs
        bar = getattr(self.progress, "stage_progress", None)
        export_path = self.work_dir / ".prune-export.onnx"
        try:
            result = run_prune_stage(
                module, current, specs, prune, self.config.finetune, targets=targets, out_path=export_path,
                opset=self.config.opset or default_opset(current), dynamic_batch=self.config.dynamic_batch,
                output_names=output_names or [o.name for o in current.graph.output],
                eval_set=self._labelled_eval_set([s.name for s in specs]),
                note=lambda message: self.progress.stage_note("prune", message),
                epoch_progress=(lambda done, total: bar("prune", done, total)) if bar else (lambda _d, _t: None),
                latency_threads=self.config.quantize.threads, targets_dir=self._targets_dir(),
                timing_feeds=reference.sample(self.config.parity.seed + 1, None)[0])
            pruned = load_onnx(export_path, check=False).model
        finally:
            export_path.unlink(missing_ok=True)
        self.unpruned = current
        self.prune_accuracy_set = result.accuracy_set
        record.details.update(result.details)
        record.warnings.extend(result.warnings)
        new_reference = _Reference(reference.plan, run_module(result.module, specs), order=[s.name for s in specs])
        self._check_and_save(record, "prune", pruned, new_reference, parent=self._last_artifact())
        self._finish(record, started)
        return pruned, new_reference

    def _pruning_summary(self, final: onnx.ModelProto, specs: list[InputSpec]) -> dict[str, Any] | None:
        """The per-step table (unpruned, pruned, fine-tuned, quantized) for the summary."""
        from edgeopt.prune.stage import quantized_step
        from edgeopt.targets import load_target

        stage = self.report.stage("prune")
        if stage is None or stage.status != "ok" or self.unpruned is None:
            return None
        details = stage.details
        quantize_stage = self.report.stage("quantize")
        if quantize_stage is not None and quantize_stage.details.get("shipped") == "int8":
            targets = [load_target(name, self._targets_dir()) for name in self.config.targets]
            stage.warnings.extend(quantized_step(details, final, self.unpruned.SerializeToString(), targets, specs,
                                                 self.prune_accuracy_set, self.config.quantize.threads,
                                                 self._targets_dir(),
                                                 timing_feeds=self.plan.sample(self.config.parity.seed + 1, None)))
        prune = details["prune"]
        finetune = details.get("finetune")
        return {"ratio": self.config.prune.ratio, "params_before": prune["params_before"],
                "params_after": prune["params_after"], "macs_before": prune["macs_before"],
                "macs_after": prune["macs_after"], "channel_multiple": prune["channel_multiple"],
                "steps": details["steps"], "not_faster": details.get("not_faster", []),
                "attention": prune.get("attention", []),
                "finetune": None if finetune is None else {k: finetune[k] for k in (
                    "epochs_run", "best_epoch", "stopped_early", "best_val_accuracy", "distilled")}}

    def _prunable_torch_module(self) -> Any:
        """The source's nn.Module (factories and full pickles); None for TorchScript / .pt2 archives."""
        if self.torch_source is None:
            return None
        import torch

        module = self.torch_source.module
        if isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
            return module
        return None

    def _labelled_eval_set(self, names: list[str]) -> Any:
        """The quantization eval data as the prune stage's accuracy set, when it has labels."""
        from edgeopt.prune.stage import EvalSet

        if self.quantization_data is None:
            return None
        evaluation = self.quantization_data[1]
        if evaluation is None or evaluation.labels is None or any(n not in evaluation.arrays for n in names):
            return None
        return EvalSet([np.asarray(evaluation.arrays[n]) for n in names], np.asarray(evaluation.labels),
                       evaluation.source)

    def _simplify(self, current: onnx.ModelProto, reference: _Reference) -> onnx.ModelProto:
        record, started = self._stage("simplify", "Simplifying graph")
        record.options = {"tool": "onnxslim"}
        parent = self._last_artifact()
        try:
            simplified = simplify(current)
        except Exception as exc:  # onnxslim raises many kinds; any of them means "keep the original"
            record.status = "fallback"
            record.warnings.append(f"onnxslim failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                                   "kept the unsimplified graph")
            self._finish(record, started)
            return current
        try:
            self._check_and_save(record, "simplify", simplified, reference, parent=parent)
        except (VerificationError, ModelLoadError) as exc:
            record.status = "fallback"
            record.warnings.append(f"the simplified graph was rejected ({exc.message}); kept the unsimplified graph")
            for stale in (self.work_dir / STAGE_FILES["simplify"], self.work_dir / (STAGE_FILES["simplify"] + ".data")):
                stale.unlink(missing_ok=True)
            self.produced = [p for p in self.produced if not p.name.startswith(STAGE_FILES["simplify"])]
            record.outputs.clear()
            self._finish(record, started)
            return current
        before, after = len(current.graph.node), len(simplified.graph.node)
        record.details = {"nodes_before": before, "nodes_after": after}
        self._finish(record, started)
        return simplified

    def _quantize(self, current: onnx.ModelProto) -> onnx.ModelProto:
        from edgeopt.quantize.search import QuantizeOptions, search
        from edgeopt.targets import load_target

        settings = self.config.quantize
        if settings.mode == "none":
            return current
        if self.quantization_data is None:
            return current  # exporting only: quantization starts when calibration data is given
        record, started = self._stage("quantize", "Quantizing to int8")
        target = load_target(self.config.targets[0], self._targets_dir())
        calibration, evaluation, data_details, data_warnings = self.quantization_data
        record.warnings.extend(data_warnings)
        record.options = {"mode": settings.mode, "target": target.name, "min_cosine": settings.min_cosine,
                          "min_top1": settings.min_top1, "force_int8": settings.force_int8,
                          "speed_fallback": settings.speed_fallback}
        state_pairs = self.plan.state_pairs if self.plan is not None else {}
        batch = 1 if state_pairs else _calibration_batch_size(current)  # a stream runs one call at a time
        calib_batches = list(calibration.batches(batch)) if calibration is not None else None
        if calib_batches and state_pairs:
            # Calibrate on the states the float model itself carries from call to call.
            from edgeopt.data import run_stream

            runner = OnnxRuntimeRunner(current.SerializeToString(), label="the float model")
            calib_batches = [fed for fed, _ in run_stream(runner.run, calib_batches, state_pairs)]
        # Fidelity and latency at the deployment batch (1 unless the model fixes it): dynamic
        # quantization picks its scales per batch, so batch 16 would flatter it.
        deploy_batch = batch if batch != _FREE_BATCH else 1
        eval_batches = list(evaluation.batches(deploy_batch))
        timing = eval_batches[0]
        data_details["eval"]["batch_size"] = deploy_batch
        overrides = {"activation_type": settings.activation_type, "weight_type": settings.weight_type,
                     "per_channel": settings.per_channel, "calibration": settings.calibration_method,
                     "format": settings.format}
        options = QuantizeOptions(mode=settings.mode, min_cosine=settings.min_cosine, min_top1=settings.min_top1,
                                  overrides={k: v for k, v in overrides.items() if v is not None},
                                  force_int8=settings.force_int8, speed_fallback=settings.speed_fallback,
                                  threads=settings.threads)
        device = self.config.device
        quantized, outcome = search(
            current, target=target, options=options, calibration=calib_batches, evaluation=eval_batches,
            labels=evaluation.labels, timing_feeds=timing, state_pairs=state_pairs,
            progress=lambda message: self.progress.stage_note("quantize", message),
            device_latency=self._device_latency if device else None, device_name=device.ssh if device else None,
            device_node_costs=self._device_node_costs if device else None)
        record.details = {"data": data_details, **outcome.model_dump(mode="json")}
        record.warnings.extend(outcome.warnings)
        if quantized is None:
            record.status = "fallback" if outcome.candidates else "skipped"
            record.warnings.append(outcome.reason)
            self._finish(record, started)
            return current
        name = STAGE_FILES["quantize"]
        files = save_onnx(quantized, self.work_dir / name)
        self.produced.extend(files)
        record.outputs.append(ModelArtifact.from_file(files[0], ModelFormat.ONNX, opset=default_opset(quantized),
                                                      produced_by="quantize", external_files=files[1:],
                                                      parent=self._last_artifact()))
        self._finish(record, started)
        return quantized

    # -- the device ---------------------------------------------------------------------
    def _ssh_options(self) -> dict[str, Any]:
        device = self.config.device
        options: dict[str, Any] = {"python": device.python, "accept_new_host_key": device.accept_new_host_key,
                                   "cache_dir": device.cache_dir}
        if device.ssh_config:
            options["config_file"] = device.ssh_config
        return options

    def _device_latency(self, models: dict[str, bytes], feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """Float vs int8 candidates measured side by side on the device (quantize's latency rule)."""
        from edgeopt.remote.device import compare_latency_over_ssh

        device = self.config.device
        return compare_latency_over_ssh(
            device.ssh, models, feeds, reference="float", runs=max(5, min(device.runs, 30)), threads=device.threads,
            on_stage=lambda message: self.progress.stage_note("quantize", f"timing on {device.ssh}: {message}"),
            **self._ssh_options())

    def _device_node_costs(self, model: bytes, label: str) -> dict[str, float]:
        """Per-node kernel times of a quantization candidate on the device (the speed fallback's ranking)."""
        from edgeopt.quantize.speed_fallback import node_costs
        from edgeopt.remote.device import profile_over_ssh

        device = self.config.device
        with tempfile.TemporaryDirectory(prefix="edgeopt-device-costs-") as tmp:
            path = Path(tmp) / f"{label}.onnx"
            path.write_bytes(model)
            run = profile_over_ssh(
                device.ssh, path, runs=5, warmup=3, threads=device.threads, profile_ops=True,
                inputs=self._device_inputs(Path(tmp)),
                on_stage=lambda message: self.progress.stage_note("quantize", f"profiling {label} on {device.ssh}: "
                                                                              f"{message}"),
                **self._ssh_options())
        return node_costs(run.measurement, model)

    def _device_inputs(self, folder: Path) -> Path:
        """One sample at the run's resolved shapes, as the runner's .npz: the device never guesses
        symbolic dims or integer values."""
        path = folder / "inputs.npz"
        if not path.exists():
            np.savez(path, **self.plan.sample(self.config.parity.seed, None))
        return path

    def _profile_device(self, final_path: Path, specs: list[InputSpec], estimates: dict[str, Any]) -> None:
        """The last stage: the final model (and the float baseline, when int8 ships) measured on the device."""
        from edgeopt.profiling import compare
        from edgeopt.remote.device import profile_over_ssh
        from edgeopt.runtime.measure import map_op_names

        device = self.config.device
        record, started = self._stage("device", f"Profiling on {device.ssh}")
        record.options = {"ssh": device.ssh, "runs": device.runs, "threads": device.threads}
        models = {"final": final_path}
        shipped_int8 = (self.report.stage("quantize") is not None
                        and self.report.stage("quantize").details.get("shipped") == "int8")
        baseline = self._float_baseline_path() if shipped_int8 else None
        if baseline is not None:
            models["float_baseline"] = baseline
        measurements: dict[str, Any] = {}
        inputs_dir = Path(tempfile.mkdtemp(prefix="edgeopt-device-inputs-"))
        for label, path in models.items():
            self.progress.stage_note("device", f"measuring {label}")
            run = profile_over_ssh(device.ssh, path, runs=device.runs, threads=device.threads,
                                   inputs=self._device_inputs(inputs_dir),
                                   on_stage=lambda message, label=label: self.progress.stage_note(
                                       "device", f"{label}: {message}"),
                                   **self._ssh_options())
            model = load_onnx(path, load_external_data=False).model
            map_op_names(run.measurement, [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node])
            measurements[label] = {**run.measurement.model_dump(mode="json"),
                                   "ssh": {"host": device.ssh, "uploaded_bytes": run.uploaded_bytes,
                                           "model_cached": run.model_cached}}
        shutil.rmtree(inputs_dir, ignore_errors=True)
        record.details["measurements"] = measurements
        final = measurements["final"]
        summary: dict[str, Any] = {"host": device.ssh, "target": device.target or self.config.targets[0],
                                   "threads": device.threads,
                                   "p50_ms": final["latency_ms"]["p50"], "p90_ms": final["latency_ms"]["p90"],
                                   "peak_rss_increase_bytes": final["memory"]["peak_rss_increase_bytes"],
                                   "device": {k: final["device"].get(k) for k in ("cpu_model", "board", "machine",
                                                                                   "cpu_count")}}
        if "float_baseline" in measurements:
            float_p50 = measurements["float_baseline"]["latency_ms"]["p50"]
            summary["float_p50_ms"] = float_p50
            summary["ratio_to_float"] = final["latency_ms"]["p50"] / float_p50 if float_p50 > 0 else None
        record.details["summary"] = summary
        comparisons = []
        device_target = device.target or self.config.targets[0]
        for name, estimate in estimates.items():
            if name != device_target:  # the device is an instance of one target, not of all of them
                continue
            comparison = compare(estimate, final)
            if comparison is not None:
                comparisons.append(comparison.model_copy(update={"device": device.ssh}).model_dump(mode="json"))
        record.details["comparisons"] = comparisons
        self._finish(record, started)
        self.device_summary = summary

    def _float_baseline_path(self) -> Path | None:
        """The last float graph this run produced (the int8 model was made from it)."""
        for stage in reversed(self.report.stages):
            if stage.name in ("simplify", "prune", "opset", "export", "load") and stage.outputs:
                return Path(stage.outputs[-1].path)
        source = self.report.source
        return Path(source.path) if source is not None and source.format is ModelFormat.ONNX else None

    def _plan_inputs(self, declared: list[InputSpec], metadata: dict[str, str], load_record: StageRecord,
                     shapes: dict[str | None, tuple[int, ...]] | None = None) -> InputPlan:
        """Read --calib / --eval against the model's inputs, resolve every symbolic dim (flags, then the
        data, then the model's metadata; data.resolve), fill the inputs the data lacks, and keep the
        quantization data. Runs before any conversion work, so bad data fails fast and nothing is written."""
        from edgeopt.data import ImagePreprocessing, load_dataset, parse_state_pairs

        config, settings = self.config, self.config.quantize
        shapes = self._input_shapes() if shapes is None else shapes
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
        plan = InputPlan(resolved, chosen, state_pairs=parse_state_pairs(dict(config.state_pairs)),
                         warnings=warnings)
        plan.learn_values(calibration)
        plan.learn_values(evaluation)
        calibration = plan.with_fills(calibration) if calibration is not None else None
        evaluation = plan.with_fills(evaluation) if evaluation is not None else None
        load_record.warnings.extend(warnings)
        load_record.details["resolved_inputs"] = plan.summary()
        self.plan = plan
        for note in resolved.notes:
            self.progress.stage_note("load", note)
        self._load_quantization_data(plan, calibration, evaluation, load_record)
        return plan

    def _load_quantization_data(self, plan: InputPlan, calibration: Dataset | None, evaluation: Dataset | None,
                                load_record: StageRecord) -> None:
        settings = self.config.quantize
        if settings.mode == "none" or (settings.mode == "auto" and not settings.calib
                                       and not settings.allow_random_calibration):
            return
        if settings.mode == "static" and not settings.calib and not settings.allow_random_calibration:
            raise InputError("--quantize static needs calibration data",
                             "pass --calib DATA (a .npz keyed by input name), or --quantize dynamic")
        self.quantization_data = self._quantization_data(plan, calibration, evaluation)
        load_record.details["quantization_data"] = self.quantization_data[2]

    def _quantization_data(self, plan: InputPlan, calibration: Dataset | None, evaluation: Dataset | None):
        """(calibration, evaluation, report details, warnings) per --calib / --eval / random."""
        settings = self.config.quantize
        warnings: list[str] = []
        details: dict[str, Any] = {}
        if calibration is None and settings.allow_random_calibration:
            calibration = plan.random_dataset(64, seed=self.config.parity.seed)
            warnings.append("RANDOM CALIBRATION: activation ranges come from random inputs, not real data; "
                            "the int8 model's accuracy is unknown. Do not ship it.")
        if evaluation is not None:
            details["eval"] = evaluation.summary()
        elif calibration is not None and calibration.count >= 10 and not plan.state_pairs:
            calibration, evaluation = calibration.split(settings.holdout_fraction, seed=0)
            details["eval"] = {**evaluation.summary(),
                               "source": f"held out from calibration ({settings.holdout_fraction:.0%})"}
        elif calibration is not None and calibration.count >= 10:
            # A stream's samples are in time order: hold out its tail, not a random subset.
            held = max(1, round(calibration.count * settings.holdout_fraction))
            calibration, evaluation = (calibration.take(range(calibration.count - held)),
                                       calibration.take(range(calibration.count - held, calibration.count)))
            details["eval"] = {**evaluation.summary(),
                               "source": f"the last {held} samples of the calibration stream"}
        elif calibration is not None:
            evaluation = calibration
            warnings.append(f"only {calibration.count} calibration samples: fidelity is measured on the "
                            "calibration data itself (pass --eval DATA for an honest figure)")
            details["eval"] = {**evaluation.summary(),
                               "source": "the calibration data (too few samples to hold out)"}
        else:
            evaluation = plan.random_dataset(16, seed=self.config.parity.seed + 1)
            details["eval"] = {**evaluation.summary(), "source": "random inputs (no --calib/--eval)"}
        if calibration is not None:
            details["calibration"] = {**calibration.summary(), "random": settings.calib is None}
        return calibration, evaluation, details, warnings

    def _targets_dir(self) -> Path | None:
        return Path(self.config.targets_dir) if self.config.targets_dir else None

    def _check_targets(self) -> None:
        """Unknown or malformed targets are input errors before any work starts."""
        from edgeopt.targets import load_target

        for name in self.config.targets:
            load_target(name, self._targets_dir())

    def _profile_targets(self, model: onnx.ModelProto, specs: list[InputSpec]) -> dict[str, Any]:
        """Static profile of the final model on every requested target: the verdicts for the summary."""
        from edgeopt.analysis.profile import static_profile
        from edgeopt.targets import host_cpu_of, load_target

        record, started = self._stage("profile", "Profiling for targets")
        shapes = {s.name: [int(d) for d in s.shape] for s in specs}
        verdicts: dict[str, Any] = {}
        for name in self.config.targets:
            target = load_target(name, self._targets_dir())
            try:
                estimate = static_profile(model, target, shapes, cpu_target=host_cpu_of(target, self._targets_dir()))
            except EdgeoptError as exc:
                record.warnings.append(f"no static profile for {name}: {exc.message}")
                continue
            record.details[name] = estimate.model_dump(mode="json")
            verdicts[name] = {
                "latency_ms": estimate.latency_ms,
                "estimate_unavailable_reason": estimate.estimate_unavailable_reason,
                "fits": estimate.fits_all,
                "weight_bytes": estimate.weight_bytes,
                "peak_activation_bytes": estimate.peak_activation_bytes,
                "accelerator": estimate.accelerator,
                "accelerator_nodes": estimate.accelerator_node_count,
                "cpu_nodes": estimate.cpu_node_count,
                "partitions": estimate.partitions,
                "full_int8_required": estimate.full_int8_required,
                "full_int8": estimate.full_int8,
            }
        self._finish(record, started)
        return verdicts

    def _last_artifact(self) -> ModelArtifact | None:
        for stage in reversed(self.report.stages):
            if stage.outputs:
                return stage.outputs[-1]
        return self.report.source

    def _check_and_save(self, record: StageRecord, stage: str, model: onnx.ModelProto, reference: _Reference,
                        parent: ModelArtifact | None) -> None:
        """Save the stage's graph, then hold it against the source; a mismatch is fatal."""
        name = STAGE_FILES[stage]
        files = save_onnx(model, self.work_dir / name)
        self.produced.extend(files)
        artifact = ModelArtifact.from_file(files[0], ModelFormat.ONNX, opset=default_opset(model),
                                           produced_by=stage, external_files=files[1:], parent=parent)
        record.outputs.append(artifact)
        check = self._parity(files[0], reference)
        record.parity.append(check)
        if not check.passed:
            worst = next(o for o in check.outputs if not o.passed)
            record.status = "failed"
            cosine = f", cosine {worst.cosine:.6f}" if worst.cosine is not None else ""
            raise VerificationError(
                f"parity check failed after {stage}: output {worst.name!r} differs from the source "
                f"(max abs diff {worst.max_abs_diff:.3g}{cosine}; allowed {check.atol:g} + {check.rtol:g}·|ref|, "
                f"cosine >= {check.min_cosine})",
                "the exported graph does not reproduce the model; rerun with --debug --keep-failed to inspect it, "
                "or loosen --parity-atol/--parity-rtol if the difference is expected",
            )

    def _parity(self, model_path: Path, reference: _Reference) -> ParityCheck:
        runner = OnnxRuntimeRunner(model_path, label=f"the produced graph {model_path.name}")
        candidate_specs = runner.input_specs()
        dynamic_batch = all(spec.shape and not isinstance(spec.shape[0], int) for spec in candidate_specs
                            if spec.shape) and any(spec.shape for spec in candidate_specs)
        base = _batch_of(reference.specs)
        batches = [base, base + 1] if dynamic_batch and base is not None else [None]
        samples, used = [], []
        for index in range(self.config.parity.samples):
            batch = batches[index % len(batches)]
            feeds, expected = reference.sample(self.config.parity.seed + index, batch)
            missing = [s.name for s in candidate_specs if s.name not in feeds]
            if missing:
                raise VerificationError(f"the produced graph expects inputs the source lacks: {', '.join(missing)}",
                                        "this is an exporter bug; rerun with --debug")
            try:
                got = list(runner.run(_cast({s.name: feeds[s.name] for s in candidate_specs}, runner)).values())
            except InputError as exc:
                if batch is None or batch == base:
                    raise
                raise VerificationError(
                    f"{model_path.name} declares a dynamic batch axis but fails at batch {batch}: {exc.message}",
                    "the model only works at its example batch size: rerun with --static-batch",
                ) from None
            samples.append((expected, got))
            used.append(batch if batch is not None else (base or 1))
        return parity_check(str(model_path.name), "source", samples, runner.output_names(), self.tol,
                            sorted(set(used)))

    # -- output -----------------------------------------------------------------------------
    def _finalize(self, current: onnx.ModelProto, specs: list[InputSpec]) -> ConvertResult:
        targets = self._profile_targets(current, specs)
        final_files = save_onnx(current, self.work_dir / FINAL_MODEL)
        if self.config.device is not None:
            profile_stage = self.report.stage("profile")
            self._profile_device(final_files[0], specs, profile_stage.details if profile_stage else {})
        record, started = self._stage("finalize", "Writing outputs")
        parent = self._last_artifact()
        final = ModelArtifact.from_file(final_files[0], ModelFormat.ONNX, opset=default_opset(current),
                                        produced_by="finalize", external_files=final_files[1:], parent=parent)
        summary: dict[str, Any] = {
            "size_bytes": final.size_bytes,
            "gzip_size_bytes": gzip_size(final_files),
            "opset": final.opset,
            "nodes": len(current.graph.node),
        }
        try:
            from edgeopt.analysis.summary import summarize_graph

            # counted at the run's resolved input shapes, never at a silent 1 for symbolic dims
            graph = summarize_graph(current, input_shapes={s.name: [int(d) for d in s.shape] for s in specs})
            summary.update(parameter_count=graph.parameter_count, macs_total=graph.macs_total,
                           inputs=[i.model_dump(mode="json") for i in graph.inputs],
                           outputs=[o.model_dump(mode="json") for o in graph.outputs])
        except EdgeoptError as exc:
            record.warnings.append(f"static summary unavailable: {exc.message}")
        quantize_stage = self.report.stage("quantize")
        if quantize_stage is not None:
            details = quantize_stage.details
            chosen = next((c for c in details.get("candidates", []) if c["name"] == details.get("chosen")), None)
            summary["quantization"] = {
                "shipped": details.get("shipped"), "recipe": details.get("chosen"), "reason": details.get("reason"),
                # The figure the floor was held against: per-sample and worst-channel cosine.
                "worst_cosine": min((min(o["cosine_mean"], o["channel_cosine_min"] if o["channel_cosine_min"]
                                         is not None else o["cosine_mean"])
                                     for o in chosen["fidelity"]["outputs"]), default=None)
                if chosen and chosen.get("fidelity") else None,
                "accuracy_float": chosen["fidelity"].get("accuracy_reference") if chosen and chosen.get("fidelity")
                else None,
                "accuracy_int8": chosen["fidelity"].get("accuracy_candidate") if chosen and chosen.get("fidelity")
                else None,
                "latency_ratio": chosen.get("latency_ratio") if chosen else None,
                "size_ratio": chosen.get("size_ratio") if chosen else None,
                "float_nodes": chosen.get("float_nodes") if chosen else [],
                # Of those, the ones kept in float because their int8 kernels were slower (measured).
                "float_for_speed": sorted({n for t in (chosen or {}).get("speed_fallback", []) if t["accepted"]
                                           for n in t["nodes"]}),
            }
        else:
            summary["quantization"] = {"shipped": "float", "reason": "not requested (pass --calib DATA to quantize)"}
        summary["targets"] = targets
        pruning = self._pruning_summary(current, specs)
        if pruning is not None:
            summary["pruning"] = pruning
        if self.device_summary is not None:
            summary["device"] = self.device_summary
        checks = [c for s in self.report.stages for c in s.parity]
        if checks:
            worst_cos = [o.cosine for c in checks for o in c.outputs if o.cosine is not None]
            summary["parity"] = {"checks": len(checks), "all_passed": all(c.passed for c in checks),
                                 "max_abs_diff": max(o.max_abs_diff for c in checks for o in c.outputs),
                                 "min_cosine": min(worst_cos) if worst_cos else None}
        record.outputs.append(final)
        self._finish(record, started)
        self.report.summary = summary
        self.report.warnings = [w for s in self.report.stages for w in s.warnings]

        # Move into place: intermediates first, then the final model's data, the model, and
        # the report last, so OUT/model.onnx never exists without being complete.
        moves = [*self.produced, *final_files[1:], final_files[0]]
        rename = {str(src): str(self.out_dir / src.name) for src in moves}
        for stage in self.report.stages:
            for artifact in stage.outputs:
                artifact.path = rename.get(artifact.path, artifact.path)
                artifact.external_files = [rename.get(p, p) for p in artifact.external_files]
            for check in stage.parity:
                check.candidate = str(self.out_dir / check.candidate)
        self.report.final = final
        for src in moves:
            os.replace(src, self.out_dir / src.name)
        # Intermediates of an earlier run that this run did not make would sit beside a
        # report that never mentions them (an old int8 quantize.onnx next to a float model).
        produced = {src.name for src in moves}
        for name in STAGE_FILES.values():
            for stale in (self.out_dir / name, self.out_dir / (name + ".data")):
                if stale.name not in produced and stale.is_file():
                    stale.unlink()
        report_path = self.out_dir / REPORT
        self.report.write(report_path)
        return ConvertResult(self.report, self.out_dir / FINAL_MODEL, report_path)


_FREE_BATCH = 16


def _calibration_batch_size(model: onnx.ModelProto) -> int:
    """Batches of 16 where the batch axis is free; otherwise the fixed batch size."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return _FREE_BATCH


def _batch_of(specs: list[InputSpec]) -> int | None:
    for spec in specs:
        if spec.shape:
            return int(spec.shape[0])
    return None


def _cast(feeds: dict[str, np.ndarray], runner: OnnxRuntimeRunner) -> dict[str, np.ndarray]:
    """Feed each input in the dtype the graph declares (torch int64 vs ONNX int32, etc.)."""
    wanted = {s.name: s.dtype for s in runner.input_specs()}
    out = {}
    for name, value in feeds.items():
        dtype = wanted.get(name)
        if dtype and dtype not in ("bfloat16", "str") and value.dtype != np.dtype(dtype):
            value = value.astype(dtype)
        out[name] = value
    return out


def _runtime_source(loaded: LoadedOnnx) -> bytes | Path:
    if loaded.external_files and not loaded.external_data_loaded:
        return loaded.path
    if loaded.model.ByteSize() < 2**31 - 1:
        return loaded.model.SerializeToString()
    return loaded.path


def convert(config: ConvertConfig, progress: ProgressSink | None = None,
            command: list[str] | None = None) -> ConvertResult:
    """Run the convert pipeline described by ``config``."""
    return _Run(config, progress or _NoProgress(), command or []).execute()
