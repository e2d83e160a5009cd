"""The convert pipeline: a short runner of the declared stages (``STAGES``), and the only module that
knows their order.

source ─load─▶ [export (torch) | opset (onnx)] ─▶ [prune] ─▶ [simplify] ─▶ [widen] ─▶ [tflite] ─▶ [quantize] ─▶ profile
       ─▶ [device] ─▶ OUT/model.onnx (+ OUT/model.tflite) + OUT/report.json + OUT/report.html

Each stage is ``stages.common.context.Stage``: it says whether the run asks for it and runs on the
model the previous one handed on. Every produced graph is parity-checked against the *source* (the
pruned module, after pruning), so errors never accumulate silently from stage to stage. All files
are written into a hidden work folder inside OUT and renamed into place only when the run succeeds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgeopt import __version__
from edgeopt.config.settings import ConvertConfig
from edgeopt.errors import EdgeoptError, ModelLoadError, OutputError, UnsupportedFormatError
from edgeopt.events import Events
from edgeopt.formats.artifact import ModelArtifact, ModelFormat
from edgeopt.formats.onnx import default_opset, load_onnx
from edgeopt.fsutil import KEPT_MARKER, ensure_writable_dir, gzip_size, owned_temp_dir, same_file
from edgeopt.report.schema import Report, RunSummary
from edgeopt.stages.common.cache import StageCache
from edgeopt.stages.common.context import (
    FINAL_MODEL, STAGE_FILES, TFLITE_MODEL, Stage, StageContext, StageModel, graph_input_shapes, measure_cost,
)
from edgeopt.stages.device import DeviceStage
from edgeopt.stages.export.step import ExportStage
from edgeopt.stages.load import LoadStage
from edgeopt.stages.opset import OpsetStage
from edgeopt.stages.profile import ProfileStage
from edgeopt.stages.prune.step import PruneStage
from edgeopt.stages.quantize.step import QuantizeStage
from edgeopt.stages.simplify import SimplifyStage
from edgeopt.stages.widen import WidenStage
from edgeopt.stages.tflite.step import TfliteStage, check_tflite_export

REPORT = "report.json"
HTML_REPORT = "report.html"

logger = logging.getLogger(__name__)

# The stages, in the order they run. A new stage is one module and one line here.
STAGES: list[Stage] = [LoadStage(), ExportStage(), OpsetStage(), PruneStage(), SimplifyStage(), WidenStage(),
                       TfliteStage(),
                       QuantizeStage(), ProfileStage(), DeviceStage()]


@dataclass
class ConvertResult:
    report: Report
    model_path: Path
    report_path: Path
    html_path: Path | None = None


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "edgeopt": __version__}
    for package in ("onnx", "onnxruntime", "onnxslim", "numpy", "torch", "onnxscript"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def convert(config: ConvertConfig, events: Events | None = None, command: list[str] | None = None,
            stages: list[Stage] | None = None, cache: StageCache | None = None) -> ConvertResult:
    """Run the convert pipeline described by ``config`` (``stages``: the default ``STAGES``). With
    ``cache``, stages that declare a cache key are served from it when they ran before on the same
    graph with the same settings and data."""
    from edgeopt.formats.onnx import check_requested_opset

    events = events or Events()
    report = Report(kind="convert", edgeopt_version=__version__, tool_versions=tool_versions(),
                    command=command or [], config=config.model_dump(mode="json"))
    out_dir = Path(config.output_dir)
    check_requested_opset(config.opset)
    _check_targets(config)
    source, fmt, source_path = _identify_source(config)
    check_tflite_export(fmt, config.format)
    report.source = source
    created = not out_dir.exists()
    ensure_writable_dir(out_dir)
    _refuse_overwriting_inputs(config, out_dir, source_path)
    work_dir = owned_temp_dir(".edgeopt-run-", out_dir)
    context = StageContext(config=config, work_dir=work_dir, events=events, records=report.stages, source=source,
                           source_path=source_path, source_format=fmt, device=_device(config))
    try:
        model: StageModel | None = None
        for stage in stages or STAGES:
            if stage.applies(context):
                model = _run_stage(stage, model, context, cache)
        result = _publish(report, context, model.proto, stages or STAGES, out_dir)
    except BaseException as exc:
        if isinstance(exc, EdgeoptError) and config.keep_failed and work_dir.exists():
            (work_dir / KEPT_MARKER).touch()
            exc.hint = f"{exc.hint}; intermediate files kept in {work_dir}" if exc.hint else \
                f"intermediate files kept in {work_dir}"
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
            if created:  # a failed run leaves no empty output folder behind (rmdir: only when empty)
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


def _run_stage(stage: Stage, model: StageModel | None, context: StageContext, cache: StageCache | None
               ) -> StageModel | None:
    settings = stage.cache_key(context) if cache is not None and model is not None and \
        hasattr(stage, "cache_key") else None
    if settings is None:
        return stage.run(model, context)
    key = cache.key(stage.name, model.proto, settings)
    hit = cache.get(key)
    if hit is not None:
        record, proto = hit
        cache.hits.append(stage.name)
        events = context.events.scoped(stage.name)
        events.started(f"{stage.name} (cached)")
        record.outputs = []
        context.records.append(record)
        with measure_cost(record):  # this run's cost of the hit, not the cost recorded when it was cached
            result = model if proto is None else StageModel(proto, context.save(record, stage.name, proto))
        events.finished(record.status)
        return result
    count = len(context.records)
    result = stage.run(model, context)
    if len(context.records) > count:  # the stage ran (it may also decide there was nothing to do)
        cache.put(key, context.records[-1], result.proto if result is not model else None)
    return result


def _device(config: ConvertConfig) -> Any:
    if config.device is None:
        return None
    from edgeopt.remote.access import SshDevice

    return SshDevice(config.device)


def _check_targets(config: ConvertConfig) -> None:
    """Unknown or malformed targets are input errors before any work starts."""
    from edgeopt.targets import load_target

    for name in config.targets:
        load_target(name, Path(config.targets_dir) if config.targets_dir else None)


def _identify_source(config: ConvertConfig) -> tuple[ModelArtifact, ModelFormat, Path | None]:
    from edgeopt.formats.sources import identify_source

    source = identify_source(config.source)
    if source.format is ModelFormat.TFLITE:
        raise UnsupportedFormatError(f"{source.text} is a TFLite model; TFLite input is not supported yet",
                                     "export the original model to ONNX or PyTorch and convert that")
    if config.weights and source.format is not ModelFormat.TORCH_FACTORY:
        raise ModelLoadError("--weights only applies to a factory source (pkg.module:function)",
                             "drop --weights, or pass the factory instead of a model file")
    artifact = (ModelArtifact(path=source.text, format=source.format) if source.path is None
                else ModelArtifact.from_file(source.path, source.format))
    return artifact, source.format, source.path


def _refuse_overwriting_inputs(config: ConvertConfig, out_dir: Path, source_path: Path | None) -> None:
    inputs = [p for p in (source_path, Path(config.weights) if config.weights else None) if p]
    if source_path is not None and source_path.suffix.lower() == ".onnx":
        try:
            inputs += [f.path for f in load_onnx(source_path, load_external_data=False, check=False).external_files]
        except EdgeoptError:
            pass  # the load stage reports it properly
    for name in (FINAL_MODEL, REPORT, *STAGE_FILES.values()):
        target = out_dir / name
        for candidate in (target, target.with_name(target.name + ".data")):
            if any(same_file(candidate, p) for p in inputs):
                raise OutputError(f"writing {candidate} would overwrite the input {candidate.name}",
                                  "choose another output folder with -o")


def _publish(report: Report, context: StageContext, current: onnx.ModelProto, stages: list[Stage],
             out_dir: Path) -> ConvertResult:
    """The finalize record and the summary, then every file renamed into OUT: intermediates first, then
    the final model's data, the model, and the report last, so OUT/model.onnx never exists without
    being complete."""
    final_files = context.final_files(current)
    with context.stage("finalize", "Writing outputs") as record:
        final = ModelArtifact.from_file(final_files[0], ModelFormat.ONNX, opset=default_opset(current),
                                        produced_by="finalize", external_files=final_files[1:],
                                        parent=context.last_artifact())
        summary = _summary(current, final, final_files, context, record)
        for stage in stages:
            if hasattr(stage, "summary"):  # each says what it did, or that it did not run
                summary.update(stage.summary(current, context))
        checks = [c for s in report.stages for c in s.parity]
        if checks:
            worst_cos = [o.cosine for c in checks for o in c.outputs if o.cosine is not None]
            summary["parity"] = {"checks": len(checks), "all_passed": all(c.passed for c in checks),
                                 "max_abs_diff": max(o.max_abs_diff for c in checks for o in c.outputs),
                                 "min_cosine": min(worst_cos) if worst_cos else None}
        record.outputs.append(final)
    report.summary = RunSummary.model_validate(summary)
    report.warnings = [w for s in report.stages for w in s.warnings]

    moves = [*context.produced, *final_files[1:], final_files[0]]
    rename = {str(src): str(out_dir / src.name) for src in moves}
    for stage in report.stages:
        for artifact in stage.outputs:
            artifact.path = rename.get(artifact.path, artifact.path)
            artifact.external_files = [rename.get(p, p) for p in artifact.external_files]
        for check in stage.parity:
            check.candidate = str(out_dir / check.candidate)
    report.final = final
    for src in moves:
        os.replace(src, out_dir / src.name)
    # Intermediates of an earlier run that this run did not make would sit beside a
    # report that never mentions them (an old int8 quantize.onnx next to a float model, an old
    # model.tflite that `edgeopt gate` would then check).
    produced = {src.name for src in moves}
    for name in (*STAGE_FILES.values(), TFLITE_MODEL):
        for stale in (out_dir / name, out_dir / (name + ".data")):
            if stale.name not in produced and stale.is_file():
                stale.unlink()
    report_path = out_dir / REPORT
    report.write(report_path)
    return ConvertResult(report, out_dir / FINAL_MODEL, report_path, _write_html(report, out_dir))


def _write_html(report: Report, out_dir: Path) -> Path | None:
    """OUT/report.html: the report as one self-contained page, beside report.json (``edgeopt report`` renders
    it again, with a gate result or a tune study)."""
    from edgeopt.fsutil import write_text_atomic
    from edgeopt.report.html import render_html

    path = out_dir / HTML_REPORT
    try:
        write_text_atomic(path, render_html(report, None, source_label=REPORT))
    except Exception:  # the model and report.json are published: a page that cannot be drawn must not fail the run
        logger.warning("could not write %s", path, exc_info=True)
        return None
    return path


def _summary(current: onnx.ModelProto, final: ModelArtifact, final_files: list[Path], context: StageContext,
             record: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"size_bytes": final.size_bytes, "gzip_size_bytes": gzip_size(final_files),
                               "opset": final.opset, "nodes": len(current.graph.node)}
    try:
        from edgeopt.analysis.summary import summarize_graph

        # counted at the run's resolved input shapes, never at a silent 1 for symbolic dims
        graph = summarize_graph(current, input_shapes=graph_input_shapes(current, context.reference.specs))
        summary.update(parameter_count=graph.parameter_count, macs_total=graph.macs_total,
                       inputs=graph.inputs, outputs=graph.outputs)
    except EdgeoptError as exc:
        record.warnings.append(f"static summary unavailable: {exc.message}")
    return summary
