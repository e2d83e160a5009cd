"""Spelled-out HardSwish / HardSigmoid chains fused back into one op: the same numbers, fewer nodes,
and nothing fused that is not exactly the activation."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.graph.onnx_activation_fusion import fuse_hard_activations

C = 8


def _scalar(name: str, value: float, shape=(1,)) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, value, np.float32), name)


def _conv_then(nodes, opset=13, extra_outputs=(), scalars=(("three", 3.0), ("zero", 0.0), ("six", 6.0))):
    """x [N, C, 6, 6] -> Conv -> the given activation nodes (reading "c", writing "y")."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((C, C, 3, 3)) * 0.6).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]), *nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", C, 6, 6])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", C, 6, 6]) for name in ("y", *extra_outputs)],
        initializer=[weight, *(_scalar(n, v) for n, v in scalars)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _paddle_hardswish(x="c", out="y", clip_bounds=("zero", "six"), add="three", divisor="six"):
    """x * clip(x + 3, 0, 6) / 6, as Paddle2ONNX writes it."""
    return [helper.make_node("Add", [x, add], ["shifted"], name="add"),
            helper.make_node("Clip", ["shifted", *clip_bounds], ["clipped"], name="clip"),
            helper.make_node("Mul", [x, "clipped"], ["scaled"], name="mul"),
            helper.make_node("Div", ["scaled", divisor], [out], name="div")]


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _x() -> np.ndarray:
    # conv outputs spread over about ±10: both clip bounds and the ramp between are reached
    return np.random.default_rng(1).standard_normal((2, C, 6, 6)).astype(np.float32) * 1.5


def _check_same(model: onnx.ModelProto, fused: onnx.ModelProto) -> None:
    x = _x()
    reference = _outputs(model, x)
    assert np.min(reference[0]) < -0.1 and np.max(reference[0]) > 3  # the chain's three regions are used
    for a, b in zip(reference, _outputs(fused, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,ops", [(13, ["Conv", "HardSigmoid", "Mul"]), (14, ["Conv", "HardSwish"])])
def test_paddle_hardswish_becomes_one_activation_without_changing_the_opset(opset, ops):
    model = onnx.shape_inference.infer_shapes(_conv_then(_paddle_hardswish(), opset=opset))
    assert {"shifted", "clipped", "scaled"} <= {v.name for v in model.graph.value_info}
    fused, counts = fuse_hard_activations(_copy(model))
    # no shape left behind for a tensor that is gone (calibration exposes every value_info as an output)
    assert {v.name for v in fused.graph.value_info} <= {o for n in fused.graph.node for o in n.output}
    assert counts == {"HardSwish": 1}
    assert [n.op_type for n in fused.graph.node] == ops
    assert fused.opset_import[0].version == opset
    onnx.checker.check_model(fused, full_check=True)
    _check_same(model, fused)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def test_other_spellings_fuse_too():
    # x * (clip(x + 3, 0, 6) * (1/6)), scalars as Constant nodes of rank 0, 3 + x
    constants = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.float32)))
                 for name, v in (("k3", 3.0), ("k0", 0.0), ("k6", 6.0), ("sixth", 1 / 6))]
    nodes = [*constants, helper.make_node("Add", ["k3", "c"], ["shifted"]),
             helper.make_node("Clip", ["shifted", "k0", "k6"], ["clipped"]),
             helper.make_node("Mul", ["clipped", "sixth"], ["gate"]),
             helper.make_node("Mul", ["gate", "c"], ["y"])]
    model = _conv_then(nodes, opset=14, scalars=())
    fused, counts = fuse_hard_activations(_copy(model))
    assert counts == {"HardSwish": 1} and [n.op_type for n in fused.graph.node if n.op_type != "Constant"] == \
        ["Conv", "HardSwish"]
    _check_same(model, fused)
    # opset 10: Clip's bounds are attributes
    old = [helper.make_node("Add", ["c", "three"], ["shifted"]),
           helper.make_node("Clip", ["shifted"], ["clipped"], min=0.0, max=6.0),
           helper.make_node("Mul", ["c", "clipped"], ["scaled"]), helper.make_node("Div", ["scaled", "six"], ["y"])]
    model = _conv_then(old, opset=10, scalars=(("three", 3.0), ("six", 6.0)))
    fused, counts = fuse_hard_activations(_copy(model))
    assert counts == {"HardSwish": 1} and [n.op_type for n in fused.graph.node] == ["Conv", "HardSigmoid", "Mul"]
    _check_same(model, fused)


