"""Per-op-class efficiencies and kernel bandwidths measured on the device itself, and the error band they leave
on held-out models.

`targets calibrate` times, beside the peak microbenchmarks:
- the bandwidth kernels read weights at: a one-row MatMul over a weight far beyond the caches (DRAM), and over
  one small weight again and again (cache), at one thread and at the asked count; onnxruntime's NCHWc reorders and
  a chain of element-wise Muls over maps of several sizes (what a copy, and an op that writes what it reads, move
  per second by working set);
- one reference model per op class the cost model prices apart: a stack of depthwise Convs, of 1x1 Convs, a Conv
  with 8 outputs, one with a single output, an RGB stem (``conv.nchw``), a 2x upsampling ConvTranspose, an LSTM;
  depthwise and 1x1 in int8 QDQ too,
  and a one-row int8 MatMul (``matmul.row@int8``, also written as ``fully_connected.row@int8``); shallower int8 3x3
  Convs (32, 16 and 3 input channels) and a 1x1 Conv (16), which fix how int8 convolutions slow with depth
  (analysis.conv_depth);
  dynamic quantization's ConvInteger and MatMulInteger with u8 and with s8 weights (``conv.integer_u8@int8``, ...).
  Each class's efficiency is its throughput over the peak of its dtype, both measured at the same thread count; an
  int8 class's is then solved through the estimate (``class_refit.refit_through_estimates``), which prices the
  Quantize and DequantizeLinear around the Conv apart. Written into the target's ``efficiency`` table (``conv.depthwise``,
  ``conv.depthwise@int8``, ...) in place of edgeopt's x86-measured defaults;
- the cost of one run of onnxruntime's broadcasting loop (``broadcast_span``: Muls of a ``[1,C,H,1]`` map by one
  value, which it walks one element at a time; analysis.broadcast);
- one chain per op kind without MACs that costs more than its bytes (runtime.element_bench: Add, Mul, Div,
  Sigmoid, HardSigmoid, HardSwish, Clip, LeakyRelu, Tanh, Erf, Exp, Log, Gelu, Softmax, LayerNormalization,
  QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, Resize by the loop it runs): output elements per second,
  written into ``efficiency`` as a fraction of the fp32 peak under the kind's name (``gelu``), then solved through
  the estimate net of what it adds beside the elements, the nodes' dispatch first (``class_refit.
  solve_element_kinds``); the estimate also prices an activation fused into a Conv at its kind's rate (each element
  is still computed);
- three mixed models that set nothing (a MobileNet-style block stack, a Conv + LSTM recognizer, an MLP), priced
  with the fitted profile: their largest relative error becomes the target's ``estimate_error.latency`` when the
  calibration ran on a device (``--ssh``).
Everything here is built in memory; nothing is read from the model zoo or the network.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeopt.analysis.conv_working_set import WORKING_SET_CHANNELS, WORKING_SET_MODELS
from edgeopt.runtime.element_bench import element_models
from edgeopt.runtime.microbench import model_bytes, op_stack, qdq_model

CLASS_PREFIX = "class:"
DISPATCH_ITEM = "dispatch:conv_add_chain"
CHECK_PREFIX = "check:"
BANDWIDTH_PREFIX = "bandwidth:"
REORDER_PREFIX = "reorder:"
STREAM_PREFIX = "stream:"


def _weights(shape: tuple[int, ...], seed: int, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _lstm(seq: int, inputs: int, hidden: int) -> bytes:
    w = numpy_helper.from_array(_weights((1, 4 * hidden, inputs), 1), "W")
    r = numpy_helper.from_array(_weights((1, 4 * hidden, hidden), 2), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden)
    return model_bytes([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, 1, inputs])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, 1, 1, hidden])], [w, r])


def _dynamic_int8(op: str, weight_dtype: Any, weight_shape: tuple[int, ...], x_shape: list[int],
                  y_shape: list[int], **attrs: Any) -> bytes:
    """One ConvInteger or MatMulInteger as onnxruntime's dynamic quantization writes it: the activation quantized
    at run time (DynamicQuantizeLinear), the integer op over stored ``weight_dtype`` weights, its int32 result
    cast to float and scaled."""
    rng = np.random.default_rng(11)
    low, high, zero = (0, 256, 128) if weight_dtype == np.uint8 else (-127, 128, 0)
    inits = [numpy_helper.from_array(rng.integers(low, high, weight_shape).astype(weight_dtype), "w"),
             numpy_helper.from_array(np.array(zero, weight_dtype), "w_zp"),
             numpy_helper.from_array(np.array(0.01, np.float32), "w_scale")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zp"]),
             helper.make_node(op, ["x_q", "w", "x_zp", "w_zp"], ["acc"], **attrs),
             helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x_scale", "w_scale"], ["scale"]),
             helper.make_node("Mul", ["acc_f", "scale"], ["y"])]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)


def _ops(data: bytes) -> int:
    """2 x the MACs edgeopt's own count gives the model: a fitted efficiency then prices exactly what it counts."""
    import onnx

    from edgeopt.graph.build import build_graph

    return 2 * sum(node.macs or 0 for node in build_graph(onnx.load_from_string(data)).nodes)


