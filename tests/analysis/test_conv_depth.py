"""int8 convolutions slow with their reduction depth (analysis.conv_depth): the model through its two anchors,
and what the estimate charges, on QDQ graphs built here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeopt.analysis.conv_depth import LINEAR_K0, depth_factor, shallow_k0
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
