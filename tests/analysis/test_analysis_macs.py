"""MAC counts checked against numbers worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.graph.onnx_macs import (
    NodeCost,
    compute_macs,
    get_op_cost,
    input_shape,
    macs_by_op_type,
    register_op_cost,
    total_macs,
)
from edgeopt.graph.onnx_shapes import TensorInfo, resolve_shapes

from .helpers import if_model, make_model, run_ort, tensor, unchanged, weight

F = TensorProto.FLOAT
U8 = TensorProto.UINT8
I8 = TensorProto.INT8


def single_node(node, inputs, outputs, inits=(), **kwargs) -> onnx.ModelProto:
    return make_model([node], inputs, outputs, inits, **kwargs)


def random_feeds(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 8, shapes[vi.name]).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(shapes[vi.name]).astype(dtype)
    return feeds


def conv_model(x_shape, w_shape, y_shape, **attrs) -> onnx.ModelProto:
    return single_node(
        helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", **attrs),
        [tensor("x", F, x_shape)],
        [tensor("y", F, y_shape)],
        [weight("W", w_shape), weight("B", (w_shape[0],))],
    )


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs", "y_shape", "macs"),
    [
        # grouped, strided, padded: out (10 + 2 - 3) // 2 + 1 = 5; 16*5*5 outputs x (8/4)*3*3
        (
            (1, 8, 10, 10),
            (16, 2, 3, 3),
            dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
            (1, 16, 5, 5),
            16 * 25 * 2 * 9,
        ),
        # depthwise, batch 2: 2*8*7*7 outputs x 1*3*3
        (
            (2, 8, 7, 7),
            (8, 1, 3, 3),
            dict(group=8, pads=[1, 1, 1, 1]),
            (2, 8, 7, 7),
            2 * 8 * 49 * 9,
        ),
        # dilation 2: span 5, out 9 - 5 + 1 = 5; 6*5*5 outputs x 4*3*3
        ((1, 4, 9, 9), (6, 4, 3, 3), dict(dilations=[2, 2]), (1, 6, 5, 5), 6 * 25 * 36),
        # asymmetric pads: out h = (6 + 1 + 0 - 3) + 1 = 5, w = (6 + 0 + 2 - 3) + 1 = 6
        ((1, 3, 6, 6), (2, 3, 3, 3), dict(pads=[1, 0, 0, 2]), (1, 2, 5, 6), 2 * 30 * 27),
        # SAME_UPPER with stride 2: ceil(7 / 2) = 4
        (
            (1, 3, 7, 7),
            (4, 3, 3, 3),
            dict(auto_pad="SAME_UPPER", strides=[2, 2]),
            (1, 4, 4, 4),
            4 * 16 * 27,
        ),
        # Conv1d: out (20 - 4) // 2 + 1 = 9
        ((1, 3, 20), (5, 3, 4), dict(strides=[2]), (1, 5, 9), 5 * 9 * 12),
        # Conv3d: out 3x3x3
        ((1, 2, 4, 4, 4), (3, 2, 2, 2, 2), {}, (1, 3, 3, 3, 3), 3 * 27 * 16),
    ],
)
def test_conv(x_shape, w_shape, attrs, y_shape, macs) -> None:
    model = conv_model(x_shape, w_shape, y_shape, **attrs)
    with unchanged(model):
        report = compute_macs(model)
    assert report.rows == (NodeCost("conv", "Conv", "", macs, ""),)
    assert report.total == macs
    # The output shape the count assumed is what onnxruntime produces.
    (y,) = run_ort(model, random_feeds(model, {"x": x_shape}))
    assert y.shape == y_shape

    # Without an inferred output shape the count falls back to the Conv arithmetic.
    partial = {k: v for k, v in resolve_shapes(model).items() if k != "y"}
    assert compute_macs(model, shapes=partial).total == macs


@pytest.mark.parametrize(
    ("w_shape", "attrs", "macs"),
    [
        # every one of the 4*5*5 inputs is scattered through 3 outputs x 3*3 kernel taps
        ((4, 3, 3, 3), dict(strides=[2, 2]), 4 * 25 * 3 * 9),
        # group 2: W (C=4, M/group=2, 3, 3)
        ((4, 2, 3, 3), dict(group=2), 4 * 25 * 2 * 9),
    ],
)
def test_conv_transpose(w_shape, attrs, macs) -> None:
    model = single_node(
        helper.make_node("ConvTranspose", ["x", "W"], ["y"], **attrs),
        [tensor("x", F, [1, 4, 5, 5])],
        [tensor("y", F, [1, None, None, None])],
        [weight("W", w_shape)],
    )
    assert compute_macs(model).total == macs
    run_ort(model, random_feeds(model, {"x": (1, 4, 5, 5)}))


@pytest.mark.parametrize(
    ("a", "b", "attrs"),
    [
        ((3, 10), (7, 10), dict(transB=1)),
        ((10, 3), (10, 7), dict(transA=1)),
        ((3, 10), (10, 7), {}),
    ],
)
def test_gemm(a, b, attrs) -> None:
    model = single_node(
        helper.make_node("Gemm", ["a", "B", "C"], ["y"], **attrs),
        [tensor("a", F, a)],
        [tensor("y", F, [3, 7])],
        [weight("B", b), weight("C", (7,))],
    )
    assert compute_macs(model).total == 3 * 10 * 7  # M=3, K=10, N=7 whatever the layout
    run_ort(model, random_feeds(model, {"a": a}))


@pytest.mark.parametrize(
    ("a", "b", "macs"),
    [
        ((2, 1, 4, 5, 6), (3, 1, 6, 7), 2 * 3 * 4 * 5 * 6 * 7),  # batch (2,1,4) x (3,1) -> (2,3,4)
        ((6,), (2, 6, 7), 2 * 6 * 7),  # 1-D left operand: a row vector
        ((2, 5, 6), (6,), 2 * 5 * 6),  # 1-D right operand: a column vector
        ((6,), (6,), 6),  # dot product
    ],
)
def test_batched_matmul(a, b, macs) -> None:
    model = single_node(
        helper.make_node("MatMul", ["a", "b"], ["y"]),
        [tensor("a", F, a), tensor("b", F, b)],
        [tensor("y", F, None)],
        check=False,
    )
    assert compute_macs(model).total == macs
    run_ort(model, random_feeds(model, {"a": a, "b": b}))


@pytest.mark.parametrize(
    ("equation", "a", "b", "macs"),
    [
        ("bij,bjk->bik", (2, 3, 4), (2, 4, 5), 2 * 3 * 4 * 5),
        ("...ij,...jk->...ik", (2, 3, 4), (1, 4, 5), 2 * 3 * 4 * 5),  # broadcast ellipsis
        ("ij,kj->ik", (3, 4), (5, 4), 3 * 4 * 5),
    ],
)
def test_einsum(equation, a, b, macs) -> None:
    model = single_node(
        helper.make_node("Einsum", ["a", "b"], ["y"], equation=equation),
        [tensor("a", F, a), tensor("b", F, b)],
        [tensor("y", F, None)],
        check=False,
    )
    assert compute_macs(model).total == macs
    run_ort(model, random_feeds(model, {"a": a, "b": b}))


@pytest.mark.parametrize(
    ("op", "gates", "direction", "layout"),
    [("LSTM", 4, "bidirectional", 0), ("GRU", 3, "forward", 1), ("RNN", 1, "reverse", 0)],
)
def test_recurrent(op, gates, direction, layout) -> None:
    seq, batch, in_size, hidden = 5, 2, 8, 16
    dirs = 2 if direction == "bidirectional" else 1
    x_shape = (seq, batch, in_size) if layout == 0 else (batch, seq, in_size)
    model = single_node(
        helper.make_node(
            op, ["x", "W", "R", "B"], ["Y"], hidden_size=hidden, direction=direction, layout=layout
        ),
        [tensor("x", F, x_shape)],
        [tensor("Y", F, None)],
        [
            weight("W", (dirs, gates * hidden, in_size)),
            weight("R", (dirs, gates * hidden, hidden)),
            weight("B", (dirs, 2 * gates * hidden)),
        ],
        check=False,
    )
    # per step, direction and sequence: gates * hidden * (input + hidden) for X.W and H.R
    expected = dirs * seq * batch * gates * hidden * (in_size + hidden)
    assert compute_macs(model).total == expected
    assert expected == {"LSTM": 30720, "GRU": 11520, "RNN": 3840}[op]
    if layout == 0:  # onnxruntime does not implement batch-first recurrent ops
        run_ort(model, random_feeds(model, {"x": x_shape}))


def test_symbolic_batch_scales_macs() -> None:
    model = conv_model(["batch", 3, 8, 8], (4, 3, 3, 3), ["batch", 4, 6, 6])
    per_item = 4 * 36 * 27
    assert compute_macs(model).total == per_item  # symbolic dims default to 1
    assert compute_macs(model, {"x": (5, 3, 8, 8)}).total == 5 * per_item
    assert compute_macs(model, default_dim=3).total == 3 * per_item


def test_if_counts_both_branches_but_totals_the_larger() -> None:
    model = if_model()
    report = compute_macs(model, {"x": (3, 4)})
    matmuls = [r for r in report.rows if r.op_type == "MatMul"]
    assert [(r.subgraph_path, r.macs, r.weight) for r in matmuls] == [
        ("branch/else_branch", 48, 1),
        ("branch/else_branch", 48, 1),
        ("branch/then_branch", 48, 0),
    ]
    assert report.total == 96
    assert macs_by_op_type(report.rows) == {"MatMul": 96}
    assert not report.trip_count_unknown
    for cond in (True, False):
        run_ort(model, {"x": np.ones((3, 4), np.float32), "cond": np.array(cond)})


def test_loop_body_counted_once_and_flagged() -> None:
    body = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["W"], value=numpy_helper.from_array(np.ones((4, 4), np.float32))
            ),
            helper.make_node("MatMul", ["s_in", "W"], ["s_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            tensor("i", TensorProto.INT64, []),
            tensor("cond_in", TensorProto.BOOL, []),
            tensor("s_in", F, [1, 4]),
        ],
        [tensor("cond_out", TensorProto.BOOL, []), tensor("s_out", F, [1, 4])],
    )
    model = make_model(
        [helper.make_node("Loop", ["M", "", "s0"], ["s_final"], body=body)],
        [tensor("M", TensorProto.INT64, []), tensor("s0", F, [1, 4])],
        [tensor("s_final", F, [1, 4])],
    )
    report = compute_macs(model)
    assert report.total == 16  # one (1,4)@(4,4) per unknown number of iterations
    assert report.trip_count_unknown
    assert [r.name for r in report.rows] == ["Loop_0", "Constant_0", "MatMul_1", "Identity_2"]
    assert report.rows[2].qualified_name == "Loop_0/body/MatMul_1"
    (out,) = run_ort(model, {"M": np.array(3), "s0": np.ones((1, 4), np.float32)})
    assert out.tolist() == [[64.0] * 4]


def test_scan_body_multiplied_by_sequence_length() -> None:
    body = helper.make_graph(
        [helper.make_node("MatMul", ["xi", "W"], ["yi"])],
        "body",
        [tensor("xi", F, [4])],
        [tensor("yi", F, [3])],
    )
    model = make_model(
        [helper.make_node("Scan", ["x"], ["ys"], body=body, num_scan_inputs=1)],
        [tensor("x", F, ["T", 4])],
        [tensor("ys", F, ["T", 3])],
        [weight("W", (4, 3))],
    )
    report = compute_macs(model, {"x": (5, 4)})
    assert report.rows[1] == NodeCost("MatMul_0", "MatMul", "", 12, "Scan_0/body", weight=5)
    assert report.total == 60 and not report.trip_count_unknown
    run_ort(model, {"x": np.ones((5, 4), np.float32)})


def _quant_inits(*names_and_types) -> list[onnx.TensorProto]:
    inits = []
    for name, dtype in names_and_types:
        if dtype == F:
            inits.append(numpy_helper.from_array(np.array(0.05, np.float32), name))
        else:
            inits.append(
                numpy_helper.from_array(np.array(0, helper.tensor_dtype_to_np_dtype(dtype)), name)
            )
    return inits


def test_standard_quantized_ops() -> None:
    conv_scales = _quant_inits(("xs", F), ("xz", U8), ("ws", F), ("wz", I8), ("ys", F), ("yz", U8))
    w_int8 = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "w")
    b_int8 = numpy_helper.from_array(np.ones((4, 5), np.int8), "b")
    nodes = [
        # (1,2,5,5) * (4,2,3,3) -> (1,4,3,3): 36 outputs x 18 taps = 648
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["qc"]),
        helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["ci"]),
        # (2,3,4) @ (4,5): 2*3*4*5 = 120
        helper.make_node("QLinearMatMul", ["a", "xs", "xz", "b", "ws", "wz", "ys", "yz"], ["qm"]),
        helper.make_node("MatMulInteger", ["a", "b", "xz", "wz"], ["mi"]),
    ]
    model = make_model(
        nodes,
        [tensor("x", U8, [1, 2, 5, 5]), tensor("a", U8, [2, 3, 4])],
        [
            tensor("qc", U8, None),
            tensor("ci", TensorProto.INT32, None),
            tensor("qm", U8, None),
            tensor("mi", TensorProto.INT32, None),
        ],
        [*conv_scales, w_int8, b_int8],
        check=False,
    )
    report = compute_macs(model)
    assert [r.macs for r in report.rows] == [648, 648, 120, 120]
    assert macs_by_op_type(report.rows) == {
        "ConvInteger": 648,
        "QLinearConv": 648,
        "MatMulInteger": 120,
        "QLinearMatMul": 120,
    }
    run_ort(model, random_feeds(model, {"x": (1, 2, 5, 5), "a": (2, 3, 4)}))


def test_com_microsoft_quantized_ops() -> None:
    ms = "com.microsoft"
    inits = [
        *_quant_inits(("as", F), ("az", U8), ("bs", F), ("bz", I8), ("ys", F), ("yz", U8)),
        numpy_helper.from_array(np.ones((4, 5), np.int8), "B"),
        numpy_helper.from_array(np.ones((5, 4), np.int8), "Bt"),
        # 4-bit weights for K=32, N=8, block 16: (N, K/16, 16*4/8) packed bytes
        numpy_helper.from_array(np.zeros((8, 2, 8), np.uint8), "B4"),
        numpy_helper.from_array(np.ones((16,), np.float32), "B4s"),
    ]
    nodes = [
        helper.make_node(
            "MatMulIntegerToFloat", ["a", "B", "as", "bs", "az", "bz"], ["m1"], domain=ms
        ),
        helper.make_node(
            "QGemm",
            ["a", "as", "az", "Bt", "bs", "bz", "", "ys", "yz"],
            ["m2"],
            domain=ms,
            transB=1,
        ),
        helper.make_node("DynamicQuantizeMatMul", ["f", "B", "bs", "bz"], ["m3"], domain=ms),
        helper.make_node(
            "MatMulNBits", ["g", "B4", "B4s"], ["m4"], domain=ms, K=32, N=8, bits=4, block_size=16
        ),
    ]
    model = make_model(
        nodes,
        [tensor("a", U8, [3, 4]), tensor("f", F, [3, 4]), tensor("g", F, [3, 32])],
        [
            tensor("m1", F, None),
            tensor("m2", U8, None),
            tensor("m3", F, None),
            tensor("m4", F, None),
        ],
        inits,
        extra_opsets={ms: 1},
        check=False,
    )
    report = compute_macs(model)
    # 3x4 @ 4x5 = 60 for the first three; MatMulNBits: 3 rows x K=32 x N=8 = 768
    assert [r.macs for r in report.rows] == [60, 60, 60, 768]
    assert "com.microsoft.MatMulNBits" in macs_by_op_type(report.rows)
    run_ort(model, random_feeds(model, {"a": (3, 4), "f": (3, 4), "g": (3, 32)}))


def test_unknown_shapes_give_none_and_unnamed_nodes_get_stable_names() -> None:
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("MysteryOp", ["r"], ["m"], domain="vendor.ops"),  # shape unknown
            helper.make_node("MatMul", ["m", "W"], ["y"]),
        ],
        [tensor("x", F, [2, 4])],
        [tensor("y", F, None)],
        [weight("W", (4, 4))],
        extra_opsets={"vendor.ops": 1},
        check=False,
    )
    report = compute_macs(model)
    assert [(r.name, r.op_type, r.domain, r.macs) for r in report.rows] == [
        ("Relu_0", "Relu", "", 0),
        ("MysteryOp_1", "MysteryOp", "vendor.ops", 0),
        ("MatMul_2", "MatMul", "", None),
    ]
    assert report.unknown_nodes == ("MatMul_2",)
    assert report.total == 0
    assert total_macs(report.rows) == 0


def test_register_custom_op_cost() -> None:
    @register_op_cost("MysteryOp2", domain="vendor.ops")
    def mystery(node, shapes):  # one MAC per input element
        shape = input_shape(node, shapes, 0)
        return None if shape is None else int(np.prod(shape))

    assert get_op_cost("MysteryOp2", "vendor.ops") is mystery
    assert get_op_cost("Conv", "ai.onnx") is get_op_cost("Conv")
    model = make_model(
        [helper.make_node("MysteryOp2", ["x"], ["y"], domain="vendor.ops")],
        [tensor("x", F, [2, 5])],
        [tensor("y", F, None)],
        extra_opsets={"vendor.ops": 1},
        check=False,
    )
    report = compute_macs(model, shapes={"x": TensorInfo("x", (2, 5), "float32")})
    assert report.total == 10
    assert macs_by_op_type(report.rows) == {"vendor.ops.MysteryOp2": 10}


def test_model_local_functions_are_inlined() -> None:
    linear = helper.make_function(
        "local",
        "Linear",
        ["a", "w"],
        ["o"],
        [helper.make_node("MatMul", ["a", "w"], ["o"])],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("Linear", ["x", "W"], ["y"], domain="local")],
        "g",
        [tensor("x", F, ["n", 4])],
        [tensor("y", F, ["n", 3])],
        [weight("W", (4, 3))],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[linear],
        ir_version=8,
    )
    onnx.checker.check_model(model, full_check=True)
    with unchanged(model):
        report = compute_macs(model, {"x": (5, 4)})
    assert report.total == 5 * 4 * 3  # the MatMul inside the function
    run_ort(model, {"x": np.ones((5, 4), np.float32)})
