"""summarize_graph on hand-built, quantized, external-data and torch-exported models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis import GraphSummary, summarize_graph
from edgeopt.graph.onnx_shapes import resolve_shapes
from edgeopt.errors import InputError

from .helpers import if_model, make_model, run_ort, tensor, unchanged, weight

F = TensorProto.FLOAT

# conv_mlp_model at batch N: Conv 4 out ch x 6x6 out x 3*3*3 taps = 3888 N, MatMul 144 x 5 = 720 N
CONV_MACS, MATMUL_MACS = 4 * 36 * 27, 144 * 5
FLOAT_PARAMS = 4 * 3 * 3 * 3 + 4 + 144 * 5  # conv W + bias + matmul W; the int64 shape is not one


def conv_mlp_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "W2"], ["y"]),
    ]
    inits = [
        weight("W", (4, 3, 3, 3)),
        weight("B", (4,), seed=1),
        weight("W2", (144, 5), seed=2),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
    ]
    model = make_model(nodes, [tensor("x", F, ["N", 3, 6, 6])], [tensor("y", F, ["N", 5])], inits)
    model.producer_name, model.producer_version = "edgeopt-tests", "1.0"
    return model


def test_float_model_summary() -> None:
    model = conv_mlp_model()
    with unchanged(model):
        summary = summarize_graph(model, {"x": (2, 3, 6, 6)})
    assert summary.ir_version == 8
    assert summary.opsets == {"ai.onnx": 17}
    assert summary.producer.model_dump() == {"name": "edgeopt-tests", "version": "1.0"}
    assert [i.model_dump() for i in summary.inputs] == [
        {"name": "x", "shape": ["N", 3, 6, 6], "dtype": "float32"}
    ]
    assert [o.model_dump() for o in summary.outputs] == [
        {"name": "y", "shape": ["N", 5], "dtype": "float32"}
    ]
    assert summary.resolved_inputs[0].shape == [2, 3, 6, 6]
    assert summary.parameter_count == FLOAT_PARAMS
    assert {k: v.model_dump() for k, v in summary.initializers.items()} == {
        "float32": {"count": 3, "elements": FLOAT_PARAMS, "bytes": 4 * FLOAT_PARAMS},
        "int64": {"count": 1, "elements": 2, "bytes": 16},
    }
    assert summary.op_histogram == {"Conv": 1, "MatMul": 1, "Relu": 1, "Reshape": 1}
    assert summary.node_count == 4
    assert summary.macs_total == 2 * (CONV_MACS + MATMUL_MACS)
    assert summary.macs_by_op_type == {"Conv": 2 * CONV_MACS, "MatMul": 2 * MATMUL_MACS}
    assert summary.macs_unknown_nodes == []
    assert summary.quantization == "none" and summary.quantized_node_count == 0
    assert summary.external_data == [] and summary.warnings == []

    dumped = summary.model_dump(mode="json")
    assert GraphSummary.model_validate(json.loads(json.dumps(dumped))) == summary


def test_if_branch_constants_count_as_parameters() -> None:
    model = if_model()
    summary = summarize_graph(model, {"x": (3, 4)})
    assert summary.parameter_count == 16 + 32  # all weights live in Constant nodes of the branches
    assert summary.initializers == {}
    assert summary.op_histogram == {"Constant": 3, "MatMul": 3, "If": 1}
    assert summary.node_count == 7
    assert summary.macs_total == 96  # the larger (else) branch


def test_small_integer_tensors_are_not_parameters_unless_quantized_data() -> None:
    nodes = [
        helper.make_node("Constant", [], ["axes"], value_ints=[0]),
        helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
        helper.make_node("DequantizeLinear", ["bias_q", "bias_s"], ["bias"]),
        helper.make_node("Add", ["u", "bias"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias_q"),  # int32 bias: data
        numpy_helper.from_array(np.array(0.5, np.float32), "bias_s"),
        numpy_helper.from_array(np.zeros((2, 2), np.int64), "unused_table"),  # 2-D: data
    ]
    model = make_model(nodes, [tensor("x", F, [4])], [tensor("y", F, [1, 4])], inits)
    summary = summarize_graph(model)
    assert (
        summary.parameter_count == 4 + 1 + 4
    )  # bias_q + bias_s + unused_table; axes is not counted
    assert summary.quantization == "weights-only"


class _RandomReader:
    """A tiny CalibrationDataReader: four random batches."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter(
            [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(4)]
        )

    def get_next(self):
        return next(self._batches, None)


