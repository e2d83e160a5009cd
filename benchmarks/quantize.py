#!/usr/bin/env python
"""int8: edgeopt's choice beside onnxruntime's standard static recipe, side by side in one run.

For each model, three ONNX files start from the same fp32 graph:

- **fp32**: the model as `edgeopt convert` exports and cleans it, without quantization (torch
  factories, and the bundled `models/digits/digits_cnn.onnx`); for f and g the hand-made ONNX
  file itself, since cleaning would remove what they test (the opset 12; the Constant nodes);
- **ort default**: `onnxruntime.quantization.quantize_static` on that graph with the standard
  recipe (QDQ, per-channel, s8 activations, s8 weights, MinMax) and the same calibration data,
  no pre-processing;
- **edgeopt**: `edgeopt convert fp32.onnx --calib calib.npz --eval eval.npz` in auto mode, which
  may ship the fp32 model when no int8 candidate is faithful and faster (the table says so).

Then, in this one process: fidelity on held-out eval data (batch 1, vs the fp32 outputs) and
latency with interleaved runs (one run of each model per round, the order rotating every round),
one intra-op thread, batch 1, medians. Ratios are vs fp32 (lower is smaller / faster).

    python benchmarks/quantize.py [--runs 200] [--min-time 3] [--budget 30] [--models a,b,...] [--keep DIR]

Models: a digits CNN (real trained weights and data), b MobileNetV2-like CNN, c detector head
(boxes in pixels concatenated with class scores), d transformer sentence encoder, e LSTM
classifier, f opset-12 CNN, g weights as Constant nodes inside both branches of an If, h the
README's example (models/digits32: real trained weights and data; `--models h` for its table alone).
Random weights are seeded; calibration and eval data are drawn with different seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
DIGITS32 = REPO / "models" / "digits32"
CALIB_SAMPLES = 64
EVAL_SAMPLES = 64

# Torch model definitions, written to a file so that `edgeopt convert FILE.py:FACTORY` can load them.
TORCH_MODELS = '''
import torch
from torch import nn


def _seeded_bn(model):
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


# -- (b) MobileNetV2-like: the definition from benchmarks/export_latency.py -----------------------
def block(cin, cout, stride, expand):
    hidden = cin * expand
    return nn.Sequential(
        nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))


class MobileNetLike(nn.Module):
    """MobileNetV2-style inverted residuals at 96x96."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(block(16, 24, 2, 6), block(24, 32, 2, 6), block(32, 64, 2, 6),
                                    block(64, 96, 1, 6), block(96, 160, 2, 6))
        self.head = nn.Linear(160, 10)

    def forward(self, image):
        x = self.blocks(self.stem(image))
        return self.head(x.mean(dim=(2, 3)))


def build_mobilenet():
    torch.manual_seed(0)
    return _seeded_bn(MobileNetLike().eval())


