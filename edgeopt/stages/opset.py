"""The opset stage: an ONNX source older than opset 13 (per-channel int8 needs it) is upgraded, or
converted to the opset asked for with ``--opset``; the result is parity-checked against the source."""

from __future__ import annotations

from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.onnx import MIN_OPSET, default_opset
from edgeopt.formats.onnx import convert_opset
from edgeopt.stages.common.context import StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, register_details


@register_details("opset")
class OpsetDetails(StageDetails):
    """Nothing beyond the record: its options say from which opset to which."""


def _wanted(model: StageModel, context: StageContext) -> int | None:
    source_opset = default_opset(model.proto)
    wanted = context.config.opset or (MIN_OPSET if source_opset < MIN_OPSET else None)
    return wanted if wanted != source_opset else None


class OpsetStage:
    name = "opset"

    def applies(self, context: StageContext) -> bool:
        return context.source_format is ModelFormat.ONNX

    def cache_key(self, context: StageContext) -> dict:
        return {"opset": context.config.opset, **context.parity_key()}

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        target = _wanted(model, context)
        if target is None:
            return model
        source_opset = default_opset(model.proto)
        with context.stage("opset", f"Converting opset {source_opset} → {target}") as record:
            record.options = {"from": source_opset, "to": target}
            converted = convert_opset(model.proto, target)
            return context.save_checked(record, "opset", converted, context.reference, parent=context.source)