@pytest.fixture
def float_model_path(tmp_path: Path) -> Path:
    path = tmp_path / "float.onnx"
    onnx.save(conv_mlp_model(), path)
    return path


@pytest.fixture
def quiet_ort_quantization():
    # The quantizer logs pre-processing advice on the root logger for every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("quiet_ort_quantization")
def test_static_qdq_quantization(float_model_path: Path, tmp_path: Path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")
    out = tmp_path / "qdq.onnx"
    quantization.quantize_static(
        float_model_path,
        out,
        _RandomReader(),
        quant_format=quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
    )
    model = onnx.load(out)
    with unchanged(model):
        summary = summarize_graph(model, {"x": (1, 3, 6, 6)})
    assert summary.quantization == "qdq"
    assert "weights" in summary.quantization_detail and "int8" in summary.quantization_detail
    assert summary.quantized_node_count >= 2  # at least Conv and MatMul sit between Q/DQ
    assert (
        summary.op_histogram["QuantizeLinear"] >= 1
        and summary.op_histogram["DequantizeLinear"] >= 3
    )
    assert summary.macs_total == CONV_MACS + MATMUL_MACS  # float ops on dequantized tensors
    assert summary.initializers["int8"].elements >= 4 * 27 + 144 * 5
    run_ort(model, {"x": np.ones((1, 3, 6, 6), np.float32)})


@pytest.mark.usefixtures("quiet_ort_quantization")
def test_static_qoperator_quantization(float_model_path: Path, tmp_path: Path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")
    out = tmp_path / "qop.onnx"
    quantization.quantize_static(
        float_model_path, out, _RandomReader(), quant_format=quantization.QuantFormat.QOperator
    )
    model = onnx.load(out)
    summary = summarize_graph(model)
    assert summary.quantization == "qoperator"
    assert summary.quantized_node_count == 2
    assert summary.quantization_detail == "quantized operators: 1 QLinearConv, 1 QLinearMatMul"
    assert summary.macs_by_op_type == {"QLinearConv": CONV_MACS, "QLinearMatMul": MATMUL_MACS}
    run_ort(model, {"x": np.ones((1, 3, 6, 6), np.float32)})


@pytest.mark.usefixtures("quiet_ort_quantization")
def test_dynamic_quantization(float_model_path: Path, tmp_path: Path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")
    out = tmp_path / "dynamic.onnx"
    quantization.quantize_dynamic(float_model_path, out)
    model = onnx.load(out)
    summary = summarize_graph(model, {"x": (3, 3, 6, 6)})
    assert summary.quantization == "dynamic"
    assert "DynamicQuantizeLinear" in summary.quantization_detail
    assert summary.quantized_node_count == 2  # ConvInteger and MatMulInteger
    assert summary.macs_total == 3 * (CONV_MACS + MATMUL_MACS)
    run_ort(model, {"x": np.ones((3, 3, 6, 6), np.float32)})


def test_weights_only_quantization() -> None:
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "W_s", "W_z"], ["W"]),
        helper.make_node("MatMul", ["x", "W"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.ones((8, 4), np.int8), "W_q"),
        numpy_helper.from_array(np.array(0.1, np.float32), "W_s"),
        numpy_helper.from_array(np.array(0, np.int8), "W_z"),
    ]
    model = make_model(nodes, [tensor("x", F, ["n", 8])], [tensor("y", F, ["n", 4])], inits)
    summary = summarize_graph(model, {"x": (2, 8)})
    assert summary.quantization == "weights-only"
    assert summary.quantized_node_count == 1
    assert summary.quantization_detail == (
        "1 DequantizeLinear on weights int8; activations stay in float"
    )
    assert summary.macs_total == 2 * 8 * 4
    run_ort(model, {"x": np.ones((2, 8), np.float32)})


def test_com_microsoft_ops_are_prefixed_and_listed() -> None:
    ms = "com.microsoft"
    nodes = [
        helper.make_node(
            "MatMulNBits", ["x", "B4", "B4s"], ["y"], domain=ms, K=32, N=8, bits=4, block_size=16
        ),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((8, 2, 8), np.uint8), "B4"),
        numpy_helper.from_array(np.ones((16,), np.float32), "B4s"),
    ]
    model = make_model(
        nodes,
        [tensor("x", F, ["n", 32])],
        [tensor("y", F, ["n", 8])],
        inits,
        extra_opsets={ms: 1},
        check=False,
    )
    summary = summarize_graph(model, {"x": (3, 32)})
    assert summary.opsets == {"ai.onnx": 17, "com.microsoft": 1}
    assert summary.op_histogram == {"com.microsoft.MatMulNBits": 1}
    assert summary.macs_by_op_type == {"com.microsoft.MatMulNBits": 3 * 32 * 8}
    assert summary.quantization == "weights-only"
    assert summary.initializers["uint8"].bytes == 8 * 2 * 8


