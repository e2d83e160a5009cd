"""A float depthwise Conv whose maps outgrow the caches runs at the efficiency calibration timed at its working set."""

from __future__ import annotations

import math

import pytest
from onnx import TensorProto, helper

from edgeopt.analysis.conv_working_set import DEPTHWISE_REFERENCE_BYTES, WORKING_SET_ANCHORS, working_set_factor
from edgeopt.analysis.profile import static_profile

from .helpers import cpu_target, make_model, tensor, weight

F = TensorProto.FLOAT
WS12, WS25 = (size for _key, size in WORKING_SET_ANCHORS)


def test_the_factor_follows_the_measured_points_log_linearly_and_stays_at_the_largest_beyond():
    anchors = [(WS12, 0.4), (WS25, 0.1)]
    assert working_set_factor(DEPTHWISE_REFERENCE_BYTES, DEPTHWISE_REFERENCE_BYTES, 0.4, anchors) == 1.0
    assert working_set_factor(WS12, DEPTHWISE_REFERENCE_BYTES, 0.4, anchors) == pytest.approx(1.0)
    assert working_set_factor(WS25, DEPTHWISE_REFERENCE_BYTES, 0.4, anchors) == pytest.approx(0.25)
    assert working_set_factor(4 * WS25, DEPTHWISE_REFERENCE_BYTES, 0.4, anchors) == pytest.approx(0.25)
    middle = math.sqrt(WS12 * WS25)  # halfway in log size: halfway in log efficiency
    assert working_set_factor(int(middle), DEPTHWISE_REFERENCE_BYTES, 0.4, anchors) == pytest.approx(0.5, rel=1e-3)
    # never faster than the reference, nothing without a larger point measured
    assert working_set_factor(WS25, DEPTHWISE_REFERENCE_BYTES, 0.4, [(WS25, 0.8)]) == 1.0
    assert working_set_factor(WS25, DEPTHWISE_REFERENCE_BYTES, 0.4, [(WS12, None), (WS25, None)]) == 1.0


def _conv(channels: int, side: int, group: int, kernel: int = 3):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[kernel // 2] * 4, group=group)
    return make_model([node], [tensor("x", F, [1, channels, side, side])], [tensor("y", F, [1, channels, side, side])],
                      [weight("w", (channels, channels // group, kernel, kernel))])


def test_a_depthwise_conv_beyond_the_reference_working_set_slows_down_by_the_measured_curve():
    """Against the same target without the larger working sets measured: a 32-channel depthwise Conv at 56x56
    (0.8 MB read and written) and at 224x224 (the 12 MiB point, measured as fast as the reference) is priced as
    before; at 320x320 (the 25 MiB point, a quarter of the reference's efficiency) four times as long per MAC, and
    so at 448x448 beyond it; halfway in log size between the two points, twice. A dense Conv is not priced so."""
    measured = {"conv.depthwise": 0.4, "conv.depthwise.ws12": 0.4, "conv.depthwise.ws25": 0.1}
    wide = cpu_target(arch="x86_64", isa_features=["avx2", "avx512f"], efficiency=measured)
    plain = cpu_target(arch="x86_64", isa_features=["avx2", "avx512f"], efficiency={"conv.depthwise": 0.4})

    def slowdown(model, op_class: str | None = "depthwise") -> float:
        with_curve, without = (static_profile(model, target, threads=1).node("conv") for target in (wide, plain))
        assert with_curve.op_class == op_class
        return with_curve.compute_time_us / without.compute_time_us

    assert slowdown(_conv(32, 56, 32)) == pytest.approx(1.0)
    assert slowdown(_conv(32, 224, 32)) == pytest.approx(1.0)
    assert slowdown(_conv(32, 320, 32)) == pytest.approx(4.0)
    assert slowdown(_conv(32, 448, 32)) == pytest.approx(4.0)
    side = round(math.sqrt(math.sqrt(WS12 * WS25) / (2 * 4 * 32)))  # 268: halfway in log size
    assert slowdown(_conv(32, side, 32)) == pytest.approx(2.0, rel=0.01)
    assert slowdown(_conv(32, 320, 1), None) == pytest.approx(1.0)  # dense: its own class, no such curve


def test_calibration_keeps_a_working_set_point_only_where_it_solves_a_slowdown():
    """The large-map depthwise models are solved through the estimate: measured slower than the reference class
    prices them, the point is set so that the estimate meets the measurement; measured faster, there is no slowdown
    to state and the point is dropped (its direct fit, reorders inside, would state one)."""
    import onnx

    from edgeopt.runtime.class_bench import CLASS_PREFIX, class_models
    from edgeopt.runtime.class_refit import refit_through_estimates

    key = "conv.depthwise.ws25"
    data, ops = class_models()[key]
    model = onnx.load_from_string(data)
    target = cpu_target(arch="x86_64", isa_features=["avx2", "avx512f"], memory_bandwidth_bytes_per_s=1e12,
                        efficiency={"conv.depthwise": 0.4, key: 0.05})
    at_reference = static_profile(model, target.model_copy(update={"efficiency": {"conv.depthwise": 0.4}}),
                                  threads=1).nodes_latency_ms

    def refit(measured_ms: float):
        return refit_through_estimates(target, {CLASS_PREFIX + key: ops / (measured_ms / 1000)}, {}, 1)

    slower = refit(2 * at_reference)
    assert 0 < slower.efficiency[key] < 0.4
    assert static_profile(model, slower, threads=1).nodes_latency_ms == pytest.approx(2 * at_reference, rel=0.01)
    assert key not in refit(0.5 * at_reference).efficiency
