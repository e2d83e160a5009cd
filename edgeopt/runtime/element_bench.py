"""The element kinds' reference models that calibration times (runtime.class_bench puts them in its bundle):
per op kind without MACs that costs more than its bytes, a chain or fan-out of four over a map that stays in L2,
each priced per output element (analysis.profile._element_time_s), and the broadcasting loop's span model.
Everything here is built in memory."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeopt.runtime.microbench import model_bytes, op_stack

# Ops without MACs that still cost more than their bytes (a transcendental, a reduction, a requantization per
# element): four in a chain over a map that stays in L2, each priced per output element.
ELEMENT_SHAPE = [1, 32, 56, 56]
ELEMENT_CHAIN = 4
# onnxruntime gives a HardSigmoid or HardSwish a second thread only from 112 K elements (analysis.profile.
# ELEMENT_SPLIT_COSTS), past ELEMENT_SHAPE's 100 K: their models are timed over a map that splits, so that their
# all-core rates hold the gain a larger one gets
SPLIT_ELEMENT_SHAPE = [1, 32, 64, 64]
# 128 K runs of one element per Mul: past the 88 K elements from which onnxruntime gives a float Mul a second thread
# (analysis.profile.ELEMENT_SPLIT_COSTS; a smaller map's all-core time would hold no gain)
SPAN_SHAPE = [1, 128, 1024, 1]
# onnxruntime's int8 Add and Mul (QLinearAdd, QLinearMul) hand a map to more threads only from about 200 K elements
# (AMD EPYC, two threads: 1.00x up to 131 K, 1.5-1.6x at 205 K, 1.9x at 401 K): their models are timed over a map
# that splits, and smaller ones gain by their share of it (analysis.profile._parallel_share)
INT8_ELEMENT_SHAPE = [1, 32, 112, 112]
# Pools are priced per window tap (output elements x the window's taps: analysis.profile._element_time_s). Measured
# (AMD EPYC, one thread, onnxruntime 1.32, a [1, 32, 56, 56] map): a float MaxPool or AveragePool 0.030 ns per tap at
# 3x3, 0.023 at 5x5, 0.022 at 9x9 and 13x13; the channels-last 8-bit MaxPool 0.017-0.026 ns (a detector's SPP block,
# 5x5 to 13x13 windows), where bytes had priced those three 1.3 µs each against 21-91 measured. An 8-bit MaxPool left
# in NCHW runs a generic loop, ~1 ns per tap (not modelled: onnxruntime moves one between int8 convolutions to NHWC).
POOL_WINDOW = 5
# the channels-last kernel runs along the channels: 0.039 ns per tap at 32 of them, 0.016-0.022 from 128 (a real
# model's pools): its model is [1, 56, 56, 128], as many elements as INT8_ELEMENT_SHAPE
INT8_POOL_SHAPE = [1, 56, 56, 128]
# An 8-bit Resize between int8 convolutions runs channels-last too (onnxruntime's layout transformer moves it into
# that region, scales [1, s, s, 1]), on a generic loop whatever its coordinates: measured (AMD EPYC, one thread)
# 0.86-0.89 ns per output element nearest, 1.9-2.1 linear, against 0.07 for the NCHW fast path the float kind's
# rate priced (a detector's two upsamplings: 0.35 ms measured, 0.04 priced). Its models double [1, 28, 28, 128]
# (INT8_ELEMENT_SHAPE's elements out).
INT8_RESIZE_SOURCE = [1, 28, 28, 128]
# A reduction runs a loop per output element (onnxruntime's reduce kernels): measured (AMD EPYC, one thread, 53 K
# outputs) 1.5-2.5 ns per output over a last axis of 1 to 16 elements, and over the middle axis of [1,2,172,309],
# where bytes priced basic-pitch's ReduceSum of a [1,172,309,2] map 6 µs against 110-186 measured; a long axis
# (256) runs at its bytes' rate. Its model sums pairs: [1, 32, 56, 28, 2], as many elements as ELEMENT_SHAPE.
REDUCE_SHAPE = [1, 32, 56, 28, 2]


def _unary_chain(op: str, count: int, domain: str = "", shape: list[int] = ELEMENT_SHAPE, **attrs: Any) -> bytes:
    nodes, previous = [], "x"
    for index in range(count):
        nodes.append(helper.make_node(op, [previous], [f"y{index}"], domain=domain, **attrs))
        previous = f"y{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, shape)], [],
                       (domain,) if domain else ())


def _clip_chain(count: int) -> bytes:
    """``count`` Clips (to 0..6, a ReLU6) in a chain."""
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "low"),
             numpy_helper.from_array(np.array(6.0, np.float32), "high")]
    nodes, previous = [], "x"
    for index in range(count):
        nodes.append(helper.make_node("Clip", [previous, "low", "high"], [f"y{index}"]))
        previous = f"y{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ELEMENT_SHAPE)], inits)


def _fan_out(op: str, count: int) -> bytes:
    """``count`` QuantizeLinear (or DequantizeLinear, after one QuantizeLinear) nodes side by side, each a graph
    output: a Q -> DQ -> Q chain would be folded by onnxruntime."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             helper.make_tensor("z", TensorProto.UINT8, [], [128])]
    source = "x"
    nodes = []
    if op == "DequantizeLinear":
        nodes.append(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]))
        source = "q"
    nodes += [helper.make_node(op, [source, "s", "z"], [f"y{index}"]) for index in range(count)]
    dtype = TensorProto.FLOAT if op == "DequantizeLinear" else TensorProto.UINT8
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(f"y{index}", dtype, ELEMENT_SHAPE) for index in range(count)],
                       inits)


