"""Small graphs with the structures int8 struggles with in real models, built in numpy + onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, initializers, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def transformer_model(d: int = 64, heads: int = 4, outlier: float = 40.0, seed: int = 0) -> onnx.ModelProto:
    """One encoder block with a BERT-style additive mask ((1 - mask) * -10000 on the scores) and, like
    real LayerNorm outputs, a few feature dimensions `outlier` times larger than the rest: the
    projections that read them lose the small dimensions under one activation scale.

    Inputs: x [N, T, d] float, mask [N, T] float (1 keep, 0 pad). Outputs: hidden [N, T, d] and a
    mean-pooled, L2-normalised sentence embedding [N, d]."""
    rng = np.random.default_rng(seed)
    head = d // heads

    def w(name, *shape, scale=None):
        scale = scale if scale is not None else 1 / np.sqrt(shape[0])
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def c(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    gamma = np.ones(d, np.float32)
    gamma[[3, 17]] = outlier
    inits = [w("wq", d, d), w("wk", d, d), w("wv", d, d), w("wo", d, d), w("w1", d, 4 * d), w("w2", 4 * d, d),
             numpy_helper.from_array(gamma, "ln0_g"), c("ln0_b", np.zeros(d)), c("ln1_g", np.ones(d)),
             c("ln1_b", np.zeros(d)), c("ln2_g", np.ones(d)), c("ln2_b", np.zeros(d)),
             c("one", 1.0), c("neg", -10000.0), c("scale", 1 / np.sqrt(head)), c("half", 0.5),
             c("rsqrt2", 1 / np.sqrt(2)), c("eps", 1e-12),
             numpy_helper.from_array(np.array([0, 0, heads, head], np.int64), "split_shape"),
             numpy_helper.from_array(np.array([0, 0, d], np.int64), "merge_shape"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "mask_axes"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln0_g", "ln0_b"], ["h0"], name="ln0", axis=-1),
        helper.make_node("MatMul", ["h0", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["h0", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["h0", "wv"], ["v"], name="v_proj"),
        helper.make_node("Reshape", ["q", "split_shape"], ["q4"], name="q_split"),
        helper.make_node("Reshape", ["k", "split_shape"], ["k4"], name="k_split"),
        helper.make_node("Reshape", ["v", "split_shape"], ["v4"], name="v_split"),
        helper.make_node("Transpose", ["q4"], ["qh"], name="q_heads", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k4"], ["kh"], name="k_heads", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v4"], ["vh"], name="v_heads", perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kh"], ["s0"], name="scores"),
        helper.make_node("Mul", ["s0", "scale"], ["s1"], name="scores_scale"),
        helper.make_node("Sub", ["one", "mask"], ["pad"], name="mask_invert"),
        helper.make_node("Mul", ["pad", "neg"], ["bias"], name="mask_bias"),
        helper.make_node("Unsqueeze", ["bias", "mask_axes"], ["bias4"], name="mask_unsqueeze"),
        helper.make_node("Add", ["s1", "bias4"], ["s2"], name="mask_add"),
        helper.make_node("Softmax", ["s2"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "vh"], ["ctx4"], name="context"),
        helper.make_node("Transpose", ["ctx4"], ["ctx_t"], name="merge_heads", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx"], name="merge"),
        helper.make_node("MatMul", ["ctx", "wo"], ["attn"], name="o_proj"),
        helper.make_node("Add", ["attn", "x"], ["r1"], name="residual1"),
        helper.make_node("LayerNormalization", ["r1", "ln1_g", "ln1_b"], ["h1"], name="ln1", axis=-1),
        helper.make_node("MatMul", ["h1", "w1"], ["f0"], name="ffn_up"),
        helper.make_node("Mul", ["f0", "rsqrt2"], ["f1"], name="gelu_scale"),
        helper.make_node("Erf", ["f1"], ["f2"], name="gelu_erf"),
        helper.make_node("Add", ["f2", "one"], ["f3"], name="gelu_add"),
        helper.make_node("Mul", ["f0", "f3"], ["f4"], name="gelu_mul"),
        helper.make_node("Mul", ["f4", "half"], ["f5"], name="gelu_half"),
        helper.make_node("MatMul", ["f5", "w2"], ["f6"], name="ffn_down"),
        helper.make_node("Add", ["f6", "h1"], ["r2"], name="residual2"),
        helper.make_node("LayerNormalization", ["r2", "ln2_g", "ln2_b"], ["hidden"], name="ln2", axis=-1),
        # masked mean pooling, then L2 normalisation: the sentence embedding
        helper.make_node("Unsqueeze", ["mask", "axis1"], ["mask3"], name="pool_mask"),
        helper.make_node("Transpose", ["mask3"], ["mask_col"], name="pool_mask_t", perm=[0, 2, 1]),
        helper.make_node("Mul", ["hidden", "mask_col"], ["kept"], name="pool_keep"),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["summed"], name="pool_sum", keepdims=0),
        helper.make_node("ReduceSum", ["mask_col", "axis1"], ["count"], name="pool_count", keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["pooled"], name="pool_mean"),
        helper.make_node("ReduceL2", ["pooled"], ["norm"], name="l2", axes=[1], keepdims=1),
        helper.make_node("Max", ["norm", "eps"], ["norm_safe"], name="l2_safe"),
        helper.make_node("Div", ["pooled", "norm_safe"], ["sentence_embedding"], name="normalize"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t", d]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", "t"])]
    outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["n", "t", d]),
               helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["n", d])]
    return _model(nodes, inputs, outputs, inits)


def transformer_feeds(count: int, t: int = 16, d: int = 64, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """One sample per feed, with clustered inputs (so nearest neighbours mean something) and padding."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, count // 4), t, d)).astype(np.float32)
    feeds = []
    for i in range(count):
        x = centres[i % len(centres)] + 0.35 * rng.standard_normal((t, d)).astype(np.float32)
        mask = np.ones(t, np.float32)
        mask[t - int(rng.integers(0, t // 2)):] = 0
        feeds.append({"x": x[None].astype(np.float32), "mask": mask[None]})
    return feeds


def detector_head_model(anchors: int = 96, classes: int = 6, seed: int = 0) -> onnx.ModelProto:
    """A YOLO-style head: per-anchor boxes in pixels (cx, cy, w, h over 0..320) concatenated with
    sigmoid class scores into one [N, anchors, 4 + classes] output. Input x [N, anchors, 16]."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)

    inits = [w("w1", 16, 64), w("w2", 64, 64), w("wb", 64, 4), w("ws", 64, classes),
             numpy_helper.from_array(np.array(320.0, np.float32), "image_size"),
             numpy_helper.from_array(np.array(2.0, np.float32), "sharpen")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="stem"),
        helper.make_node("Relu", ["h0"], ["h1"], name="stem_relu"),
        helper.make_node("MatMul", ["h1", "w2"], ["h2"], name="neck"),
        helper.make_node("Relu", ["h2"], ["h3"], name="neck_relu"),
        helper.make_node("MatMul", ["h3", "wb"], ["b0"], name="box_head"),
        helper.make_node("Sigmoid", ["b0"], ["b1"], name="box_sigmoid"),
        helper.make_node("Mul", ["b1", "image_size"], ["boxes"], name="box_scale"),
        helper.make_node("MatMul", ["h3", "ws"], ["s0"], name="cls_head"),
        helper.make_node("Mul", ["s0", "sharpen"], ["s1"], name="cls_sharpen"),
        helper.make_node("Sigmoid", ["s1"], ["scores"], name="cls_sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["detections"], name="concat", axis=2),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", anchors, 16])]
    outputs = [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["n", anchors, 4 + classes])]
    return _model(nodes, inputs, outputs, inits, opset=13)


def detector_feeds(count: int, anchors: int = 96, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, anchors, 16)).astype(np.float32)} for _ in range(count)]


def depthwise_cnn_model(seed: int = 0, spread: float = 30.0) -> onnx.ModelProto:
    """A MobileNet-style block whose stem output channels span a `spread`-fold range (as batch-norm
    folding leaves them): stem 3→16 → ReLU → depthwise 3x3 → ReLU → pointwise 16→32 → ReLU → pool → Gemm
    over 10 classes. Input x [N, 3, 24, 24]."""
    rng = np.random.default_rng(seed)
    channel_scale = np.geomspace(1 / np.sqrt(spread), np.sqrt(spread), 16)[rng.permutation(16)]
    stem = rng.standard_normal((16, 3, 3, 3)) * 0.3 * channel_scale[:, None, None, None]
    depthwise = rng.standard_normal((16, 1, 3, 3)) * 0.5 / channel_scale[:, None, None, None] ** 0.5
    pointwise = rng.standard_normal((32, 16, 1, 1)) * 0.3
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w_stem", stem), ("b_stem", 0.1 * channel_scale), ("w_dw", depthwise), ("b_dw", rng.standard_normal(16) * 0.05),
        ("w_pw", pointwise), ("b_pw", rng.standard_normal(32) * 0.05), ("w_fc", rng.standard_normal((10, 32)) * 0.3),
        ("b_fc", np.zeros(10))]]
    nodes = [
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="stem_relu"),
        helper.make_node("Conv", ["r1", "w_dw", "b_dw"], ["c2"], name="depthwise", pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["c2"], ["r2"], name="dw_relu"),
        helper.make_node("Conv", ["r2", "w_pw", "b_pw"], ["c3"], name="pointwise"),
        helper.make_node("Relu", ["c3"], ["r3"], name="pw_relu"),
        helper.make_node("GlobalAveragePool", ["r3"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], name="classifier", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 24, 24])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])]
    return _model(nodes, inputs, outputs, inits, opset=13)


def image_feeds(count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 24, 24)).astype(np.float32)} for _ in range(count)]


def log_spectrogram_model(bins: int = 24, window: int = 128, hop: int = 32, seed: int = 0) -> onnx.ModelProto:
    """basic-pitch's front end in small: a spectrogram by convolution (cosine and sine filters over raw
    audio), power = re² + im², log(power + 1e-10), then a learned 1x5 conv and a sigmoid note map.
    Input audio [N, 1, 1, samples]; output notes [N, 4, 1, frames]."""
    rng = np.random.default_rng(seed)
    t = np.arange(window)
    frequencies = np.geomspace(0.01, 0.45, bins)  # cycles per sample: 12 octaves-ish, like a CQT
    taper = np.hanning(window)
    real = (np.cos(2 * np.pi * frequencies[:, None] * t) * taper)[:, None, None, :]
    imag = (np.sin(2 * np.pi * frequencies[:, None] * t) * taper)[:, None, None, :]
    head = rng.standard_normal((4, bins, 1, 5)) * 0.15
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w_re", real), ("w_im", imag), ("eps", np.array(1e-10)), ("w_head", head),
        ("b_head", np.full(4, -1.0)), ("norm", np.array(0.05))]]
    nodes = [
        helper.make_node("Conv", ["audio", "w_re"], ["re"], name="cqt_re", strides=[1, hop]),
        helper.make_node("Conv", ["audio", "w_im"], ["im"], name="cqt_im", strides=[1, hop]),
        helper.make_node("Mul", ["re", "re"], ["re2"], name="re_squared"),
        helper.make_node("Mul", ["im", "im"], ["im2"], name="im_squared"),
        helper.make_node("Add", ["re2", "im2"], ["power"], name="power"),
        helper.make_node("Add", ["power", "eps"], ["power_eps"], name="floor"),
        helper.make_node("Log", ["power_eps"], ["log_power"], name="log"),
        helper.make_node("Mul", ["log_power", "norm"], ["features"], name="scale"),
        helper.make_node("Conv", ["features", "w_head", "b_head"], ["logits"], name="head", pads=[0, 2, 0, 2]),
        helper.make_node("Sigmoid", ["logits"], ["notes"], name="notes"),
    ]
    inputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["n", 1, 1, "samples"])]
    outputs = [helper.make_tensor_value_info("notes", TensorProto.FLOAT, ["n", 4, 1, "frames"])]
    return _model(nodes, inputs, outputs, inits, opset=13)


def audio_feeds(count: int, samples: int = 4096, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Tones over four decades of loudness in faint noise: a log spectrum's range, most of it far
    below one int8 step of the loudest tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    feeds = []
    for _ in range(count):
        tones = sum(10.0 ** -rng.uniform(0, 4) * np.sin(2 * np.pi * rng.uniform(0.01, 0.45) * t + rng.uniform(0, 6))
                    for _ in range(6))
        audio = tones + 1e-5 * rng.standard_normal(samples)
        feeds.append({"audio": audio.reshape(1, 1, 1, samples).astype(np.float32)})
    return feeds


def crnn_model(classes: int = 12, hidden: int = 32, seed: int = 0) -> onnx.ModelProto:
    """A CRNN text recognizer in small: conv features over an image strip x [N, 1, 8, T], averaged over
    the height, then a bidirectional LSTM over the T columns and per-step class logits [T, N, classes]
    (what a CTC decoder reads)."""
    rng = np.random.default_rng(seed)

    def weight(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [weight("w_conv", (16, 1, 3, 3), 0.5), weight("b_conv", (16,), 0.1),
             weight("W", (2, 4 * hidden, 16), 0.3), weight("R", (2, 4 * hidden, hidden), 0.2),
             weight("B", (2, 8 * hidden), 0.1), weight("w_out", (2 * hidden, classes), 0.4),
             numpy_helper.from_array(np.array([0, 0, 2 * hidden], np.int64), "steps_shape")]
    nodes = [
        helper.make_node("Conv", ["x", "w_conv", "b_conv"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["pooled"], name="pool_height", axes=[2], keepdims=0),  # [N, 16, T]
        helper.make_node("Transpose", ["pooled"], ["seq"], name="to_sequence", perm=[2, 0, 1]),
        helper.make_node("LSTM", ["seq", "W", "R", "B"], ["y"], name="lstm", hidden_size=hidden,
                         direction="bidirectional"),
        # y: [T, 2, N, H] → [T, N, 2H]
        helper.make_node("Transpose", ["y"], ["y_t"], name="directions_last", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["y_t", "steps_shape"], ["steps"], name="join_directions"),
        helper.make_node("MatMul", ["steps", "w_out"], ["logits"], name="classifier"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, "t"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["a", "b", classes])]
    return _model(nodes, inputs, outputs, inits, opset=14)


def strip_feeds(count: int, width: int = 24, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 1, 8, width)).astype(np.float32)} for _ in range(count)]


def hardswish_cnn_model(seed: int = 0, opset: int = 14) -> onnx.ModelProto:
    """A MobileNetV3 / PP-LCNet block: stem 3→16 → HardSwish → depthwise 3x3 → HardSwish → squeeze-excite
    (pool → 1x1 16→8 → ReLU → 1x1 8→16 → HardSigmoid → Mul) → pointwise 16→32 → HardSwish → pool → Gemm
    over 10 classes. Below opset 14, each HardSwish is written as HardSigmoid(1/6, 1/2) → Mul, as Paddle's
    exports end up after simplify. Input x [N, 3, 24, 24]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w_stem", rng.standard_normal((16, 3, 3, 3)) * 0.5), ("b_stem", rng.standard_normal(16) * 0.5),
        ("w_dw", rng.standard_normal((16, 1, 3, 3)) * 0.5), ("b_dw", rng.standard_normal(16) * 0.3),
        ("w_se1", rng.standard_normal((8, 16, 1, 1)) * 0.4), ("b_se1", np.zeros(8)),
        ("w_se2", rng.standard_normal((16, 8, 1, 1)) * 0.4), ("b_se2", np.zeros(16)),
        ("w_pw", rng.standard_normal((32, 16, 1, 1)) * 0.3), ("b_pw", rng.standard_normal(32) * 0.3),
        ("w_fc", rng.standard_normal((10, 32)) * 0.3), ("b_fc", np.zeros(10))]]

    def hardswish(source: str, name: str) -> list[onnx.NodeProto]:
        if opset >= 14:
            return [helper.make_node("HardSwish", [source], [name], name=name)]
        return [helper.make_node("HardSigmoid", [source], [f"{name}_gate"], name=f"{name}_gate",
                                 alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", [source, f"{name}_gate"], [name], name=name)]

    nodes = [
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        *hardswish("c1", "hs1"),
        helper.make_node("Conv", ["hs1", "w_dw", "b_dw"], ["c2"], name="depthwise", pads=[1, 1, 1, 1], group=16),
        *hardswish("c2", "hs2"),
        helper.make_node("GlobalAveragePool", ["hs2"], ["squeezed"], name="se_pool"),
        helper.make_node("Conv", ["squeezed", "w_se1", "b_se1"], ["se1"], name="se_reduce"),
        helper.make_node("Relu", ["se1"], ["se1r"], name="se_relu"),
        helper.make_node("Conv", ["se1r", "w_se2", "b_se2"], ["se2"], name="se_expand"),
        helper.make_node("HardSigmoid", ["se2"], ["se_gate"], name="se_gate", alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["hs2", "se_gate"], ["excited"], name="se_scale"),
        helper.make_node("Conv", ["excited", "w_pw", "b_pw"], ["c3"], name="pointwise"),
        *hardswish("c3", "hs3"),
        helper.make_node("GlobalAveragePool", ["hs3"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], name="classifier", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 24, 24])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])]
    return _model(nodes, inputs, outputs, inits, opset=opset)