def _matmul_layers(rows: int, width: int, hidden: int, layers: int) -> bytes:
    """``layers`` feed-forward blocks of MatMuls (``width`` -> ``hidden`` -> ``width``) over ``rows`` rows, each
    MatMul with a weight of its own, as a transformer's layers read theirs."""
    nodes, inits, previous = [], [], "x"
    for layer in range(layers):
        for step, shape in (("up", (width, hidden)), ("down", (hidden, width))):
            name = f"{step}{layer}"
            inits.append(numpy_helper.from_array(_weights(shape, 40 + 2 * layer + (step == "down"), 0.05), name))
            nodes.append(helper.make_node("MatMul", [previous, name], [f"{name}_y"]))
            previous = f"{name}_y"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, width])],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [rows, width])], inits)


# The multiply-adds of the int8 Conv class models below, by efficiency key: a node's share of its class's gain from
# more threads is measured against the class model's own (analysis.profile._parallel_share). Kept beside the
# models (a test checks them against class_models()). The int8 MatMul's half work is solved from its row class
# itself (runtime.microbench.int8_matmul_half_work), so it stays out.
INT8_CONV_CLASS_MACS = {"conv@int8": 64 * 64 * 9 * 56 * 56, "conv.depthwise@int8": 128 * 9 * 56 * 56,
                        "conv.1x1@int8": 128 * 128 * 28 * 28, "conv.32ch@int8": 64 * 32 * 9 * 56 * 56,
                        "conv.16ch@int8": 64 * 16 * 9 * 56 * 56, "conv.shallow@int8": 32 * 3 * 9 * 64 * 64,
                        "conv.1x1.shallow@int8": 64 * 16 * 56 * 56}
# The one-row int8 MatMul class model's multiply-adds (matmul.row@int8): beyond it a one-row int8 MatMul gains no
# more from threads than the class did (analysis.profile._parallel_share).
INT8_ROW_CLASS_MACS = 1024 * 1024


def class_models() -> dict[str, tuple[bytes, int]]:
    """Efficiency key -> (model bytes, ops per run: 2 x MACs), one model per class the cost model prices apart."""
    return dict(_built_class_models())