def test_a_spelled_out_hardsigmoid_alone_becomes_hardsigmoid():
    nodes = [helper.make_node("Add", ["c", "three"], ["shifted"]),
             helper.make_node("Clip", ["shifted", "zero", "six"], ["clipped"]),
             helper.make_node("Div", ["clipped", "six"], ["gate"]),
             helper.make_node("Mul", ["x", "gate"], ["y"])]  # gates another tensor: not a HardSwish
    model = _conv_then(nodes)
    fused, counts = fuse_hard_activations(_copy(model))
    assert counts == {"HardSigmoid": 1}
    assert [n.op_type for n in fused.graph.node] == ["Conv", "HardSigmoid", "Mul"]
    _check_same(model, fused)


@pytest.mark.parametrize("case", ["intermediate read elsewhere", "clip to 5", "shift by 2", "another tensor",
                                  "rank-4 constant", "intermediate read in a subgraph"])
def test_what_is_not_exactly_the_activation_is_left_alone(case):
    extra_outputs: tuple[str, ...] = ()
    scalars = [("three", 3.0), ("zero", 0.0), ("six", 6.0), ("five", 5.0), ("two", 2.0)]
    nodes = _paddle_hardswish()
    if case == "intermediate read elsewhere":
        extra_outputs = ("clipped",)
    elif case == "clip to 5":
        nodes = _paddle_hardswish(clip_bounds=("zero", "five"))
    elif case == "shift by 2":
        nodes = _paddle_hardswish(add="two")
    elif case == "another tensor":  # x * clip(relu(x) + 3, 0, 6) / 6
        nodes = [helper.make_node("Relu", ["c"], ["r"]), *_paddle_hardswish()]
        nodes[1].input[0] = "r"
    elif case == "intermediate read in a subgraph":  # an If branch reads "clipped" from the outer graph
        branch = helper.make_graph([helper.make_node("Identity", ["clipped"], ["seen"])], "then", [],
                                   [helper.make_tensor_value_info("seen", TensorProto.FLOAT, None)])
        nodes = [*_paddle_hardswish(), helper.make_node("Constant", [], ["yes"], value=numpy_helper.from_array(
                     np.array(True))),
                 helper.make_node("If", ["yes"], ["branch_out"], then_branch=branch, else_branch=branch)]
        extra_outputs = ("branch_out",)
    else:  # a [1, 1, 1, 1] six could broadcast a lower-rank x up to rank 4
        scalars = [("three", 3.0), ("zero", 0.0), ("six", 6.0)]
        nodes = _paddle_hardswish(divisor="six4")
    model = _conv_then(nodes, extra_outputs=extra_outputs, scalars=scalars)
    if case == "rank-4 constant":
        model.graph.initializer.append(_scalar("six4", 6.0, (1, 1, 1, 1)))
    before = model.SerializeToString()
    fused, counts = fuse_hard_activations(model)
    assert counts == {} and fused.SerializeToString() == before


def test_convert_fuses_them_and_records_it(cli, tmp_path):
    model = _conv_then(_paddle_hardswish(), opset=13)
    source = tmp_path / "hardswish.onnx"
    onnx.save(model, str(source))
    result = cli("convert", source, "-o", tmp_path / "out", "--json", "--quantize", "none")
    assert result.code == 0, result.stderr
    stage = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "simplify")
    assert stage["status"] == "ok" and stage["details"]["fused_activations"] == {"HardSwish": 1}
    shipped = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert {n.op_type for n in shipped.graph.node} == {"Conv", "HardSigmoid", "Mul"}
    _check_same(model, shipped)
    assert onnx.load(str(source)).SerializeToString() == model.SerializeToString()  # the user's file as it was
