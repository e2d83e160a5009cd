"""HardSwish / HardSigmoid inside QDQ models run on onnxruntime's int8 kernels (QLinearAdd, QLinearMul)
instead of dequantize → float activation → quantize. Bounds are in output steps: QLinearAdd/QLinearMul
round the same way on AVX2, AVX-512 and NEON, and recipes use 7-bit weights (reduce_range) so the
convolutions give the same numbers on every CPU."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.stages.quantize.hard_activations import hard_activations_to_int8
from edgeopt.stages.quantize.quantizer import quantize
from edgeopt.stages.quantize.recipes import Recipe
from tests.quantize.models import hardswish_cnn_model, image_feeds

RECIPE = Recipe(mode="static", reduce_range=True)
_CODES = {"u8": (TensorProto.UINT8, np.uint8, 128, 0, 255), "s8": (TensorProto.INT8, np.int8, 0, -128, 127)}


def _activation_model(op: str, codes: str) -> tuple[onnx.ModelProto, float]:
    """x → Quantize → Dequantize → op → Quantize → Dequantize → y, per-tensor, as onnxruntime's QDQ
    quantizer leaves an activation between two quantized layers. Returns (model, the output step)."""
    onnx_type, numpy_type, zero, _, _ = _CODES[codes]
    lowest = _CODES[codes][3]
    # outputs from about -0.6 to 6.4 (HardSwish), -0.02 to 1.08 (HardSigmoid)
    x_scale, y_scale = 12.0 / 255, (7.0 if op == "HardSwish" else 1.1) / 255
    y_zero = np.array(lowest + (22 if op == "HardSwish" else 5), numpy_type)
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
             numpy_helper.from_array(np.array(zero, numpy_type), "xz"),
             numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
             numpy_helper.from_array(y_zero, "yz")]
    attributes = {"alpha": 0.2, "beta": 0.5} if op == "HardSigmoid" else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quantize_x"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dequantize_x"),
             helper.make_node(op, ["xd"], ["act"], name="activation", **attributes),
             helper.make_node("QuantizeLinear", ["act", "ys", "yz"], ["aq"], name="quantize_act"),
             helper.make_node("DequantizeLinear", ["aq", "ys", "yz"], ["y"], name="dequantize_act")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    assert onnx_type == inits[1].data_type
    return model, y_scale


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized_to=None) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if optimized_to is not None:
        options.optimized_model_filepath = str(optimized_to)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("codes", ["u8", "s8"])
@pytest.mark.parametrize("op", ["HardSwish", "HardSigmoid"])
def test_the_activation_runs_as_int8_kernels_within_a_step(tmp_path, op, codes):
    model, step = _activation_model(op, codes)
    x = {"x": np.linspace(-6.5, 6.5, 1024, dtype=np.float32)[None]}
    before = _run(model, x)
    rewritten, names = hard_activations_to_int8(model)
    assert names == ["activation"]
    onnx.checker.check_model(rewritten)
    after = _run(rewritten, x, optimized_to=tmp_path / "optimized.onnx")
    kernels = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert op not in kernels and "HardSigmoid" not in kernels
    if codes == "u8":  # x86 onnxruntime fuses u8 activations only; s8 ones on ARM (tests/remote/test_arm_board.py)
        assert "QLinearAdd" in kernels and ("QLinearMul" in kernels) == (op == "HardSwish")
    # exact activation of the int8 input, quantized to the output's grid
    xq = np.clip(np.round(x["x"] / (12.0 / 255)) + _CODES[codes][2], _CODES[codes][3], _CODES[codes][4])
    xd = (xq - _CODES[codes][2]) * (12.0 / 255)
    exact = xd * np.clip(xd / 6 + 0.5, 0, 1) if op == "HardSwish" else np.clip(0.2 * xd + 0.5, 0, 1)
    assert np.abs(before - exact).max() <= step / 2 + 1e-6  # the float activation: rounding only
    # the gate's own step (1/255 of its range) adds at most one output step on top
    assert np.abs(after - exact).max() <= 1.5 * step + 1e-6, np.abs(after - exact).max() / step
    assert np.mean(np.abs(after - exact) <= step / 2 + 1e-6) > 0.9


def test_a_static_recipe_quantizes_every_hard_activation_and_stays_faithful():
    model, feeds = hardswish_cnn_model(), image_feeds(40)
    quantized = quantize(model, RECIPE, feeds[:24])
    ops = {n.name: n.op_type for n in quantized.graph.node}
    assert not {"HardSwish", "HardSigmoid"} & set(ops.values())
    assert ops["hs1"] == ops["hs2"] == ops["hs3"] == "Mul"  # the names stay for nodes_to_exclude
    reference = np.concatenate([_run(model, f) for f in feeds[24:]])
    candidate = np.concatenate([_run(quantized, f) for f in feeds[24:]])
    cosine = np.sum(reference * candidate, 1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(candidate, axis=1)
    assert cosine.mean() >= 0.99 and np.mean(reference.argmax(1) == candidate.argmax(1)) >= 0.9, cosine


def test_opset13_hardswish_as_hardsigmoid_times_x_gets_the_gate_in_int8(tmp_path):
    model, feeds = hardswish_cnn_model(opset=13), image_feeds(40)
    quantized = quantize(model, RECIPE, feeds[:24])
    ops = {n.name: n.op_type for n in quantized.graph.node}
    assert "HardSigmoid" not in ops.values() and ops["hs1_gate"] == "Add"
    _run(quantized, feeds[0], optimized_to=tmp_path / "optimized.onnx")
    kernels = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "HardSigmoid" not in kernels and kernels.count("QLinearMul") >= 4
    unread = {t.name for t in quantized.graph.initializer} - {i for n in quantized.graph.node for i in n.input}
    assert not unread  # the QuantizeLinear the gate replaced took its scale with it
    reference = np.concatenate([_run(model, f) for f in feeds[24:]])
    candidate = np.concatenate([_run(quantized, f) for f in feeds[24:]])
    cosine = np.sum(reference * candidate, 1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(candidate, axis=1)
    assert cosine.mean() >= 0.99, cosine


def test_an_activation_kept_float_is_left_alone():
    model, feeds = hardswish_cnn_model(), image_feeds(8)
    quantized = quantize(model, RECIPE.excluding(["hs2", "se_gate"]), feeds)
    ops = {n.name: n.op_type for n in quantized.graph.node}
    assert ops["hs2"] == "HardSwish" and ops["se_gate"] == "HardSigmoid" and ops["hs1"] == "Mul"


def test_activations_not_between_quantized_tensors_are_left_alone():
    model, _ = _activation_model("HardSwish", "u8")
    del model.graph.node[3:]  # the activation's output is the graph's output, float
    model.graph.output[0].name = "act"
    rewritten, names = hard_activations_to_int8(model)
    assert names == [] and [n.op_type for n in rewritten.graph.node][-1] == "HardSwish"


def test_each_candidate_records_the_activations_it_runs_on_int8_kernels():
    from edgeopt.stages.quantize.search import QuantizeOptions, search
    from edgeopt.targets import load_target

    model, feeds = hardswish_cnn_model(), image_feeds(48)
    every = ["hs1", "hs2", "se_gate", "hs3"]
    _, outcome = search(model, target=load_target("host"), options=QuantizeOptions(
        mode="static", measure_latency=False, techniques=False, overrides={"nodes_to_exclude": ["hs2"]}),
        calibration=feeds[:32], evaluation=feeds[32:], timing_feeds=feeds[0])
    ran = [c for c in outcome.candidates if c.status != "rejected"]
    assert ran and all(c.int8_activations for c in ran)
    for candidate in ran:
        assert set(candidate.int8_activations) == set(every) - set(candidate.float_nodes), candidate.name
        assert "hs2" not in candidate.int8_activations