@functools.cache
def _built_class_models() -> dict[str, tuple[bytes, int]]:
    # built once per process: a calibration reads them for the bundle and again to solve its figures
    dw_weights, pw_weights = _weights((128, 1, 3, 3), 7), _weights((128, 128, 1, 1), 8)
    models = {
        # float MatMuls as a model's layers run them: 64 rows, each weight of its own (4 MiB in all), a 1024-deep
        # product among them (AMD EPYC, one thread: 0.89-0.91 of the 512-cube GEMM's rate, 0.93 with one shared
        # pair of weights; a transformer encoder's MatMuls measured 0.78-0.94 of it in the model)
        "matmul": _matmul_layers(64, 256, 1024, 2),
        "conv.depthwise": op_stack("Conv", 4, (128, 1, 3, 3), [1, 128, 56, 56], group=128, pads=[1] * 4),
        # the same kernel on maps beyond L2 and beyond a shared L3's share: 12 and 25 MiB read and written per Conv
        # (analysis.conv_working_set); eight in a chain, so the reorders at its ends are a small part of its time
        **{key: op_stack("Conv", 8, (WORKING_SET_CHANNELS, 1, 3, 3), [1, WORKING_SET_CHANNELS, side, side],
                         group=WORKING_SET_CHANNELS, pads=[1] * 4) for key, side in WORKING_SET_MODELS},
        "conv.1x1": op_stack("Conv", 4, (128, 128, 1, 1), [1, 128, 28, 28]),
        "conv.thin": op_stack("Conv", 1, (8, 64, 3, 3), [1, 64, 56, 56], [1, 8, 56, 56], pads=[1] * 4),  # 8 outputs
        "conv.narrow": op_stack("Conv", 1, (1, 64, 3, 3), [1, 64, 112, 112], [1, 1, 112, 112], pads=[1] * 4),
        # float convolutions off the NCHWc path (30 input channels: not a multiple of 4, which onnxruntime 1.32's
        # reorders need; analysis.conv_depth): 56x56 positions per image, and a batch of 1-D maps of 8
        "conv.gemm": op_stack("Conv", 1, (72, 30, 3, 3), [1, 30, 56, 56], [1, 72, 56, 56], pads=[1] * 4),
        "conv.gemm.short": op_stack("Conv", 1, (72, 30, 3), [32, 30, 8], [32, 72, 8], pads=[1, 1]),
        "conv.depthwise.gemm": op_stack("Conv", 4, (70, 1, 3, 3), [1, 70, 56, 56], group=70, pads=[1] * 4),
        # an RGB stem: a blocked Conv that reads the plain NCHW input (fewer channels than a block; x86 only)
        "conv.nchw": op_stack("Conv", 1, (32, 3, 3, 3), [1, 3, 224, 224], [1, 32, 112, 112], pads=[1] * 4,
                              strides=[2, 2]),
        # a 1x1 Conv reading a plain input (a thin projection's output expanded): the same kernel at one tap per
        # input channel runs at under half the stem's rate (6 -> 32 channels; plain below either block)
        "conv.nchw.1x1": op_stack("Conv", 1, (32, 6, 1, 1), [1, 6, 96, 96], [1, 32, 96, 96]),
        # a decoder's 2x upsampling ConvTranspose (k2 s2, 64 -> 64 on 56x56): its GEMM's rate, solved through the
        # estimate, which prices the input's packing and the column buffer's col2im apart
        # (analysis.profile._apply_transposed_traffic)
        "conv_transpose": op_stack("ConvTranspose", 1, (64, 64, 2, 2), [1, 64, 56, 56], [1, 64, 112, 112],
                                   strides=[2, 2]),
        "lstm": _lstm(32, 256, 256),
        # the same cell over one step (a streaming model's call): a fixed cost per call beside the steps
        # (analysis.conv_depth's curve over steps)
        "lstm.step": _lstm(1, 256, 256),
        # a dense int8 Conv (the int8 peak's Conv): the peak's time holds its QuantizeLinear and DequantizeLinear,
        # which the estimate prices apart, so its Conv gets an efficiency of its own, solved through the estimate
        # (priced with the fp32 Conv's, an int8 ResNet's 3x3 Convs came out 12-16% slow)
        "conv@int8": qdq_model("Conv", _weights((64, 64, 3, 3), 14), [1, 64, 56, 56], [1, 64, 56, 56],
                               pads=[1, 1, 1, 1]),
        "conv.depthwise@int8": qdq_model("Conv", dw_weights, [1, 128, 56, 56], [1, 128, 56, 56], group=128,
                                         pads=[1, 1, 1, 1]),
        "conv.1x1@int8": qdq_model("Conv", pw_weights, [1, 128, 28, 28], [1, 128, 28, 28]),
        # a batch-1 fully connected layer in int8: a GEMV whose kernel pays per output column beyond its weights
        "matmul.row@int8": qdq_model("MatMul", _weights((1024, 1024), 9), [1, 1024], [1, 1024]),
        # shallower int8 convolutions (analysis.conv_depth), after their families' references, deepest first (each
        # solved on the curve through the one above): the reference at 32 and 16 input channels, an RGB stem, and
        # a 1x1 Conv of 16 input channels
        "conv.32ch@int8": qdq_model("Conv", _weights((64, 32, 3, 3), 15), [1, 32, 56, 56], [1, 64, 56, 56],
                                    pads=[1, 1, 1, 1]),
        "conv.16ch@int8": qdq_model("Conv", _weights((64, 16, 3, 3), 16), [1, 16, 56, 56], [1, 64, 56, 56],
                                    pads=[1, 1, 1, 1]),
        "conv.shallow@int8": qdq_model("Conv", _weights((32, 3, 3, 3), 12), [1, 3, 64, 64], [1, 32, 64, 64],
                                       pads=[1, 1, 1, 1]),
        "conv.1x1.shallow@int8": qdq_model("Conv", _weights((64, 16, 1, 1), 13), [1, 16, 56, 56], [1, 64, 56, 56]),
        # dynamic quantization's integer kernels, whose speed turns on the weights' type (`quantize_dynamic`
        # writes s8 by default, older exports u8)
        **{f"conv.integer_{tag}@int8": _dynamic_int8("ConvInteger", dtype, (64, 64, 3, 3), [1, 64, 28, 28],
                                                     [1, 64, 28, 28], pads=[1] * 4)
           for tag, dtype in (("u8", np.uint8), ("s8", np.int8))},
        **{f"matmul.integer_{tag}@int8": _dynamic_int8("MatMulInteger", dtype, (512, 2048), [16, 512], [16, 2048])
           for tag, dtype in (("u8", np.uint8), ("s8", np.int8))},
    }
    fitted = {key: (data, _ops(data)) for key, data in models.items()}
    return {**fitted, **element_models()}


