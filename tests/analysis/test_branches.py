"""If nodes priced by the branch that runs (graph/onnx_branches.py), and what onnxruntime folds at load.

The model: a sample-rate switch like silero-vad's, `If(sr == 16000)`, whose then-branch holds a wide MatMul
(x (8, 64) @ (64, 256): 131072 MACs) and whose else-branch a narrow one (@ (64, 16): 8192 MACs), each weight in a
Constant node inside its branch, as exporters write them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.profile import static_profile
from edgeopt.analysis.runtime_memory import X86_ONNXRUNTIME, estimate_runtime_memory
from edgeopt.analysis.memory import liveness_plan
from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.targets import load_target

from .helpers import make_model, run_ort, tensor, unchanged

WIDE, NARROW = 256, 16


def _branch(name: str, width: int, stored_transposed: bool = False) -> object:
    """``stored_transposed``: the weight kept as (width, 64) and transposed before the MatMul (folded at load)."""
    shape = (width, 64) if stored_transposed else (64, width)
    w = numpy_helper.from_array(np.full(shape, 0.01, np.float32), f"{name}_w")
    nodes = [helper.make_node("Constant", [], [f"{name}_w"], value=w)]
    if stored_transposed:
        nodes.append(helper.make_node("Transpose", [f"{name}_w"], [f"{name}_wt"]))
    nodes.append(helper.make_node("MatMul", ["x", f"{name}_wt" if stored_transposed else f"{name}_w"],
                                  [f"{name}_y"]))
    return helper.make_graph(nodes, name, [], [tensor(f"{name}_y", TensorProto.FLOAT, ["rows", width])])


def switch_model(condition_from: str = "sr", stored_transposed: bool = False) -> object:
    """``condition_from``: "sr" (an int64 input's value), "x" (a float input's values) or "shape" (x's shape)."""
    nodes = [helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64)))]
    if condition_from == "sr":
        nodes.append(helper.make_node("Equal", ["sr", "rate"], ["cond"]))
    elif condition_from == "x":
        nodes += [helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
                  helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
                  helper.make_node("Greater", ["top", "zero"], ["cond"])]
    else:  # the batch dim: 8 rows take the wide branch
        nodes += [helper.make_node("Shape", ["x"], ["shape"]),
                  helper.make_node("Constant", [], ["first"], value=numpy_helper.from_array(np.array(0, np.int64))),
                  helper.make_node("Gather", ["shape", "first"], ["rows"]),
                  helper.make_node("Constant", [], ["eight"], value=numpy_helper.from_array(np.array(8, np.int64))),
                  helper.make_node("Equal", ["rows", "eight"], ["cond"])]
    nodes.append(helper.make_node("If", ["cond"], ["y"], then_branch=_branch("wide", WIDE, stored_transposed),
                                  else_branch=_branch("narrow", NARROW, stored_transposed)))
    inputs = [tensor("x", TensorProto.FLOAT, ["rows", 64]), tensor("sr", TensorProto.INT64, [])]
    return make_model(nodes, inputs, [tensor("y", TensorProto.FLOAT, ["rows", "cols"])])


def _matmuls(graph) -> list:
    return [n for n in graph.nodes if n.op_type == "MatMul"]


@pytest.mark.parametrize("rate, width", [(16000, WIDE), (8000, NARROW)])
def test_the_branch_an_input_value_selects_is_the_one_priced(rate, width):
    model = switch_model("sr")
    feeds = {"x": np.ones((8, 64), np.float32), "sr": np.array(rate, np.int64)}
    # the real model runs the branch the condition names: the output's size says which
    assert run_ort(model, feeds)[0].shape == (8, width)
    with unchanged(model):
        graph = to_graph(model, {"x": (8, 64)}, input_values={"sr": np.array(rate, np.int64)})
    (matmul,) = _matmuls(graph)
    assert matmul.macs == 8 * 64 * width
    assert "If" not in {n.op_type for n in graph.nodes}
    taken = "then_branch" if width == WIDE else "else_branch"
    assert any(f"prices its {taken}" in note for note in graph.assumptions)
    assert not graph.warnings


