"""QDQ-aware execution dtypes and accelerator placement in the static profile."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.placement import place_nodes
from edgeopt.analysis.profile import NODE_OVERHEAD_US, static_profile
from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.targets import TargetProfile

from .helpers import make_model, run_ort, tensor, weight

F = TensorProto.FLOAT


def npu_target(supported: dict[str, list[str]], dtypes=("int8",), **acc_fields) -> TargetProfile:
    accelerator = {
        "name": "testnpu",
        "runtime": "onnxruntime",
        "delegate": "TestExecutionProvider",
        "dtypes": dtypes,
        "supported_ops": supported,
        "peak_ops_per_s": {"int8": 4e9, "fp32": 1e9},
        "partition_switch_us": 50.0,
    }
    accelerator.update(acc_fields)
    return TargetProfile.model_validate(
        {
            "name": "testsoc",
            "display_name": "Test SoC",
            "kind": "npu",
            "arch": "aarch64",
            "ram_bytes": 1 << 30,
            "peak_ops_per_s": {"fp32": 1e9},
            "memory_bandwidth_bytes_per_s": 2e9,
            "accelerator": accelerator,
        }
    )


# ------------------------------------------------------------------------ QDQ


def float_conv_fc() -> onnx.ModelProto:
    """x (1,3,8,8) -> Conv(3->8, 3x3, pad 1) -> Relu -> Reshape (1,512) -> MatMul (512->10)."""
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fw"], ["y"], name="fc"),
    ]
    return make_model(
        nodes,
        [tensor("x", F, [1, 3, 8, 8])],
        [tensor("y", F, [1, 10])],
        [weight("w", (8, 3, 3, 3)), weight("b", (8,), seed=1), weight("fw", (512, 10), seed=2), shape],
    )


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory) -> onnx.ModelProto:
    quantization = pytest.importorskip("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
                                 for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    folder = Path(tmp_path_factory.mktemp("qdq"))
    onnx.save(float_conv_fc(), str(folder / "float.onnx"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static warns "consider pre-processing"
    try:
        quantization.quantize_static(
            str(folder / "float.onnx"), str(folder / "int8.onnx"), Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
        )
    finally:
        root.setLevel(level)
    model = onnx.load(str(folder / "int8.onnx"))
    run_ort(model, {"x": np.ones((1, 3, 8, 8), np.float32)})
    return model


def test_qdq_model_is_costed_as_int8(qdq_model):
    target = TargetProfile.model_validate({
        "name": "cpu8", "display_name": "CPU", "kind": "cpu", "arch": "aarch64",
        "peak_ops_per_s": {"fp32": 1e9, "int8": 4e9}, "memory_bandwidth_bytes_per_s": 2e9,
    })
    profile = static_profile(qdq_model, target)
    conv, fc = profile.node("conv"), profile.node("fc")
    assert (conv.execution_dtype, fc.execution_dtype) == ("int8", "int8")
    assert conv.role == fc.role == "compute"
    # conv: 8*8*8 outputs * 27 = 13824 MACs on uint8 x (192 B), int8 w (216 B),
    # int32 bias (32 B), writing the uint8 output of the Q that follows (512 B)
    assert conv.macs == 13824
    assert (conv.activation_bytes_read, conv.weight_bytes_read, conv.bytes_written) == (192, 248, 512)
    assert conv.peak_ops_per_s == 4e9
    assert conv.compute_time_us == pytest.approx(2 * 13824 / 4e9 * 1e6)
    # fc: 512*10 = 5120 MACs on uint8 f (512 B) and int8 fw (5120 B), float output (40 B)
    assert fc.macs == 5120
    assert (fc.activation_bytes_read, fc.weight_bytes_read) == (512, 5120)
    assert profile.node("flat").execution_dtype == "int8"  # Reshape with its Q/DQ dropped

    fused = [n for n in profile.nodes if n.role == "fused_qdq"]
    assert fused and all(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in fused)
    assert all(n.macs == 0 and n.bytes_read == 0 and n.time_us == 0 and n.bound == "none"
               for n in fused)
    assert {n.fused_into for n in fused} <= {"conv", "flat", "fc"}
    # quantizing the float input and dequantizing the float output run on their own
    alone = {n.op_type for n in profile.nodes if n.role == "qdq"}
    assert alone == {"QuantizeLinear", "DequantizeLinear"}
    assert all(n.time_us and n.time_us > NODE_OVERHEAD_US for n in profile.nodes if n.role == "qdq")
    assert profile.full_int8 and profile.full_int8_offenders == []
    # weights: int8 conv (216 B) and fc (5120 B) weights, int32 bias (32 B), plus scales/zero points
    assert profile.weight_bytes_by_dtype["int8"] >= 216 + 5120
    assert profile.weight_bytes_by_dtype["int32"] >= 32
    assert "float32" not in profile.weight_bytes_by_dtype or \
        profile.weight_bytes_by_dtype["float32"] < 100  # only scales stay float

    # int8 nodes on a CPU with no int8 figure: the fp32 peak stands in, and it is said
    fp32_only = target.model_copy(update={"peak_ops_per_s": target.peak_ops_per_s.model_copy(
        update={"int8": None})})
    profile = static_profile(qdq_model, fp32_only)
    assert profile.node("conv").peak_ops_per_s == 1e9
    assert any("no int8 peak" in a and "fp32" in a for a in profile.assumptions)


def test_qdq_fused_nodes_follow_their_node_onto_the_accelerator(qdq_model):
    target = npu_target({"int8": ["Conv"]})
    profile = static_profile(qdq_model, target)
    conv = profile.node("conv")
    assert conv.device == "accelerator"
    for n in profile.nodes:
        if n.role == "fused_qdq" and n.fused_into == "conv":
            assert n.device == "accelerator"
    assert profile.node("fc").device == "cpu"
    assert profile.partitions == 1 and profile.handovers == 2
    assert profile.switch_latency_ms == pytest.approx(2 * 50 / 1000)


# ------------------------------------------------------------------ placement


def chain_with_unsupported_middle() -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
        helper.make_node("Erf", ["h2"], ["h3"], name="erf"),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"], name="mm2"),
        helper.make_node("Relu", ["h4"], ["y"], name="relu2"),
    ]
    return make_model(nodes, [tensor("x", F, [1, 16])], [tensor("y", F, [1, 16])],
                      [weight("w1", (16, 16)), weight("w2", (16, 16), seed=1)])


def test_one_unsupported_op_splits_the_graph_in_two_partitions():
    model = chain_with_unsupported_middle()
    target = npu_target({"fp32": ["MatMul", "Relu"]}, dtypes=("fp32",))
    placement = place_nodes(to_graph(model), target)
    assert placement.devices == ("accelerator", "accelerator", "cpu", "accelerator", "accelerator")
    assert placement.partitions == ((0, 1), (3, 4))
    # each partition: one hand-over in from the CPU, one back out
    assert placement.num_partitions == 2 and placement.handovers == 4
    assert list(placement.cpu_fallback) == ["erf"]

    profile = static_profile(model, target)
    assert (profile.partitions, profile.handovers) == (2, 4)
    assert (profile.accelerator_node_count, profile.cpu_node_count) == (4, 1)
    assert profile.switch_latency_ms == pytest.approx(4 * 50 / 1000)
    # mm1 on the accelerator at its fp32 peak 1e9: 256 MACs -> 0.512 µs compute,
    # memory (64 + 1024 + 64) B / 2e9 = 0.576 µs
    mm1 = profile.node("mm1")
    assert mm1.device == "accelerator" and mm1.bound == "memory"
    assert mm1.time_us == pytest.approx(0.576 + NODE_OVERHEAD_US)
    assert profile.latency_ms == pytest.approx(profile.nodes_latency_ms + 0.2)
    assert set(profile.latency_by_device_ms) == {"cpu", "accelerator"}


def test_unsupported_dtype_falls_back_and_whole_model_is_one_partition():
    model = chain_with_unsupported_middle()
    everything = npu_target({"fp32": ["MatMul", "Relu", "Erf"]}, dtypes=("fp32",))
    assert place_nodes(to_graph(model), everything).partitions == ((0, 1, 2, 3, 4),)
    int8_only = npu_target({"int8": ["MatMul", "Relu", "Erf"]})
    placement = place_nodes(to_graph(model), int8_only)
    assert placement.partitions == () and placement.handovers == 0
    assert set(placement.cpu_fallback) == {"mm1", "relu1", "erf", "mm2", "relu2"}


def test_full_int8_check_fails_on_a_float_model():
    model = chain_with_unsupported_middle()
    target = npu_target({"int8": ["MatMul", "Relu"]}, requires_full_int8=True)
    profile = static_profile(model, target)
    assert profile.full_int8_required
    assert not profile.full_int8
    assert profile.full_int8_offenders == ["mm1", "relu1", "erf", "mm2", "relu2"]
    assert any("requires a fully int8 model" in w for w in profile.warnings)
    assert profile.partitions == 0  # float ops are not in the int8 list: all on the CPU


def test_shape_arithmetic_is_not_a_float_offender():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Identity", ["s"], ["s1"], name="same"),
        helper.make_node("Reshape", ["x", "s1"], ["y"], name="reshape"),
    ]
    model = make_model(nodes, [tensor("x", TensorProto.UINT8, [2, 3])],
                       [tensor("y", TensorProto.UINT8, [2, 3])])
    plan = to_graph(model)
    assert [n.dtype for n in plan.nodes] == ["int8", "int64", "int8"]
    assert plan.full_int8_offenders() == []


def test_cpu_fitted_factors_are_never_applied_to_accelerator_nodes():
    """CLASS_FACTOR and DEFAULT_EFFICIENCY were measured on CPUs: an NPU's depthwise Conv runs at the NPU's own
    stated efficiency (or the peak, said in the assumptions), while the same Conv on the CPU gets the CPU factor."""
    from edgeopt.analysis.profile import CLASS_FACTOR

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=8, pads=[1, 1, 1, 1])]
    model = make_model(nodes, [tensor("x", F, [1, 8, 8, 8])], [tensor("y", F, [1, 8, 8, 8])], [weight("w", (8, 1, 3, 3))])
    on_npu = static_profile(model, npu_target({"fp32": ["Conv"]}, dtypes=("fp32",)))
    assert on_npu.node("dw").device == "accelerator" and on_npu.node("dw").efficiency == 1.0
    assert any("no efficiency factor" in a for a in on_npu.assumptions)
    on_cpu = static_profile(model, npu_target({"int8": ["Conv"]}))  # fp32 Conv falls back to the CPU
    assert on_cpu.node("dw").device == "cpu"
    assert on_cpu.node("dw").efficiency == CLASS_FACTOR[("conv.depthwise", "fp32")]