def _dynamic_quantize_fan_out(count: int) -> bytes:
    """``count`` DynamicQuantizeLinear nodes side by side over one float map, each quantized map a graph output."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], [f"y{index}", f"s{index}", f"z{index}"])
             for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.UINT8, ELEMENT_SHAPE)
                        for index in range(count)], [])


def _unary_fan_out(op: str, count: int, positive: bool = False) -> bytes:
    """``count`` ``op`` nodes side by side over one map (of its absolute values where ``positive``: a Log of the
    standard-normal inputs would be NaN for half of them), each a graph output."""
    nodes = [helper.make_node("Abs", ["x"], ["source"])] if positive else []
    nodes += [helper.make_node(op, ["source" if positive else "x"], [f"y{index}"]) for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, ELEMENT_SHAPE)
                        for index in range(count)], [])


def _reduce_fan_out(count: int) -> bytes:
    """``count`` ReduceSums side by side over the short last axis of REDUCE_SHAPE, each a graph output."""
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], [f"y{index}"], keepdims=0) for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, REDUCE_SHAPE)],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, REDUCE_SHAPE[:-1])
                        for index in range(count)], [axes])


def _resize_fan_out(count: int, mode: str, coordinates: str) -> bytes:
    """``count`` Resizes side by side, each doubling the height and width of a [1, 32, 28, 28] map (to the
    element models' [1, 32, 56, 56]), each a graph output."""
    channels, side = ELEMENT_SHAPE[1], ELEMENT_SHAPE[2] // 2
    attributes = {"mode": mode, "coordinate_transformation_mode": coordinates}
    if mode == "nearest":
        attributes["nearest_mode"] = "floor"
    nodes = [helper.make_node("Resize", ["x", "", "scales"], [f"y{index}"], **attributes) for index in range(count)]
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, ELEMENT_SHAPE)
                        for index in range(count)], [scales])


def _int8_resize_fan_out(count: int, mode: str) -> bytes:
    """``count`` 8-bit Resizes side by side in NHWC, each doubling the height and width of INT8_RESIZE_SOURCE, each
    a graph output: what onnxruntime runs for an int8 Resize between channels-last int8 convolutions."""
    n, h, w, c = INT8_RESIZE_SOURCE
    coordinates = "asymmetric" if mode == "nearest" else "half_pixel"
    nodes = [helper.make_node("Resize", ["x", "", "scales"], [f"y{index}"], mode=mode, nearest_mode="floor",
                              coordinate_transformation_mode=coordinates) for index in range(count)]
    scales = numpy_helper.from_array(np.array([1, 2, 2, 1], np.float32), "scales")
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, INT8_RESIZE_SOURCE)],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.UINT8, [n, 2 * h, 2 * w, c])
                        for index in range(count)], [scales])


