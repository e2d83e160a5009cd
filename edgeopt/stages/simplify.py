"""The simplify stage: onnxslim (constant folding, dead code, fusions), then the hard activations that
exporters spell out in elementwise ops fused back (graph/onnx_activation_fusion.py). If it fails, or its graph
does not reproduce the source, the unsimplified graph is kept and the record says why."""

from __future__ import annotations

import onnx
from pydantic import Field

from edgeopt.errors import ModelLoadError, VerificationError
from edgeopt.graph.onnx_activation_fusion import fuse_hard_activations
from edgeopt.stages.common.context import StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, absent, register_details


@register_details("simplify")
class SimplifyDetails(StageDetails):
    nodes_before: int | None = Field(None, exclude_if=absent)  # both None: the simplified graph was rejected
    nodes_after: int | None = Field(None, exclude_if=absent)
    # spelled-out hard activations fused into one op (graph/onnx_activation_fusion.py), by fused op
    fused_activations: dict[str, int] | None = Field(None, exclude_if=absent)


FUSIONS_VERSION = 1  # (in the cache key: a changed fusion must not serve an older cached graph)


class SimplifyStage:
    name = "simplify"

    def applies(self, context: StageContext) -> bool:
        return context.config.simplify

    def cache_key(self, context: StageContext) -> dict:
        from importlib import metadata

        # the simplified graph is kept only if it passes parity
        return {"onnxslim": metadata.version("onnxslim"), "fusions": FUSIONS_VERSION, **context.parity_key()}

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        with context.stage("simplify", "Simplifying graph") as record:
            record.options = {"tool": "onnxslim", "fusions": "hard activations"}
            parent = context.last_artifact()
            try:
                simplified = simplify(model.proto)
            except Exception as exc:  # onnxslim raises many kinds; any of them means "keep the original"
                record.status = "fallback"
                record.warnings.append(f"onnxslim failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                                       "kept the unsimplified graph")
                return model
            try:
                simplified, fused = fuse_hard_activations(simplified)
            except Exception as exc:  # noqa: BLE001 - a graph the matcher trips on keeps onnxslim's result
                fused = {}
                record.warnings.append(f"fusing hard activations failed ({type(exc).__name__}); kept onnxslim's graph")
            try:
                result = context.save_checked(record, "simplify", simplified, context.reference, parent=parent)
            except (VerificationError, ModelLoadError) as exc:
                record.status = "fallback"
                record.warnings.append(f"the simplified graph was rejected ({exc.message}); kept the unsimplified "
                                       "graph")
                context.forget("simplify")
                record.outputs.clear()
                return model
            record.details = SimplifyDetails(nodes_before=len(model.proto.graph.node),
                                             nodes_after=len(simplified.graph.node), fused_activations=fused or None)
            return result


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-code removal and fusion cleanup with onnxslim."""
    import contextlib
    import io

    import onnxslim

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return onnxslim.slim(model)
