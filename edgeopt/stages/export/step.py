"""The export stage: a PyTorch source (loaded by the load stage) to ONNX, parity-checked against it."""

from __future__ import annotations

from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.onnx import MIN_OPSET, default_opset, load_onnx
from edgeopt.formats.onnx import convert_opset
from edgeopt.stages.common.context import STAGE_FILES, StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, register_details


@register_details("export")
class ExportDetails(StageDetails):
    exporter: str | None = None  # "dynamo", "static", "torchscript": the exporter that worked
    dynamic_batch: bool | None = None
    failed_attempts: list[str] = []  # what failed before it


class ExportStage:
    name = "export"

    def applies(self, context: StageContext) -> bool:
        return context.source_format is not ModelFormat.ONNX

    def run(self, model: StageModel | None, context: StageContext) -> StageModel:
        from edgeopt.formats.torch_onnx import export_torch

        config = context.config
        with context.stage("export", "Exporting to ONNX") as record:
            record.options = {"opset": config.opset, "dynamic_batch": config.dynamic_batch}
            path = context.work_dir / STAGE_FILES["export"]
            result = export_torch(context.facts["torch_source"], context.facts["torch_specs"], path,
                                  opset=config.opset, dynamic_batch=config.dynamic_batch,
                                  output_count=context.facts["output_count"],
                                  output_names=context.facts["output_names"])
            record.details = ExportDetails(exporter=result.exporter, dynamic_batch=result.dynamic_batch,
                                           failed_attempts=result.attempts)
            record.warnings.extend(result.warnings)
            if result.exporter != "dynamo":
                record.status = "fallback"
            current = load_onnx(path, check=False).model
            if default_opset(current) < MIN_OPSET:  # only if the user's exporter choice forced it
                current = convert_opset(current, MIN_OPSET)
            return context.save_checked(record, "export", current, context.reference, parent=context.source)