def test_a_condition_on_shapes_alone_needs_no_values():
    model = switch_model("shape")
    wide = to_graph(model, {"x": (8, 64)})
    narrow = to_graph(model, {"x": (3, 64)})
    assert _matmuls(wide)[0].macs == 8 * 64 * WIDE
    assert _matmuls(narrow)[0].macs == 3 * 64 * NARROW


def test_a_condition_on_data_prices_the_costlier_branch_and_says_so():
    graph = to_graph(switch_model("x"), {"x": (8, 64)})
    assert _matmuls(graph)[0].macs == 8 * 64 * WIDE
    (warning,) = [w for w in graph.warnings if "If" in w]
    assert "values of input 'x'" in warning and "costlier branch, then_branch" in warning
    # an integer input without a value is as unknown as data
    graph = to_graph(switch_model("sr"), {"x": (8, 64)})
    assert any("values of input 'sr'" in w for w in graph.warnings)


def test_the_estimate_prices_the_taken_branch_and_counts_the_other_as_loaded():
    model = switch_model("sr")
    target = load_target("host")
    values = {"sr": np.array(16000, np.int64)}
    wide = static_profile(to_graph(model, {"x": (8, 64)}, input_values=values), target, threads=1)
    values = {"sr": np.array(8000, np.int64)}
    narrow_graph = to_graph(model, {"x": (8, 64)}, input_values=values)
    narrow = static_profile(narrow_graph, target, threads=1)
    assert wide.macs_total == 8 * 64 * WIDE and narrow.macs_total == 8 * 64 * NARROW
    if wide.latency_ms is not None:
        assert wide.latency_ms > narrow.latency_ms
    # both branches' weights are loaded whichever runs: the wide one's 64 KiB counts while the narrow runs
    assert narrow_graph.dormant_weight_bytes == 64 * WIDE * 4
    assert narrow_graph.dormant_weights == 1 and narrow_graph.dormant_nodes == 1
    assert narrow_graph.weight_bytes == 64 * (WIDE + NARROW) * 4 + 8  # and the int64 16000
    memory = estimate_runtime_memory(narrow_graph, liveness_plan(narrow_graph), X86_ONNXRUNTIME)
    weights_part = next(p.bytes for p in memory.parts if p.key == "weights")
    assert weights_part >= 64 * (WIDE + NARROW) * 4


def test_the_branch_not_taken_folds_at_load_like_the_one_that_runs():
    # each branch's weight is stored transposed: onnxruntime folds the Transpose in both at load. The narrow
    # branch runs (its 4 KiB folded); the wide one's 64 KiB transposed copy is folded too
    from edgeopt.analysis.runtime_memory import folded_at_load_bytes

    model = switch_model("sr", stored_transposed=True)
    feeds = {"x": np.ones((8, 64), np.float32), "sr": np.array(8000, np.int64)}
    assert run_ort(model, feeds)[0].shape == (8, NARROW)
    graph = to_graph(model, {"x": (8, 64)}, input_values={"sr": np.array(8000, np.int64)})
    assert graph.dormant_folded_bytes == 64 * WIDE * 4
    assert folded_at_load_bytes(graph) == 64 * (WIDE + NARROW) * 4