# keys that mean something only solved: a depthwise model on large maps that runs at least as fast as the reference
# class prices it has no slowdown to state (its direct fit holds its reorders, and would state one)
SOLVED_ONLY = tuple(key for key, _side in WORKING_SET_MODELS)
# keys solved through the estimate (class_refit.refit_through_estimates) beside the int8 classes
THROUGH_ESTIMATE = ("broadcast_span", "conv.nchw", "conv.nchw.1x1", "conv_transpose", "lstm", *SOLVED_ONLY)
# a class model whose time solves another key than its own: the LSTM's recurrent part, beside its input projection
# priced at the MatMul's efficiency (analysis.profile._apply_recurrent_split); "lstm" keeps the direct fit
SOLVED_AS = {"lstm": "lstm.recurrent"}


def _mobile_blocks() -> bytes:
    """Stem 3x3 Conv + Relu, then three inverted residual blocks (1x1 expand, Clip, depthwise, Clip, 1x1, Add)."""
    nodes, inits = [], []

    def weight(name: str, shape: tuple[int, ...], seed: int) -> str:
        inits.append(numpy_helper.from_array(_weights(shape, seed), name))
        return name

    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes += [helper.make_node("Conv", ["x", weight("stem", (32, 3, 3, 3), 0)], ["s"], pads=[1] * 4, strides=[2, 2]),
              helper.make_node("Relu", ["s"], ["b0"])]
    previous = "b0"
    for block in range(3):
        p = f"k{block}"
        nodes += [
            helper.make_node("Conv", [previous, weight(f"{p}e", (96, 32, 1, 1), 10 + block)], [f"{p}a"]),
            helper.make_node("Clip", [f"{p}a", "zero", "six"], [f"{p}b"]),
            helper.make_node("Conv", [f"{p}b", weight(f"{p}d", (96, 1, 3, 3), 20 + block)], [f"{p}c"], group=96,
                             pads=[1] * 4),
            helper.make_node("Clip", [f"{p}c", "zero", "six"], [f"{p}f"]),
            helper.make_node("Conv", [f"{p}f", weight(f"{p}p", (32, 96, 1, 1), 30 + block)], [f"{p}g"]),
            helper.make_node("Add", [previous, f"{p}g"], [f"b{block + 1}"]),
        ]
        previous = f"b{block + 1}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 32, 56, 56])], inits)


