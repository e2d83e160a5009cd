"""Small models with the inputs real published models have: symbolic spatial dims that must agree
(FPN), no batch axis, streaming state with an integer sample rate, -1 dims, a transformer with
symbolic batch and sequence. Built here, never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _weight(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def fpn_detector(path: Path, dims: tuple[object, object, object] = ("batch", "height", "width"), ch: int = 32) -> Path:
    """images[batch, 3, height, width] -> stride-2 conv -> 2x upsample, Concat with a stride-1 conv
    -> 1x1 conv head. At 1x1 (or any odd size) the two branches differ and Concat refuses them."""
    rng = np.random.default_rng(0)
    batch, height, width = dims
    nodes = [
        helper.make_node("Conv", ["images", "w_down", "b_down"], ["down"], strides=[2, 2], pads=[1, 1, 1, 1],
                         name="conv_down"),
        helper.make_node("Relu", ["down"], ["down_relu"], name="relu_down"),
        helper.make_node("Resize", ["down_relu", "", "scales"], ["up"], mode="nearest", name="upsample"),
        helper.make_node("Conv", ["images", "w_lat", "b_lat"], ["lateral"], pads=[1, 1, 1, 1], name="conv_lateral"),
        helper.make_node("Relu", ["lateral"], ["lateral_relu"], name="relu_lateral"),
        helper.make_node("Concat", ["up", "lateral_relu"], ["merged"], axis=1, name="concat"),
        helper.make_node("Conv", ["merged", "w_head", "b_head"], ["scores"], name="conv_head"),
    ]
    inits = [_weight(rng, "w_down", (ch, 3, 3, 3)), _weight(rng, "b_down", (ch,), 0.1),
             _weight(rng, "w_lat", (ch, 3, 3, 3)), _weight(rng, "b_lat", (ch,), 0.1),
             _weight(rng, "w_head", (4, 2 * ch, 1, 1), 0.1), _weight(rng, "b_head", (4,), 0.1),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(nodes, "fpn", [helper.make_tensor_value_info("images", F, [batch, 3, height, width])],
                              [helper.make_tensor_value_info("scores", F, [batch, 4, height, width])], inits)
    return _save(graph, path)


def fpn_macs(height: int, width: int, ch: int = 32) -> int:
    down = ch * 3 * 9 * ((height + 1) // 2) * ((width + 1) // 2)
    lateral = ch * 3 * 9 * height * width
    head = 4 * 2 * ch * height * width
    return down + lateral + head


def sequence_model(path: Path, hidden: int = 48, features: int = 12) -> Path:
    """x[time, features] (no batch axis) -> LSTM over time -> per-step logits[time, 5]."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis1"], ["x3"], name="add_batch"),  # [time, 1, features]
        helper.make_node("LSTM", ["x3", "W", "R", "B"], ["y", "", ""], hidden_size=hidden, name="lstm"),
        helper.make_node("Squeeze", ["y", "axes12"], ["h"], name="drop_dirs"),  # [time, hidden]
        helper.make_node("MatMul", ["h", "w_out"], ["logits"], name="classifier"),
    ]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
             _weight(rng, "W", (1, 4 * hidden, features)), _weight(rng, "R", (1, 4 * hidden, hidden), 0.1),
             _weight(rng, "B", (1, 8 * hidden), 0.1), _weight(rng, "w_out", (hidden, 5))]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", F, ["time", features])],
                              [helper.make_tensor_value_info("logits", F, ["time", 5])], inits)
    return _save(graph, path)


