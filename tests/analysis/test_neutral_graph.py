"""Static analysis is format-neutral: it prices graph.model graphs by op kind, whatever format built them;
target profiles speak kinds (and still read schema-1 files that spelled ONNX op types)."""

from __future__ import annotations

import onnx
import pytest

from edgeopt.analysis.profile import NODE_OVERHEAD_US, static_profile
from edgeopt.formats import registry
from edgeopt.formats.artifact import ModelFormat
from edgeopt.graph.build import build_graph
from edgeopt.graph.model import Graph, Node, Tensor
from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.graph.onnx_kinds import onnx_kind
from edgeopt.targets import TargetProfile, load_target

from .helpers import make_model, tensor, weight


def npu_target(**efficiency) -> TargetProfile:
    return TargetProfile.model_validate({
        "name": "kindsoc", "display_name": "SoC priced by kinds", "kind": "npu", "arch": "aarch64",
        "peak_ops_per_s": {"fp32": 1e9}, "memory_bandwidth_bytes_per_s": 1e9,
        "efficiency": efficiency or {"conv": 0.5, "default": 0.25},
        "accelerator": {"name": "kindnpu", "runtime": "tflite", "delegate": "test", "dtypes": ["int8"],
                        "supported_ops": {"int8": ["conv"]}, "peak_ops_per_s": {"int8": 4e9},
                        "partition_switch_us": 10.0},
    })


def tflite_like_graph() -> Graph:
    """What a TFLite adapter hands over: its own op names, mapped to kinds; no ONNX anywhere."""
    tensors = {name: Tensor(name, shape, dtype) for name, shape, dtype in [
        ("x", (1, 8, 8, 4), "int8"), ("w", (8, 3, 3, 4), "int8"), ("y", (1, 8, 8, 8), "int8"),
        ("z", (1, 8, 8, 8), "float32")]}
    nodes = (
        Node(0, "conv", "CONV_2D", "", "conv", ("x", "w"), ("y",), role="compute", dtype="int8", macs=18432),
        Node(1, "dequant", "DEQUANTIZE", "", "dequantize", ("y",), ("z",), role="qdq", dtype="int8"),
    )
    return Graph(format="tflite", nodes=nodes, tensors=tensors, weights=frozenset({"w"}), inputs=("x",),
                 outputs=("z",), input_shapes={"x": (1, 8, 8, 4)}, weight_bytes_by_dtype={"int8": 288})


def test_a_graph_without_onnx_is_placed_and_priced_by_kind():
    profile = static_profile(tflite_like_graph(), npu_target())
    conv, dequant = profile.nodes
    assert (conv.kind, conv.device) == ("conv", "accelerator")
    # on the accelerator at its int8 peak with the target's conv efficiency: 2 * 18432 / (4e9 * 0.5)
    assert conv.compute_time_us == pytest.approx(2 * 18432 / 2e9 * 1e6)
    assert dequant.device == "cpu" and "DEQUANTIZE (dequantize, int8)" in profile.cpu_fallback["dequant"]
    assert profile.partitions == 1 and profile.handovers == 2
    assert profile.weight_bytes == 288 and profile.input_shapes == {"x": [1, 8, 8, 4]}
    # 256 + 288 read, 512 written at 1 GB/s
    assert conv.memory_time_us == pytest.approx((256 + 288 + 512) / 1e9 * 1e6)
    assert profile.latency_ms == pytest.approx(
        (conv.time_us + dequant.time_us + 2 * 10.0) / 1000)
    assert dequant.time_us == pytest.approx((512 + 2048) / 1e9 * 1e6 + NODE_OVERHEAD_US)


def test_onnx_ops_of_one_computation_share_a_kind():
    assert {onnx_kind(op) for op in ("Conv", "QLinearConv", "ConvInteger")} | {onnx_kind("FusedConv", "com.microsoft")} \
        == {"conv"}
    assert (onnx_kind("Gemm"), onnx_kind("QGemm", "com.microsoft"), onnx_kind("MatMulInteger")) == \
        ("fully_connected", "fully_connected", "matmul")
    assert onnx_kind("GlobalAveragePool") == "global_average_pool" and onnx_kind("PRelu") == "prelu"
    assert onnx_kind("MyOp", "my.company") == "custom"
    model = make_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                       [tensor("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
                       [tensor("y", onnx.TensorProto.FLOAT, [1, 16, 4, 4])], [weight("w", (16, 2, 1, 1))])
    (node,) = to_graph(model).nodes
    assert (node.kind, node.op_class, node.macs) == ("conv", "1x1", 16 * 16 * 2)
    # under 16 outputs per group the class says how few (the kernels' SIMD lanes go unused): 3 is "narrow"
    few = make_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                     [tensor("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
                     [tensor("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])], [weight("w", (3, 2, 1, 1))])
    assert to_graph(few).nodes[0].op_class == "narrow"


def test_a_schema_1_target_spelled_in_onnx_op_types_is_read_as_kinds(tmp_path):
    (tmp_path / "old.toml").write_text(
        'schema_version = 1\nname = "old"\ndisplay_name = "Old"\nkind = "npu"\narch = "aarch64"\n'
        '[efficiency]\nConv = 0.4\n"Conv.depthwise" = 0.1\nGemm = 0.3\nLSTM = 0.2\ndefault = 0.05\n'
        '[accelerator]\nname = "n"\nruntime = "other"\ndelegate = "d"\n'
        '[accelerator.supported_ops]\nint8 = ["Conv", "QLinearConv", "Gemm", "GlobalAveragePool"]\n')
    target = load_target("old", tmp_path)
    assert target.schema_version == 2
    assert target.efficiency == {"conv": 0.4, "conv.depthwise": 0.1, "fully_connected": 0.3, "lstm": 0.2,
                                 "default": 0.05}
    assert target.accelerator.supported_ops == {"int8": ("conv", "fully_connected", "global_average_pool")}


def test_a_format_brings_its_graph_adapter_with_its_handler(restore_handlers):
    registry.register_format(registry.FormatHandler(
        ModelFormat.TFLITE, sniff=lambda head, path: head[4:8] == b"TFL3",
        graph=f"{__name__}:_adapt_toy"))
    graph = build_graph({"toy": True}, None, format=ModelFormat.TFLITE)
    assert graph.format == "tflite" and static_profile(graph, npu_target()).accelerator_node_count == 1


def _adapt_toy(model, input_shapes):
    assert model == {"toy": True}
    return tflite_like_graph()


@pytest.fixture
def restore_handlers():
    saved = registry.handlers()
    yield
    registry._HANDLERS[:] = saved
