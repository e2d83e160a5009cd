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
            simplified, fused = _fuse(simplified, record)

            def discard() -> None:  # a rejected graph leaves no file behind
                context.forget("simplify")
                record.outputs.clear()

            try:
                result = context.save_checked(record, "simplify", simplified, context.reference, parent=parent)
            except (VerificationError, ModelLoadError) as exc:
                discard()
                retried = _without_declared_shapes(model.proto)
                result = None
                if retried is not None:
                    # onnxslim folds shapes from what the model declares; a declaration that contradicts what the
                    # graph computes (ddddocr's recognizer declares [1, seqlen] and returns [24, 1, 8210]) makes
                    # it fold a Reshape wrongly: simplified again with the declarations cleared
                    try:
                        simplified, fused = _fuse(simplify(retried), record)
                        result = context.save_checked(record, "simplify", simplified, context.reference,
                                                      parent=parent)
                        record.status = "ok"
                        record.parity = [check for check in record.parity if check.passed]
                        record.warnings.append(
                            f"onnxslim's first graph was rejected ({exc.message}): the model's declared output/"
                            "intermediate shapes contradict what it computes; simplified again without them")
                    except Exception:  # noqa: BLE001 - parity or onnxslim failing again: the first rejection stands
                        discard()
                        result = None  # (a failure after save_checked returned)
                if result is None:
                    record.status = "fallback"
                    record.warnings.append(f"the simplified graph was rejected ({exc.message}); kept the "
                                           "unsimplified graph")
                    return model
            record.details = SimplifyDetails(nodes_before=len(model.proto.graph.node),
                                             nodes_after=len(simplified.graph.node), fused_activations=fused or None)
            return result


def _fuse(model: onnx.ModelProto, record) -> tuple[onnx.ModelProto, dict[str, int]]:
    try:
        return fuse_hard_activations(model)
    except Exception as exc:  # noqa: BLE001 - a graph the matcher trips on keeps onnxslim's result
        record.warnings.append(f"fusing hard activations failed ({type(exc).__name__}); kept onnxslim's graph")
        return model, {}


def _without_declared_shapes(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy without the shapes the graph's outputs and value_info declare (dtypes kept), or None when it
    declares none: what onnxslim then infers comes from the inputs and the ops alone."""
    declared = [o for o in model.graph.output if o.type.tensor_type.HasField("shape")]
    if not declared and not model.graph.value_info:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for output in copy.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    del copy.graph.value_info[:]
    return copy


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-code removal and fusion cleanup with onnxslim."""
    import contextlib
    import io

    import onnxslim

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return onnxslim.slim(model)
