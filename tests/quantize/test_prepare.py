"""edgeopt.stages.quantize.prepare on tiny real models, quantized by onnxruntime itself.

What onnxruntime 1.32 does with subgraphs is pinned here (see the module docstring):
QDQ static quantization never enters If/Loop/Scan bodies, QOperator static with
EnableSubgraph fails on them, quantize_dynamic with EnableSubgraph quantizes them once
their weights are initializers, and quantize_subgraph_weights stores them as int8.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from edgeopt.stages.quantize.prepare import (
    check_quantizable,
    count_quantized_nodes,
    lift_constant_weights,
    quantize_subgraph_weights,
)

_RNG = [np.random.default_rng(0)]


@pytest.fixture(autouse=True)
def _quiet_quantizer():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    yield
    root.setLevel(level)


def _seed(seed: int) -> None:
    """Every model builder seeds its weights, so models do not depend on test order."""
    _RNG[0] = np.random.default_rng(seed)


def _f32(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (_RNG[0].standard_normal(shape) * scale).astype(np.float32)


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(array))


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_matmul_model(opset: int = 17) -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv -> Relu -> Reshape -> MatMul -> y[1,10]; every weight a Constant node."""
    _seed(1)
    if opset >= 12:  # value_floats / value_ints exist from opset 12
        bias = helper.make_node("Constant", [], ["conv_b"], name="conv_b_const", value_floats=[0.1, -0.2, 0.3, 0.0])
        shape = helper.make_node("Constant", [], ["flat_shape"], name="flat_shape_const", value_ints=[1, 256])
    else:
        bias = _const("conv_b", np.array([0.1, -0.2, 0.3, 0.0], np.float32))
        shape = _const("flat_shape", np.array([1, 256], np.int64))
    nodes = [
        _const("conv_w", _f32(4, 3, 3, 3)),
        bias,
        shape,
        _const("fc_w", _f32(256, 10, scale=0.1)),
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    return _model(graph, opset)


def if_model() -> onnx.ModelProto:
    """h = x[1,16] @ W0; y = If(sum(x) > 0, h @ W_then, h @ W_else): all weights Constant nodes."""
    _seed(2)

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph(
            [
                _const(f"w_{tag}", _f32(64, 32, scale=0.2)),
                helper.make_node("MatMul", ["h", f"w_{tag}"], [f"out_{tag}"], name=f"mm_{tag}"),
            ],
            f"{tag}_branch",
            [],
            [helper.make_tensor_value_info(f"out_{tag}", TensorProto.FLOAT, [1, 32])],
        )

    nodes = [
        _const("w0", _f32(16, 64, scale=0.3)),
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
        helper.make_node("ReduceSum", ["x"], ["total"], name="sum", keepdims=0),
        helper.make_node("Constant", [], ["zero"], name="zero_const", value_float=0.0),
        helper.make_node("Greater", ["total", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("then"), else_branch=branch("else")),
    ]
    graph = helper.make_graph(
        nodes,
        "if_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
    )
    return _model(graph)


def loop_model() -> onnx.ModelProto:
    """A Loop (2 iterations) whose body holds a Constant weight and a nested If with another."""
    _seed(3)
    inner_then = helper.make_graph(
        [_const("w_in", _f32(4, 4)), helper.make_node("MatMul", ["s_in", "w_in"], ["t_out"], name="mm_in")],
        "inner_then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 4])],
    )
    inner_else = helper.make_graph(
        [helper.make_node("Identity", ["s_in"], ["e_out"], name="id_in")],
        "inner_else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 4])],
    )
    body = helper.make_graph(
        [
            _const("w_body", _f32(4, 4)),
            helper.make_node("MatMul", ["s_in", "w_body"], ["s_mm"], name="mm_body"),
            helper.make_node("Constant", [], ["k"], name="k_const", value_int=1),
            helper.make_node("Cast", ["i"], ["i_f"], name="cast", to=TensorProto.INT64),
            helper.make_node("Equal", ["i_f", "k"], ["is_one"], name="eq"),
            helper.make_node("If", ["is_one"], ["s_if"], name="inner_if", then_branch=inner_then,
                             else_branch=inner_else),
            helper.make_node("Add", ["s_mm", "s_if"], ["s_out"], name="add"),
            helper.make_node("Identity", ["c_in"], ["c_out"], name="keep_going"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, 4]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["trip"], name="trip_const", value_int=2),
            helper.make_node("Constant", [], ["go"], name="go_const",
                             value=numpy_helper.from_array(np.array(True))),
            helper.make_node("Loop", ["trip", "go", "x"], ["y"], name="loop", body=body),
        ],
        "loop_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return _model(graph)


def multi_op_model() -> onnx.ModelProto:
    """Conv, MatMul, Gemm, Gather (embedding), LSTM and an attention-style MatMul; weights as initializers."""
    _seed(4)
    inits = [
        numpy_helper.from_array(_f32(4, 3, 3, 3), "cw"),
        numpy_helper.from_array(_f32(4), "cb"),
        numpy_helper.from_array(_f32(64, 16, scale=0.2), "mw"),
        numpy_helper.from_array(_f32(10, 16, scale=0.2), "gw"),
        numpy_helper.from_array(_f32(10), "gb"),
        numpy_helper.from_array(_f32(20, 6), "emb"),
        numpy_helper.from_array(np.array([[1, 2, 3, 4]], np.int64), "ids"),
        numpy_helper.from_array(np.array([1, 64], np.int64), "shp"),
        numpy_helper.from_array(_f32(1, 32, 6, scale=0.3), "lw"),
        numpy_helper.from_array(_f32(1, 32, 8, scale=0.3), "lr"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shp"], ["fl"], name="reshape"),
        helper.make_node("MatMul", ["fl", "mw"], ["m"], name="mm"),
        helper.make_node("Gemm", ["m", "gw", "gb"], ["y"], name="gemm", transB=1),
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="gather"),
        helper.make_node("Transpose", ["e"], ["et"], name="tr", perm=[1, 0, 2]),
        helper.make_node("LSTM", ["et", "lw", "lr"], ["", "lh"], name="lstm", hidden_size=8),
        helper.make_node("Transpose", ["lh"], ["lh_t"], name="tr2", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["lh_t", "lh"], ["att"], name="attmm"),
    ]
    graph = helper.make_graph(
        nodes,
        "multi_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("att", TensorProto.FLOAT, [1, 8, 8]),
        ],
        initializer=inits,
    )
    return _model(graph)


# --------------------------------------------------------------------- helpers


def _inputs(model: onnx.ModelProto, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for vi in model.graph.input:
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            feed[vi.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


class Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    # quantize_static saves a ModelProto argument with external data *in place*, leaving its
    # initializers pointing into a deleted temp folder: always hand the quantizer a copy.
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _static(model: onnx.ModelProto, tmp_path: Path, fmt=QuantFormat.QDQ, **extra) -> onnx.ModelProto:
    out = tmp_path / f"static-{fmt.name}-{len(list(tmp_path.iterdir()))}.onnx"
    quantize_static(
        _copy(model),
        out,
        Reader(_inputs(model, 32, seed=7)),
        quant_format=fmt,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options=extra or None,
    )
    return onnx.load(str(out))


def _dynamic(model: onnx.ModelProto, tmp_path: Path, **extra) -> onnx.ModelProto:
    out = tmp_path / f"dynamic-{len(list(tmp_path.iterdir()))}.onnx"
    # reduce_range (7-bit weights): on x86 without VNNI, u8 x s8 pair sums saturate int16 in
    # VPMADDUBSW, so full-range weights give a CPU-dependent error; 2 * 255 * 64 < 32767 cannot.
    quantize_dynamic(_copy(model), out, weight_type=QuantType.QInt8, reduce_range=True, extra_options=extra or None)
    return onnx.load(str(out))


def _graph_ops(graph: onnx.GraphProto) -> list[str]:
    return [n.op_type for n in graph.node]


def _branch(model: onnx.ModelProto, attr: str) -> onnx.GraphProto:
    node = next(n for n in model.graph.node if n.op_type == "If")
    return next(a.g for a in node.attribute if a.name == attr)


def _both_branch_feeds(n: int = 8) -> list[dict[str, np.ndarray]]:
    # Alternate positive (then branch) and negative (else branch) sums.
    feeds = _inputs(if_model(), n, seed=99)
    return [{"x": np.abs(f["x"]) * (1 if i % 2 else -1)} for i, f in enumerate(feeds)]


# ------------------------------------------------------------------- lifting


def test_lift_main_graph_constants_is_exact():
    model = conv_matmul_model()
    lifted, report = lift_constant_weights(model)

    assert not any(n.op_type == "Constant" for n in lifted.graph.node)
    assert {t.name for t in lifted.graph.initializer} == {"conv_w", "conv_b", "flat_shape", "fc_w"}
    [main] = report.graphs
    assert main.path == "" and main.constants == 4
    assert main.bytes == (4 * 3 * 3 * 3 + 4 + 256 * 10) * 4 + 2 * 8
    assert report.total_constants == 4 and report.total_bytes == main.bytes
    onnx.checker.check_model(lifted, full_check=True)

    feeds = _inputs(model, 4, seed=3)
    for before, after in zip(_run(model, feeds), _run(lifted, feeds)):
        assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_lift_value_forms():
    nodes = [
        helper.make_node("Constant", [], ["f"], value_float=1.5),
        helper.make_node("Constant", [], ["fs"], value_floats=[1.0, 2.0]),
        helper.make_node("Constant", [], ["i"], value_int=7),
        helper.make_node("Constant", [], ["is"], value_ints=[3, 4]),
        helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["is"], ["is_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["f", "fs"], ["a"]),
        helper.make_node("Add", ["a", "is_f"], ["b"]),
        helper.make_node("Add", ["b", "i_f"], ["y"]),
        helper.make_node("Constant", [], ["passthrough"], value_floats=[9.0]),
    ]
    graph = helper.make_graph(nodes, "forms", [], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("passthrough", TensorProto.FLOAT, [1]),
    ])
    model = _model(graph)
    lifted, report = lift_constant_weights(model)

    values = {t.name: numpy_helper.to_array(t) for t in lifted.graph.initializer}
    assert values["f"].dtype == np.float32 and values["f"].shape == () and values["f"] == 1.5
    assert values["fs"].tolist() == [1.0, 2.0]
    assert values["i"].dtype == np.int64 and values["i"] == 7
    assert values["is"].tolist() == [3, 4]
    # A constant that is itself a graph output stays a node.
    assert "passthrough" not in values
    assert report.skipped == ["passthrough: it is a graph output"]
    assert [np.array_equal(a, b) for a, b in zip(_run(model, [{}])[0], _run(lifted, [{}])[0])] == [True, True]


def test_lift_loop_body_and_nested_if_is_exact():
    model = loop_model()
    lifted, report = lift_constant_weights(model)

    by_path = {g.path: g for g in report.graphs}
    assert set(by_path) == {"", "loop/body", "loop/body/inner_if/then_branch"}
    assert by_path["loop/body"].names == ["w_body", "k"]
    assert by_path["loop/body/inner_if/then_branch"].names == ["w_in"]
    assert by_path["loop/body"].bytes == 4 * 4 * 4 + 8
    body = next(a.g for a in lifted.graph.node[0].attribute if a.name == "body")
    assert "w_body" in {t.name for t in body.initializer}
    assert "Constant" not in _graph_ops(body)
    onnx.checker.check_model(lifted, full_check=True)

    feeds = _inputs(model, 3, seed=5)
    for before, after in zip(_run(model, feeds), _run(lifted, feeds)):
        assert np.array_equal(before[0], after[0])


def test_lift_raises_old_ir_version():
    model = conv_matmul_model(opset=9)
    model.ir_version = 3
    lifted, report = lift_constant_weights(model)
    assert report.ir_version_raised_from == 3 and lifted.ir_version == 4
    assert model.ir_version == 3


def test_input_model_is_not_mutated(tmp_path):
    for model in (conv_matmul_model(), if_model(), loop_model()):
        before = model.SerializeToString()
        lifted, _ = lift_constant_weights(model)
        check_quantizable(model)
        count_quantized_nodes(model, model)
        assert model.SerializeToString() == before
        lifted_before = lifted.SerializeToString()
        quantize_subgraph_weights(lifted)
        assert lifted.SerializeToString() == lifted_before


# ------------------------------------------------------ static quantization


def test_static_qdq_quantizes_only_lifted_weights(tmp_path):
    model = conv_matmul_model()
    lifted, _ = lift_constant_weights(model)

    unlifted_q = _static(model, tmp_path)
    coverage = count_quantized_nodes(model, unlifted_q)
    assert (coverage.total, coverage.quantized) == (2, 0)
    assert coverage.unquantized == ["conv", "fc"]
    # The float Constant weights stay in the file, with Q/DQ pairs added: it grows.
    assert unlifted_q.ByteSize() > model.ByteSize()

    lifted_q = _static(lifted, tmp_path)
    coverage = count_quantized_nodes(lifted, lifted_q)
    assert (coverage.total, coverage.quantized) == (2, 2)
    assert coverage.unquantized == []
    assert {n.how for n in coverage.nodes} == {"qdq"}
    assert coverage.by_op == {"Conv": [1, 1], "MatMul": [1, 1]}
    assert lifted_q.ByteSize() < model.ByteSize() / 2

    feeds = _inputs(model, 6, seed=11)
    for ref, got in zip(_run(model, feeds), _run(lifted_q, feeds)):
        assert _cosine(ref[0], got[0]) >= 0.99


# ------------------------------------------------------------- If subgraphs


def test_if_lift_puts_constants_in_their_branch_and_is_exact():
    model = if_model()
    lifted, report = lift_constant_weights(model)

    assert {g.path: g.names for g in report.graphs} == {
        "": ["w0", "zero"],
        "if/then_branch": ["w_then"],
        "if/else_branch": ["w_else"],
    }
    for attr, name in (("then_branch", "w_then"), ("else_branch", "w_else")):
        branch = _branch(lifted, attr)
        assert [t.name for t in branch.initializer] == [name]
        assert _graph_ops(branch) == ["MatMul"]
    onnx.checker.check_model(lifted, full_check=True)

    feeds = _both_branch_feeds()
    for before, after in zip(_run(model, feeds), _run(lifted, feeds)):
        assert np.array_equal(before[0], after[0])


def test_if_static_qdq_never_enters_subgraphs(tmp_path):
    """onnxruntime 1.32: QDQQuantizer.quantize_model walks model.graph.node only; EnableSubgraph is ignored."""
    lifted, _ = lift_constant_weights(if_model())
    for options in ({}, {"EnableSubgraph": True}):
        quant = _static(lifted, tmp_path, **options)
        coverage = count_quantized_nodes(lifted, quant)
        assert coverage.quantized == 1
        assert sorted(coverage.unquantized) == ["if/else_branch/mm_else", "if/then_branch/mm_then"]
        assert _graph_ops(_branch(quant, "then_branch")) == ["MatMul"]
        assert _branch(quant, "then_branch").initializer[0].data_type == TensorProto.FLOAT


def test_if_static_qoperator_with_subgraphs_fails(tmp_path):
    """onnxruntime 1.32: QOperator + EnableSubgraph recurses, but subgraph tensors have no
    calibration ranges: without lifting QLinearMatMul.quantize raises TypeError, with lifting the
    result references a renamed outer tensor and _clean_initializers_helper raises RuntimeError."""
    for model in (if_model(), lift_constant_weights(if_model())[0]):
        with pytest.raises((TypeError, RuntimeError)):
            _static(model, tmp_path, fmt=QuantFormat.QOperator, EnableSubgraph=True)


def test_if_static_plus_subgraph_weights_quantizes_both_branches(tmp_path):
    model = if_model()
    lifted, _ = lift_constant_weights(model)
    reasons = check_quantizable(lifted)
    assert len(reasons) == 1 and "subgraphs" in reasons[0] and "quantize_subgraph_weights" in reasons[0]

    static_q = _static(lifted, tmp_path, EnableSubgraph=True)
    final, converted = quantize_subgraph_weights(static_q)
    assert sorted(converted) == ["if/else_branch/w_else", "if/then_branch/w_then"]

    coverage = count_quantized_nodes(lifted, final)
    assert (coverage.total, coverage.quantized) == (3, 3)
    how = {n.name: n.how for n in coverage.nodes}
    assert how == {"mm0": "qdq", "if/then_branch/mm_then": "weights-only", "if/else_branch/mm_else": "weights-only"}
    for attr in ("then_branch", "else_branch"):
        branch = _branch(final, attr)
        assert _graph_ops(branch) == ["DequantizeLinear", "MatMul"]
        assert {t.data_type for t in branch.initializer} == {TensorProto.INT8, TensorProto.FLOAT}
    onnx.checker.check_model(final)
    assert final.ByteSize() < model.ByteSize() / 2

    # Without lifting, nothing in the branches is an initializer, so nothing is converted.
    _, none = quantize_subgraph_weights(_static(model, tmp_path))
    assert none == []

    feeds = _both_branch_feeds()
    taken = [bool(f["x"].sum() > 0) for f in feeds]
    assert any(taken) and not all(taken)
    for ref, got in zip(_run(model, feeds), _run(final, feeds)):
        assert _cosine(ref[0], got[0]) >= 0.99


def test_if_dynamic_quantizes_branches_only_after_lifting(tmp_path):
    """quantize_dynamic + EnableSubgraph does recurse (ONNXQuantizer.quantize_subgraph); it needs initializers."""
    model = if_model()
    unlifted = count_quantized_nodes(model, _dynamic(model, tmp_path, EnableSubgraph=True))
    assert unlifted.quantized == 0

    lifted, _ = lift_constant_weights(model)
    quant = _dynamic(lifted, tmp_path, EnableSubgraph=True)
    coverage = count_quantized_nodes(lifted, quant)
    assert (coverage.total, coverage.quantized) == (3, 3)
    assert {n.how for n in coverage.nodes} == {"dynamic"}
    assert "MatMulInteger" in _graph_ops(_branch(quant, "else_branch"))

    feeds = _both_branch_feeds()
    for ref, got in zip(_run(model, feeds), _run(quant, feeds)):
        assert _cosine(ref[0], got[0]) >= 0.99


def test_subgraph_weights_in_nested_bodies():
    model = loop_model()
    lifted, _ = lift_constant_weights(model)
    converted_model, converted = quantize_subgraph_weights(lifted)
    assert sorted(converted) == ["loop/body/inner_if/then_branch/w_in", "loop/body/w_body"]

    body = next(a.g for a in converted_model.graph.node[0].attribute if a.name == "body")
    inner_if = next(n for n in body.node if n.op_type == "If")
    inner_then = next(a.g for a in inner_if.attribute if a.name == "then_branch")
    for graph in (body, inner_then):
        assert graph.node[0].op_type == "DequantizeLinear"
        assert TensorProto.INT8 in {t.data_type for t in graph.initializer}
    onnx.checker.check_model(converted_model)

    coverage = count_quantized_nodes(lifted, converted_model)
    assert (coverage.total, coverage.quantized) == (2, 2)
    assert {n.how for n in coverage.nodes} == {"weights-only"}
    feeds = _inputs(model, 4, seed=21)
    for ref, got in zip(_run(model, feeds), _run(converted_model, feeds)):
        assert _cosine(ref[0], got[0]) >= 0.99


# -------------------------------------------------------------- check_quantizable


def test_check_quantizable_reasons():
    model = conv_matmul_model()
    reasons = check_quantizable(model)
    assert any("no Conv/ConvTranspose/MatMul/Gemm" in r and "constant weights" in r for r in reasons)
    assert any("Constant nodes" in r and "lift_constant_weights" in r for r in reasons)

    assert check_quantizable(lift_constant_weights(model)[0]) == []

    old = lift_constant_weights(conv_matmul_model(opset=11))[0]
    assert [r for r in check_quantizable(old) if r.startswith("opset 11 < 13")]

    no_compute = _model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    ))
    assert len(check_quantizable(no_compute)) == 1 and "nothing to quantize" in check_quantizable(no_compute)[0]


def test_check_quantizable_weight_behind_transpose_and_already_quantized(tmp_path):
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["w"], ["w_t"], name="tr", perm=[1, 0]),
            helper.make_node("MatMul", ["x", "w_t"], ["y"], name="mm"),
        ],
        "transposed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(_f32(4, 8), "w")],
    )
    reasons = check_quantizable(_model(graph))
    assert any("'mm <- Transpose'" in r and "fold constants" in r for r in reasons)

    lifted = lift_constant_weights(conv_matmul_model())[0]
    reasons = check_quantizable(_static(lifted, tmp_path))
    assert any(r.startswith("the model is already quantized (qdq") for r in reasons)


