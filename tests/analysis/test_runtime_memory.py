"""The runtime memory estimate (analysis.runtime_memory), part by part, on graphs small enough to add up by hand."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.memory import liveness_plan
from edgeopt.analysis.profile import static_profile
from edgeopt.analysis.runtime_memory import default_runtime_memory, estimate_runtime_memory
from edgeopt.graph.build import build_graph
from edgeopt.targets import RuntimeMemory, TargetProfile, load_target

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, weights) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=weights)
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built.ir_version = 8
    return built


def weight(name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


RUNTIME = RuntimeMemory(interpreter_baseline_bytes=1000, session_fixed_bytes=500, session_per_node_bytes=10,
                        first_run_bytes=7, weight_copies={"conv": 3.0, "matmul": 2.0},
                        load_weight_copies={"default": 1.0}, arena_factor=1.5)


def estimate(onnx_model, runtime=RUNTIME):
    graph = build_graph(onnx_model)
    return estimate_runtime_memory(graph, liveness_plan(graph), runtime)


def parts(result) -> dict[str, int]:
    return {part.key: part.bytes for part in result.parts}


def test_session_part_alone_for_a_model_without_weights():
    # Relu of x (1, 4): x is the caller's; y (16 B) takes the arena's smallest chunk, 256 B, and the memory
    # pattern's block (64 B) the same place: 256 B resident, 384 B with the factor
    relu = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])], [])
    result = estimate(relu)
    assert parts(result) == {"baseline": 1000, "session": 500, "weights": 0, "first_run": 7, "arena": 384,
                             "loading": 0}
    assert result.run_peak_increase_bytes == 500 + 7 + 384
    assert result.peak_increase_bytes == 891 and result.total_bytes == 1891


def test_each_node_beyond_the_first_adds_to_the_session_and_constant_nodes_do_not():
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones(4, np.float32))),
             helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Add", ["b", "k"], ["y"])]
    three = model(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])], [])
    assert parts(estimate(three))["session"] == 500 + 2 * 10


def test_weights_are_counted_with_the_copies_of_the_kind_that_reads_them():
    # Conv weight 4x3x3x3 = 432 B (3 copies), MatMul weight 8x8 = 256 B (2 copies), Gather table 10x8 = 320 B
    # (unlisted kind: 1 copy), bias 16 B (3 copies, read by the Conv); the Add's constant (4x4x1, 64 B: not one
    # value per channel, so not folded into the Conv) is read by an Add (1 copy)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "b4"], ["c2"]),
             helper.make_node("Gather", ["table", "i"], ["g"]),
             helper.make_node("MatMul", ["g", "m"], ["y"])]
    conv_and_add = model(nodes, [vi("x", [1, 3, 4, 4]), vi("i", [2], TensorProto.INT64)],
                         [vi("c2", [1, 4, 4, 4]), vi("y", [2, 8])],
                         [weight("w", (4, 3, 3, 3)), weight("b", (4,)), weight("b4", (4, 4, 1)),
                          weight("table", (10, 8)), weight("m", (8, 8))])
    result = estimate(conv_and_add)
    assert parts(result)["weights"] == 432 * 3 + 16 * 3 + 64 * 1 + 320 + 256 * 2


def test_a_weight_read_by_two_kinds_takes_the_larger_factor():
    nodes = [helper.make_node("MatMul", ["x", "m"], ["a"]), helper.make_node("Add", ["a", "m"], ["y"])]
    shared = model(nodes, [vi("x", [8, 8])], [vi("y", [8, 8])], [weight("m", (8, 8))])
    assert parts(estimate(shared))["weights"] == 256 * 2


def matmul_256(runtime):
    big = model([helper.make_node("MatMul", ["x", "m"], ["y"])], [vi("x", [1, 256])], [vi("y", [1, 256])],
                [weight("m", (256, 256))])
    return estimate(big, runtime)


def test_loading_counts_only_where_it_holds_more_than_the_run_needs():
    # MatMul weight 256x256 = 262144 B kept once; y 1 KiB in the arena (x is the caller's): the run needs
    # 262144 + 7 + 1536 B.
    # Held twice while loading: 524288 B, so the load is the peak and the transient is the difference.
    runtime = RUNTIME.model_copy(update={"weight_copies": {}, "load_weight_copies": {"matmul": 2.0}})
    result = matmul_256(runtime)
    run_need = 262144 + 7 + int(1024 * 1.5)
    assert parts(result)["loading"] == 524288 - run_need
    assert result.load_peak_increase_bytes == 500 + 524288
    assert result.run_peak_increase_bytes == 500 + run_need
    assert result.peak_increase_bytes == result.load_peak_increase_bytes == sum(
        part.bytes for part in result.parts if part.key != "baseline")
    # held no more than kept: the run is the peak and loading adds nothing
    light = matmul_256(runtime.model_copy(update={"load_weight_copies": {"matmul": 1.0}}))
    assert parts(light)["loading"] == 0 and light.peak_increase_bytes == light.run_peak_increase_bytes


def test_loading_holds_the_packed_copy_of_the_largest_pre_packed_weight():
    # two MatMuls, weights 256x256 (262144 B) and 256x128 (131072 B), each held once while loading; the
    # runtime pre-packs them one at a time, so the largest one's packed copy is held on top: 262144 B more
    nodes = [helper.make_node("MatMul", ["x", "a"], ["h"]), helper.make_node("MatMul", ["h", "b"], ["y"])]
    two = model(nodes, [vi("x", [1, 256])], [vi("y", [1, 128])], [weight("a", (256, 256)), weight("b", (256, 128))])
    runtime = RUNTIME.model_copy(update={"weight_copies": {}, "load_weight_copies": {"matmul": 1.0}})
    plain = estimate(two, runtime)
    packed = estimate(two, runtime.model_copy(update={"packed_one_at_a_time": ("matmul",)}))
    assert plain.load_peak_increase_bytes == 500 + 10 + 262144 + 131072
    assert packed.load_peak_increase_bytes == plain.load_peak_increase_bytes + 262144


def test_a_weight_rewritten_at_load_is_held_once_more():
    # Conv 8x8x3x3 (2304 B) + bias 32 B, then a BatchNormalization onnxruntime folds into them (its four 32 B
    # vectors are read by the folded node, so by the Conv): the Conv's weights are written anew while loading
    w = weight("w", (8, 8, 3, 3))
    stats = [numpy_helper.from_array(np.full(8, v, np.float32), n) for n, v in
             (("scale", 1.0), ("shift", 0.0), ("mean", 0.0), ("var", 1.0))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"])]
    runtime = RUNTIME.model_copy(update={"weight_copies": {}, "load_weight_copies": {"conv": 2.0},
                                         "arena_factor": 0.0, "first_run_bytes": 0})
    conv_bn = model(nodes, [vi("x", [1, 8, 4, 4])], [vi("y", [1, 8, 4, 4])], [w, weight("b", (8,))] + stats)
    rewritten = (2304 + 32) * 3  # held twice as any conv weight, and once more as rewritten
    stats_held = 4 * 32 * 2  # the statistics are read by the folded node: held as conv weights, not rewritten
    assert estimate(conv_bn, runtime).load_peak_increase_bytes == 500 + 10 + rewritten + stats_held
    plain = model(nodes[:1], [vi("x", [1, 8, 4, 4])], [vi("c", [1, 8, 4, 4])], [w, weight("b", (8,))])
    assert estimate(plain, runtime).load_peak_increase_bytes == 500 + (2304 + 32) * 2


def test_the_arena_is_the_simulated_arena_times_the_factor():
    # Sigmoid then Add of (1, 256): 3 KiB planned at the Add (x, s, y); x is the caller's, so the arena writes
    # s and y (1 KiB each) side by side in its first region, and the pattern's 2 KiB block over them: 2 KiB
    # resident, 3 KiB with the factor
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Add", ["s", "x"], ["y"])]
    chain = model(nodes, [vi("x", [1, 256])], [vi("y", [1, 256])], [])
    result = estimate(chain)
    assert parts(result)["arena"] == int(2048 * 1.5)
    (arena,) = [part for part in result.parts if part.key == "arena"]
    assert "first run 0.0 MiB" in arena.label and "planned peak 0.0 MiB" in arena.label


def test_what_constant_folding_computes_is_held_while_loading():
    # a 4 KiB weight sliced in two halves (2 KiB each) and concatenated back swapped (4 KiB) before an Add:
    # onnxruntime folds the three at load, 8 KiB computed, held at folded_copies per byte
    from edgeopt.analysis.runtime_memory import folded_at_load_bytes

    def ints(name, value):
        return numpy_helper.from_array(np.array([value], np.int64), name)
    nodes = [helper.make_node("Slice", ["w", "zero", "half"], ["a"]),
             helper.make_node("Slice", ["w", "half", "full"], ["b"]),
             helper.make_node("Concat", ["b", "a"], ["r"], axis=0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    swapped = model(nodes, [vi("x", [1024])], [vi("y", [1024])],
                    [weight("w", (1024,)), ints("zero", 0), ints("half", 512), ints("full", 1024)])
    graph = build_graph(swapped)
    assert folded_at_load_bytes(graph) == 2048 + 2048 + 4096
    runtime = RUNTIME.model_copy(update={"weight_copies": {}, "load_weight_copies": {"default": 1.0},
                                         "first_run_bytes": 0, "arena_factor": 0.0})
    plain = estimate_runtime_memory(graph, liveness_plan(graph), runtime.model_copy(update={"folded_copies": 0.0}))
    folded = estimate_runtime_memory(graph, liveness_plan(graph), runtime.model_copy(update={"folded_copies": 1.5}))
    assert folded.load_peak_increase_bytes - plain.load_peak_increase_bytes == int(8192 * 1.5)
    assert "folded from constants" in str(folded.parts)


def test_a_plain_number_of_load_copies_is_every_kinds():
    assert RuntimeMemory(session_fixed_bytes=1, arena_factor=1.0, load_weight_copies=1.7).load_weight_copies == {
        "default": 1.7}


def target(**fields) -> TargetProfile:
    return TargetProfile.model_validate({"name": "t", "display_name": "T", "kind": "cpu", "arch": "aarch64",
                                         **fields})


def test_defaults_follow_the_architecture_and_a_measured_section_wins():
    arm, x86 = default_runtime_memory(target()), default_runtime_memory(target(arch="x86_64"))
    # no NCHWc layout in aarch64 builds: loading holds no re-laid-out convolution weights
    assert arm.load_weight_copies["conv"] < x86.load_weight_copies["conv"]
    measured = target(runtime_memory=RUNTIME.model_dump())
    assert default_runtime_memory(measured) == RUNTIME
    assert default_runtime_memory(target(kind="mcu")) is None
    assert default_runtime_memory(target(runtime="tflite")) is None


def test_the_profile_carries_the_estimate_and_the_gate_figure():
    relu = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])], [])
    profile = static_profile(relu, target(runtime_memory=RUNTIME.model_dump(), ram_bytes=1 << 30))
    assert profile.runtime_memory.peak_increase_bytes == 891
    (ram,) = profile.fits
    assert ram.required_bytes == 1891 and "interpreter" in ram.contents
    assert static_profile(relu, load_target("rpi4b")).runtime_memory.source.startswith("edgeopt's defaults")


def qdq_conv(channels: int) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ(int8 weight, per-channel scale and zero point)) -> Q/DQ -> y: the int8 weight is read
    by an int8 Conv (the kernel its DequantizeLinear is fused into)."""
    w = numpy_helper.from_array(np.ones((channels, channels, 1, 1), np.int8), "w")
    inits = [w, numpy_helper.from_array(np.full(channels, 0.1, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(channels, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.1, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["w_dq"], axis=0),
             helper.make_node("Conv", ["x_dq", "w_dq"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "x_scale", "x_zp"], ["c_q"]),
             helper.make_node("DequantizeLinear", ["c_q", "x_scale", "x_zp"], ["y"])]
    return model(nodes, [vi("x", [1, channels, 2, 2])], [vi("y", [1, channels, 2, 2])], inits)


def test_an_int8_weight_takes_its_kinds_int8_factor_where_measured():
    # 64x64 int8 weight (4096 B), its per-channel scale (256 B) and zero point (64 B), the activations' scalar
    # scale and zero point (4 B + 1 B), all read by the int8 Conv the Q/DQ nodes are fused into: 3 copies where
    # "conv.int8" is measured, the fp32 convolution's 5 where it is not
    runtime = RUNTIME.model_copy(update={"weight_copies": {"conv": 5.0, "conv.int8": 3.0}})
    assert parts(estimate(qdq_conv(64), runtime))["weights"] == (4096 + 256 + 64 + 5) * 3
    fp32_only = runtime.model_copy(update={"weight_copies": {"conv": 5.0}})
    assert parts(estimate(qdq_conv(64), fp32_only))["weights"] == (4096 + 256 + 64 + 5) * 5


def test_a_model_running_int8_kernels_holds_their_cost_in_the_session_and_the_first_run():
    # the same QDQ Conv: its session and first run take the int8 kernels' figures beside the one-op session's; a
    # float model of the same Conv does not
    runtime = RUNTIME.model_copy(update={"int8_kernels_bytes": 400, "int8_first_run_bytes": 30})
    unmeasured, measured = parts(estimate(qdq_conv(64), RUNTIME)), parts(estimate(qdq_conv(64), runtime))
    assert measured["session"] == unmeasured["session"] + 400
    assert measured["first_run"] == unmeasured["first_run"] + 30 == 37
    conv = model([helper.make_node("Conv", ["x", "w"], ["y"])], [vi("x", [1, 64, 4, 4])], [vi("y", [1, 64, 4, 4])],
                 [weight("w", (64, 64, 1, 1))])
    assert parts(estimate(conv, runtime))["first_run"] == 7


def test_each_initializer_adds_to_the_session():
    # the QDQ Conv: 6 nodes (10 B each after the first), 5 initializers (100 B each)
    runtime = RUNTIME.model_copy(update={"session_per_initializer_bytes": 100})
    assert parts(estimate(qdq_conv(4), runtime))["session"] == 500 + 10 * 5 + 100 * 5
    assert parts(estimate(qdq_conv(4)))["session"] == 500 + 10 * 5


def test_a_weight_glibc_maps_alone_is_held_only_as_often_as_at_once():
    # MatMul weights of 32 MiB (2048x4096 fp32) and 4 MiB (1024x1024): the default allocator's 3 copies
    # for the small one, the 2 held at once for the one glibc maps and unmaps alone
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h"]), helper.make_node("MatMul", ["h", "small"], ["y"])]
    two = model(nodes, [vi("x", [1, 2048])], [vi("y", [1, 1024])],
                [weight("big", (2048, 4096)), weight("small", (4096, 1024))])
    runtime = RUNTIME.model_copy(update={"weight_copies": {}, "load_weight_copies": {"matmul": 3.0},
                                         "load_weight_copies_held": {"matmul": 2.0}})
    big, small = 32 << 20, 16 << 20
    assert estimate(two, runtime).load_peak_increase_bytes == 500 + 10 + big * 2 + small * 3
    # no held copies measured (a calibration before runner 8): every weight as the default allocator keeps it
    legacy = runtime.model_copy(update={"load_weight_copies_held": None})
    assert estimate(two, legacy).load_peak_increase_bytes == 500 + 10 + (big + small) * 3
