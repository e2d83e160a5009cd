"""resolve_shapes / model_inputs / model_outputs on tiny hand-built models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.graph.onnx_shapes import (
    DeclaredTensor,
    TensorInfo,
    model_inputs,
    model_outputs,
    resolve_shapes,
)
from edgeopt.errors import InputError

from .helpers import make_model, run_ort, tensor, unchanged, weight


def two_input_model() -> onnx.ModelProto:
    """ids [batch, seq] int64 and mask [batch, seq] float, plus an image [batch, 3, ?, ?]."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "mask"], ["masked"]),
        helper.make_node("Conv", ["image", "W"], ["feat"], pads=[1, 1, 1, 1]),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, None, None])
    return make_model(
        nodes,
        [
            tensor("ids", TensorProto.INT64, ["batch", "seq"]),
            tensor("mask", TensorProto.FLOAT, ["batch", "seq"]),
            image,
        ],
        [
            tensor("masked", TensorProto.FLOAT, ["batch", "seq"]),
            tensor("feat", TensorProto.FLOAT, [None] * 4),
        ],
        [weight("W", (8, 3, 3, 3))],
    )


def test_model_inputs_keep_symbolic_dims() -> None:
    model = two_input_model()
    assert model_inputs(model) == [
        DeclaredTensor("ids", ("batch", "seq"), "int64"),
        DeclaredTensor("mask", ("batch", "seq"), "float32"),
        DeclaredTensor("image", ("batch", 3, "?", "?"), "float32"),
    ]
    assert model_outputs(model) == [
        DeclaredTensor("masked", ("batch", "seq"), "float32"),
        DeclaredTensor("feat", ("?", "?", "?", "?"), "float32"),
    ]


def test_default_dim_and_given_shapes() -> None:
    model = two_input_model()
    with unchanged(model):
        shapes = resolve_shapes(model)
        assert shapes["ids"] == TensorInfo("ids", (1, 1), "int64")
        assert shapes["image"].shape == (1, 3, 1, 1)
        assert shapes["feat"].shape == (1, 8, 1, 1)

        shapes = resolve_shapes(
            model, {"image": (2, 3, 16, 12), "ids": np.array([2, 7])}, default_dim=5
        )
    assert shapes["image"].shape == (2, 3, 16, 12)
    assert shapes["feat"] == TensorInfo("feat", (2, 8, 16, 12), "float32")
    # "mask" was not given, but it shares "batch" and "seq" with ids.
    assert shapes["mask"].shape == (2, 7)
    assert shapes["masked"].shape == (2, 7)
    assert shapes["W"] == TensorInfo("W", (8, 3, 3, 3), "float32")

    outputs = run_ort(
        model,
        {
            "ids": np.ones((2, 7), np.int64),
            "mask": np.ones((2, 7), np.float32),
            "image": np.ones((2, 3, 16, 12), np.float32),
        },
    )
    assert [o.shape for o in outputs] == [shapes["masked"].shape, shapes["feat"].shape]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"imgae": (1, 3, 8, 8)}, "unknown input name: imgae"),
        ({"W": (8, 3, 3, 3)}, "unknown input name: W"),  # an initializer is not an input
        ({"image": (1, 3, 8)}, "has rank 4"),
        ({"image": (1, 4, 8, 8)}, "fixed size 3 at dimension 1"),
        ({"image": (0, 3, 8, 8)}, "invalid size 0"),
        ({"image": (1, 3, 8, "8")}, "invalid size '8'"),
        ({"image": "1x3x8x8"}, "not a list of sizes"),
        ({"ids": (2, 7), "mask": (3, 7)}, "dimension 'batch' is 2"),
    ],
)
def test_bad_input_shapes_raise_input_error(given: dict, message: str) -> None:
    model = two_input_model()
    with unchanged(model), pytest.raises(InputError) as info:
        resolve_shapes(model, given)
    assert message in info.value.message
    if "unknown input" in message:
        assert info.value.hint == "the model's inputs are: ids, mask, image"
    assert info.value.exit_code == 2