def test_external_data_declared_but_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(
        conv_mlp_model(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    declared_bytes = (tmp_path / "weights.bin").stat().st_size
    model = onnx.load(path, load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    (tmp_path / "weights.bin").unlink()  # nothing below may read it
    with unchanged(model):
        summary = summarize_graph(model, {"x": (2, 3, 6, 6)})
    assert [e.model_dump() for e in summary.external_data] == [
        {"location": "weights.bin", "tensors": 4, "bytes": 4 * FLOAT_PARAMS + 16}
    ]
    assert declared_bytes == 4 * FLOAT_PARAMS + 16
    assert summary.parameter_count == FLOAT_PARAMS
    assert summary.initializers["float32"].bytes == 4 * FLOAT_PARAMS
    # size_threshold=0 moved even the Reshape target [0, -1] out: its values are unknown,
    # so the MatMul after the Reshape is honestly reported as unknown, not guessed.
    assert resolve_shapes(model)["f"].shape is None
    assert summary.macs_by_op_type == {"Conv": 2 * CONV_MACS}
    assert summary.macs_unknown_nodes == ["MatMul_3"]
    assert summary.warnings == ["1 node with unknown shapes left out of the MAC total"]


def test_external_data_with_default_threshold_keeps_full_macs(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(conv_mlp_model(), path, save_as_external_data=True, location="weights.bin")
    (tmp_path / "weights.bin").unlink()
    model = onnx.load(path, load_external_data=False)  # small tensors stay inline
    summary = summarize_graph(model, {"x": (2, 3, 6, 6)})
    assert summary.macs_total == 2 * (CONV_MACS + MATMUL_MACS)
    assert [(e.location, e.tensors) for e in summary.external_data] == [("weights.bin", 1)]


def test_bad_input_shapes_raise() -> None:
    model = conv_mlp_model()
    with pytest.raises(InputError, match="unknown input name: images") as info:
        summarize_graph(model, {"images": (1, 3, 6, 6)})
    assert info.value.hint == "the model's inputs are: x"
    with pytest.raises(InputError, match="rank 4"):
        summarize_graph(model, {"x": (1, 3, 36)})


def test_inference_failure_is_reported_not_raised(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("inference exploded")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    summary = summarize_graph(conv_mlp_model())
    assert any("inference exploded" in w for w in summary.warnings)
    # Conv falls back to its own arithmetic; MatMul's input shape comes from running the graph once
    # (shapes._probe_shapes), as for ops shape inference cannot see through.
    assert summary.macs_by_op_type == {"Conv": CONV_MACS, "MatMul": 720}
    assert summary.macs_unknown_nodes == []
    # without the probe (e.g. weights left in external files) the MatMul stays unknown, and says so
    from edgeopt.graph import onnx_shapes

    monkeypatch.setattr(onnx_shapes, "_probe_shapes", lambda *args: {})
    summary = summarize_graph(conv_mlp_model())
    assert summary.macs_by_op_type == {"Conv": CONV_MACS}
    assert summary.macs_unknown_nodes == ["MatMul_3"]


def test_torch_dynamo_export() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    net = Net().eval()
    program = torch.onnx.export(
        net,
        (torch.randn(2, 3, 8, 8),),
        dynamo=True,
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        input_names=["x"],
        output_names=["logits"],
        verbose=False,
    )
    model = program.model_proto
    onnx.checker.check_model(model)

    with unchanged(model):
        summary = summarize_graph(model, {"x": (3, 3, 8, 8)})
    batch_dim = summary.inputs[0].shape[0]
    assert isinstance(batch_dim, str) and summary.inputs[0].shape[1:] == [3, 8, 8]
    assert summary.outputs[0].shape == [batch_dim, 10]
    assert summary.parameter_count == sum(p.numel() for p in net.parameters())  # 1514
    # conv: 8 out ch x 4x4 out x 3*3*3 taps = 3456; fc: 128 x 10 = 1280; times batch 3
    assert summary.macs_by_op_type["Conv"] == 3 * 3456
    assert summary.macs_total == 3 * (3456 + 1280)
    assert summary.producer.name == "pytorch"

    shapes = resolve_shapes(model, {"x": (3, 3, 8, 8)})
    (logits,) = run_ort(
        model, {"x": np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)}
    )
    assert logits.shape == shapes["logits"].shape == (3, 10)
