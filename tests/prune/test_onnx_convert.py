"""ONNX → torch for pruning: parity with onnxruntime, the whole path (export, convert, prune,
re-export, run), and refusals that name the blocking op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.data import InputSpec
from edgeopt.errors import InputError
from edgeopt.stages.prune.onnx_convert import onnx_to_torch, unsupported_ops
from edgeopt.stages.prune.structured import PruneConfig, export_module, prune_module

torch = pytest.importorskip("torch")
DIGITS = Path(__file__).resolve().parents[2] / "models" / "digits"


def _ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _conv_widths(model: onnx.ModelProto) -> list[int]:
    inits = {i.name: i for i in model.graph.initializer}
    return [inits[n.input[1]].dims[0] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]


def test_digits_onnx_converts_with_parity():
    model = onnx.load(DIGITS / "digits_cnn.onnx")
    converted = onnx_to_torch(model)
    assert converted.input_names == ["image"] and converted.output_names == ["logits"]
    x = np.load(DIGITS / "eval.npz")["image"][:32]
    expected = _ort(model, {"image": x})[0]
    actual = converted.module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-4)


def test_export_convert_prune_reexport_run(mobilenet, tmp_path):
    spec = [InputSpec("image", (1, 1, 16, 16), "float32")]
    export_module(mobilenet, spec, tmp_path / "source.onnx", output_names=["logits"])
    source = onnx.load(tmp_path / "source.onnx")
    x = _images((4, 1, 16, 16))
    converted = onnx_to_torch(source)
    # Converted module = the ONNX graph (onnxruntime) = the torch source.
    with torch.no_grad():
        reference = mobilenet(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(converted.module(torch.from_numpy(x)).numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(_ort(source, {"image": x})[0], reference, atol=1e-5)

    result = prune_module(converted.module, torch.from_numpy(x[:1]), PruneConfig(ratio=0.5, channel_multiple=4))
    assert result.ignored_layers == ["classifier_1"]  # the head is found in the converted graph too
    export = export_module(result.module, converted.input_specs, tmp_path / "pruned.onnx",
                           output_names=converted.output_names)
    assert export.dynamic_batch
    pruned = onnx.load(tmp_path / "pruned.onnx")
    assert [o.name for o in pruned.graph.output] == ["logits"]
    # Pruned Conv widths in the ONNX file (onnx keeps the graph's order): every one halved.
    assert _conv_widths(pruned) == [w // 2 for w in _conv_widths(source)]
    out = _ort(tmp_path / "pruned.onnx", {"image": x})[0]
    assert out.shape == (4, 10)
    with torch.no_grad():
        np.testing.assert_allclose(out, result.module(torch.from_numpy(x)).numpy(), atol=1e-5)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _handmade() -> onnx.ModelProto:
    """A graph with ops the torch exporter never emits in this form: asymmetric pads, Gemm with
    transB and alpha=1, MatMul+Add, Clip with inputs, HardSigmoid, AveragePool, Concat, Flatten."""
    rng = np.random.default_rng(1)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.3  # noqa: E731
    inits = [
        _const("c1.w", w(8, 3, 3, 3)), _const("c1.b", w(8)),
        _const("bn.s", np.abs(w(8)) + 0.5), _const("bn.b", w(8)), _const("bn.m", w(8)),
        _const("bn.v", np.abs(w(8)) + 0.5),
        _const("dw.w", w(8, 1, 3, 3)),
        _const("c2.w", w(6, 8, 1, 1)),
        _const("lo", np.array(0.0, np.float32)), _const("hi", np.array(6.0, np.float32)),
        _const("mm.w", w(14, 12)), _const("mm.b", w(12)),
        _const("fc.w", w(4, 12)), _const("fc.b", w(4)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "bn.s", "bn.b", "bn.m", "bn.v"], ["b"], name="bn"),
        helper.make_node("Clip", ["b", "lo", "hi"], ["c"], name="relu6"),
        helper.make_node("Conv", ["c", "dw.w"], ["d"], name="dw", group=8, pads=[0, 0, 1, 1], strides=[2, 2]),
        helper.make_node("HardSigmoid", ["d"], ["e"], name="hsig", alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["d", "e"], ["f"], name="gate"),
        helper.make_node("Conv", ["f", "c2.w"], ["g"], name="conv2"),
        helper.make_node("AveragePool", ["g"], ["h"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalMaxPool", ["f"], ["i"], name="gmax"),
        helper.make_node("Flatten", ["h"], ["j"], name="flat_h", axis=1),
        helper.make_node("Flatten", ["i"], ["k"], name="flat_i", axis=1),
        helper.make_node("Concat", ["j", "k"], ["l"], name="cat", axis=1),
        helper.make_node("MatMul", ["l", "mm.w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "mm.b"], ["n"], name="mm_bias"),
        helper.make_node("LeakyRelu", ["n"], ["o"], name="leaky", alpha=0.1),
        helper.make_node("Gemm", ["o", "fc.w", "fc.b"], ["p"], name="fc", transB=1),
        helper.make_node("Softmax", ["p"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "handmade", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  ["n", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_handmade_op_set_matches_onnxruntime():
    model = _handmade()
    x = _images((5, 3, 4, 4), seed=2)
    converted = onnx_to_torch(model)
    kinds = {type(m).__name__ for m in converted.module.modules()}
    assert {"Conv2d", "BatchNorm2d", "Linear"} <= kinds  # real layers for Torch-Pruning
    with torch.no_grad():
        actual = converted.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, _ort(model, {"x": x})[0], atol=1e-5, rtol=1e-4)


def _with_node(node: onnx.NodeProto, extra_inputs=(), opsets=(("", 17),)) -> onnx.ModelProto:
    conv = helper.make_node("Conv", ["x", "w"], ["feat"], name="conv")
    graph = helper.make_graph(
        [conv, node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]), *extra_inputs],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        [_const("w", np.ones((4, 3, 1, 1), np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model


def test_unsupported_op_refused_by_name():
    nms = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="nms_0")
    model = _with_node(nms, [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4]),
                             helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 10])])
    assert unsupported_ops(model) == [("NonMaxSuppression", "nms_0")]
    with pytest.raises(InputError, match=r"op NonMaxSuppression \(node 'nms_0'\) is not supported"):
        onnx_to_torch(model)


def test_custom_domain_op_refused_by_name():
    custom = helper.make_node("FancyAttention", ["feat"], ["y"], name="fancy", domain="com.example")
    model = _with_node(custom, opsets=(("", 17), ("com.example", 1)))
    with pytest.raises(InputError, match=r"op com.example.FancyAttention \(node 'fancy'\)"):
        onnx_to_torch(model)


def test_dead_unsupported_nodes_do_not_block():
    # A node no output depends on is not converted, so it cannot block the conversion.
    relu = helper.make_node("Relu", ["feat"], ["y"], name="relu")
    model = _with_node(relu)
    model.graph.node.append(helper.make_node("NonMaxSuppression", ["feat", "feat"], ["unused"], name="dead"))
    assert unsupported_ops(model) == []
    x = _images((1, 3, 4, 4))
    with torch.no_grad():
        np.testing.assert_allclose(onnx_to_torch(model).module(torch.from_numpy(x)).numpy(),
                                   _ort(_with_node(relu), {"x": x})[0], atol=1e-6)