# ---------------------------------------------------------- count_quantized_nodes


def _coverage_map(float_model, quant_model) -> dict[str, str]:
    coverage = count_quantized_nodes(float_model, quant_model)
    assert coverage.quantized == sum(1 for n in coverage.nodes if n.quantized)
    assert coverage.unquantized == [n.name for n in coverage.nodes if not n.quantized]
    return {n.name: n.how for n in coverage.nodes}


def test_count_float_model_is_zero():
    model = multi_op_model()
    coverage = count_quantized_nodes(model, model)
    assert (coverage.total, coverage.quantized) == (6, 0)
    assert coverage.unquantized == ["conv", "mm", "gemm", "gather", "lstm", "attmm"]
    assert coverage.ratio == 0.0


def test_count_qdq_model(tmp_path):
    model = multi_op_model()
    quant = _static(model, tmp_path)
    assert _coverage_map(model, quant) == {
        "conv": "qdq", "mm": "qdq", "gemm": "qdq", "gather": "qdq",
        "lstm": "none",  # LSTM has no QDQ quantizer in onnxruntime
        "attmm": "qdq",  # both operands dequantized
    }
    _run(quant, _inputs(model, 1, seed=0))


def test_count_qoperator_model(tmp_path):
    model = multi_op_model()
    quant = _static(model, tmp_path, fmt=QuantFormat.QOperator)
    assert {n.op_type for n in quant.graph.node} >= {"QLinearConv", "QLinearMatMul", "QGemm"}
    assert _coverage_map(model, quant) == {
        "conv": "qoperator", "mm": "qoperator", "gemm": "qoperator",
        "gather": "qoperator",  # Gather reads the uint8 table directly
        "lstm": "none", "attmm": "qoperator",
    }
    _run(quant, _inputs(model, 1, seed=0))


