"""Activation matching ranks the nodes that hurt int8 fidelity."""

from __future__ import annotations

import numpy as np
import onnx

from edgeopt.stages.quantize.quantizer import quantize
from edgeopt.stages.quantize.recipes import Recipe
from edgeopt.stages.quantize.sensitivity import ensure_node_names, rank_sensitive_nodes
from conftest import detector_model


def test_concat_of_boxes_and_scores_ranks_first(tmp_path):
    model = onnx.load(str(detector_model(tmp_path / "det.onnx")))
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((16, 16)).astype(np.float32)} for _ in range(4)]
    quantized = quantize(model, Recipe(mode="static"), batches)
    ranking = rank_sensitive_nodes(model, quantized, batches[:2])
    assert ranking[0][0] == "concat"
    assert all(score > 0 for _, score in ranking)


def test_unnamed_nodes_get_unique_names():
    from conftest import conv_classifier

    model = conv_classifier()
    for node in model.graph.node:
        node.name = ""
    model.graph.node[1].name = "Conv_0"  # collides with a generated name
    named = ensure_node_names(model)
    names = [n.name for n in named.graph.node]
    assert len(set(names)) == len(names) and all(names)
    assert all(not n.name for i, n in enumerate(model.graph.node) if i != 1)  # input untouched


def test_float16_models_can_be_analysed():
    from onnx import TensorProto, helper

    from edgeopt.stages.quantize.sensitivity import up_front_exclusions

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])], "fp16",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    assert up_front_exclusions(model, [{"x": np.full((1, 4), 2e7 / 1e3, np.float16)}]) == {}


def test_activations_compared_a_few_per_run_rank_as_all_at_once(tmp_path, monkeypatch):
    # A big model's every activation, exposed at once, is held twice per model (outputs and arena):
    # groups of EXPOSED_PER_RUN per pass over re-readable data must give the same ranking.
    from edgeopt.stages.quantize import sensitivity
    from tests.quantize.models import transformer_feeds, transformer_model

    model = ensure_node_names(transformer_model())
    batches = transformer_feeds(6)
    quantized = quantize(model, Recipe(mode="static"), batches)
    at_once = rank_sensitive_nodes(model, quantized, iter(batches[:3]))  # one-shot: everything in one pass
    reads = []

    def fresh():
        reads.append(1)
        return iter(batches[:3])

    monkeypatch.setattr(sensitivity, "EXPOSED_PER_RUN", 4)
    grouped = rank_sensitive_nodes(model, quantized, fresh)
    assert len(reads) > 3  # several passes, a few activations each
    assert grouped == at_once and len(at_once) > 4
