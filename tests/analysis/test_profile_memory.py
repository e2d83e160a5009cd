"""Activation liveness plans with peaks worked out by hand."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.memory import liveness_plan, node_traffic
from edgeopt.graph.model import tensor_size_bytes
from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.graph.onnx_shapes import TensorInfo, resolve_shapes

from .helpers import make_model, run_ort, tensor, unchanged

F = TensorProto.FLOAT


def branch_model():
    """x (1,1000) -> relu -> a; a * k -> c; -c -> d; mean(d) -> s; a + s -> y.

    ``a`` (4000 B) stays alive from relu to the final add, across mul/neg/mean, so the
    peak is at neg where a, c and d are all live: 12000 B.
    """
    k = numpy_helper.from_array(np.ones(1000, np.float32), "k")
    nodes = [
        helper.make_node("Constant", [], ["k"], name="const", value=k),
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Mul", ["a", "k"], ["c"], name="mul"),
        helper.make_node("Neg", ["c"], ["d"], name="neg"),
        helper.make_node("ReduceMean", ["d"], ["s"], name="mean", axes=[1], keepdims=1),
        helper.make_node("Add", ["a", "s"], ["y"], name="add"),
    ]
    return make_model(nodes, [tensor("x", F, [1, 1000])], [tensor("y", F, [1, 1000])])


def test_liveness_peak_with_a_tensor_kept_alive_across_a_branch():
    model = branch_model()
    run_ort(model, {"x": np.ones((1, 1000), np.float32)})
    shapes = resolve_shapes(model)
    with unchanged(model):
        plan = liveness_plan(to_graph(model, shapes=shapes))
    assert plan.order == ("const", "relu", "mul", "neg", "mean", "add")
    # const: x | relu: x a | mul: a c | neg: a c d | mean: a d s | add: a s y
    assert plan.live_bytes == (4000, 8000, 8000, 12000, 8004, 8004)
    assert plan.peak_activation_bytes == 12000
    assert (plan.peak_index, plan.peak_node) == (3, "neg")
    assert {t.name for t in plan.live_at_peak} == {"a", "c", "d"}
    intervals = {t.name: (t.start, t.end, t.bytes) for t in plan.tensors}
    assert intervals == {
        "x": (0, 1, 4000),  # graph input: from the start
        "a": (1, 5, 4000),
        "c": (2, 3, 4000),
        "d": (3, 4, 4000),
        "s": (4, 5, 4),
        "y": (5, 5, 4000),  # graph output: to the end
    }
    # the Constant is a weight, not an activation
    assert plan.weight_bytes == 4000
    assert plan.weight_bytes_by_dtype == {"float32": 4000}
    assert not plan.peak_is_lower_bound


def test_unused_output_lives_only_at_its_producer_and_outputs_to_the_end():
    nodes = [
        helper.make_node("Split", ["x"], ["p", "q"], name="split", axis=1, num_outputs=2),
        helper.make_node("Relu", ["p"], ["y"], name="relu"),
        helper.make_node("Neg", ["y"], ["z"], name="neg"),
    ]
    model = make_model(nodes, [tensor("x", F, [1, 8])],
                       [tensor("y", F, [1, 4]), tensor("z", F, [1, 4])], opset=18)
    plan = liveness_plan(to_graph(model))
    intervals = {t.name: (t.start, t.end) for t in plan.tensors}
    assert intervals["q"] == (0, 0)  # never consumed
    assert intervals["y"] == (1, 2)  # a graph output, also read by neg: live to the end
    assert plan.live_bytes == (32 + 16 + 16, 16 + 16, 16 + 16)


def test_unknown_sizes_are_flagged_not_fatal():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = make_model(nodes, [tensor("x", F, [1, 4])], [tensor("y", F, [1, 4])])
    shapes = {"x": TensorInfo("x", (1, 4), "float32"), "y": TensorInfo("y", None, "float32")}
    plan = liveness_plan(to_graph(model, shapes=shapes))
    assert plan.unknown_tensors == ("y",)
    assert plan.peak_is_lower_bound
    assert plan.peak_activation_bytes == 16
    (traffic,) = node_traffic(to_graph(model, shapes=shapes))
    assert traffic.unknown_tensors == ("y",) and not traffic.known
    assert traffic.bytes_read == 16 and traffic.bytes_written == 0
    assert tensor_size_bytes(TensorInfo("s", (2,), "string")) is None
    assert tensor_size_bytes(TensorInfo("h", (3, 3), "float16")) == 18


def test_aliases_plan_storage_of_the_real_tensor():
    # x -> "dq" (float view of x) -> relu: with dq aliased to x only x is allocated.
    nodes = [
        helper.make_node("Identity", ["x"], ["dq"], name="view"),
        helper.make_node("Relu", ["dq"], ["y"], name="relu"),
    ]
    model = make_model(nodes, [tensor("x", F, [1, 4])], [tensor("y", F, [1, 4])])
    shapes = resolve_shapes(model)
    assert liveness_plan(to_graph(model, shapes=shapes)).peak_activation_bytes == 16 + 16  # x+dq, then dq+y
    plan = liveness_plan(to_graph(model, shapes=shapes), aliases={"dq": "x"})
    assert {t.name for t in plan.tensors} == {"x", "y"}
    assert plan.live_bytes == (16, 32)