def streaming_model(path: Path, chunk: int = 64, hidden: int = 64) -> Path:
    """A voice-activity-style stream: input[1, n] (n = 64 at 16 kHz, 32 at 8 kHz), state[2, 1, hidden],
    sr (int64 scalar) choosing the branch in an If; outputs prob[1, 1] and stateN[2, 1, hidden].
    At a sample rate other than 16000 the else branch expects n = 32: a 1x1 chunk or a random sample
    rate makes the If fail, as in the published models."""
    rng = np.random.default_rng(2)

    def branch(tag: str, size: int) -> onnx.GraphProto:
        weight = _weight(rng, f"w_{tag}", (size, hidden))
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"c_{tag}"], value=weight),
             helper.make_node("MatMul", ["input", f"c_{tag}"], [f"h_{tag}"], name=f"mm_{tag}")],
            f"{tag}_branch", [], [helper.make_tensor_value_info(f"h_{tag}", F, [1, hidden])])

    nodes = [
        helper.make_node("Equal", ["sr", "sr16k"], ["is16k"], name="is_16k"),
        helper.make_node("If", ["is16k"], ["h"], then_branch=branch("16k", chunk), else_branch=branch("8k", chunk // 2),
                         name="rate_switch"),
        helper.make_node("MatMul", ["state", "w_rec"], ["kept"], name="recurrent"),
        helper.make_node("Add", ["kept", "h"], ["mixed"], name="mix"),  # [2, 1, hidden] + [1, hidden]
        helper.make_node("Identity", ["mixed"], ["stateN"], name="new_state"),  # a leaky accumulator
        helper.make_node("ReduceMean", ["stateN", "all_axes"], ["pooled"], keepdims=0, name="pool"),
        helper.make_node("Reshape", ["pooled", "one_one"], ["pooled2"], name="as_1x1"),
        helper.make_node("Sigmoid", ["pooled2"], ["prob"], name="prob"),
    ]
    inits = [numpy_helper.from_array(np.array(16000, np.int64), "sr16k"),
             numpy_helper.from_array((0.9 * np.eye(hidden) + rng.standard_normal((hidden, hidden)) * 0.02 / hidden ** 0.5)
                                     .astype(np.float32), "w_rec"),
             numpy_helper.from_array(np.array([0, 1, 2], np.int64), "all_axes"),
             numpy_helper.from_array(np.array([1, 1], np.int64), "one_one")]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("input", F, [1, "n"]),
         helper.make_tensor_value_info("state", F, [2, 1, hidden]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("prob", F, [1, 1]),
         helper.make_tensor_value_info("stateN", F, [2, 1, hidden])], inits)
    return _save(graph, path, opset=18)


def paddle_style_cnn(path: Path, free: int = -1, opset: int = 11, ch: int = 32) -> Path:
    """x[-1, 3, -1, -1] (paddle2onnx writes dynamic dims as -1; older exporters as 0) -> conv -> global pool
    -> fc[-1, 6]."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc"),
    ]
    inits = [_weight(rng, "w", (ch, 3, 3, 3)), _weight(rng, "b", (ch,), 0.1), _weight(rng, "fc_w", (ch, 6)),
             _weight(rng, "fc_b", (6,), 0.1)]
    graph = helper.make_graph(nodes, "paddle", [helper.make_tensor_value_info("x", F, [free, 3, free, free])],
                              [helper.make_tensor_value_info("logits", F, [free, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


def paddle_macs(height: int, width: int, ch: int = 32) -> int:
    return ch * 3 * 9 * height * width + ch * 6


def transformer_encoder(path: Path, d_model: int = 32, heads: int = 4, ff: int = 64, vocab: int = 50) -> Path:
    """ids[batch, seq] int64 and attention_mask[batch, seq] int64 -> embedding -> one encoder layer with an
    additive mask -> [batch, seq, d_model]; exported by torch with symbolic batch and seq."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)

        def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            padding = attention_mask == 0
            return self.layer(self.embed(ids), src_key_padding_mask=padding)

    torch.manual_seed(0)
    module = Encoder().eval()
    ids = torch.randint(0, vocab, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=512)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(module, (ids, mask), dynamo=True, input_names=["ids", "attention_mask"],
                                    output_names=["hidden"],
                                    dynamic_shapes={"ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}})
        program.save(str(path))
    return path


def transformer_macs(seq: int, d_model: int = 32, ff: int = 64) -> int:
    """The layer's matrix products at batch 1: q, k, v and out projections, q·kᵀ and p·v, the FFN."""
    return 4 * seq * d_model * d_model + 2 * seq * seq * d_model + 2 * seq * d_model * ff