# -- (c) detector-like head ---------------------------------------------------------------------
def cbr(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DetectorLike(nn.Module):
    """64x64 image -> [N, anchors, 4 + classes]: boxes in pixels (sigmoid * 640) beside sigmoid
    class scores, concatenated along the last axis into one output (YOLO-style export)."""

    def __init__(self, anchors_per_cell=3, classes=20):
        super().__init__()
        self.a, self.c = anchors_per_cell, classes
        self.backbone = nn.Sequential(cbr(3, 16, 2), cbr(16, 32, 2), cbr(32, 64, 2), cbr(64, 64, 1))
        self.head = nn.Conv2d(64, anchors_per_cell * (4 + classes), 1)
        with torch.no_grad():  # class-score prior 0.01, as detectors initialise (RetinaNet/YOLO)
            bias = self.head.bias.view(anchors_per_cell, 4 + classes)
            bias[:, 4:] = -4.6

    def forward(self, image):
        p = self.head(self.backbone(image))                      # [N, A*(4+C), 8, 8]
        n = p.shape[0]
        p = p.view(n, self.a, 4 + self.c, -1).permute(0, 1, 3, 2).reshape(n, -1, 4 + self.c)
        boxes = torch.sigmoid(p[..., :4]) * 640.0
        scores = torch.sigmoid(p[..., 4:])
        return torch.cat([boxes, scores], dim=-1)


def build_detector():
    """Random backbone, head rescaled so that its outputs spread like a trained detector's
    (box logits std 1.5: boxes all over the image; score logits std 2 around the -4.6 prior:
    mostly background, a few confident anchors) instead of sitting on the bias."""
    torch.manual_seed(1)
    model = _seeded_bn(DetectorLike().eval())
    with torch.no_grad():
        feats = model.backbone(torch.randn(32, 3, 64, 64))
        raw = nn.functional.conv2d(feats, model.head.weight)
        std = raw.transpose(0, 1).reshape(raw.shape[1], -1).std(dim=1).clamp(min=1e-6)
        target = torch.tensor([1.5] * 4 + [2.0] * model.c).repeat(model.a)
        model.head.weight.mul_((target / std).view(-1, 1, 1, 1))
    return model


# -- (d) transformer sentence encoder ----------------------------------------------------------
class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, additive_mask):
        n, s, d = x.shape
        q = self.q(x).view(n, s, self.h, self.dk).transpose(1, 2)
        k = self.k(x).view(n, s, self.h, self.dk).transpose(1, 2)
        v = self.v(x).view(n, s, self.h, self.dk).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / (self.dk ** 0.5) + additive_mask
        attn = torch.softmax(scores, dim=-1) @ v
        x = self.ln1(x + self.o(attn.transpose(1, 2).reshape(n, s, d)))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class SentenceEncoder(nn.Module):
    """BERT-style: token + position embeddings, 4 post-LN layers, masked mean pooling. The
    padding mask is added to the attention scores as (1 - mask) * finfo(float32).min, as
    Hugging Face's BERT-family models do."""

    def __init__(self, vocab=8000, d=256, heads=4, ff=1024, layers=4, max_len=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, max_len, d) * 0.02)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))

    def forward(self, input_ids, attention_mask):
        x = self.ln(self.tok(input_ids) + self.pos[:, : input_ids.shape[1]])
        mask = attention_mask.to(x.dtype)
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, additive)
        summed = (x * mask[..., None]).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


def build_encoder():
    """Query/key weights scaled 3x: attention logits with std ~3, peaked like a trained model's.
    (At PyTorch's default init, attention is nearly uniform, which would hide any damage done
    to the attention scores.)"""
    torch.manual_seed(2)
    model = SentenceEncoder().eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.q.weight.mul_(3.0)
            layer.k.weight.mul_(3.0)
    return model


# -- (e) LSTM classifier -----------------------------------------------------------------------
class LstmClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(64, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, 10)

    def forward(self, sequence):
        out, _ = self.lstm(sequence)
        return self.head(out[:, -1])


def build_lstm():
    torch.manual_seed(3)
    return LstmClassifier().eval()