def test_a_nested_branch_not_taken_folds_the_weights_its_enclosing_branch_holds():
    """silero-vad's shape: the outer branch holds an LSTM-like weight in a Constant, and each branch of a nested
    If slices it (a Slice of an outer-scope constant folds at load in both, though one never runs). Counting
    the dormant branch by its own weights (it has none) would miss its fold."""
    from edgeopt.analysis.runtime_memory import folded_at_load_bytes

    def slicing(name: str, rows: int) -> object:
        starts, ends = (numpy_helper.from_array(np.array([at], np.int64)) for at in (0, rows))
        nodes = [helper.make_node("Constant", [], [f"{name}_s"], value=starts),
                 helper.make_node("Constant", [], [f"{name}_e"], value=ends),
                 helper.make_node("Slice", ["w", f"{name}_s", f"{name}_e"], [f"{name}_part"]),
                 helper.make_node("MatMul", ["x", f"{name}_part"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [tensor(f"{name}_y", TensorProto.FLOAT, [8, 32])])

    weight = numpy_helper.from_array(np.full((64, 32), 0.5, np.float32))
    inner = helper.make_node("If", ["cond"], ["inner_y"], then_branch=slicing("top", 64),
                             else_branch=slicing("bottom", 64))
    outer_then = helper.make_graph([helper.make_node("Constant", [], ["w"], value=weight), inner], "outer_then", [],
                                   [tensor("inner_y", TensorProto.FLOAT, [8, 32])])
    outer_else = helper.make_graph([helper.make_node("Constant", [], ["o"], value=numpy_helper.from_array(
        np.zeros((8, 32), np.float32))), helper.make_node("Add", ["o", "o"], ["else_y"])], "outer_else", [],
        [tensor("else_y", TensorProto.FLOAT, [8, 32])])
    nodes = [helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))),
             helper.make_node("Equal", ["sr", "rate"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=outer_then, else_branch=outer_else)]
    model = make_model(nodes, [tensor("x", TensorProto.FLOAT, [8, 64]), tensor("sr", TensorProto.INT64, [])],
                       [tensor("y", TensorProto.FLOAT, [8, 32])])
    feeds = {"x": np.ones((8, 64), np.float32), "sr": np.array(16000, np.int64)}
    assert run_ort(model, feeds)[0][0, 0] == 32.0
    graph = to_graph(model, None, input_values={"sr": np.array(16000, np.int64)})
    # folded at load: the running inner branch's slice (8 KiB), the nested dormant one's (8 KiB) and the outer
    # else branch's o + o (1 KiB)
    assert graph.dormant_folded_bytes == 64 * 32 * 4 + 8 * 32 * 4
    assert folded_at_load_bytes(graph) == 2 * 64 * 32 * 4 + 8 * 32 * 4


def test_a_branchs_own_weights_are_held_twice_once_loaded():
    """onnxruntime keeps the tensor a subgraph defines beside the session's copy: the estimate adds the
    runtime's subgraph copies to every weight a branch holds, the running branch's and the dormant one's,
    and none to the main graph's."""
    model = switch_model("sr")
    graph = to_graph(model, {"x": (8, 64)}, input_values={"sr": np.array(8000, np.int64)})
    assert "narrow_w" in graph.subgraph_tensors and "narrow_w" in graph.weights
    assert "rate" not in graph.subgraph_tensors  # the main graph's own constant
    plan = liveness_plan(graph)
    without = X86_ONNXRUNTIME.model_copy(update={"subgraph_weight_copies": 0.0, "subgraph_load_copies": 0.0})
    held = X86_ONNXRUNTIME.model_copy(update={"subgraph_weight_copies": 1.0, "subgraph_load_copies": 2.0})

    def part(memory, key):
        return next(p.bytes for p in memory.parts if p.key == key)

    plain, twice = (estimate_runtime_memory(graph, plan, runtime) for runtime in (without, held))
    in_branches = 64 * (WIDE + NARROW) * 4
    assert part(twice, "weights") - part(plain, "weights") == in_branches
    assert twice.load_peak_increase_bytes - plain.load_peak_increase_bytes == 2 * in_branches