def _int8_concat_fan_out(count: int) -> bytes:
    """``count`` int8 Concats (QDQ, onnxruntime's QLinearConcat) side by side of two 8-bit INT8_ELEMENT_SHAPE maps,
    each quantized unlike the output, so that both go through its lookup table (graph.onnx_requantize)."""
    inits = [numpy_helper.from_array(np.array(scale, np.float32), name)
             for name, scale in (("s_a", 0.05), ("s_b", 0.07), ("s_y", 0.09))]
    inits.append(numpy_helper.from_array(np.array(128, np.uint8), "zero"))
    nodes = [helper.make_node("DequantizeLinear", ["a", "s_a", "zero"], ["a_dq"]),
             helper.make_node("DequantizeLinear", ["b", "s_b", "zero"], ["b_dq"])]
    for index in range(count):
        nodes += [helper.make_node("Concat", ["a_dq", "b_dq"], [f"c{index}"], axis=1),
                  helper.make_node("QuantizeLinear", [f"c{index}", "s_y", "zero"], [f"y{index}"])]
    n, c, h, w = INT8_ELEMENT_SHAPE
    return model_bytes(nodes, [helper.make_tensor_value_info(name, TensorProto.UINT8, INT8_ELEMENT_SHAPE)
                               for name in ("a", "b")],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.UINT8, [n, 2 * c, h, w])
                        for index in range(count)], inits)


def _strided_slice_fan_out(count: int, int8: bool) -> bytes:
    """``count`` Slices side by side taking every other row and column (``x[..., ::2, ::2]``, a Focus layer's) of a
    map twice the element models' height and width (float ELEMENT_SHAPE's, 8-bit INT8_ELEMENT_SHAPE's, out), each a
    graph output (graph.onnx_adapter.slice_class)."""
    n, c, h, w = INT8_ELEMENT_SHAPE if int8 else ELEMENT_SHAPE
    dtype = TensorProto.UINT8 if int8 else TensorProto.FLOAT
    inits = [numpy_helper.from_array(np.array(values, np.int64), name)
             for name, values in (("starts", [0, 0]), ("ends", [2 * h, 2 * w]), ("axes", [2, 3]), ("steps", [2, 2]))]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], [f"y{index}"])
             for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", dtype, [n, c, 2 * h, 2 * w])],
                       [helper.make_tensor_value_info(f"y{index}", dtype, [n, c, h, w]) for index in range(count)],
                       inits)


def _concat_fan_out(count: int, inputs: int, chunk: int) -> bytes:
    """``count`` float Concats side by side of ``inputs`` [1, rows, chunk] maps along the last axis (rows so that each
    output holds ELEMENT_SHAPE's elements), each a graph output: a copy per chunk (graph.onnx_adapter.concat_chunks)."""
    rows = int(np.prod(ELEMENT_SHAPE)) // (inputs * chunk)
    names = [f"x{index}" for index in range(inputs)]
    nodes = [helper.make_node("Concat", names, [f"y{index}"], axis=2) for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, rows, chunk])
                               for name in names],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, [1, rows, inputs * chunk])
                        for index in range(count)], [])


def _where_fan_out(count: int, broadcast: bool) -> bytes:
    """``count`` Wheres side by side, each choosing between the map and a scalar, each a graph output. Their
    condition holds runs, as masks do (the first 40 of every 56 true): onnxruntime branches per element, and a
    random condition measured 3.6 ns per element against 0.6-1.2 for one in runs (AMD EPYC, one thread). Where
    ``broadcast``, the condition is one such row that every [56, 56] plane repeats (a mask row over scores:
    1.0-1.6 ns per element, the broadcasting loop's per run)."""
    row = np.arange(ELEMENT_SHAPE[-1]) < 40
    shape = [1, 1, 1, ELEMENT_SHAPE[-1]] if broadcast else ELEMENT_SHAPE
    condition = numpy_helper.from_array(np.broadcast_to(row, shape).copy(), "condition")
    nodes = [helper.make_node("Where", ["condition", "x", "zero"], [f"y{index}"]) for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, ELEMENT_SHAPE)
                        for index in range(count)],
                       [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), condition])