def test_dtypes_constants_and_old_ir_initializer_inputs() -> None:
    """Initializers listed as graph inputs (IR < 4) are weights, not inputs."""
    nodes = [
        helper.make_node(
            "Constant", [], ["c_half"], value=numpy_helper.from_array(np.ones((2, 3), np.float16))
        ),
        helper.make_node("Constant", [], ["c_ints"], value_ints=[1, 2, 3]),
        helper.make_node("Constant", [], ["c_float"], value_float=0.5),
        helper.make_node("Cast", ["x"], ["x_bf16"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["x"], ["x_bool"], to=TensorProto.BOOL),
        helper.make_node("Add", ["q", "q_bias"], ["q_sum"]),
    ]
    q_bias = numpy_helper.from_array(np.zeros((4,), np.int8), "q_bias")
    model = make_model(
        nodes,
        [
            tensor("x", TensorProto.FLOAT, [2, 3]),
            tensor("q", TensorProto.INT8, [4]),
            tensor("q_bias", TensorProto.INT8, [4]),
        ],
        [
            tensor(n, TensorProto.UNDEFINED, None)
            for n in ("c_half", "c_ints", "c_float", "x_bf16", "x_bool", "q_sum")
        ],
        [q_bias, numpy_helper.from_array(np.zeros((5,), np.uint8), "u8")],
        check=False,
    )
    model.ir_version = 3
    assert [t.name for t in model_inputs(model)] == ["x", "q"]
    shapes = resolve_shapes(model)
    assert shapes["c_half"] == TensorInfo("c_half", (2, 3), "float16")
    assert shapes["c_ints"] == TensorInfo("c_ints", (3,), "int64")
    assert shapes["c_float"] == TensorInfo("c_float", (), "float32")
    assert shapes["x_bf16"] == TensorInfo("x_bf16", (2, 3), "bfloat16")
    assert shapes["x_bool"] == TensorInfo("x_bool", (2, 3), "bool")
    assert shapes["q_sum"] == TensorInfo("q_sum", (4,), "int8")
    assert shapes["u8"] == TensorInfo("u8", (5,), "uint8")
    with pytest.raises(InputError, match="unknown input name: q_bias"):
        resolve_shapes(model, {"q_bias": (4,)})


def test_subgraph_value_info_is_included() -> None:
    then_graph = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["w_then"],
                value=numpy_helper.from_array(np.ones((4, 6), np.float32)),
            ),
            helper.make_node("MatMul", ["x", "w_then"], ["y_then"]),
        ],
        "then",
        [],
        [tensor("y_then", TensorProto.FLOAT, None)],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y_else"])],
        "else",
        [],
        [tensor("y_else", TensorProto.FLOAT, None)],
    )
    model = make_model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)],
        [tensor("x", TensorProto.FLOAT, ["n", 4]), tensor("cond", TensorProto.BOOL, [])],
        [tensor("y", TensorProto.FLOAT, ["n", None])],
    )
    shapes = resolve_shapes(model, {"x": (3, 4)})
    assert shapes["w_then"].shape == (4, 6)
    assert shapes["y_then"] == TensorInfo("y_then", (3, 6), "float32")
    assert shapes["y_else"] == TensorInfo("y_else", (3, 4), "float32")


def test_data_propagation_through_shape_ops() -> None:
    """Reshape's target comes from Shape -> Gather -> Concat; data_prop resolves it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        weight("W", (48, 5)),
    ]
    model = make_model(
        nodes,
        [tensor("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [tensor("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    shapes = resolve_shapes(model, {"x": (6, 3, 4, 4)})
    assert shapes["flat"].shape == (6, 48)
    assert shapes["y"].shape == (6, 5)


def test_external_data_is_never_read(tmp_path) -> None:
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [tensor("x", TensorProto.FLOAT, ["N", 64])],
        [tensor("y", TensorProto.FLOAT, ["N", 32])],
        [weight("W", (64, 32))],
    )
    path = tmp_path / "model.onnx"
    onnx.save(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    loaded = onnx.load(path, load_external_data=False)
    (tmp_path / "weights.bin").unlink()  # any attempt to read it would now fail
    assert loaded.graph.initializer[0].data_location == TensorProto.EXTERNAL
    with unchanged(loaded):
        shapes = resolve_shapes(loaded, {"x": (3, 64)})
    assert shapes["W"] == TensorInfo("W", (64, 32), "float32")
    assert shapes["y"].shape == (3, 32)


def test_inference_failure_falls_back_to_partial_information(monkeypatch) -> None:
    model = two_input_model()

    def broken(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("boom")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    shapes = resolve_shapes(model, {"image": (2, 3, 8, 8)})
    assert shapes["image"].shape == (2, 3, 8, 8)  # inputs are still fixed
    assert shapes["W"].shape == (8, 3, 3, 3)  # weights still known
    # intermediates: recovered by running the graph once at the fixed input shapes
    assert shapes["feat"].shape == (2, 8, 8, 8)
    from edgeopt.graph import onnx_shapes as module

    monkeypatch.setattr(module, "_probe_shapes", lambda *args: {})
    assert resolve_shapes(model, {"image": (2, 3, 8, 8)})["feat"].shape is None  # unknown, but no crash


def test_inconsistent_declarations_do_not_crash() -> None:
    """The declared output rank contradicts the op: the declaration is kept, nothing raises."""
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor("x", TensorProto.FLOAT, [2, 3])],
        [tensor("y", TensorProto.FLOAT, [2, 3, 4])],
        check=False,
    )
    shapes = resolve_shapes(model)
    assert shapes["x"].shape == (2, 3)
    assert shapes["y"].dtype == "float32"


def test_importable_without_torch() -> None:
    code = (
        "import sys; import edgeopt.analysis; "
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
