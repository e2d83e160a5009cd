"""What onnxruntime's basic-level optimizers drop or fold before a run (graph/onnx_basic_rewrites.py), read from
onnxruntime's own optimized graph: such nodes never run and cost nothing; nodes it replaces by one of its own still
cost what they did (a Transpose it pushes through an op: tests/analysis/test_broadcast.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.memory import liveness_plan
from edgeopt.analysis.profile import static_profile
from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.targets import TargetProfile

from .helpers import make_model, run_ort, tensor

TARGET = TargetProfile.model_validate({
    "name": "t", "display_name": "T", "kind": "cpu", "arch": "x86_64", "cores": 1,
    "peak_ops_per_s": {"fp32": 1e9}, "memory_bandwidth_bytes_per_s": 1e9, "node_overhead_us": 1.0})


def conv_then_add(bias_through_reshape: bool) -> onnx.ModelProto:
    """A Conv whose output gets a per-channel bias (a Paddle export's, the bias reshaped to [1,8,1,1] in the graph)
    or, otherwise, a second input added (a residual: a real Add)."""
    weight = numpy_helper.from_array(np.full((8, 4, 3, 3), 0.1, np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv")]
    inputs = [tensor("x", TensorProto.FLOAT, [1, 4, 16, 16])]
    inits = [weight]
    if bias_through_reshape:
        inits += [numpy_helper.from_array(np.arange(8, dtype=np.float32), "b"),
                  numpy_helper.from_array(np.array([1, 8, 1, 1], np.int64), "shape")]
        nodes += [helper.make_node("Reshape", ["b", "shape"], ["bias"], name="reshape"),
                  helper.make_node("Add", ["c", "bias"], ["y"], name="add")]
    else:
        inputs.append(tensor("z", TensorProto.FLOAT, [1, 8, 16, 16]))
        nodes.append(helper.make_node("Add", ["c", "z"], ["y"], name="add"))
    return make_model(nodes, inputs, [tensor("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)


def test_a_bias_add_onnxruntime_folds_into_its_conv_costs_nothing():
    model = conv_then_add(bias_through_reshape=True)
    assert run_ort(model, {"x": np.ones((1, 4, 16, 16), np.float32)})[0].shape == (1, 8, 16, 16)
    nodes = {n.name: n for n in to_graph(model).nodes}
    # onnxruntime folds the Reshape of constants, then the Add of the result into the Conv's bias
    assert nodes["add"].runtime_removed and not nodes["conv"].runtime_removed
    profile = static_profile(model, TARGET)
    assert profile.node("add").time_us == 0 and profile.node("conv").time_us > 0
    assert any("1 node onnxruntime's basic optimizers drop" in line for line in profile.assumptions)
    # and its output is the Conv's, never allocated apart: one [1,8,16,16] map and the input live at the peak
    plan = liveness_plan(to_graph(model))
    assert plan.peak_activation_bytes == 4 * (8 * 16 * 16 + 4 * 16 * 16)
    # a residual Add of another input stays: it runs
    residual = conv_then_add(bias_through_reshape=False)
    assert not {n.name: n for n in to_graph(residual).nodes}["add"].runtime_removed
    assert static_profile(residual, TARGET).node("add").time_us > 1.0


def test_nodes_onnxruntime_replaces_by_one_of_its_own_keep_their_cost():
    """A MatMul and its bias Add become one Gemm of onnxruntime's (MatMulAddFusion): the work stays, so neither
    counts as dropped."""
    weight = numpy_helper.from_array(np.ones((16, 8), np.float32), "w")
    bias = numpy_helper.from_array(np.ones((8,), np.float32), "b")
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
                        helper.make_node("Add", ["h", "b"], ["y"], name="add")],
                       [tensor("x", TensorProto.FLOAT, [4, 16])], [tensor("y", TensorProto.FLOAT, [4, 8])],
                       [weight, bias])
    assert not any(n.runtime_removed for n in to_graph(model).nodes)
    assert static_profile(model, TARGET).node("matmul").time_us > 0


def test_a_model_onnxruntime_cannot_load_keeps_its_own_graph():
    """Best effort: where onnxruntime refuses the model (an op it does not know), nothing is dropped."""
    model = make_model([helper.make_node("Identity", ["x"], ["h"], name="copy"),
                        helper.make_node("Mystery", ["h"], ["y"], domain="example.custom", name="custom")],
                       [tensor("x", TensorProto.FLOAT, [4])], [tensor("y", TensorProto.FLOAT, [4])],
                       extra_opsets={"example.custom": 1}, check=False)
    assert not any(n.runtime_removed for n in to_graph(model).nodes)


@pytest.mark.parametrize("nested", [False, True])
def test_each_if_that_runs_costs_a_subgraph_call(nested):
    """onnxruntime runs an If as a call into its branch's session state: 2 µs over the same nodes in the main graph
    (AMD EPYC, 0.4-0.7 µs per node there), priced as IF_RUN_NODE_OVERHEADS node overheads per If run."""
    from edgeopt.analysis.profile import IF_RUN_NODE_OVERHEADS

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Relu", ["x"], [f"{name}_y"])], name, [],
                                 [tensor(f"{name}_y", TensorProto.FLOAT, [4])])

    inner = helper.make_node("If", ["cond"], ["inner_y"], then_branch=branch("a"), else_branch=branch("b"))
    then = helper.make_graph([inner], "then", [], [tensor("inner_y", TensorProto.FLOAT, [4])]) if nested \
        else branch("then")
    model = make_model([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=branch("else"))],
                       [tensor("x", TensorProto.FLOAT, [4]), tensor("cond", TensorProto.BOOL, [])],
                       [tensor("y", TensorProto.FLOAT, [4])])
    graph = to_graph(model, input_values={"cond": np.array(True)})
    assert graph.branch_runs == (2 if nested else 1)
    profile = static_profile(graph, TARGET)
    nodes_us = sum(n.time_us for n in profile.nodes if n.time_us)
    assert profile.nodes_latency_ms * 1000 - nodes_us == pytest.approx(graph.branch_runs * IF_RUN_NODE_OVERHEADS * 1.0)


def focus_model() -> onnx.ModelProto:
    """A YOLOv5-style Focus layer in a QDQ model: four Slices stepping by 2 over the float input image, each slice
    quantized, then concatenated. onnxruntime's QDQ propagation moves each slice's QuantizeLinear above its Slice:
    the whole image quantized once per Slice, the Slices then run in 8 bits."""
    scale = numpy_helper.from_array(np.array(0.02, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "zero")
    nodes, inits, parts = [], [scale, zero], []
    for index, (row, column) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        for name, value in (("starts", [row, column]), ("ends", [32, 32]), ("axes", [2, 3]), ("steps", [2, 2])):
            inits.append(numpy_helper.from_array(np.array(value, np.int64), f"{name}{index}"))
        nodes += [helper.make_node("Slice", ["x", f"starts{index}", f"ends{index}", f"axes{index}", f"steps{index}"],
                                   [f"s{index}"], name=f"slice{index}"),
                  helper.make_node("QuantizeLinear", [f"s{index}", "scale", "zero"], [f"q{index}"], name=f"q{index}"),
                  helper.make_node("DequantizeLinear", [f"q{index}", "scale", "zero"], [f"d{index}"])]
        parts.append(f"d{index}")
    nodes.append(helper.make_node("Concat", parts, ["y"], axis=1, name="concat"))
    return make_model(nodes, [tensor("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                      [tensor("y", TensorProto.FLOAT, [1, 12, 16, 16])], inits)


def test_quantizations_onnxruntime_moves_ahead_of_slices_are_priced_and_the_slices_run_in_8_bits():
    model = focus_model()
    assert run_ort(model, {"x": np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 12, 16, 16)
    nodes = {n.name: n for n in to_graph(model).nodes}
    for index in range(4):
        # its QuantizeLinear now reads the whole image ahead of it, and the one after it joins the 8-bit Slice
        assert nodes[f"slice{index}"].runtime_quantized_elements == 3 * 32 * 32
        assert nodes[f"slice{index}"].dtype == "int8" and nodes[f"q{index}"].runtime_removed
    rates = {"quantize": 0.01, "slice.strided": 0.002, "slice.strided.int8": 0.001}
    target = TargetProfile.model_validate({
        "name": "t", "display_name": "T", "kind": "cpu", "arch": "x86_64", "cores": 1, "node_overhead_us": 1.0,
        "peak_ops_per_s": {"fp32": 1e9}, "memory_bandwidth_bytes_per_s": 1e12, "efficiency": rates})
    profile = static_profile(model, target)
    # the Slice at the 8-bit rate (768 outputs at 1e6 a second: 768 µs) beside the image's quantization (3072 at 1e7:
    # 307.2 µs) and its dispatch (1 µs), its own dispatch (1 µs); the moved QuantizeLinear costs nothing where it was
    assert profile.node("slice0").time_us == pytest.approx(768 + 307.2 + 1.0 + 1.0)
    assert profile.node("q0").time_us == 0
