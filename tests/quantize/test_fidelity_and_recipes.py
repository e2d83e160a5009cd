"""Fidelity metrics and target-driven recipe choice."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeopt.metrics.fidelity import compare_outputs, measure_fidelity
from edgeopt.stages.quantize.quantizer import quantize_weights_only
from edgeopt.stages.quantize.recipes import candidate_recipes, default_static, isa_family
from edgeopt.targets import TargetProfile, load_target


def _target(arch: str, features: tuple[str, ...]) -> TargetProfile:
    return TargetProfile(name="t", display_name="t", kind="cpu", arch=arch, isa_features=features)


def test_collapsed_scores_beside_boxes_are_caught():
    rng = np.random.default_rng(0)
    reference = np.concatenate([rng.uniform(0, 640, (8, 100, 4)), rng.uniform(0, 1, (8, 100, 3))], axis=-1)
    collapsed = reference.copy()
    collapsed[..., 4:] = 0.0  # what a shared int8 scale does to sigmoid scores next to pixel boxes
    result = compare_outputs("detections", reference, collapsed)
    assert result.cosine_mean > 0.9999  # the whole-tensor cosine alone would pass this
    assert result.channel_cosine_min == 0.0 and result.worst_channel == 4
    assert result.floor_cosine == 0.0


def test_metrics_on_known_noise():
    reference = np.ones((10, 4))
    candidate = reference + 0.1
    result = compare_outputs("y", reference, candidate)
    assert result.max_abs_error == pytest.approx(0.1)
    assert result.sqnr_db == pytest.approx(10 * math.log10(1 / 0.01))
    assert result.cosine_mean == pytest.approx(1.0)
    assert result.top1_agreement is not None  # [N, C] float is classifier-like


def test_top1_agreement_and_accuracy():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    candidate = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]])  # sample 2 flips
    labels = np.array([0, 1, 0, 0])
    fidelity = measure_fidelity(["probs"], [reference], [candidate], labels)
    assert fidelity.outputs[0].top1_agreement == pytest.approx(0.75)
    assert fidelity.accuracy_reference == pytest.approx(0.75)
    assert fidelity.accuracy_candidate == pytest.approx(0.5)
    assert not fidelity.meets(min_cosine=0.5, min_top1=0.99)


def test_a_given_cosine_floor_holds_beside_the_task_metric():
    """What an AVX2 u8 kernel's saturation does: every sample keeps its class, one score channel bends."""
    from edgeopt.metrics.plan import MetricResult

    rng = np.random.default_rng(1)
    reference = rng.normal(size=(64, 10))
    reference[np.arange(64), rng.choice([0, 1, 2, 4, 5, 6, 7, 8, 9], 64)] += 6.0  # a clear winner, never class 3
    bent = reference.copy()
    bent[:, 3] = np.clip(bent[:, 3], -0.2, 0.2)  # clipped, well below every winner
    fidelity = measure_fidelity(["linear"], [reference], [bent], reference.argmax(1))
    assert fidelity.accuracy_candidate == 1.0 and fidelity.outputs[0].floor_cosine < 0.9
    fidelity.metrics = [MetricResult(output="linear", metric="accuracy", score=1.0, floor=0.99, passed=True,
                                     chosen="default: labels")]
    assert fidelity.meets() and fidelity.shortfall() is None  # the task metric decides by default
    shortfall = fidelity.shortfall(min_cosine=0.99)
    assert shortfall is not None and shortfall.startswith("output 'linear': cosine 0.") and "floor 0.99" in shortfall
    fidelity.metrics = []
    assert fidelity.shortfall() is not None  # without a task metric the default floor (0.99) decides


def test_nan_output_fails():
    result = compare_outputs("y", np.ones((2, 3)), np.full((2, 3), np.nan))
    assert result.floor_cosine <= 0 and math.isinf(result.max_abs_error)


@pytest.mark.parametrize("arch,features,family,activation,reduce_range", [
    ("x86_64", ("avx2", "avx512_vnni"), "x86-vnni", "u8", False),
    ("x86_64", ("avx2",), "x86", "u8", True),
    ("aarch64", ("asimd", "asimddp"), "arm-dot", "s8", False),
    ("aarch64", ("asimd",), "arm", "s8", False),
])
def test_target_isa_picks_the_default(arch, features, family, activation, reduce_range):
    target = _target(arch, features)
    assert isa_family(target) == family
    choice = default_static(target)
    assert choice.recipe.activation_type == activation
    assert choice.recipe.reduce_range is reduce_range
    assert choice.recipe.format == "qdq" and choice.recipe.per_channel
    assert choice.reason