def _recognizer() -> bytes:
    """A Conv over a text line, reshaped to a sequence, an LSTM and a classifier MatMul (the shape of CRNN OCR)."""
    inits = [numpy_helper.from_array(_weights((32, 1, 3, 3), 40), "cw"),
             numpy_helper.from_array(np.array([64, 1, 32 * 8], np.int64), "seq_shape"),
             numpy_helper.from_array(_weights((1, 512, 256), 41), "W"),
             numpy_helper.from_array(_weights((1, 512, 128), 42), "R"),
             numpy_helper.from_array(np.array([64, 128], np.int64), "flat"),
             numpy_helper.from_array(_weights((128, 400), 43), "cls")]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[3, 0, 1, 2]),
             helper.make_node("Reshape", ["t", "seq_shape"], ["s"]),
             helper.make_node("LSTM", ["s", "W", "R"], ["h"], hidden_size=128),
             helper.make_node("Reshape", ["h", "flat"], ["f"]),
             helper.make_node("MatMul", ["f", "cls"], ["y"])]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 400])], inits)


def _mlp() -> bytes:
    inits, nodes, previous = [], [], "x"
    for index, (rows, cols) in enumerate(((512, 1024), (1024, 1024), (1024, 10))):
        inits.append(numpy_helper.from_array(_weights((rows, cols), 50 + index), f"w{index}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{index}"], [f"m{index}"]))
        previous = f"m{index}"
        if index < 2:
            nodes.append(helper.make_node("Relu", [previous], [f"r{index}"]))
            previous = f"r{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 512])],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [16, 10])], inits)


def _row_matmuls(size: int, columns: int, count: int, shared: bool) -> bytes:
    """``count`` MatMuls of one row by a ``size`` x ``columns`` weight (the same weight each time when ``shared``):
    a pure weight stream, as batch-1 fully connected layers read. The weights are ConstantOfShape outputs that
    onnxruntime folds into initializers at load, so the model is a few hundred bytes on the wire (values do not
    change a float MatMul's speed)."""
    inits = [numpy_helper.from_array(np.array([size, columns], np.int64), "shape")]
    nodes, previous = [], "x"
    for index in range(count):
        name = "w" if shared else f"w{index}"
        if not shared or index == 0:
            value = numpy_helper.from_array(np.array([0.01 * (index + 1)], np.float32))
            nodes.append(helper.make_node("ConstantOfShape", ["shape"], [name], value=value))
        nodes.append(helper.make_node("MatMul", [previous, name], [f"y{index}"]))
        previous = f"y{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, columns])], inits)


DRAM_WEIGHT = 4096  # a 4096 x 4096 fp32 weight: 64 MiB, beyond an edge CPU's caches
CACHE_WEIGHT = 384  # 384 x 384 fp32: 576 KiB, read CACHE_STREAM_NODES times per run
CACHE_STREAM_NODES = 48  # MatMuls in the cache-bandwidth model (their dispatch overhead is taken out)
CACHE_STREAM_BYTES = CACHE_WEIGHT * CACHE_WEIGHT * 4 * CACHE_STREAM_NODES


# Weights read once per run between the two: how much of a model's weights the next run still finds in cache
# (per-core L2, a shared L3, or a VM's share of one) is measured at these sizes rather than read from cache sizes.
# The drop from cache to DRAM speed is steep around a shared L3's size, so one point sits at 32 MiB: on a 32 MiB-L3
# AMD EPYC VM (one thread) weights read at 60 GB/s at 16 MiB, 47 at 20.5, 28 at 32 and 25 at 64, where the curve
# through 16 and 64 alone priced 20.5 MiB at 57.
WORKING_SET_WEIGHTS = (1024, 2048, 2900)  # 4, 16 and 32 MiB of fp32