def test_count_dynamic_model(tmp_path):
    model = multi_op_model()
    quant = _dynamic(model, tmp_path)
    assert {n.op_type for n in quant.graph.node} >= {"ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM"}
    assert _coverage_map(model, quant) == {
        "conv": "dynamic", "mm": "dynamic", "gemm": "dynamic", "gather": "dynamic", "lstm": "dynamic",
        "attmm": "none",  # quantize_dynamic defaults to MatMulConstBOnly
    }
    _run(quant, _inputs(model, 1, seed=0))


def test_count_unnamed_nodes_match_by_output(tmp_path):
    model = lift_constant_weights(conv_matmul_model())[0]
    for node in model.graph.node:
        node.name = ""
    for quant in (_static(model, tmp_path), _static(model, tmp_path, fmt=QuantFormat.QOperator)):
        coverage = count_quantized_nodes(model, quant)
        assert (coverage.total, coverage.quantized) == (2, 2), coverage.nodes


def _shared_bias_model() -> onnx.ModelProto:
    """Two Convs reading one bias initializer "b", beside a tensor named "b0" (as TensorFlow exports name
    ``…/conv1d_25`` and ``…/conv1d_252``): onnxruntime's quantizer copies the shared bias as "b0"."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1", "b"], ["b0"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Neg", ["b0"], ["neg"], name="neg"),
             helper.make_node("Transpose", ["neg"], ["y"], name="to_nhwc", perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "shared_bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_shared_bias_gets_its_own_copy_so_the_quantized_model_loads(tmp_path):
    from edgeopt.stages.quantize.prepare import unshare_biases

    model = _shared_bias_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(4)]

    def quantized(source: onnx.ModelProto, name: str) -> Path:
        path = tmp_path / f"{name}.onnx"
        onnx.save(source, tmp_path / f"{name}_float.onnx")
        quantize_static(str(tmp_path / f"{name}_float.onnx"), str(path), Reader(feeds), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return path

    # onnxruntime alone wires its copy of the bias into the Neg (tensor "b0"): the file does not load.
    with pytest.raises(Exception, match="perm"):
        ort.InferenceSession(str(quantized(model, "plain")), providers=["CPUExecutionProvider"])
    fixed, created = unshare_biases(model)
    assert created == ["b__bias1"] and [n.input[2] for n in fixed.graph.node if n.op_type == "Conv"] == ["b", "b__bias1"]
    assert [n.input[2] for n in model.graph.node if n.op_type == "Conv"] == ["b", "b"]  # the input is untouched
    session = ort.InferenceSession(str(quantized(fixed, "fixed")), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, want = session.run(None, feeds[0])[0], reference.run(None, feeds[0])[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99
    assert unshare_biases(fixed) == (fixed, [])


def test_names_the_quantizer_added_are_made_short_and_the_model_computes_the_same(tmp_path):
    from edgeopt.stages.quantize.names import compact_added_names, graph_names

    model = _shared_bias_model()
    stem = "model_1/" + "very_long_tensorflow_scope/" * 6  # names as a TensorFlow export writes them
    renames = {name: stem + name for name in ("r0", "neg", "c0")}
    for node in model.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    model = unshare_biases_for_test(model)
    onnx.save(model, tmp_path / "float.onnx")
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(4)]
    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), Reader(feeds), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    data = (tmp_path / "int8.onnx").read_bytes()
    compact = compact_added_names(data, graph_names(model))
    assert len(compact) < 0.6 * len(data)
    short = onnx.ModelProto()
    short.ParseFromString(compact)
    onnx.checker.check_model(short)
    names = graph_names(short)
    long = onnx.ModelProto()
    long.ParseFromString(data)
    del long.graph.value_info[:]  # (dropped from the shipped file: it names a tensor the quantizer fused away)
    kept = graph_names(long) & graph_names(model)  # (the quantizer folds the Relu away, and its input name)
    assert {renames["r0"], renames["neg"]} <= kept <= names  # the float model's own names stay
    assert not [n for n in names - kept if n.startswith(stem)] and len(names) == len(graph_names(long))
    long_session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    short_session = ort.InferenceSession(compact, providers=["CPUExecutionProvider"])
    for feed in feeds:
        np.testing.assert_array_equal(long_session.run(None, feed)[0], short_session.run(None, feed)[0])


def unshare_biases_for_test(model: onnx.ModelProto) -> onnx.ModelProto:
    from edgeopt.stages.quantize.prepare import unshare_biases

    return unshare_biases(model)[0]