def _qdq_binary_chain(op: str, count: int) -> bytes:
    """``count`` int8 ``op`` nodes (Add or Mul in QDQ form, which onnxruntime fuses to QLinearAdd / QLinearMul) in
    a chain over an 8-bit map, each with a whole 8-bit map as its second operand."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "zero")]
    nodes, previous = [], "x"
    for index in range(count):
        inits.append(numpy_helper.from_array(rng.integers(0, 256, INT8_ELEMENT_SHAPE, dtype=np.uint8), f"w{index}"))
        nodes += [helper.make_node("DequantizeLinear", [previous, "scale", "zero"], [f"a{index}"]),
                  helper.make_node("DequantizeLinear", [f"w{index}", "scale", "zero"], [f"b{index}"]),
                  helper.make_node(op, [f"a{index}", f"b{index}"], [f"y{index}"]),
                  helper.make_node("QuantizeLinear", [f"y{index}", "scale", "zero"], [f"q{index}"])]
        previous = f"q{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, INT8_ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(previous, TensorProto.UINT8, INT8_ELEMENT_SHAPE)], inits)


def _qdq_unary_chain(op: str, count: int) -> bytes:
    """``count`` int8 ``op`` nodes (Sigmoid or LeakyRelu in QDQ form, which onnxruntime fuses to QLinearSigmoid /
    QLinearLeakyRelu: a 256-entry lookup table per element) in a chain over an 8-bit INT8_ELEMENT_SHAPE map."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "zero")]
    nodes, previous = [], "x"
    for index in range(count):
        nodes += [helper.make_node("DequantizeLinear", [previous, "scale", "zero"], [f"a{index}"]),
                  helper.make_node(op, [f"a{index}"], [f"y{index}"]),
                  helper.make_node("QuantizeLinear", [f"y{index}", "scale", "zero"], [f"q{index}"])]
        previous = f"q{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, INT8_ELEMENT_SHAPE)],
                       [helper.make_tensor_value_info(previous, TensorProto.UINT8, INT8_ELEMENT_SHAPE)], inits)


def _transpose_fan_out(count: int, into_channels_last: bool) -> bytes:
    """``count`` Transposes side by side of one 8-bit map, into channels-last ([N, C, H, W] -> [N, H, W, C]) or out
    of it, each a graph output: the copies onnxruntime puts around its channels-last int8 convolutions
    (graph.onnx_layout.int8_channels_last_copies)."""
    n, c, h, w = ELEMENT_SHAPE
    source, target = ([n, c, h, w], [n, h, w, c]) if into_channels_last else ([n, h, w, c], [n, c, h, w])
    perm = [0, 2, 3, 1] if into_channels_last else [0, 3, 1, 2]
    nodes = [helper.make_node("Transpose", ["x"], [f"y{index}"], perm=perm) for index in range(count)]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, source)],
                       [helper.make_tensor_value_info(f"y{index}", TensorProto.UINT8, target)
                        for index in range(count)], [])


def _pool_chain(op: str, count: int, domain: str = "") -> bytes:
    """``count`` pools of a POOL_WINDOW x POOL_WINDOW window (stride 1, padded to keep the map) in a chain: a float
    map in NCHW, or for onnxruntime's channels-last int8 MaxPool (NhwcMaxPool, what its layout transformer makes of
    an 8-bit MaxPool between int8 convolutions) an 8-bit one in NHWC (INT8_POOL_SHAPE)."""
    int8 = domain == "com.microsoft"
    shape, dtype = (INT8_POOL_SHAPE, TensorProto.UINT8) if int8 else (ELEMENT_SHAPE, TensorProto.FLOAT)
    pad = POOL_WINDOW // 2
    nodes, previous = [], "x"
    for index in range(count):
        nodes.append(helper.make_node(op, [previous], [f"y{index}"], domain=domain,
                                      kernel_shape=[POOL_WINDOW, POOL_WINDOW], pads=[pad] * 4))
        previous = f"y{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", dtype, shape)],
                       [helper.make_tensor_value_info(previous, dtype, shape)], [], (domain,) if domain else ())


def element_models() -> dict[str, tuple[bytes, int]]:
    """Kind -> (model, output elements per run) for the element-priced kinds."""
    return dict(_built_element_models())


