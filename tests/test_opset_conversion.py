"""Opset conversion sets weight data aside while onnx's version converter copies the graph, and puts it
back: the result is the plain converter's, byte for byte, and the caller's model is left as it was."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, version_converter

from edgeopt.formats.onnx import convert_opset


def _opset11_model() -> onnx.ModelProto:
    """MatMul with a 64 KB weight, Unsqueeze/ReduceSum whose axes are attributes at 11 and inputs at 13, and
    an If whose branches hold weights of their own."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32), "w")
    branches = {}
    for name, value in (("then", 2.0), ("else", -3.0)):  # 4 KB each: set aside too
        branches[name] = helper.make_graph(
            [helper.make_node("Mul", ["s", f"{name}_w"], ["out"])], name, [],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.full((8, 128), value, np.float32), f"{name}_w")])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ReduceSum", ["h"], ["s"], axes=[0], keepdims=1),
        helper.make_node("Unsqueeze", ["flag"], ["flag1"], axes=[0]),
        helper.make_node("Squeeze", ["flag1"], ["cond"], axes=[0]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branches["then"], else_branch=branches["else"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 128]),
                                           helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


def test_the_result_is_the_plain_converters_and_the_caller_keeps_its_weights():
    model = _opset11_model()
    before = model.SerializeToString()
    converted = convert_opset(model, 13)
    assert model.SerializeToString() == before
    assert converted.SerializeToString() == version_converter.convert_version(onnx.load_from_string(before),
                                                                              13).SerializeToString()
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32)}
    reference = ort.InferenceSession(before, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    for flag in (True, False):
        feeds["flag"] = np.array(flag)
        np.testing.assert_array_equal(session.run(None, feeds)[0], reference.run(None, feeds)[0])