def test_auto_candidates_and_overrides():
    target = _target("x86_64", ("avx512_vnni",))
    cnn = candidate_recipes(target, "auto", has_calibration=True, op_histogram={"Conv": 10, "Gemm": 1})
    assert [(c.recipe.activation_type, c.recipe.reduce_range) for c in cnn] == [("u8", False), ("u8", True),
                                                                                ("s8", False)]
    # Saturation is measured, not assumed: an AVX2-only target gets the full-range weights tried too.
    avx2 = candidate_recipes(_target("x86_64", ("avx2",)), "auto", has_calibration=True, op_histogram={"Conv": 1})
    assert [c.recipe.reduce_range for c in avx2][:2] == [True, False]
    transformer = candidate_recipes(target, "auto", has_calibration=True,
                                    op_histogram={"MatMul": 40, "Softmax": 4, "Add": 40, "LayerNormalization": 8})
    assert transformer[-1].recipe.mode == "dynamic"
    assert transformer[3].recipe.op_types == ("Conv", "ConvTranspose", "MatMul", "Gemm")
    forced = candidate_recipes(target, "auto", has_calibration=True, op_histogram={"Conv": 1},
                               overrides={"activation_type": "s8"})
    assert [c.recipe.activation_type for c in forced] == ["s8"]
    assert "user overrides" in forced[0].reason
    assert candidate_recipes(target, "none", has_calibration=True, op_histogram={}) == []


def test_weights_only_shrinks_and_stays_close(tmp_path):
    from conftest import conv_classifier
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 128])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    before = model.SerializeToString()
    quantized = quantize_weights_only(model)
    assert model.SerializeToString() == before  # input untouched
    onnx.checker.check_model(quantized)
    assert len(quantized.SerializeToString()) < 0.3 * len(before)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    ref = ort.InferenceSession(before, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert compare_outputs("y", ref, got).floor_cosine > 0.999
    conv = quantize_weights_only(conv_classifier())
    assert sum(n.op_type == "DequantizeLinear" for n in conv.graph.node) == 2  # conv and fc weights


def test_integer_outputs_are_judged_by_exact_agreement():
    result = compare_outputs("class_id", np.array([3, 5, 7, 9]), np.array([3, 1, 7, 8]))
    assert result.exact_agreement == 0.5 and result.floor_cosine == 0.5  # a cosine would say 1.0
    assert compare_outputs("mask", np.array([True, False]), np.array([True, False])).floor_cosine == 1.0


def test_the_measuring_devices_cpu_chooses_the_recipe():
    """convert --ssh: the board that measures the candidates decides which int8 kernels can pay."""
    from edgeopt.stages.quantize.recipes import default_static, isa_family, recipe_target_of_device

    rpi5 = load_target("rpi5")  # Cortex-A76: dot-product instructions
    pi4_facts = {"machine": "aarch64", "cpu_features": ["fp", "asimd", "evtstrm", "crc32", "cpuid"]}
    target, note = recipe_target_of_device(rpi5, pi4_facts, "pi4")
    assert isa_family(target) == "arm" and target.name == "rpi5"
    assert note == "int8 recipe for pi4's CPU (aarch64, arm), which measures the candidates, not for rpi5's " \
                   "(aarch64, arm-dot)"
    assert "no dot-product" in default_static(target).reason
    same, quiet = recipe_target_of_device(rpi5, {"machine": "aarch64", "cpu_features": ["asimd", "asimddp"]}, "pi5")
    assert isa_family(same) == "arm-dot" and quiet is None
    x86, _ = recipe_target_of_device(rpi5, {"machine": "x86_64", "cpu_features": ["avx2", "fma"]}, "loopback")
    assert default_static(x86).recipe.reduce_range  # AVX2 without VNNI
    assert recipe_target_of_device(rpi5, {}, "silent") == (rpi5, None)  # facts unknown: the profile stands