@functools.cache
def _built_element_models() -> dict[str, tuple[bytes, int]]:
    # built once per process: the calibration's bundle holds them, and its solve (class_refit) prices them again
    elements = ELEMENT_CHAIN * int(np.prod(ELEMENT_SHAPE))
    int8_elements = ELEMENT_CHAIN * int(np.prod(INT8_ELEMENT_SHAPE))
    split_elements = ELEMENT_CHAIN * int(np.prod(SPLIT_ELEMENT_SHAPE))
    resized = ELEMENT_CHAIN * 4 * int(np.prod(INT8_RESIZE_SOURCE))  # each output doubles height and width
    channels = ELEMENT_SHAPE[-1]
    return {
        "add": (op_stack("Add", ELEMENT_CHAIN, tuple(ELEMENT_SHAPE), ELEMENT_SHAPE), elements),
        "mul": (op_stack("Mul", ELEMENT_CHAIN, tuple(ELEMENT_SHAPE), ELEMENT_SHAPE), elements),
        # a division runs at the divider's rate, whatever the operand's shape: a scalar's (a HardSwish's "/ 6") as
        # a whole tensor's (AMD EPYC, one thread: 3.5-4.6 G elements/s for both, a Mul by a scalar 6-10)
        # (every divisor 1.25: no value of the standard-normal input falls to a denormal, which runs far slower)
        "div": (op_stack("Div", ELEMENT_CHAIN, tuple(ELEMENT_SHAPE), ELEMENT_SHAPE, weight_value=1.25), elements),
        "sigmoid": (_unary_chain("Sigmoid", ELEMENT_CHAIN), elements),
        "hard_sigmoid": (_unary_chain("HardSigmoid", ELEMENT_CHAIN, shape=SPLIT_ELEMENT_SHAPE), split_elements),
        "hard_swish": (_unary_chain("HardSwish", ELEMENT_CHAIN, shape=SPLIT_ELEMENT_SHAPE), split_elements),
        "tanh": (_unary_chain("Tanh", ELEMENT_CHAIN), elements),
        # fused into a float Conv, these two still run as a pass of their own over each output block (onnxruntime's
        # NCHWc kernel folds only ReLU into its loop): AMD EPYC, one thread, a ReLU6 0.10-0.13 ns per element fused
        # into a 1x1 or depthwise Conv, 0.12 alone; a LeakyReLU 0.14-0.15 fused, 0.17 alone; a ReLU ~0 fused
        "clip": (_clip_chain(ELEMENT_CHAIN), elements),
        "leaky_relu": (_unary_chain("LeakyRelu", ELEMENT_CHAIN), elements),
        # per output element, by the loop onnxruntime runs (graph.onnx_adapter.resize_class): its nearest-neighbour
        # fast path (a detector's 2x upsampling), its generic nearest loop, and linear interpolation (AMD EPYC, one
        # thread: 0.19, 0.6 and 1.4 ns per element, where bytes had priced PP-OCRv4's 8x upsamplings 12x fast)
        "resize": (_resize_fan_out(ELEMENT_CHAIN, "nearest", "asymmetric"), elements),
        "resize.nearest": (_resize_fan_out(ELEMENT_CHAIN, "nearest", "half_pixel"), elements),
        "resize.linear": (_resize_fan_out(ELEMENT_CHAIN, "linear", "half_pixel"), elements),
        # per output element, by whether the condition is broadcast (graph.onnx_adapter.where_class): a map and a
        # scalar as the values (a second full-size value adds to it, analysis.profile.WHERE_SECOND_VALUE)
        "where": (_where_fan_out(ELEMENT_CHAIN, broadcast=False), elements),
        "where.broadcast": (_where_fan_out(ELEMENT_CHAIN, broadcast=True), elements),
        # per output element, whatever the reduction (analysis.profile.REDUCTION_KINDS)
        "reduce": (_reduce_fan_out(ELEMENT_CHAIN), elements // 2),
        "erf": (_unary_chain("Erf", ELEMENT_CHAIN), elements),
        "exp": (_unary_fan_out("Exp", ELEMENT_CHAIN), elements),
        "log": (_unary_fan_out("Log", ELEMENT_CHAIN, positive=True), elements),
        # onnxruntime's Gelu (what it fuses Erf-based GELU into; ONNX's own Gelu runs alike)
        "gelu": (_unary_chain("Gelu", ELEMENT_CHAIN, domain="com.microsoft"), elements),
        "softmax": (_unary_chain("Softmax", ELEMENT_CHAIN, axis=-1), elements),
        "layer_normalization": (op_stack("LayerNormalization", ELEMENT_CHAIN, (channels,), ELEMENT_SHAPE, axis=-1),
                                elements),
        "quantize": (_fan_out("QuantizeLinear", ELEMENT_CHAIN), elements),
        # its one QuantizeLinear is counted as a fifth element-op: the rates of the two are alike
        "dequantize": (_fan_out("DequantizeLinear", ELEMENT_CHAIN), elements + elements // ELEMENT_CHAIN),
        # a min/max pass, then the quantization: dynamic quantization's activations
        "dynamic_quantize": (_dynamic_quantize_fan_out(ELEMENT_CHAIN), elements),
        # int8 Add and Mul (AMD EPYC, one thread: 0.14 and 0.21 ns per element, where the float kinds priced both
        # 0.16; an Add of a scalar 0.09, a Mul by one 0.19)
        "add.int8": (_qdq_binary_chain("Add", ELEMENT_CHAIN), int8_elements),
        "mul.int8": (_qdq_binary_chain("Mul", ELEMENT_CHAIN), int8_elements),
        # int8 activations through a lookup table (QLinearSigmoid: a YOLO SiLU's half in int8; QLinearLeakyRelu),
        # which the float kinds' rates priced, their two-thread gain too (1.74x priced, 1.22x measured in a detector)
        "sigmoid.int8": (_qdq_unary_chain("Sigmoid", ELEMENT_CHAIN), int8_elements),
        "leaky_relu.int8": (_qdq_unary_chain("LeakyRelu", ELEMENT_CHAIN), int8_elements),
        # the 8-bit Transposes around onnxruntime's channels-last int8 convolutions (AMD EPYC, one thread: 0.04 ns
        # per element into channels-last, 0.08 out of it; slower at two threads than at one)
        "transpose.nhwc": (_transpose_fan_out(ELEMENT_CHAIN, into_channels_last=True), elements),
        "transpose.nchw": (_transpose_fan_out(ELEMENT_CHAIN, into_channels_last=False), elements),
        # per window tap (POOL_WINDOW above): a detector's SPP and SPPF blocks, a stem's 3x3 MaxPool
        "max_pool": (_pool_chain("MaxPool", ELEMENT_CHAIN), elements * POOL_WINDOW ** 2),
        "average_pool": (_pool_chain("AveragePool", ELEMENT_CHAIN), elements * POOL_WINDOW ** 2),
        "max_pool.int8": (_pool_chain("NhwcMaxPool", ELEMENT_CHAIN, domain="com.microsoft"),
                          ELEMENT_CHAIN * int(np.prod(INT8_POOL_SHAPE)) * POOL_WINDOW ** 2),
        # a Slice stepping along the last axis, copied element by element (AMD EPYC, one thread: 0.9-1.0 ns per output
        # element in float, 2.1 in 8-bit, where bytes priced a Focus layer's four 10x fast)
        "slice.strided": (_strided_slice_fan_out(ELEMENT_CHAIN, int8=False), elements),
        "slice.strided.int8": (_strided_slice_fan_out(ELEMENT_CHAIN, int8=True), int8_elements),
        # a float Concat's chunks: of one element each (four inputs), of four (two inputs), per chunk
        "concat.elements": (_concat_fan_out(ELEMENT_CHAIN, 4, 1), elements),
        "concat.chunked": (_concat_fan_out(ELEMENT_CHAIN, 2, 4), elements // 4),
        # the elements an int8 Concat requantizes through its lookup table (AMD EPYC, one thread: 0.25-0.27 ns each)
        "concat.int8": (_int8_concat_fan_out(ELEMENT_CHAIN), 2 * int8_elements),
        # an int8 Resize, channels-last: nearest (whatever its coordinates) and linear
        "resize.int8": (_int8_resize_fan_out(ELEMENT_CHAIN, "nearest"), resized),
        "resize.linear.int8": (_int8_resize_fan_out(ELEMENT_CHAIN, "linear"), resized),
        # Muls of a [1,C,H,1] map by one value, which onnxruntime's broadcasting loop walks one element at a
        # time (analysis.broadcast): per run of the loop, solved through the estimate beside the Mul's own rate
        "broadcast_span": (op_stack("Mul", ELEMENT_CHAIN, (1,), SPAN_SHAPE), ELEMENT_CHAIN * int(np.prod(SPAN_SHAPE))),
    }