'''


@dataclass
class Spec:
    key: str
    name: str
    prepare: Callable[[Path, Path], Path]  # (work dir, models file) -> fp32 ONNX path
    data: Callable[[int, int], dict[str, np.ndarray]]  # (samples, seed) -> feeds
    classifier: bool  # [N, C] class scores: report top-1 agreement


@dataclass
class Recipe:
    label: str
    path: Path | None
    loads: str = "yes"
    session: object = None
    outputs: list[np.ndarray] | None = None
    times: list[float] = field(default_factory=list)


# -- building the fp32 models ----------------------------------------------------------------------

def edgeopt(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt", *args], capture_output=True, text=True, timeout=timeout)


def export(factory: str, shapes: list[str], out: Path, dtypes: list[str] = ()) -> Path:
    command = ["convert", factory, "-o", str(out)]
    for shape in shapes:
        command += ["--input-shape", shape]
    for dtype in dtypes:
        command += ["--input-dtype", dtype]
    result = edgeopt(*command)
    if result.returncode != 0:
        raise RuntimeError(f"edgeopt convert {factory} failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    return out / "model.onnx"


def prepare_digits(work: Path, _models: Path) -> Path:
    return export(str(DIGITS / "digits_cnn.onnx"), [], work / "fp32")


def prepare_digits32(work: Path, _models: Path) -> Path:
    return export(str(DIGITS32 / "digits32_cnn.onnx"), [], work / "fp32")


def prepare_mobilenet(work: Path, models: Path) -> Path:
    return export(f"{models}:build_mobilenet", ["image=1x3x96x96"], work / "fp32")


def prepare_detector(work: Path, models: Path) -> Path:
    return export(f"{models}:build_detector", ["image=1x3x64x64"], work / "fp32")


def prepare_encoder(work: Path, models: Path) -> Path:
    return export(f"{models}:build_encoder", ["input_ids=1x64", "attention_mask=1x64"], work / "fp32",
                  ["input_ids=int64", "attention_mask=int64"])


def prepare_lstm(work: Path, models: Path) -> Path:
    return export(f"{models}:build_lstm", ["sequence=1x50x64"], work / "fp32")


def prepare_opset12(work: Path, models: Path) -> Path:
    """TorchScript exporter at opset 12: this file itself is the fp32 model (edgeopt convert
    would upgrade it to 13, and the point is what each recipe does with an opset-12 graph)."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench_quantize_models", models)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_mobilenet()
    path = work / "fp32" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 3, 96, 96),), str(path), dynamo=False, opset_version=12,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"},
                                                                                    "logits": {0: "batch"}})
    return path


def prepare_if(work: Path, _models: Path) -> Path:
    """h = Relu(x @ W0); y = If(mean(x) > 0, then: Relu(h @ W1), else: Relu(h @ W2)), W1/W2 as
    Constant nodes inside the branches (how some exporters and hand-edited graphs hold weights).
    This file itself is the fp32 model: `edgeopt convert`'s simplify step would turn the branch
    Constants into subgraph initializers, and the point is what each recipe does with them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    d = 256

    def weight(name: str) -> np.ndarray:
        return (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)

    def branch(tag: str) -> onnx.GraphProto:
        const = helper.make_node("Constant", [], [f"w_{tag}"], name=f"const_{tag}",
                                 value=numpy_helper.from_array(weight(f"w_{tag}"), f"w_{tag}_value"))
        matmul = helper.make_node("MatMul", ["h", f"w_{tag}"], [f"y_{tag}"], name=f"matmul_{tag}")
        relu = helper.make_node("Relu", [f"y_{tag}"], [f"r_{tag}"], name=f"relu_{tag}")
        return helper.make_graph([const, matmul, relu], f"branch_{tag}", [],
                                 [helper.make_tensor_value_info(f"r_{tag}", TensorProto.FLOAT, ["batch", d])])

    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"], name="matmul_main"),
        helper.make_node("Relu", ["h0"], ["h"], name="relu_main"),
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["cond"], name="cond"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch("then"),
                         else_branch=branch("else")),
    ]
    graph = helper.make_graph(
        nodes, "if_constants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", d])],
        [numpy_helper.from_array(weight("w0"), "w0"), numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path = work / "fp32" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


# -- data -----------------------------------------------------------------------------------------

def images(shape: tuple[int, ...]) -> Callable[[int, int], dict[str, np.ndarray]]:
    def make(samples: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"image": rng.standard_normal((samples, *shape)).astype(np.float32)}
    return make


def digits_data(_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The real splits: calib.npz (200 train images) for seed 0, eval.npz (360 images + labels) else."""
    with np.load(DIGITS / ("calib.npz" if seed == 0 else "eval.npz")) as data:
        return {key: data[key] for key in data.files}


def digits32_data(_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The README example's splits: calib.npz for seed 0, eval.npz (with labels) else."""
    with np.load(DIGITS32 / ("calib.npz" if seed == 0 else "eval.npz")) as data:
        return {key: data[key] for key in data.files}


def tokens(samples: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 65, size=samples)
    mask = (np.arange(64)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 8000, size=(samples, 64)).astype(np.int64) * mask  # 0 = padding
    return {"input_ids": ids, "attention_mask": mask}


def sequences(samples: int, seed: int) -> dict[str, np.ndarray]:
    return {"sequence": np.random.default_rng(seed).standard_normal((samples, 50, 64)).astype(np.float32)}


def vectors(samples: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((samples, 256)).astype(np.float32)}


SPECS = {s.key: s for s in [
    Spec("a", "digits CNN (1x1x8x8, real data)", prepare_digits, digits_data, True),
    Spec("b", "MobileNetV2-like (1x3x96x96)", prepare_mobilenet, images((3, 96, 96)), True),
    Spec("c", "detector head (1x3x64x64 -> 192x24)", prepare_detector, images((3, 64, 64)), False),
    Spec("d", "transformer encoder (4x256, seq 64)", prepare_encoder, tokens, False),
    Spec("e", "LSTM (2x256, seq 50)", prepare_lstm, sequences, True),
    Spec("f", "opset-12 CNN (MobileNetV2-like)", prepare_opset12, images((3, 96, 96)), True),
    Spec("g", "If with Constant weights (256)", prepare_if, vectors, False),
    Spec("h", "README example: digits32 MobileNet-style (1x1x32x32, real data)", prepare_digits32, digits32_data,
         True),
]}


# -- the two recipes --------------------------------------------------------------------------------

def ort_default(fp32: Path, out: Path, calib: dict[str, np.ndarray], input_names: list[str]) -> None:
    """onnxruntime's standard static recipe, as documented, on the same calibration data."""
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    count = len(next(iter(calib.values())))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.index = 0

        def get_next(self):
            if self.index >= count:
                return None
            self.index += 1
            return {name: calib[name][self.index - 1: self.index] for name in input_names}

    root = logging.getLogger()  # the quantizer prints advice (pre-processing) through the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.setLevel(level)


def edgeopt_int8(fp32: Path, calib: Path, evaluation: Path, out: Path) -> tuple[Path, dict]:
    result = edgeopt("convert", str(fp32), "--calib", str(calib), "--eval", str(evaluation), "-o", str(out),
                     "--json")
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {result.stderr.strip()[-600:]}")
    return out / "model.onnx", json.loads(result.stdout)


def describe_edgeopt(report: dict) -> tuple[str, list[str]]:
    """(recipe cell, note lines) from edgeopt's JSON report."""
    summary = report.get("summary", {}).get("quantization", {})
    stage = next((s for s in report.get("stages", []) if s.get("name") == "quantize"), None)
    details = (stage or {}).get("details", {})
    notes = [f"reason: {summary.get('reason') or details.get('reason')}"]
    for c in details.get("candidates", []):
        fid = c.get("fidelity") or {}
        worst = min((min(o["cosine_mean"], o["channel_cosine_min"] if o.get("channel_cosine_min") is not None
                         else o["cosine_mean"]) for o in fid.get("outputs", [])), default=None)
        parts = [c["name"], c["status"]]
        if c.get("quantized_nodes") is not None:
            parts.append(f"{c['quantized_nodes']}/{c['quantizable_nodes']} nodes int8")
        if c.get("float_nodes"):
            parts.append(f"{len(c['float_nodes'])} kept float")
        if c.get("int8_activations"):
            parts.append(f"{len(c['int8_activations'])} hard activations on int8 kernels")
        if worst is not None:
            parts.append(f"floor cos {worst:.4f}")
        if c.get("latency_ratio") is not None:
            parts.append(f"{c['latency_ratio']:.2f}x latency")
        if c.get("size_ratio") is not None:
            parts.append(f"{c['size_ratio']:.2f}x size")
        if c.get("mixed_precision"):
            parts.append("mixed precision: " + ", ".join(f"{len(s['float_nodes'])}->{s['worst_cosine']:.4f}"
                                                        for s in c["mixed_precision"]))
        if c.get("rejection") and c["status"] != "below-floor":
            parts.append(c["rejection"][:160])
        notes.append("candidate " + "; ".join(parts))
    if summary.get("shipped") == "int8":
        cell = f"edgeopt: {summary.get('recipe')}"
    else:
        cell = "edgeopt: fp32 kept"
    return cell, notes


# -- measuring --------------------------------------------------------------------------------------

def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_each(sess, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Batch 1, sample by sample (the If model's condition is per call)."""
    names = [i.name for i in sess.get_inputs()]
    count = len(feeds[names[0]])
    chunks = [sess.run(None, {n: feeds[n][i:i + 1] for n in names}) for i in range(count)]
    return [np.concatenate([c[k] for c in chunks], axis=0) for k in range(len(chunks[0]))]


def _ort_error(exc: Exception) -> str:
    """The useful part of an onnxruntime load error, without the path and status prefix."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from \S+ failed:", "", text).replace("This is an invalid model. ", "")
    node = re.search(r'In Node, \("([^"]*)", (\w+),.*?Error (.*)$', text)
    if node:  # checker errors: which node, and what is wrong with it
        text = f"{node.group(2)} {node.group(1)!r}: {node.group(3)}"
    return text.replace("|", "/")[:160]


def fidelity(reference: list[np.ndarray], got: list[np.ndarray], names: list[str], classifier: bool,
             labels: np.ndarray | None) -> dict[str, float | None]:
    from edgeopt.metrics.fidelity import compare_outputs

    per_output = [compare_outputs(n, r, g) for n, r, g in zip(names, reference, got)]
    result = {"cos_mean": min(o.cosine_mean for o in per_output),
              "cos_floor": min(o.floor_cosine for o in per_output),
              "top1": min(o.top1_agreement for o in per_output if o.top1_agreement is not None)
              if classifier and any(o.top1_agreement is not None for o in per_output) else None,
              "accuracy": None}
    if labels is not None:
        result["accuracy"] = float(np.mean(np.argmax(got[0], axis=1) == labels))
    return result


def interleaved(recipes: list[Recipe], feeds: dict[str, np.ndarray], runs: int, min_s: float, budget_s: float
                ) -> int:
    """Rounds of one run each (fp32, ort default, edgeopt; ort default, edgeopt, fp32; ...): at least
    ``runs`` rounds and ``min_s`` seconds (fast models get more rounds), at most ``budget_s`` seconds
    (and at least 30 rounds)."""
    live = [r for r in recipes if r.session is not None]
    per = {r.label: {i.name: feeds[i.name][:1] for i in r.session.get_inputs()} for r in live}
    for _ in range(10):  # warm-up
        for r in live:
            r.session.run(None, per[r.label])
    started, rounds = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - started
        if rounds >= 30 and elapsed >= budget_s:
            break
        if rounds >= runs and (elapsed >= min_s or rounds >= 50 * runs):
            break
        # Rotate the order every round: on sub-millisecond models, whichever runs right after a
        # heavy model pays for its cold caches, and a fixed order would bias the ratios.
        shift = rounds % len(live)
        for r in live[shift:] + live[:shift]:
            t0 = time.perf_counter()
            r.session.run(None, per[r.label])
            r.times.append((time.perf_counter() - t0) * 1000)
        rounds += 1
    return rounds


def benchmark(spec: Spec, work: Path, models_file: Path, runs: int, min_s: float, budget_s: float, log
              ) -> tuple[list[str], list[str]]:
    work.mkdir(parents=True, exist_ok=True)
    log(f"[{spec.key}] {spec.name}: exporting fp32")
    fp32_path = spec.prepare(work, models_file)
    calib = spec.data(CALIB_SAMPLES, 0)
    evaluation = spec.data(EVAL_SAMPLES, 1)
    labels = evaluation.pop("labels", None)
    np.savez(work / "calib.npz", **calib)
    np.savez(work / "eval.npz", **evaluation, **({"labels": labels} if labels is not None else {}))

    fp32 = Recipe("fp32", fp32_path)
    fp32.session = session(fp32_path)
    input_names = [i.name for i in fp32.session.get_inputs()]
    output_names = [o.name for o in fp32.session.get_outputs()]

    log(f"[{spec.key}] ort default: quantize_static")
    baseline = Recipe("ort default", work / "ort_default.onnx")
    started = time.perf_counter()
    try:
        ort_default(fp32_path, baseline.path, calib, input_names)
    except Exception as exc:  # the baseline failing is a result, not a crash
        baseline.loads = f"no: quantize_static raised {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        baseline.path = None
    baseline_s = time.perf_counter() - started

    log(f"[{spec.key}] edgeopt convert --calib (auto)")
    ours = Recipe("edgeopt", None)
    notes: list[str] = []
    started = time.perf_counter()
    try:
        ours.path, report = edgeopt_int8(fp32_path, work / "calib.npz", work / "eval.npz", work / "edgeopt")
        ours.label, notes = describe_edgeopt(report)
    except Exception as exc:
        ours.label, ours.loads = "edgeopt: failed", f"no: {' '.join(str(exc).split())[:160]}"
    edgeopt_s = time.perf_counter() - started
    notes.append(f"time to quantize: ort default {baseline_s:.1f} s; edgeopt convert (whole search) {edgeopt_s:.1f} s")

    recipes = [fp32, baseline, ours]
    for r in (baseline, ours):
        if r.path is None:
            continue
        try:
            r.session = session(r.path)
        except Exception as exc:
            r.loads = f"no: onnxruntime cannot load it: {_ort_error(exc)}"
    log(f"[{spec.key}] fidelity on {len(evaluation[input_names[0]])} eval samples")
    for r in recipes:
        if r.session is None:
            continue
        try:
            r.outputs = run_each(r.session, evaluation)
        except Exception as exc:
            r.loads, r.session = f"loads, but run fails: {' '.join(str(exc).split())[:120]}", None
    log(f"[{spec.key}] latency: {runs}+ interleaved rounds")
    rounds = interleaved(recipes, evaluation, runs, min_s, budget_s)
    notes.append(f"{rounds} interleaved rounds")

    base_ms = statistics.median(fp32.times)
    base_size = fp32_path.stat().st_size
    rows = []
    for r in recipes:
        if r.session is None:
            rows.append(f"| {spec.name} | {r.label} | {r.loads} | - | - | - | - | - | - | - |")
            continue
        size = r.path.stat().st_size / base_size
        median = statistics.median(r.times)
        fid = fidelity(fp32.outputs, r.outputs, output_names, spec.classifier, labels)
        top1 = f"{fid['top1']:.3f}" if fid["top1"] is not None else "n/a"
        acc = f"{fid['accuracy']:.3f}" if fid["accuracy"] is not None else "n/a"
        rows.append(f"| {spec.name} | {r.label} | {r.loads} | {size:.2f}x | {median / base_ms:.2f}x | {median:.3f} "
                    f"| {fid['cos_mean']:.4f} | {fid['cos_floor']:.4f} | {top1} | {acc} |")
    return rows, [f"{spec.key}) {spec.name}: {n}" for n in notes]


def edgeopt_version() -> str:
    try:
        from importlib.metadata import version

        return version("edgeopt")
    except Exception:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="interleaved rounds per model, at least (default 200)")
    parser.add_argument("--min-time", type=float, default=3.0,
                        help="keep timing fast models for this many seconds (default 3)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="at most this many seconds of timing per model, >= 30 rounds (default 30)")
    parser.add_argument("--models", default=",".join(SPECS), help="subset, e.g. a,b,c (default all)")
    parser.add_argument("--keep", type=Path, help="keep the models, data and reports in this folder")
    args = parser.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(SPECS)}")

    import onnxruntime as ort
    from rich.console import Console

    console = Console(stderr=True)
    tmp = None
    if args.keep:
        root = args.keep
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="edgeopt-bench-quantize-")
        root = Path(tmp)
    try:
        models_file = root / "bench_models.py"
        models_file.write_text(TORCH_MODELS)
        rows, notes = [], []
        started = time.perf_counter()
        for key in keys:
            spec = SPECS[key]
            try:
                r, n = benchmark(spec, root / key, models_file, args.runs, args.min_time, args.budget,
                                 lambda msg: console.log(msg))
            except Exception as exc:
                console.print_exception() if os.environ.get("BENCH_DEBUG") else None
                r = [f"| {spec.name} | (benchmark failed) | {type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:160]} | - | - | - | - | - | - | - |"]
                n = [f"{spec.key}) {spec.name}: benchmark failed: {traceback.format_exception_only(exc)[-1].strip()}"]
            rows += r
            notes += n
        console.log(f"done in {time.perf_counter() - started:.0f} s")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"{machine_line()}; onnxruntime {ort.__version__}, edgeopt {edgeopt_version()}; "
          f"at least {args.runs} interleaved rounds per model (order rotating) and {args.min_time:g} s, "
          f"at most {args.budget:g} s; batch 1, 1 intra-op thread (rounds per model in the notes).")
    print("ort default = quantize_static(QDQ, per_channel, QInt8 activations and weights, MinMax), no pre-processing. "
          "Ratios vs fp32 (lower is smaller / faster); cosine vs fp32 on the eval data: mean = worst output's mean "
          "per-sample cosine, floor = also the worst last-axis channel.\n")
    print("| model | recipe | loads | size ratio | latency ratio | median ms | cosine (mean) | cosine (floor) "
          "| top-1 agreement | accuracy |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nNotes (edgeopt's report):\n")
    print("\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
    main()
