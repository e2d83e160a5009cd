"""Runs of onnxruntime's broadcasting loop (analysis.broadcast) and what the estimate charges for them.

The expected spans follow onnxruntime's Broadcaster walk; the times in the comments are what onnxruntime 1.32.0
measured for these shapes on one x86 thread (53 K elements), which is why they matter."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.broadcast import innermost_span, span_count
from edgeopt.analysis.profile import static_profile
from edgeopt.targets import TargetProfile


@pytest.mark.parametrize("first, second, span", [
    ([1, 172, 309, 1], [1], 1),  # 374 µs: the both-1 last axis starts a run of one element
    ([1, 172, 309, 1], [], 1),  # a rank-0 scalar alike (400 µs)
    ([1, 172, 309, 1], [1, 1, 1, 1], 172 * 309),  # 8 µs: both-1 axes skipped while both inputs have axes left
    ([172, 309, 1], [1, 1, 1], 172 * 309),
    ([1, 172, 309, 4], [4], 4),  # 421 µs
    ([1, 309, 172, 2], [1], 309 * 172 * 2),  # 12 µs: the one value repeats over every axis
    ([1, 64, 56, 56], [1, 64, 1, 1], 56 * 56),  # a per-channel scale: one run per channel
    ([1, 64, 1, 1], [1, 64, 56, 56], 56 * 56),
    ([1, 172, 309, 1], [309, 1], 309),
    ([2, 3], [2, 3], 6),  # equal shapes: one run
])
def test_the_innermost_run_follows_onnxruntimes_walk(first, second, span):
    assert innermost_span(first, second) == span
    assert span_count(first, second) * span == int(np.prod(np.broadcast_shapes(tuple(first), tuple(second))))


def test_unknown_shapes_have_no_span_count():
    assert span_count(None, [1]) is None and span_count([1, -1], [1]) is None


def mul_model(x_shape: list[int], constant_shape: list[int]) -> onnx.ModelProto:
    constant = numpy_helper.from_array(np.full(constant_shape, 2.0, np.float32), "c")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["y"], name="mul")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)], [constant])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def target(**efficiency: float) -> TargetProfile:
    return TargetProfile.model_validate({
        "name": "t", "display_name": "T", "kind": "cpu", "arch": "x86_64", "cores": 1,
        "peak_ops_per_s": {"fp32": 1e9}, "memory_bandwidth_bytes_per_s": 1e12, "efficiency": efficiency})


def test_each_run_beyond_the_first_is_priced_at_the_calibrated_rate():
    # [1,8,16,1] x [1]: 128 runs of one element; a run costs 1 / (1e9 x 1e-3) s = 1 µs, so 127 µs more than the
    # same Mul by a [1,1,1,1] constant (one run), whose Mul elements cost the same: 128 / (1e9 x 0.01) s at the
    # two-tensor rate, of which a Mul by a scalar moves 1028 bytes of the 12 x 128 the kind's model moves
    elements_us = 12.8 * (2 * 128 * 4 + 4) / (12 * 128)
    measured = target(mul=0.01, broadcast_span=1e-3)
    by_one = static_profile(mul_model([1, 8, 16, 1], [1]), measured).node("mul")
    assert by_one.broadcast_spans == 128 and by_one.broadcast_span_us == pytest.approx(127.0)
    assert by_one.compute_time_us == pytest.approx(elements_us + 127.0)
    whole = static_profile(mul_model([1, 8, 16, 1], [1, 1, 1, 1]), measured).node("mul")
    assert whole.broadcast_spans == 0 and whole.compute_time_us == pytest.approx(elements_us)
    assert by_one.time_us - whole.time_us == pytest.approx(127.0)
    # a target that measured no cost per run prices the element work alone
    plain = static_profile(mul_model([1, 8, 16, 1], [1]), target(mul=0.01)).node("mul")
    assert plain.broadcast_spans == 0 and plain.time_us == pytest.approx(whole.time_us)


def transposed_mul_model(cancelled: bool, rows: int = 8, columns: int = 16) -> onnx.ModelProto:
    """x [1,rows,columns,2] -> Transpose -> Mul by a [columns,1,1] constant -> (Transpose back): basic-pitch's
    constant-Q magnitude in small. Where the second Transpose follows, onnxruntime's transpose optimizer cancels
    the pair by pushing the first through the Mul, which then runs on [1,rows,columns,2] x [1,1,columns,1]."""
    scale = numpy_helper.from_array(np.linspace(1, 2, columns).astype(np.float32).reshape(columns, 1, 1), "c")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3], name="in"),
             helper.make_node("Mul", ["t", "c"], ["m"], name="mul")]
    if cancelled:
        nodes.append(helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1, 3], name="out"))
    source = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows, columns, 2])
    graph = helper.make_graph(nodes, "g", [source],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_mul_a_transpose_is_pushed_through_runs_as_onnxruntime_rewrites_it():
    measured = target(mul=0.01, broadcast_span=1e-3, transpose=0.01)
    pushed = static_profile(transposed_mul_model(cancelled=True), measured)
    # [1,16,8,2] x [16,1,1] in the model: 16 runs of 16; as run, [1,8,16,2] x [1,1,16,1]: 128 runs of 2
    assert pushed.node("mul").broadcast_spans == 8 * 16
    assert pushed.node("mul").broadcast_span_us == pytest.approx(127.0)
    # and the Transposes it cancelled cost nothing
    assert pushed.node("in").time_us == 0 and pushed.node("out").time_us == 0
    # with nothing to cancel against onnxruntime leaves the Transpose where it is: the model's own shapes
    kept = static_profile(transposed_mul_model(cancelled=False), measured)
    assert kept.node("mul").broadcast_spans == 16 and kept.node("in").time_us > 0
