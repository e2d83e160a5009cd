"""LSTMs in static recipes: onnxruntime's QDQ quantizer leaves them float; edgeopt runs them as
DynamicQuantizeLSTM (int8 weights per gate row). Recipes use 7-bit weights (reduce_range) so the int8
numbers are the same on every x86 CPU (no u8×s8 saturation without VNNI) and on ARM."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from edgeopt.stages.quantize.quantizer import quantize
from edgeopt.stages.quantize.recipes import Recipe
from edgeopt.stages.quantize.recurrent import convertible_lstms, quantize_lstms
from edgeopt.stages.quantize.sensitivity import rank_sensitive_nodes
from tests.quantize.models import crnn_model, strip_feeds

RECIPE = Recipe(mode="static", reduce_range=True)


def _logits(model: onnx.ModelProto, feeds) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], feed)[0] for feed in feeds])


def _ops(model: onnx.ModelProto) -> dict[str, str]:
    return {node.name: node.op_type for node in model.graph.node}


def test_a_static_recipe_runs_the_lstm_in_int8_and_keeps_every_step():
    model, feeds = crnn_model(), strip_feeds(48)
    quantized = quantize(model, RECIPE, feeds[:32])
    ops = _ops(quantized)
    assert ops["lstm"] == "DynamicQuantizeLSTM" and "LSTM" not in ops.values()
    weights = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    assert "W" not in weights and "R" not in weights  # the float copies are gone
    assert sum(a.dtype == np.int8 and a.ndim == 3 for a in weights.values()) == 2
    reference, candidate = _logits(model, feeds[32:]), _logits(quantized, feeds[32:])
    assert not np.array_equal(reference, candidate)
    steps = reference.reshape(-1, reference.shape[-1]), candidate.reshape(-1, candidate.shape[-1])
    agreement = np.mean(steps[0].argmax(-1) == steps[1].argmax(-1))
    cosine = np.mean(np.sum(steps[0] * steps[1], -1) / np.linalg.norm(steps[0], axis=-1)
                     / np.linalg.norm(steps[1], axis=-1))
    assert agreement >= 0.95 and cosine >= 0.99, (agreement, cosine)


def test_int8_weights_are_per_gate_row_within_half_a_step():
    model = crnn_model()
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    converted, names = quantize_lstms(model, reduce_range=False)
    assert names == ["lstm"]
    node = converted.graph.node[4]
    arrays = {t.name: numpy_helper.to_array(t) for t in converted.graph.initializer}
    for values, scale, zero, source in ((1, 8, 9, "W"), (2, 10, 11, "R")):
        q, s = arrays[node.input[values]], arrays[node.input[scale]]
        assert q.shape == original[source].transpose(0, 2, 1).shape and s.shape == original[source].shape[:2]
        assert not arrays[node.input[zero]].any() and np.abs(q).max() == 127
        restored = q.transpose(0, 2, 1).astype(np.float32) * s[:, :, None]
        assert np.all(np.abs(restored - original[source]) <= s[:, :, None] / 2 + 1e-7)
    assert any(o.domain == "com.microsoft" for o in converted.opset_import)


def test_an_lstm_kept_float_stays_float_and_ops_lists_decide():
    model, feeds = crnn_model(), strip_feeds(8)
    assert _ops(quantize(model, RECIPE.excluding(["lstm"]), feeds))["lstm"] == "LSTM"
    assert _ops(quantize(model, RECIPE.model_copy(update={"op_types": ("Conv", "MatMul")}), feeds))["lstm"] == "LSTM"
    assert _ops(quantize(model, RECIPE.model_copy(update={"op_types": ("Conv", "LSTM")}), feeds))["lstm"] == \
        "DynamicQuantizeLSTM"


def test_only_sequence_first_lstms_with_constant_weights_convert():
    batch_first = crnn_model()
    batch_first.graph.node[4].attribute.append(helper.make_attribute("layout", 1))
    assert convertible_lstms(batch_first) == []  # DynamicQuantizeLSTM has no layout: it would misread X
    fed = crnn_model()
    weight = next(t for t in fed.graph.initializer if t.name == "W")
    fed.graph.input.append(helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, list(weight.dims)))
    fed.graph.initializer.remove(weight)
    assert convertible_lstms(fed) == []
    assert [n.name for n in convertible_lstms(crnn_model())] == ["lstm"]


def test_mixed_precision_sees_the_int8_lstm():
    # the LSTM's loss is measured like any node's, so mixed precision can rank it and revert it
    model, feeds = crnn_model(), strip_feeds(40)
    quantized = quantize(model, RECIPE, feeds[:32])
    ranking = dict(rank_sensitive_nodes(model, quantized, feeds[32:]))
    assert ranking.get("lstm", 0) > 0, ranking


def test_the_search_ships_the_int8_lstm_and_counts_it():
    from edgeopt.stages.quantize.search import QuantizeOptions, search
    from edgeopt.targets import load_target

    feeds = strip_feeds(48)
    model, outcome = search(crnn_model(), target=load_target("host"), options=QuantizeOptions(
        measure_latency=False, mode="static", overrides={"reduce_range": True}, metrics={"*": "sequence"}),
        calibration=feeds[:32], evaluation=feeds[32:], labels=None, timing_feeds=feeds[0])
    chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
    assert _ops(model)["lstm"] == "DynamicQuantizeLSTM"
    assert chosen.quantized_nodes == chosen.quantizable_nodes == 3  # conv, lstm, classifier