def bandwidth_models() -> dict[str, tuple[bytes, int]]:
    """Key -> (model, weight bytes read per run): a 64 MiB weight (beyond an edge CPU's caches: DRAM), a 576 KiB
    weight read 48 times (it stays in cache), and weights of the ``WORKING_SET_WEIGHTS`` sizes read once."""
    models = {"dram": (_row_matmuls(DRAM_WEIGHT, DRAM_WEIGHT, 1, False), DRAM_WEIGHT * DRAM_WEIGHT * 4),
              "cache": (_row_matmuls(CACHE_WEIGHT, CACHE_WEIGHT, CACHE_STREAM_NODES, True), CACHE_STREAM_BYTES)}
    for size in WORKING_SET_WEIGHTS:
        models[f"weights_{size * size * 4 >> 20}mib"] = (_row_matmuls(size, size, 1, False), size * size * 4)
    return models


# onnxruntime's NCHWc reorders timed over maps of these sizes (64 channels): where a copy stops running at cache
# speed is measured, as for weights; the kernels exist on x86 builds only (elsewhere the items fail and are skipped).
# The small maps are what small models reorder around each Conv, and they do not scale as the large ones do: on an
# AMD EPYC a 64 KiB map's copy ran at 165 GB/s at one thread (59 at 2 MiB) and gained nothing at two, where a 2 MiB
# one gained 1.7x (a [1, 208, 2, 96] map's reorder: 3.5 µs at one thread, 6.0 at two); priced from the 1 MiB map,
# PP-OCR's direction classifier came out +6.8% at one thread, +3.9% with these points
REORDER_MAP_KIB = (64, 256, 1024, 2048, 4096, 8192, 16384)
REORDER_PAIRS = 3  # ReorderInput -> ReorderOutput pairs in a chain
REORDER_CHANNELS = 64
NCHWC_DOMAIN = "com.microsoft.nchwc"


def reorder_models() -> dict[str, tuple[bytes, int]]:
    """Key -> (model, bytes its reorders read and write per run): a chain of REORDER_PAIRS ReorderInput /
    ReorderOutput pairs over a [1, 64, 64, W] map of each REORDER_MAP_KIB size."""
    models = {}
    for kib in REORDER_MAP_KIB:
        elements = kib << 10 >> 2
        width = elements // REORDER_CHANNELS // 64
        shape = [1, REORDER_CHANNELS, 64, width]
        nodes, previous = [], "x"
        for index in range(REORDER_PAIRS):
            nodes += [helper.make_node("ReorderInput", [previous], [f"b{index}"], domain=NCHWC_DOMAIN),
                      helper.make_node("ReorderOutput", [f"b{index}"], [f"p{index}"], domain=NCHWC_DOMAIN,
                                       channels=REORDER_CHANNELS)]
            previous = f"p{index}"
        # one element out: a map-sized output would add the caller's copy of it
        nodes.append(helper.make_node("Slice", [previous, "start", "end"], ["y"]))
        inits = [numpy_helper.from_array(np.zeros(4, np.int64), "start"),
                 numpy_helper.from_array(np.ones(4, np.int64), "end")]
        data = model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], inits,
                           (NCHWC_DOMAIN,))
        models[f"map_{kib}kib"] = (data, 4 * REORDER_PAIRS * 4 * int(np.prod(shape)))
    return models


# element-wise ops timed over maps of these sizes: where an op that writes what it reads stops running at cache
# speed (the weight curve measures reads alone, and priced a detector's big Adds and Muls 20-40% fast)
STREAM_MAP_MIB = (1, 4, 8, 16, 32)
STREAM_CHAIN = 4  # Muls by a scalar in a chain


def stream_models() -> dict[str, tuple[bytes, int]]:
    """Key -> (model, bytes its Muls read and write per run): STREAM_CHAIN Muls by a scalar in a chain over a
    [1, 64, 64, W] map of each STREAM_MAP_MIB size, one element out (a map-sized output would add the caller's
    copy of it)."""
    models = {}
    for mib in STREAM_MAP_MIB:
        shape = [1, 64, 64, (mib << 20 >> 2) // (64 * 64)]
        nodes, previous = [], "x"
        for index in range(STREAM_CHAIN):
            nodes.append(helper.make_node("Mul", [previous, "scale"], [f"y{index}"]))
            previous = f"y{index}"
        nodes.append(helper.make_node("Slice", [previous, "start", "end"], ["y"]))
        inits = [numpy_helper.from_array(np.array(0.999, np.float32), "scale"),
                 numpy_helper.from_array(np.zeros(4, np.int64), "start"),
                 numpy_helper.from_array(np.ones(4, np.int64), "end")]
        data = model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], inits)
        models[f"map_{mib}mib"] = (data, 2 * STREAM_CHAIN * 4 * int(np.prod(shape)))
    return models