def test_an_untaken_branchs_constants_count_whatever_attribute_holds_them():
    # the then-branch (not taken at 8000) holds its constants as value_floats (100 floats) and a sparse value
    # (a 50x4 float matrix with two values: 800 B once densified), the runtime loads both
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "v"),
                                       numpy_helper.from_array(np.array([0, 7], np.int64), "i"), [50, 4])
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value_floats=[0.5] * 100),
         helper.make_node("Constant", [], ["m"], sparse_value=sparse),
         helper.make_node("ReduceSum", ["m"], ["s"], keepdims=0),
         helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node("Add", ["a", "s"], ["t_y"])],
        "then", [], [tensor("t_y", TensorProto.FLOAT, [100])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e_y"])], "else", [],
                              [tensor("e_y", TensorProto.FLOAT, [100])])
    nodes = [helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))),
             helper.make_node("Equal", ["sr", "rate"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    model = make_model(nodes, [tensor("x", TensorProto.FLOAT, [100]), tensor("sr", TensorProto.INT64, [])],
                       [tensor("y", TensorProto.FLOAT, [100])])
    assert run_ort(model, {"x": np.zeros(100, np.float32), "sr": np.array(16000, np.int64)})[0][0] == 3.5
    graph = to_graph(model, input_values={"sr": np.array(8000, np.int64)})
    assert graph.dormant_weights == 2 and graph.dormant_weight_bytes == 100 * 4 + 50 * 4 * 4


def test_nested_ifs_are_resolved_in_turn():
    inner = helper.make_node("If", ["cond"], ["inner_y"], then_branch=_branch("wide", WIDE),
                             else_branch=_branch("narrow", NARROW))
    outer_then = helper.make_graph([inner], "outer_then", [], [tensor("inner_y", TensorProto.FLOAT, ["rows", "cols"])])
    outer_else = _branch("other", 4)
    nodes = [helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))),
             helper.make_node("Equal", ["sr", "rate"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=outer_then, else_branch=outer_else)]
    model = make_model(nodes, [tensor("x", TensorProto.FLOAT, [8, 64]), tensor("sr", TensorProto.INT64, [])],
                       [tensor("y", TensorProto.FLOAT, ["rows", "cols"])])
    graph = to_graph(model, None, input_values={"sr": np.array(16000, np.int64)})
    assert [n.macs for n in _matmuls(graph)] == [8 * 64 * WIDE]
    assert sum("If '" in note for note in graph.assumptions) == 2


def test_constant_chains_and_eliminated_identities_cost_nothing():
    """An exporter's weight re-ordering (Slice and Concat of Constants, as silero-vad's LSTM weights) is
    folded by onnxruntime at load; an Identity inside the graph is removed."""
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    index = {k: numpy_helper.from_array(np.array([v], np.int64), k) for k, v in
             (("s0", 0), ("e0", 4), ("s1", 4), ("e1", 8), ("axis", 0))}
    nodes = [helper.make_node("Constant", [], ["w"], value=w),
             *[helper.make_node("Constant", [], [k], value=v) for k, v in index.items()],
             helper.make_node("Slice", ["w", "s0", "e0", "axis"], ["top"]),
             helper.make_node("Slice", ["w", "s1", "e1", "axis"], ["bottom"]),
             helper.make_node("Concat", ["bottom", "top"], ["swapped"], axis=0),
             helper.make_node("MatMul", ["x", "swapped"], ["h"]),
             helper.make_node("Identity", ["h"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["y"])]
    model = make_model(nodes, [tensor("x", TensorProto.FLOAT, [2, 8])], [tensor("y", TensorProto.FLOAT, [2, 4])])
    assert run_ort(model, {"x": np.ones((2, 8), np.float32)})[0].shape == (2, 4)
    roles = {n.op_type: n.role for n in to_graph(model).nodes}
    assert roles["Slice"] == "constant" and roles["Concat"] == "constant"
    assert roles["Identity"] == "fused_activation" and roles["MatMul"] == "compute" and roles["Relu"] == "compute"


@pytest.mark.parametrize("rows, folded", [(2, True), ("batch", False)])
def test_shape_arithmetic_folds_only_where_the_model_declares_static_shapes(rows, folded):
    """onnxruntime folds Shape only where the graph's shapes are known when it loads: a symbolic input dim
    keeps the Shape -> Gather -> Concat chain that sizes a Reshape running at every call."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Gather", ["shape", "zero"], ["rows"]),
             helper.make_node("Constant", [], ["minus_one"], value=numpy_helper.from_array(np.array([-1], np.int64))),
             helper.make_node("Concat", ["rows", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    model = make_model(nodes, [tensor("x", TensorProto.FLOAT, [rows, 4, 2])], [tensor("y", TensorProto.FLOAT, None)],
                       check=False)
    assert run_ort(model, {"x": np.ones((2, 4, 2), np.float32)})[0].shape == (2, 8)
    roles = {n.op_type: n.role for n in to_graph(model, {"x": (2, 4, 2)}).nodes}
    assert (roles["Shape"] == "constant") == folded and (roles["Concat"] == "constant") == folded
    assert roles["Reshape"] == "compute"
