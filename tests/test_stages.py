"""Stages as units: a stage is one object (``applies`` + ``run``) in the pipeline's list, and results of
cacheable stages come back from a cache keyed by (stage, settings, input sha256). The worked example of
docs/architecture.md ("Adding a stage") is the no-op stage below."""

from __future__ import annotations

import json

import onnx

from conftest import REPO
from edgeopt.config.settings import ConvertConfig, QuantizeConfig
from edgeopt.pipeline import STAGES, convert
from edgeopt.stages.common.cache import StageCache
from edgeopt.report.schema import read_report
from edgeopt.stages.common.context import StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, register_details

DIGITS = REPO / "models" / "digits"


@register_details("count-nodes")
class NodeCount(StageDetails):
    nodes: int = 0


class CountNodes:
    """A stage that changes nothing: it records how many nodes the graph has at its point in the run."""

    name = "count-nodes"

    def applies(self, context: StageContext) -> bool:
        return True

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        with context.stage(self.name, "Counting nodes") as record:
            record.details = NodeCount(nodes=len(model.proto.graph.node))
        return model


def _config(out, **quantize) -> ConvertConfig:
    return ConvertConfig(source=str(DIGITS / "digits_cnn.onnx"), output_dir=str(out), targets=["rpi4b"],
                         quantize=QuantizeConfig(calib=str(DIGITS / "calib.npz"), **quantize))


def test_a_stage_is_one_object_in_the_list(tmp_path):
    names = [stage.name for stage in STAGES]
    at = names.index("quantize")
    result = convert(_config(tmp_path / "out"), stages=[*STAGES[:at], CountNodes(), *STAGES[at:]])
    report = json.loads(result.report_path.read_text())
    order = [s["name"] for s in report["stages"]]
    assert order.index("simplify") < order.index("count-nodes") < order.index("quantize")
    counted = next(s for s in report["stages"] if s["name"] == "count-nodes")
    simplified = onnx.load(str(tmp_path / "out" / "simplify.onnx"))
    assert counted["details"]["nodes"] == len(simplified.graph.node) and counted["status"] == "ok"
    assert report["summary"]["quantization"]["shipped"] == "int8"
    # read back, the stage's record holds its own details model
    again = read_report(result.report_path).stage("count-nodes")
    assert isinstance(again.details, NodeCount) and again.details.nodes == len(simplified.graph.node)


def test_cached_stages_are_not_run_again_and_give_the_same_model(tmp_path):
    cache = StageCache(tmp_path / "cache")
    first = convert(_config(tmp_path / "a"), cache=cache)
    assert cache.hits == []
    second_cache = StageCache(tmp_path / "cache")
    second = convert(_config(tmp_path / "b"), cache=second_cache)
    assert second_cache.hits == ["simplify", "quantize"]
    assert first.report.final.sha256 == second.report.final.sha256
    quantized = [s for s in second.report.stages if s.name == "quantize"][0]
    assert quantized.details.chosen == [s for s in first.report.stages if s.name == "quantize"][0].details.chosen
    assert quantized.outputs and quantized.outputs[0].path.endswith("b/quantize.onnx")

    # other settings for one stage: that stage runs again, the ones before it still come from the cache
    third_cache = StageCache(tmp_path / "cache")
    convert(_config(tmp_path / "c", min_cosine=0.95), cache=third_cache)
    assert third_cache.hits == ["simplify"]


def test_a_parity_checked_stage_is_not_served_from_the_cache_under_other_tolerances(tmp_path, conv_onnx):
    """opset and simplify keep a graph only if it passes parity: the tolerances are part of their key."""
    import onnx as onnx_lib

    from conftest import conv_classifier
    from edgeopt.config.settings import ParityConfig

    old = tmp_path / "old.onnx"
    onnx_lib.save(conv_classifier(opset=11), str(old))
    config = ConvertConfig(source=str(old), output_dir=str(tmp_path / "a"), targets=["rpi4b"])
    convert(config, cache=StageCache(tmp_path / "cache"))
    same = StageCache(tmp_path / "cache")
    convert(config.model_copy(update={"output_dir": str(tmp_path / "b")}), cache=same)
    assert same.hits == ["opset", "simplify"]
    stricter = StageCache(tmp_path / "cache")
    convert(config.model_copy(update={"output_dir": str(tmp_path / "c"), "parity": ParityConfig(atol=1e-6)}),
            cache=stricter)
    assert stricter.hits == []