def check_models() -> dict[str, bytes]:
    """Held-out mixed models: priced with the fitted profile and timed, never used to fit anything."""
    return {"mobile blocks": _mobile_blocks(), "conv + lstm recognizer": _recognizer(), "mlp": _mlp()}


DISPATCH_NODES = 256


def dispatch_model() -> bytes:
    """``DISPATCH_NODES`` nodes that do almost no work: 1x1 Convs over a 16-channel 1x1 map, each followed by a
    residual Add, as a network's kernels follow one another (the runner's rate for it, one op per node, is nodes
    per second). Measured on an AVX-512 host: 0.6 µs per node, where a chain of Adds alone costs 0.24 and a small
    CNN's nodes about 1.5 with their work."""
    rng = np.random.default_rng(0)
    nodes, inits, previous = [], [], "x"
    for index in range(DISPATCH_NODES // 2):
        inits.append(numpy_helper.from_array(rng.standard_normal((16, 16, 1, 1)).astype(np.float32) * 0.1, f"w{index}"))
        nodes += [helper.make_node("Conv", [previous, f"w{index}"], [f"c{index}"]),
                  helper.make_node("Add", [f"c{index}", previous], [f"a{index}"])]
        previous = f"a{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 1, 1])],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 16, 1, 1])], inits)


def dispatch_overhead_us(rates: dict[str, float]) -> float | None:
    """The measured cost of one node's dispatch, in µs (None where it was not measured)."""
    rate = rates.get(DISPATCH_ITEM)
    return round(1e6 / rate, 3) if rate else None


def bundle_items(budget_s: float, checks: bool = True) -> list[dict[str, Any]]:
    """The class (and, with ``checks``, the held-out) models as the device runner's microbenchmark items, each
    timed for ``budget_s``: the class models at the asked thread count and at one (a class's efficiency need not
    scale like the peaks: depthwise Convs gain little from a second thread), the held-out ones at the asked count."""
    import base64

    def item(name: str, data: bytes, ops: int, one_thread: bool) -> dict[str, Any]:
        return {"name": name, "model_b64": base64.b64encode(data).decode("ascii"), "ops": ops,
                "one_thread": one_thread, "budget_s": budget_s}

    items = [item(CLASS_PREFIX + key, data, ops, True) for key, (data, ops) in class_models().items()]
    items += [item(BANDWIDTH_PREFIX + key, data, nbytes, True) for key, (data, nbytes) in bandwidth_models().items()]
    items += [{**item(REORDER_PREFIX + key, data, nbytes, True), "optional": True}
              for key, (data, nbytes) in reorder_models().items()]
    items += [item(STREAM_PREFIX + key, data, nbytes, True) for key, (data, nbytes) in stream_models().items()]
    items.append(item(DISPATCH_ITEM, dispatch_model(), DISPATCH_NODES, True))
    if checks:
        items += [item(CHECK_PREFIX + key, data, 1, False) for key, data in check_models().items()]
    return items


def fitted_efficiency(rates: dict[str, float], fp32_peak: float, int8_peak: float | None) -> dict[str, float]:
    """Efficiency per class key from the runner's ops/s of the class models ("class:conv.depthwise": ...)."""
    fitted: dict[str, float] = {}
    for name, rate in rates.items():
        if not name.startswith(CLASS_PREFIX):
            continue
        key = name[len(CLASS_PREFIX):]
        peak = int8_peak if key.endswith("@int8") else fp32_peak
        if peak:
            fitted[key] = float(f"{min(1.5, rate / peak):.4g}")  # element rates are small fractions of the peak
    for key in [k for k in fitted if k == "matmul" or k.startswith("matmul.")]:  # a Gemm runs the same kernel
        fitted.setdefault("fully_connected" + key[len("matmul"):], fitted[key])
    return fitted


def kernel_bandwidth(rates: dict[str, float], one_thread: dict[str, float], overhead_us: float) -> Any:
    """targets.KernelBandwidth from the bandwidth models' bytes/s (None without the DRAM figure); the cache
    model's dispatch overhead (``overhead_us`` per MatMul, as the estimate adds it apart) is taken out."""
    from edgeopt.targets import BandwidthPoint, KernelBandwidth

    def less_dispatch(rate: float | None, nbytes: int, nodes: int = 1) -> float | None:
        """A model's rate with its ``nodes`` MatMuls' dispatch overhead taken out."""
        if not rate:
            return None
        seconds = nbytes / rate - nodes * overhead_us * 1e-6
        return nbytes / seconds if seconds > 0 else rate

    def cache(rate: float | None) -> float | None:
        return less_dispatch(rate, CACHE_STREAM_BYTES, CACHE_STREAM_NODES)

    dram = rates.get(BANDWIDTH_PREFIX + "dram")
    if not dram:
        return None
    bandwidth = KernelBandwidth(dram=dram, dram_one_thread=one_thread.get(BANDWIDTH_PREFIX + "dram"),
                                cache=cache(rates.get(BANDWIDTH_PREFIX + "cache")),
                                cache_one_thread=cache(one_thread.get(BANDWIDTH_PREFIX + "cache")))
    points = [(CACHE_WEIGHT * CACHE_WEIGHT * 4, bandwidth.cache, bandwidth.cache_one_thread)]
    for size in WORKING_SET_WEIGHTS:
        key, nbytes = BANDWIDTH_PREFIX + f"weights_{size * size * 4 >> 20}mib", size * size * 4
        points.append((nbytes, less_dispatch(rates.get(key), nbytes), less_dispatch(one_thread.get(key), nbytes)))
    points.append((DRAM_WEIGHT * DRAM_WEIGHT * 4, bandwidth.dram, bandwidth.dram_one_thread))
    def curve(models: dict[str, tuple[bytes, int]], prefix: str, ops: int, nodes: int) -> list[BandwidthPoint]:
        """One point per timed model of a chain of ``ops`` copying ops (``nodes`` dispatched in all), by the bytes
        one op reads and writes, as the estimate counts them; fewer than two points: no curve."""
        found = []
        for key, (_data, nbytes) in models.items():
            rate, one = rates.get(prefix + key), one_thread.get(prefix + key)
            if rate:
                found.append(BandwidthPoint(bytes=nbytes // ops, rate=less_dispatch(rate, nbytes, nodes),
                                            rate_one_thread=less_dispatch(one, nbytes, nodes)))
        return found if len(found) > 1 else []

    # a reorder's bytes: twice its map's; an element-wise Mul's: what it reads and writes
    bandwidth = bandwidth.model_copy(update={
        "reorders": curve(reorder_models(), REORDER_PREFIX, 2 * REORDER_PAIRS, 2 * REORDER_PAIRS + 1),
        "streams": curve(stream_models(), STREAM_PREFIX, STREAM_CHAIN, STREAM_CHAIN + 1)})
    if any(rate is None for _, rate, _ in points):  # a device that could not time them: the cache sizes decide
        return bandwidth
    return bandwidth.model_copy(update={"working_sets": [
        BandwidthPoint(bytes=nbytes, rate=rate, rate_one_thread=one) for nbytes, rate, one in points]})


def check_errors(rates: dict[str, float], profile: Any, threads: int, call_overhead_s: float = 0.0
                 ) -> dict[str, float]:
    """Estimate / measurement - 1 of each held-out model timed on the device, priced with ``profile``
    (``call_overhead_s``: the fixed cost of a call the runner set apart from the rates, added back)."""
    import onnx

    from edgeopt.analysis.profile import static_profile

    errors: dict[str, float] = {}
    for key, data in check_models().items():
        rate = rates.get(CHECK_PREFIX + key)
        if not rate:
            continue
        measured_ms = 1000.0 / rate + call_overhead_s * 1000  # ops = 1 per run: the rate is runs per second
        estimate = static_profile(onnx.load_from_string(data), profile, threads=threads)
        if estimate.latency_ms is not None:
            errors[key] = round(estimate.latency_ms / measured_ms - 1, 4)
    return errors
