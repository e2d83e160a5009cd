"""int8 convolutions slow with their reduction depth (analysis.conv_depth): the model through its two anchors,
and what the estimate charges, on QDQ graphs built here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeopt.analysis.conv_depth import LINEAR_K0, anchored_factor, depth_factor, shallow_k0
from edgeopt.analysis.profile import static_profile
from edgeopt.runtime.microbench import op_stack, qdq_model
from edgeopt.targets import TargetProfile


def test_k0_passes_through_both_anchors():
    # reference 0.8 at depth 576, shallow 0.08 at depth 27: k0 = 27 x 576 x 0.9 / (0.1 x 576 - 27) = 457.2
    k0 = shallow_k0(0.8, 0.08, 576, 27)
    assert k0 == pytest.approx(27 * 576 * 0.9 / (57.6 - 27))
    assert 0.8 * depth_factor(27, 576, k0) == pytest.approx(0.08)
    assert depth_factor(576, 576, k0) == depth_factor(1152, 576, k0) == 1.0
    assert 0.1 < depth_factor(144, 576, k0) < 1  # between, rising with depth
    assert depth_factor(72, 576, k0) < depth_factor(144, 576, k0)


def test_a_shallow_model_not_slower_sets_nothing_and_one_too_slow_takes_the_linear_limit():
    assert shallow_k0(0.8, 0.8, 576, 27) is None and shallow_k0(0.8, 0.9, 576, 27) is None
    assert shallow_k0(0.8, 0.01, 576, 27) == LINEAR_K0
    assert depth_factor(288, 576, LINEAR_K0) == pytest.approx(0.5)


def target(**efficiency: float) -> TargetProfile:
    return TargetProfile.model_validate({
        "name": "t", "display_name": "T", "kind": "cpu", "arch": "x86_64", "cores": 1,
        "peak_ops_per_s": {"fp32": 1e9, "int8": 4e9}, "memory_bandwidth_bytes_per_s": 1e15,
        "efficiency": efficiency})


def conv(cin: int, int8: bool = True) -> onnx.ModelProto:
    weights = (np.random.default_rng(0).standard_normal((32, cin, 3, 3)) * 0.1).astype(np.float32)
    if int8:
        return onnx.load_from_string(qdq_model("Conv", weights, [1, cin, 16, 16], [1, 32, 16, 16], pads=[1] * 4))
    return onnx.load_from_string(op_stack("Conv", 1, (32, cin, 3, 3), [1, cin, 16, 16], [1, 32, 16, 16],
                                          pads=[1] * 4))


def conv_node(model: onnx.ModelProto, measured: TargetProfile):
    (node,) = [n for n in static_profile(model, measured).nodes if n.macs]
    return node


def test_an_int8_conv_is_priced_at_its_depths_efficiency_where_the_shallow_model_was_measured():
    measured = target(conv=0.8, **{"conv.shallow@int8": 0.08})
    stem, middle, deep = (conv_node(conv(cin), measured) for cin in (3, 16, 64))
    assert stem.efficiency == pytest.approx(0.08)  # depth 27: the shallow anchor itself
    assert stem.compute_time_us == pytest.approx(2 * stem.macs / (4e9 * 0.08) * 1e6)
    k0 = shallow_k0(0.8, 0.08, 576, 27)
    assert middle.efficiency == pytest.approx(0.8 * depth_factor(144, 576, k0))
    assert deep.efficiency == pytest.approx(0.8)  # depth 576: the reference
    # fp32 convolutions, and targets without the shallow anchor, keep the plain efficiency
    assert conv_node(conv(3, int8=False), measured).efficiency == pytest.approx(0.8)
    assert conv_node(conv(3), target(conv=0.8)).efficiency == pytest.approx(0.8)


def test_a_qoperator_convolution_reads_its_weight_where_qlinearconv_keeps_it():
    from onnx import TensorProto, helper, numpy_helper

    weights = np.ones((32, 3, 3, 3), np.int8)
    inits = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z"), numpy_helper.from_array(np.array(0, np.int8), "wz")]
    node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "wz", "s", "z"], ["y"], pads=[1] * 4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 32, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    stem = conv_node(model, target(conv=0.8, **{"conv.shallow@int8": 0.08}))
    assert stem.execution_dtype == "int8" and stem.efficiency == pytest.approx(0.08)


def test_each_depth_is_priced_on_the_curve_between_the_anchors_around_it():
    """Measured anchors at depth 27, 144 and 288 below the reference (576): a depth between two of them is on
    the curve through those two, so a CPU whose 3x3 ratios at 144 and 288 sit above the stem's curve (an AMD
    EPYC: 0.71 and 0.88 where the curve through the stem gives 0.58 and 0.81) is priced at them."""
    reference, anchors = 0.8, [(288, 0.8 * 0.88), (144, 0.8 * 0.71), (27, 0.8 * 0.17)]
    for depth, ratio in ((288, 0.88), (144, 0.71), (27, 0.17), (576, 1.0), (1152, 1.0)):
        assert anchored_factor(depth, 576, reference, anchors) == pytest.approx(ratio)
    # between 288 and 576: the curve through those two alone
    k0 = shallow_k0(0.8, 0.8 * 0.88, 576, 288)
    assert anchored_factor(432, 576, reference, anchors) == pytest.approx(depth_factor(432, 576, k0))
    # between 27 and 144, scaled to the upper anchor; below 27, the same curve
    k0 = shallow_k0(0.8 * 0.71, 0.8 * 0.17, 144, 27)
    for depth in (72, 9):
        assert anchored_factor(depth, 576, reference, anchors) == pytest.approx(0.71 * depth_factor(depth, 144, k0))
    # with the stem alone (a calibration before the middle anchors), the one curve through it
    k0 = shallow_k0(0.8, 0.8 * 0.17, 576, 27)
    assert anchored_factor(288, 576, reference, [(27, 0.8 * 0.17), (144, None)]) == \
        pytest.approx(depth_factor(288, 576, k0))
    # an anchor measured faster than the reference does not make a shallower Conv faster than it
    assert anchored_factor(288, 576, reference, [(288, 0.9), (27, 0.1)]) == 1.0
    assert anchored_factor(288, 576, reference, []) == 1.0


def test_a_32_channel_int8_conv_is_priced_at_its_own_anchor():
    measured = target(conv=0.8, **{"conv.shallow@int8": 0.08, "conv.32ch@int8": 0.72, "conv.16ch@int8": 0.6})
    assert conv_node(conv(32), measured).efficiency == pytest.approx(0.72)
    assert conv_node(conv(16), measured).efficiency == pytest.approx(0.6)
    assert conv_node(conv(3), measured).efficiency == pytest.approx(0.08)
    assert conv_node(conv(64), measured).efficiency == pytest.approx(0.8)
