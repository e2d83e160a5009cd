"""SmoothQuant, cross-layer equalization and bias correction: exact in float, and what each buys in int8.
Recipes use 7-bit weights (reduce_range) so the int8 results are the same on every x86 CPU."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgeopt.stages.quantize import techniques
from edgeopt.stages.quantize.quantizer import quantize
from edgeopt.stages.quantize.recipes import Recipe
from edgeopt.stages.quantize.sensitivity import ensure_node_names
from tests.quantize.models import depthwise_cnn_model, image_feeds, transformer_feeds, transformer_model

RECIPE = Recipe(mode="static", reduce_range=True, op_types=("Conv", "MatMul", "Gemm"))
TRANSFORMER_FLOAT = ["ln0", "ln1", "ln2", "softmax", "gelu_erf", "mask_add"]


def _outputs(model, feeds, names):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.concatenate(parts) for parts in zip(*[session.run(names, feed) for feed in feeds])]


def _sqnr(reference, candidate):
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - candidate) ** 2))


def test_smooth_quant_is_exact_in_float_and_recovers_the_outlier_channels():
    model = ensure_node_names(transformer_model())
    feeds = transformer_feeds(40)
    sites = techniques.smooth_quant_sites(model)
    # ln1 also feeds the residual Add, ln2 the output: only ln0 feeds nothing but MatMuls
    assert [norm.name for norm, _ in sites] == ["ln0"]
    stats = techniques.channel_statistics(model, {norm.output[0]: -1 for norm, _ in sites}, feeds[:32])
    smoothed, done = techniques.smooth_quant(model, stats)
    assert done == ["ln0"]
    names = ["hidden"]
    (reference,) = _outputs(model, feeds[32:], names)
    (same,) = _outputs(smoothed, feeds[32:], names)
    assert np.allclose(reference, same, rtol=1e-4, atol=1e-4)
    recipe = RECIPE.excluding(TRANSFORMER_FLOAT)
    (plain,) = _outputs(quantize(model, recipe, feeds[:32]), feeds[32:], names)
    (smooth,) = _outputs(quantize(smoothed, recipe, feeds[:32]), feeds[32:], names)
    assert _sqnr(reference, smooth) > _sqnr(reference, plain) + 2  # dB: the small channels come back


def test_cross_layer_equalization_is_exact_and_balances_the_ranges():
    model = ensure_node_names(depthwise_cnn_model(spread=300))
    feeds = image_feeds(40)
    equalized, pairs = techniques.cross_layer_equalization(model)
    assert pairs == ["stem→depthwise", "depthwise→pointwise"]
    (reference,) = _outputs(model, feeds, ["logits"])
    (same,) = _outputs(equalized, feeds, ["logits"])
    assert np.allclose(reference, same, rtol=1e-4, atol=1e-5)

    def spread(m):
        stats = techniques.channel_statistics(m, {"r1": 1}, feeds[:8])
        peaks = stats["r1"][0]
        return peaks.max() / max(peaks[peaks > 0].min(), 1e-12)

    assert spread(equalized) < spread(model) / 5
    (plain,) = _outputs(quantize(model, RECIPE, feeds[:32]), feeds[32:], ["logits"])
    (balanced,) = _outputs(quantize(equalized, RECIPE, feeds[:32]), feeds[32:], ["logits"])
    assert _sqnr(reference[32:], balanced) > _sqnr(reference[32:], plain)


def test_bias_correction_removes_the_mean_shift_of_int8_weights():
    model = ensure_node_names(depthwise_cnn_model())
    feeds = image_feeds(40)
    stats = techniques.channel_statistics(model, techniques.correction_sites(model), feeds[:32])
    corrected, nodes = techniques.bias_correction(model, stats, reduce_range=True, per_channel=True)
    assert nodes == ["stem", "depthwise", "pointwise"]
    # The weights as the quantizer returns them: 7-bit symmetric per channel, the peak exact.
    weight = techniques.fake_quantized(np.array([[1.0, 0.5, 0.013], [2.0, -1.0, 0.3]]), True, True)
    assert np.allclose(weight[:, 0], [1.0, 2.0]) and weight[0, 2] == 0.015625
    (reference,) = _outputs(model, feeds[32:], ["logits"])
    int8_plain = quantize(model, RECIPE, feeds[:32])
    int8_corrected = quantize(corrected, RECIPE, feeds[:32])
    (plain,) = _outputs(int8_plain, feeds[32:], ["logits"])
    (fixed,) = _outputs(int8_corrected, feeds[32:], ["logits"])
    bias_plain = abs(float(np.mean(plain - reference)))
    bias_fixed = abs(float(np.mean(fixed - reference)))
    assert bias_fixed <= bias_plain + 1e-4


def _bias(model, node_name):
    from onnx import numpy_helper

    node = next(n for n in model.graph.node if n.name == node_name)
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == node.input[2])


def test_bias_correction_is_redone_for_each_recipe_and_undone_where_a_conv_stays_float():
    model = ensure_node_names(depthwise_cnn_model())
    stats = techniques.channel_statistics(model, techniques.correction_sites(model), image_feeds(16))
    corrected, nodes = techniques.bias_correction(model, stats, reduce_range=True, per_channel=True)
    correction = techniques.BiasCorrection(stats, nodes, reduce_range=True, per_channel=True)
    correction.record_original(model)
    before = corrected.SerializeToString()
    assert correction.for_recipe(corrected, RECIPE) is corrected  # the recipe it was made for: no copy
    # The speed fallback keeps the stem in float: its corrected bias would be its only error.
    stem_float = correction.for_recipe(corrected, RECIPE.excluding(["stem", "stem_relu"]))
    assert np.array_equal(_bias(stem_float, "stem"), _bias(model, "stem"))
    assert not np.array_equal(_bias(corrected, "stem"), _bias(model, "stem"))
    assert np.array_equal(_bias(stem_float, "depthwise"), _bias(corrected, "depthwise"))
    # 8-bit weights err differently from 7-bit ones: corrected afresh, from the original biases.
    full_range = correction.for_recipe(corrected, RECIPE.model_copy(update={"reduce_range": False}))
    direct, _ = techniques.bias_correction(model, stats, reduce_range=False, per_channel=True)
    for name in nodes:
        assert np.allclose(_bias(full_range, name), _bias(direct, name), atol=1e-6)
        assert not np.allclose(_bias(full_range, name), _bias(corrected, name), atol=1e-6)
    assert corrected.SerializeToString() == before  # variants are copies


@pytest.mark.parametrize("builder", [transformer_model, depthwise_cnn_model])
def test_techniques_leave_the_input_model_alone(builder):
    model = ensure_node_names(builder())
    before = model.SerializeToString()
    techniques.cross_layer_equalization(model)
    techniques.smooth_quant(model, {})
    techniques.bias_correction(model, {}, reduce_range=False, per_channel=True)
    assert model.SerializeToString() == before


def _search(model, feeds, **options):
    from edgeopt.stages.quantize.search import QuantizeOptions, search
    from edgeopt.targets import load_target

    return search(model, target=load_target("host"), options=QuantizeOptions(
        measure_latency=False, mode="auto", overrides={"reduce_range": True}, **options),
        calibration=feeds[:32], evaluation=feeds[32:], labels=None, timing_feeds=feeds[0])


def test_search_keeps_a_technique_only_where_the_task_metric_gains():
    # The transformer's outlier channels: SmoothQuant raises the task metric, so it is kept.
    _model, outcome = _search(transformer_model(), transformer_feeds(48), metrics={"*": "cosine"})
    tried = {r["technique"]: r for r in outcome.prepare["techniques"]}
    assert tried["smoothquant"]["applied"] and tried["smoothquant"]["where"] == ["ln0"]
    assert tried["smoothquant"]["margin_after"] > tried["smoothquant"]["margin_before"]
    chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
    assert len(chosen.mixed_precision) <= 2  # what mixed precision alone needs reverts for
    # A CNN whose int8 classes already agree with float: nothing to gain, so nothing is kept.
    _model, outcome = _search(depthwise_cnn_model(spread=4), image_feeds(48))
    tried = outcome.prepare["techniques"]
    assert {r["technique"] for r in tried} <= {"cross-layer equalization", "bias correction", "calibration: entropy",
                                               "calibration: percentile", "calibration per activation"}
    assert {"cross-layer equalization", "bias correction"} <= {r["technique"] for r in tried}
    assert not any(r["applied"] for r in tried)
    assert outcome.metrics[0]["metric"] == "top1"


def _outlier_mlp():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)
             for name, shape in [("w1", (32, 64)), ("w2", (64, 64)), ("w3", (64, 10))]]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
             helper.make_node("MatMul", ["a2", "w3"], ["logits"], name="fc3")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_ranges_per_activation_clip_a_rare_outlier_when_it_helps():
    from edgeopt.stages.quantize.calibration import collect_activation_statistics, least_error_range

    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((1, 32)).astype(np.float32)} for _ in range(64)]
    feeds[3]["x"][0, 7] = 400.0  # one glitch in the calibration data stretches every min/max range
    model = _outlier_mlp()
    statistics = collect_activation_statistics(model, feeds[:48], histograms=True)
    # By expected squared error a single glitch is worth keeping in range (its clipping error is huge) ...
    assert least_error_range(statistics.tensors["x"])[0] == "minmax"
    _model, outcome = _search(model, feeds, metrics={"*": "cosine"}, min_cosine=0.999)
    tried = {r["technique"]: r for r in outcome.prepare["techniques"]}
    # ... but the task says otherwise: a clipping range is measured better and every static recipe takes it.
    kept = [name for name, r in tried.items() if r["applied"] and name.startswith("calibration")]
    assert kept and tried[kept[-1]]["margin_after"] > tried[kept[0]]["margin_before"]
    methods = {c.recipe.calibration for c in outcome.candidates if c.recipe.mode == "static"}
    assert len(methods) == 1 and methods != {"minmax"}
