#!/usr/bin/env python
"""How good are edgeopt's static latency estimates for `host`? Estimate vs measurement, per model.

1. Calibrates this machine into a temporary folder (`edgeopt targets calibrate host --threads 1`).
2. Builds a spread of models (digits CNN, MobileNetV2 at widths 0.5 and 1.0, a ResNet-ish conv
   stack, a transformer encoder, a 2-layer LSTM, an MLP) with `edgeopt convert`, and int8 QDQ
   variants of most of them with `edgeopt convert --quantize static --force-int8`.
3. Runs `edgeopt profile MODEL -t host --measure --threads 1 --runs N --json` on each and reads
   `comparisons[0]`: the estimated total against the measured p50, and per op type. The runner
   times its runs without onnxruntime's profiler and profiles in a second pass; this script also
   runs the runner once more without `--profile` as a cross-check (columns "profiler off").
4. Prints Markdown tables: per model, what the profiler adds, per op type (as edgeopt reports it),
   per kernel class (onnxruntime's fused kernels mapped back to model nodes), and *what-if*
   columns that re-price the same per-node figures (MACs, bytes, dtype from the profile JSON) with
   changed rules and constants: efficiencies per kernel class fitted on the measured kernels,
   bandwidths, per-run overhead and per-element costs from small onnxruntime microbenchmarks run
   here. The what-if figures are this script's arithmetic, not edgeopt's; nothing in the library
   is changed. With every change off the arithmetic reproduces edgeopt's estimate (asserted).
   Caveat: the what-if rules were written before edgeopt adopted several of them (fused
   activations cost 0, depthwise/1x1 and LSTM efficiencies, Gather rows), so today they partly
   double-count; read the first columns of the first table.

    python benchmarks/estimate_accuracy.py [--runs 100] [--repeats 2] [--jobs 2] [--keep DIR]
    python benchmarks/estimate_accuracy.py --reuse DIR   # the tables again from a --keep folder

Measurements use one intra-op thread. The machine is whatever runs the script: other load on it
shows up as noise (the header prints the load average; each model is profiled `--repeats` times
and the least disturbed run, lowest mean, is kept).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
CALIB_SAMPLES = 16

# Torch model definitions, written to a file so that `edgeopt convert FILE.py:FACTORY` can load them.
TORCH_MODELS = '''
import torch
from torch import nn


def _seeded_bn(model):
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _div8(v):
    return max(8, int(v + 4) // 8 * 8)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """The MobileNetV2 layout (t, c, n, s) with a width multiplier, random weights."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, width=1.0, classes=100):
        super().__init__()
        cin = _div8(32 * width)
        last = _div8(1280 * max(1.0, width))
        layers = [nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6()]
        for t, c, n, s in self.SETTINGS:
            cout = _div8(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(last, classes)

    def forward(self, image):
        return self.head(self.features(image).mean(dim=(2, 3)))


def build_mbv2_050():
    torch.manual_seed(0)
    return _seeded_bn(MobileNetV2(0.5))


def build_mbv2_100():
    torch.manual_seed(0)
    return _seeded_bn(MobileNetV2(1.0))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.c2(self.c1(x)) + self.skip(x))


class ResNetish(nn.Module):
    """Plain 3x3 conv stack with residuals at 64x64: 32-64-128 channels, two blocks per stage."""

    def __init__(self, widths=(32, 64, 128), classes=100):
        super().__init__()
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        cin = widths[0]
        for i, w in enumerate(widths):
            layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, image):
        return self.head(self.features(image).mean(dim=(2, 3)))


def build_resnetish():
    torch.manual_seed(1)
    return _seeded_bn(ResNetish())


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        n, s, d = x.shape
        q, k, v = self.qkv(x).view(n, s, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / (self.dk ** 0.5), dim=-1) @ v
        x = self.ln1(x + self.o(attn.transpose(1, 2).reshape(n, s, d)))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class Encoder(nn.Module):
    """Token ids -> embeddings + positions -> 4 post-LN layers (d 256, 4 heads, ff 1024) -> mean."""

    def __init__(self, vocab=8000, d=256, heads=4, ff=1024, layers=4, max_len=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, max_len, d) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))

    def forward(self, input_ids):
        x = self.tok(input_ids) + self.pos[:, : input_ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return x.mean(dim=1)


def build_transformer():
    torch.manual_seed(2)
    return Encoder().eval()


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


def build_mlp():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 10)).eval()
'''


@dataclass
class Spec:
    key: str
    label: str
    source: Callable[[Path], list[str]]  # models file -> `edgeopt convert` source and shape arguments
    calib: Callable[[int, int], dict[str, np.ndarray]] | None  # (samples, seed) -> int8 calibration feeds
    calib_file: Path | None = None  # bundled calibration data instead of random


def _image(shape: tuple[int, ...]) -> Callable[[int, int], dict[str, np.ndarray]]:
    return lambda n, seed: {"image": np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)}


SPECS = [
    Spec("digits", "digits CNN 1x1x8x8", lambda _m: [str(DIGITS / "digits_cnn.onnx")], None,
         calib_file=DIGITS / "calib.npz"),
    Spec("mbv2_050", "MobileNetV2 w0.5 96x96",
         lambda m: [f"{m}:build_mbv2_050", "--input-shape", "image=1x3x96x96"], _image((3, 96, 96))),
    Spec("mbv2_100", "MobileNetV2 w1.0 96x96",
         lambda m: [f"{m}:build_mbv2_100", "--input-shape", "image=1x3x96x96"], _image((3, 96, 96))),
    Spec("resnetish", "ResNet-ish 3x3 stack 64x64",
         lambda m: [f"{m}:build_resnetish", "--input-shape", "image=1x3x64x64"], _image((3, 64, 64))),
    Spec("transformer", "Transformer enc. 4L d256 seq64",
         lambda m: [f"{m}:build_transformer", "--input-shape", "input_ids=1x64", "--input-dtype", "input_ids=int64",
                    "--fill", "input_ids=1"],  # integer inputs are never random: token id 1 for the parity runs
         lambda n, seed: {"input_ids": np.random.default_rng(seed).integers(0, 8000, (n, 64)).astype(np.int64)}),
    # Static int8 of an LSTM graph only quantizes the Gemm head (onnxruntime keeps LSTM float): fp32 only.
    Spec("lstm", "LSTM 2L h256 seq50",
         lambda m: [f"{m}:build_lstm", "--input-shape", "sequence=1x50x64"], None),
    Spec("mlp", "MLP 512-2048-2048-10",
         lambda m: [f"{m}:build_mlp", "--input-shape", "input=1x512"],
         lambda n, seed: {"input": np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)}),
]


# ----------------------------------------------------------------------------- helpers


def edgeopt(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeopt", *args], capture_output=True, text=True, timeout=timeout)


def checked(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def abs_err(est: float, meas: float) -> float:
    return abs(est - meas) / meas * 100


def fmt_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


# -------------------------------------------------------------------- microbenchmarks


def _session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _graph(nodes, inputs, outputs, inits=()) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _median_s(fn: Callable[[], object], budget_s: float, min_runs: int = 20) -> float:
    """Median of repeated timings (robust to the machine's other load), after a warm-up."""
    for _ in range(5):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _int8(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> bytes | None:
    """QDQ int8 (u8 activations, s8 per-channel weights), as edgeopt quantizes for this ISA."""
    import onnx

    from edgeopt.stages.quantize.quantizer import quantize
    from edgeopt.stages.quantize.recipes import Recipe

    model = onnx.ModelProto()
    model.ParseFromString(model_bytes)
    try:
        return quantize(model, Recipe(mode="static"), [feeds]).SerializeToString()
    except Exception as exc:  # noqa: BLE001 - a missing figure is reported, not fatal
        log(f"  int8 microbenchmark skipped: {exc}")
        return None


@dataclass
class Micro:
    """What the what-if cost model uses, measured here (1 thread, medians)."""

    run_overhead_us: float  # session.run() of a one-node model on a 16-float tensor, minus one node
    node_overhead_us: float  # each further tiny kernel (a chain of 200 Neg)
    bandwidth: list[tuple[int, float]]  # (working-set bytes, read bandwidth B/s), ascending
    kernels: dict[tuple[str, str], tuple[float, float]]  # (kernel class, fp32|int8) -> (fixed µs, ops/s)
    ns_per_element: dict[str, float]  # transcendental/normalisation kernels: ns per output element
    shapes: dict[str, str]


def _bandwidth_table(budget_s: float) -> list[tuple[int, float]]:
    """Read bandwidth (a float32 dot product of two arrays) by working set: caches, then DRAM."""
    table = []
    for working_set in (512 << 10, 2 << 20, 8 << 20, 32 << 20, 128 << 20):
        a = np.ones(working_set // 8, dtype=np.float32)
        b = np.ones(working_set // 8, dtype=np.float32)
        seconds = _median_s(lambda a=a, b=b: np.dot(a, b), budget_s, min_runs=10)
        table.append((working_set, working_set / seconds))
    return table


def run_micro(budget_s: float = 0.25) -> Micro:
    """Per-kernel figures from chains: (time of k+1 kernels - time of 1) / k, so the Q/DQ at the
    model's edges, NCHWc reorders and the session overhead cancel out."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    def timed(model: bytes, feeds: dict[str, np.ndarray]) -> float:
        session = _session(model)
        return _median_s(lambda: session.run(None, feeds), budget_s)

    # dispatch: one node vs a chain of 200 tiny nodes
    x = np.ones((1, 16), np.float32)
    times = {}
    for n in (1, 200):
        nodes = [helper.make_node("Neg", ["x" if i == 0 else f"t{i}"], ["y" if i == n - 1 else f"t{i + 1}"])
                 for i in range(n)]
        times[n] = timed(_graph(nodes, [info("x", (1, 16))], [info("y", (1, 16))]), {"x": x}) * 1e6
    node_us = (times[200] - times[1]) / 199
    run_us = times[1] - node_us

    def chain(k: int, make_node, shape, extra_inputs=(), inits=(), opset=17):
        nodes = [make_node("x" if i == 0 else f"t{i}", "y" if i == k - 1 else f"t{i + 1}", i) for i in range(k)]
        used = {name for node in nodes for name in node.input}
        graph = helper.make_graph(nodes, "bench", [info("x", shape), *extra_inputs], [info("y", shape)],
                                  initializer=[t for t in inits if t.name in used])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model.SerializeToString()

    def conv_case(c, hw, k, group):
        inits = [numpy_helper.from_array((rng.standard_normal((c, c // group, k, k)) * 0.1).astype(np.float32),
                                         f"w{i}") for i in range(5)]
        make = lambda a, b, i: helper.make_node("Conv", [a, f"w{i}"], [b], pads=[k // 2] * 4, group=group)  # noqa: E731
        return make, (1, c, hw, hw), (), inits, 2 * c * (c // group) * k * k * hw * hw

    def matmul_weight_case(m, d):
        inits = [numpy_helper.from_array((rng.standard_normal((d, d)) / d ** 0.5).astype(np.float32), f"w{i}")
                 for i in range(5)]
        make = lambda a, b, i: helper.make_node("MatMul", [a, f"w{i}"], [b])  # noqa: E731
        return make, (1, m, d), (), inits, 2 * m * d * d

    def matmul_activation_case(heads, s):
        make = lambda a, b, i: helper.make_node("MatMul", [a, "v"], [b])  # noqa: E731
        return make, (1, heads, s, s), (info("v", (1, heads, s, s)),), (), 2 * heads * s * s * s

    # Each class at a small and a large shape: time = fixed µs + 2·MACs / rate, both from the two points.
    cases = {
        "conv-dense": ((conv_case(64, 8, 3, 1), conv_case(32, 64, 3, 1)), "3x3 Conv 64ch at 8x8 and 32ch at 64x64"),
        "conv-depthwise": ((conv_case(576, 6, 3, 576), conv_case(96, 48, 3, 96)),
                           "depthwise 3x3 Conv 576ch at 6x6 and 96ch at 48x48"),
        "conv-pointwise": ((conv_case(96, 6, 1, 1), conv_case(192, 24, 1, 1)),
                           "1x1 Conv 96ch at 6x6 and 192ch at 24x24"),
        "matmul-weight": ((matmul_weight_case(8, 128), matmul_weight_case(64, 512)),
                          "MatMul [8,128]x[128,128] and [64,512]x[512,512] (weight)"),
        "matmul-activation": ((matmul_activation_case(4, 16), matmul_activation_case(4, 64)),
                              "MatMul [4,16,16]x[4,16,16] and [4,64,64]x[4,64,64] (two activations)"),
    }
    kernels: dict[tuple[str, str], tuple[float, float]] = {}
    for name, (sizes, _text) in cases.items():
        points: dict[str, list[tuple[float, float]]] = {"fp32": [], "int8": []}
        for make, shape, extra, inits, flops in sizes:
            feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
            for tensor in extra:
                dims = [d.dim_value for d in tensor.type.tensor_type.shape.dim]
                feeds[tensor.name] = rng.standard_normal(dims).astype(np.float32)
            models = {k: chain(k, make, shape, extra, inits) for k in (1, 5)}
            for dtype in ("fp32", "int8"):
                if dtype == "int8":
                    models = {k: _int8(m, feeds) for k, m in models.items()}
                    if None in models.values():
                        continue
                seconds = (timed(models[5], feeds) - timed(models[1], feeds)) / 4
                points[dtype].append((flops, max(seconds, 1e-9)))
        for dtype, pts in points.items():
            if len(pts) != 2:
                continue
            (f1, t1), (f2, t2) = pts
            rate = (f2 - f1) / (t2 - t1) if t2 > t1 else f2 / t2
            fixed = max(t1 - f1 / rate, 0.0)
            kernels[(name, dtype)] = (fixed * 1e6, rate)

    # ops that are not memory-bound at these sizes: exp/erf/reductions per element
    elementwise = {
        "Gelu": (lambda a, b, i: helper.make_node("Gelu", [a], [b]), (1, 64, 1024), (), 20),
        "Softmax": (lambda a, b, i: helper.make_node("Softmax", [a], [b], axis=-1), (1, 4, 64, 64), (), 17),
        "LayerNormalization": (lambda a, b, i: helper.make_node("LayerNormalization", [a, "g", "beta"], [b], axis=-1),
                               (1, 64, 256), (numpy_helper.from_array(np.ones(256, np.float32), "g"),
                                              numpy_helper.from_array(np.zeros(256, np.float32), "beta")), 17),
    }
    ns: dict[str, float] = {}
    for name, (make, shape, inits, opset) in elementwise.items():
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        t = {k: timed(chain(k, make, shape, (), inits, opset), feeds) for k in (1, 5)}
        ns[name] = max((t[5] - t[1]) / 4, 0.0) / math.prod(shape) * 1e9
    shapes = {k: v[1] for k, v in cases.items()}
    shapes.update({k: f"{k} {'x'.join(map(str, v[1]))}" for k, v in elementwise.items()})
    return Micro(run_overhead_us=run_us, node_overhead_us=node_us, bandwidth=_bandwidth_table(budget_s),
                 kernels=kernels, ns_per_element=ns, shapes=shapes)


# ------------------------------------------------------------------ building models


@dataclass
class Model:
    key: str
    label: str
    variant: str  # fp32 | int8
    path: Path
    report: dict = field(default_factory=dict)  # edgeopt profile --json
    unprofiled_p50_ms: float | None = None  # the same runner without onnxruntime's profiler


def build(spec: Spec, models_file: Path, work: Path) -> Model:
    out = work / spec.key
    t0 = time.perf_counter()
    checked(edgeopt("convert", *spec.source(models_file), "-o", str(out)), f"convert {spec.key}")
    log(f"  built {spec.key} ({time.perf_counter() - t0:.0f} s)")
    return Model(spec.key, spec.label, "fp32", out / "model.onnx")


def build_int8(spec: Spec, fp32: Path, work: Path) -> Model:
    out = work / f"{spec.key}_int8"
    if spec.calib_file is not None:
        calib = spec.calib_file
    else:
        calib = work / f"{spec.key}_calib.npz"
        np.savez(calib, **spec.calib(CALIB_SAMPLES, 0))
    t0 = time.perf_counter()
    # --min-cosine 0: fidelity is not the subject here; it keeps every quantizable node int8
    # (no mixed-precision search), which is the case the int8 cost model has to price.
    checked(edgeopt("convert", str(fp32), "--calib", str(calib), "--quantize", "static", "--force-int8",
                    "--min-cosine", "0", "-o", str(out)), f"convert {spec.key} int8")
    log(f"  built {spec.key} int8 ({time.perf_counter() - t0:.0f} s)")
    return Model(spec.key, spec.label, "int8", out / "model.onnx")


# Integer inputs are never given random values (token ids select rows): a fixed token id to time with.
PROFILE_FILLS = {"transformer": ["--fill", "input_ids=1"]}


def profile(model: Model, targets: Path, runs: int, repeats: int) -> None:
    best = None
    for _ in range(repeats):
        result = checked(edgeopt("profile", str(model.path), "-t", "host", "--targets-dir", str(targets), "--measure",
                                 "--threads", "1", "--runs", str(runs), "--json", *PROFILE_FILLS.get(model.key, [])),
                         f"profile {model.key}")
        report = json.loads(result.stdout)
        if not report["comparisons"]:
            raise RuntimeError(f"profile {model.key}: no comparison ({report['warnings']})")
        mean = report["measurements"]["host"][0]["latency_ms"]["mean"]
        if best is None or mean < best[0]:
            best = (mean, report)
    model.report = best[1]
    # The same runner without onnxruntime's profiler: how much the profiler itself adds.
    runner = REPO / "edgeopt" / "runtime" / "device_runner.py"
    p50s = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, str(runner), str(model.path), "--runs", str(runs), "--threads", "1"],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode == 0:
            p50s.append(json.loads(done.stdout.strip().splitlines()[-1])["latency_ms"]["p50"])
    model.unprofiled_p50_ms = min(p50s) if p50s else None


# ------------------------------------------------------------ graph facts per node


ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "HardSwish"}
KERNEL_PRODUCERS = {"Conv", "Gemm"}  # ops onnxruntime fuses an activation (and Conv: a Sum) into


@dataclass
class GraphFacts:
    op: dict[str, str]  # node -> op_type
    producer: dict[str, str]  # tensor -> node
    consumers: dict[str, list[str]]  # tensor -> nodes
    inputs: dict[str, list[str]]
    outputs: dict[str, list[str]]
    attrs: dict[str, dict]
    init_shapes: dict[str, tuple[int, ...]]
    order: dict[str, int]


def graph_facts(path: Path) -> GraphFacts:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    facts = GraphFacts({}, {}, {}, {}, {}, {}, {t.name: tuple(t.dims) for t in g.initializer}, {})
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        facts.op[name] = node.op_type
        facts.order[name] = i
        facts.inputs[name] = [x for x in node.input if x]
        facts.outputs[name] = [x for x in node.output if x]
        facts.attrs[name] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for out in node.output:
            facts.producer[out] = name
        for inp in node.input:
            facts.consumers.setdefault(inp, []).append(name)
    return facts


def _weight_shape(facts: GraphFacts, node: str, index: int) -> tuple[int, ...] | None:
    """Shape of a node's weight input, through a DequantizeLinear in QDQ graphs."""
    names = facts.inputs[node]
    if index >= len(names):
        return None
    name = names[index]
    if name in facts.init_shapes:
        return facts.init_shapes[name]
    src = facts.producer.get(name)
    if src and facts.op[src] == "DequantizeLinear":
        return facts.init_shapes.get(facts.inputs[src][0])
    return None


def kernel_class(facts: GraphFacts, node: str) -> str:
    op = facts.op.get(node, "?")
    if op == "Conv":
        w = _weight_shape(facts, node, 1)
        group = int(facts.attrs[node].get("group", 1))
        if group > 1 and w is not None and w[1] == 1:
            return "conv-depthwise"
        if w is not None and all(d == 1 for d in w[2:]):
            return "conv-pointwise"
        return "conv-dense"
    if op in ("MatMul", "Gemm"):
        has_weight = _weight_shape(facts, node, 1) is not None
        return "matmul-weight" if has_weight else "matmul-activation"
    return op


def fused_epilogues(facts: GraphFacts) -> dict[str, str]:
    """Float nodes onnxruntime's CPU optimizer folds into a neighbour's kernel -> that neighbour.

    Conv/Gemm + activation (FusedConv/FusedGemm, NCHWc Conv), Conv + Add (+ activation) (NCHWc
    Conv with Sum), Add + LayerNormalization (SkipLayerNormalization), Add + Gelu (BiasGelu),
    MatMul + Div by a constant (FusedMatMul scale). Only when the intermediate has one consumer.
    """
    fused: dict[str, str] = {}

    def single_consumer(tensor: str) -> bool:
        return len(facts.consumers.get(tensor, [])) == 1

    for node in sorted(facts.op, key=facts.order.get):
        op = facts.op[node]
        ins = facts.inputs[node]
        srcs = [facts.producer.get(t) for t in ins]

        def root(n: str | None) -> str | None:
            return fused.get(n, n) if n else None

        if op in ACTIVATIONS and srcs and srcs[0] and single_consumer(ins[0]):
            base = root(srcs[0])
            if facts.op.get(base) in KERNEL_PRODUCERS:
                fused[node] = base
        elif op == "Add" and len(ins) == 2:
            for tensor, src in zip(ins, srcs):
                base = root(src)
                if base and facts.op.get(base) == "Conv" and single_consumer(tensor):
                    fused[node] = base
                    break
        elif op == "Div" and srcs and srcs[0] and facts.op.get(srcs[0]) == "MatMul" and single_consumer(ins[0]) \
                and len(ins) > 1 and (ins[1] in facts.init_shapes or facts.op.get(facts.producer.get(ins[1])) == "Constant"):
            fused[node] = srcs[0]
    for node in facts.op:  # Add feeding LayerNormalization / Gelu: one kernel with it
        if facts.op[node] in ("LayerNormalization", "Gelu"):
            src = facts.producer.get(facts.inputs[node][0])
            if src and facts.op[src] == "Add" and src not in fused and single_consumer(facts.inputs[node][0]):
                fused[src] = node
    return fused


# ---------------------------------------------------- measured time per model node


_ORT_BASE = {"FusedConv": "Conv", "QLinearConv": "Conv", "NhwcFusedConv": "Conv", "FusedGemm": "Gemm", "QGemm": "Gemm",
             "FusedMatMul": "MatMul", "QLinearMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul",
             "SkipLayerNormalization": "LayerNormalization", "BiasGelu": "Gelu", "QLinearAdd": "Add",
             "QLinearSoftmax": "Softmax", "QLinearMul": "Mul", "QLinearGlobalAveragePool": "GlobalAveragePool",
             "QLinearAveragePool": "AveragePool", "QLinearConcat": "Concat", "QLinearSigmoid": "Sigmoid",
             "ReorderInput": "(NCHWc reorder)", "ReorderOutput": "(NCHWc reorder)"}


def map_kernel(op: dict, facts: GraphFacts, fused: dict[str, str]) -> str | None:
    """The model node an onnxruntime kernel stands for (the root of a fused group), if known."""
    candidates = list(op.get("source_nodes") or [])
    name = op["node"]
    stem = re.sub(r"^fused ", "", name).split("/")[0]
    stem = re.sub(r"(_nchwc|_token_\d+|_fused)+$", "", stem)
    candidates.append(stem)
    for cand in candidates:
        node = cand if cand in facts.op else facts.producer.get(cand)  # NCHWc kernels are named by output
        if node is not None:
            return fused.get(node, node)
    return None


# ---------------------------------------------------------- kernels as onnxruntime runs them


@dataclass
class KernelGroup:
    """One kernel as onnxruntime runs it: a model node plus the epilogues fused into it."""

    root: str
    cls: str  # kernel_class of the root
    dtype: str
    macs: int
    est_ms: float  # edgeopt's estimate of the root and its epilogues
    measured_ms: float  # the profiler's kernel time
    corrected_ms: float  # scaled by profiler_scale
    bytes: int  # bytes the root node reads and writes (edgeopt's count)


def per_op_ms(model: Model) -> dict[str, float]:
    """Measured kernel ms per onnxruntime kernel name (profiler totals / calls, as edgeopt divides)."""
    m = model.report["measurements"]["host"][0]
    return {op["node"]: op["total_us"] / 1000 / max(1, m["runs"] + 1 + m["warmup"]) for op in m["per_op"] or []}


def profiler_scale(model: Model, run_overhead_us: float) -> float:
    """Factor (<= 1) that brings the profiled kernel times down to the unprofiled p50 (less the
    per-run overhead): onnxruntime's profiler slows the kernels themselves, not only the gaps."""
    times = per_op_ms(model)
    if not times or model.unprofiled_p50_ms is None:
        return 1.0
    return min(1.0, max(model.unprofiled_p50_ms - run_overhead_us / 1000, 0.0) / sum(times.values()))


def kernel_groups(model: Model, facts: GraphFacts, run_overhead_us: float
                  ) -> tuple[list[KernelGroup], dict[str, tuple[float, float]]]:
    """The model's kernels with estimate and measurement, and (measured, corrected) ms of the
    onnxruntime kernels that map to no node, by op type."""
    fused = fused_epilogues(facts)
    nodes = {n["name"]: n for n in model.report["estimates"]["host"]["nodes"]}
    scale = profiler_scale(model, run_overhead_us)
    groups: dict[str, KernelGroup] = {}
    for n in nodes.values():
        if not n["time_us"]:
            continue
        root = fused.get(n["name"], n["name"])
        if root not in groups:
            node = nodes[root]
            dtype = "int8" if node["execution_dtype"] == "int8" else (node["execution_dtype"] or "?")
            groups[root] = KernelGroup(root, kernel_class(facts, root), dtype, 0, 0.0, 0.0, 0.0,
                                       node["bytes_read"] + node["bytes_written"])
        groups[root].est_ms += n["time_us"] / 1000
        groups[root].macs += n["macs"] or 0
    unmapped: dict[str, tuple[float, float]] = {}
    kernels = {op["node"]: op for op in model.report["measurements"]["host"][0]["per_op"] or []}
    for kernel, ms in per_op_ms(model).items():
        root = map_kernel(kernels[kernel], facts, fused)
        if root is not None and root in groups:
            groups[root].measured_ms += ms
            groups[root].corrected_ms += ms * scale
        else:
            ort_op = kernels[kernel].get("op_type") or "?"
            op = _ORT_BASE.get(ort_op, ort_op)
            meas, corr = unmapped.get(op, (0.0, 0.0))
            unmapped[op] = (meas + ms, corr + ms * scale)
    return list(groups.values()), unmapped


FIT_MIN_MACS = 500_000
FITTED_CLASSES = ("conv-dense", "conv-depthwise", "conv-pointwise", "matmul-weight", "matmul-activation")


def fit_efficiency(groups: dict[int, list[KernelGroup]], peaks: dict[str, float], overhead_us: float,
                   exclude: int | None = None) -> dict[tuple[str, str], float]:
    """Fraction of the dtype's peak each MAC-heavy kernel class reaches inside the models (all but
    ``exclude``): sum of 2·MACs / peak over sum of (corrected kernel time - node overhead), over the
    kernels with at least FIT_MIN_MACS MACs (tiny ones are overhead) and 0.5 MAC per byte moved
    (matrix-vector products stream their weights: bandwidth, not efficiency)."""
    work: dict[tuple[str, str], list[float]] = {}
    for key, rows in groups.items():
        if key == exclude:
            continue
        for g in rows:
            if g.cls in FITTED_CLASSES and g.macs >= FIT_MIN_MACS and g.macs >= 0.5 * g.bytes \
                    and g.dtype in peaks and g.corrected_ms > 0:
                acc = work.setdefault((g.cls, g.dtype), [0.0, 0.0])
                acc[0] += 2 * g.macs / peaks[g.dtype]
                acc[1] += max(g.corrected_ms / 1000 - overhead_us * 1e-6, 1e-7)
    return {k: ideal / spent for k, (ideal, spent) in work.items()}


# ------------------------------------------------------------------ what-if pricing


@dataclass
class WhatIf:
    """Changes to the per-node roofline; each switch is one proposed change."""

    overhead: bool = False  # node overhead -> Constants.node_overhead_us, plus a per-run overhead
    fusion: bool = False  # epilogues onnxruntime fuses cost nothing
    gather: bool = False  # Gather reads only the rows it gathers, not its whole data input
    bandwidth: bool = False  # bandwidth by working set (caches) instead of one DRAM figure
    conv: bool = False  # Conv efficiency per class (dense / depthwise / 1x1) and dtype
    matmul: bool = False  # MatMul/Gemm efficiency per class (with a weight / two activations) and dtype
    elementwise: bool = False  # Gelu/Softmax/LayerNorm...: ns per element, not bytes / bandwidth
    lstm: bool = False  # LSTM as one X·W GEMM + seq x (R re-read per step + a step overhead)

    @classmethod
    def all(cls) -> WhatIf:
        return cls(**{name: True for name in cls.__dataclass_fields__})


@dataclass
class Constants:
    node_overhead_us: float
    run_overhead_us: float
    efficiency: dict[tuple[str, str], float]  # (kernel class, dtype) -> fraction of the dtype's peak


# op type -> the microbenchmarked kernel whose ns/element prices it
_PER_ELEMENT = {"Gelu": "Gelu", "BiasGelu": "Gelu", "FastGelu": "Gelu", "Erf": "Gelu", "Tanh": "Gelu",
                "Sigmoid": "Gelu", "Exp": "Gelu", "Softmax": "Softmax", "LogSoftmax": "Softmax",
                "LayerNormalization": "LayerNormalization", "SkipLayerNormalization": "LayerNormalization"}


def bandwidth_for(micro: Micro, working_set: int, dram: float) -> float:
    """The read bandwidth measured at the smallest working set that holds ``working_set`` (else ``dram``)."""
    for size, bw in micro.bandwidth:
        if working_set <= size:
            return bw
    return dram


def price(model: Model, facts: GraphFacts, micro: Micro, what: WhatIf, dram: float, consts: Constants
          ) -> tuple[float, dict[str, float]]:
    """Total ms and per-node µs of the model under the what-if changes (``dram``: the target's bandwidth).

    Everything switched off reproduces edgeopt's own estimate (checked in ``report``)."""
    est = model.report["estimates"]["host"]
    fused = fused_epilogues(facts) if what.fusion else {}
    per_node: dict[str, float] = {}
    for n in est["nodes"]:
        if n["time_us"] is None or n["role"] not in ("compute", "qdq"):
            continue
        if n["name"] in fused:
            per_node[n["name"]] = 0.0
            continue
        peak, eff = n["peak_ops_per_s"], n["efficiency"] or 1.0
        overhead = consts.node_overhead_us if what.overhead else n["overhead_us"]
        macs = n["macs"] or 0
        dtype = "int8" if n["execution_dtype"] == "int8" else "fp32"
        cls = kernel_class(facts, n["name"])
        bytes_total = n["bytes_read"] + n["bytes_written"]
        if what.gather and n["op_type"] == "Gather":
            bytes_total = 2 * n["bytes_written"]  # the rows it gathers + what it writes, not the whole table
        bw = bandwidth_for(micro, bytes_total, dram) if what.bandwidth else dram
        memory_us = bytes_total / bw * 1e6
        if macs and ((what.conv and cls.startswith("conv-")) or (what.matmul and cls.startswith("matmul-"))):
            eff = consts.efficiency.get((cls, dtype), eff)
        compute_us = 2 * macs / (peak * eff) * 1e6 if macs and peak else 0.0
        if what.elementwise and n["op_type"] in _PER_ELEMENT:
            elements = n["bytes_written"] / (4 if dtype == "fp32" else 1)
            compute_us = elements * micro.ns_per_element[_PER_ELEMENT[n["op_type"]]] / 1000
        if what.lstm and n["op_type"] == "LSTM" and macs:
            hidden = int(facts.attrs[n["name"]].get("hidden_size", 0))
            w = _weight_shape(facts, n["name"], 1)  # W: [directions, 4·hidden, input]
            if hidden and w:
                dirs, rows, inp = w
                seq = macs // (dirs * rows * (inp + hidden))
                fixed, rate = micro.kernels.get(("matmul-weight", "fp32"), (0.0, peak * eff))
                xw_us = fixed + 2 * seq * dirs * rows * inp / rate * 1e6
                r_bytes = rows * hidden * 4  # R (fp32), read once per step
                step_us = r_bytes / bandwidth_for(micro, r_bytes, dram) * 1e6 + micro.node_overhead_us
                compute_us = xw_us + seq * dirs * step_us
                memory_us = 0.0
        copies_us = n.get("layout_copy_us") or 0.0  # NCHWc reorders edgeopt prices on x86, kept as they are
        per_node[n["name"]] = max(compute_us, memory_us) + overhead + (copies_us + overhead if copies_us else 0.0)
    total_ms = sum(per_node.values()) / 1000
    if what.overhead:
        total_ms += consts.run_overhead_us / 1000
    return total_ms, per_node


# ------------------------------------------------------------------------ reporting


def measured_p50(model: Model) -> float:
    return model.report["comparisons"][0]["total"]["measured_ms"]


def save(models: list[Model], micro: Micro, targets: Path, keep: Path, meta: dict) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    index = []
    for model in models:
        name = f"{model.key}_{model.variant}"
        shutil.copy(model.path, keep / f"{name}.onnx")
        (keep / f"{name}.profile.json").write_text(json.dumps(model.report, indent=1))
        index.append({"key": model.key, "label": model.label, "variant": model.variant, "file": f"{name}.onnx",
                      "unprofiled_p50_ms": model.unprofiled_p50_ms})
    shutil.copy(targets / "host.toml", keep / "host.toml")
    micro_json = {**micro.__dict__, "kernels": [[k[0], k[1], *v] for k, v in micro.kernels.items()]}
    (keep / "run.json").write_text(json.dumps({"models": index, "micro": micro_json, **meta}, indent=1))


def load(keep: Path) -> tuple[list[Model], Micro, dict]:
    run = json.loads((keep / "run.json").read_text())
    models = []
    for row in run["models"]:
        model = Model(row["key"], row["label"], row["variant"], keep / row["file"],
                      unprofiled_p50_ms=row["unprofiled_p50_ms"])
        model.report = json.loads((keep / row["file"].replace(".onnx", ".profile.json")).read_text())
        models.append(model)
    m = run["micro"]
    micro = Micro(m["run_overhead_us"], m["node_overhead_us"], [tuple(x) for x in m["bandwidth"]],
                  {(c, d): (fixed, rate) for c, d, fixed, rate in m["kernels"]}, m["ns_per_element"], m["shapes"])
    return models, micro, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2, help="profile runs per model; the least disturbed is kept")
    parser.add_argument("--jobs", type=int, default=2, help="parallel `edgeopt convert` processes")
    parser.add_argument("--keep", type=Path, help="keep the models, profile JSON and microbenchmarks here")
    parser.add_argument("--reuse", type=Path, help="only print the tables again from a --keep folder")
    args = parser.parse_args()
    started = time.perf_counter()
    import onnxruntime

    if args.reuse:
        models, micro, run = load(args.reuse)
        report(models, micro, args.reuse, run["runs"], run["repeats"], run["load_start"], run["load_end"],
               run["onnxruntime"], run["elapsed_s"])
        return
    tmp = tempfile.mkdtemp(prefix="edgeopt-estimate-")
    work = Path(tmp)
    try:
        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        log("calibrating host (1 thread)")
        targets = work / "targets"
        checked(edgeopt("targets", "calibrate", "host", "--output-dir", str(targets), "--threads", "1"), "calibrate")
        log("microbenchmarks for the what-if columns")
        micro = run_micro()

        models_file = work / "models.py"
        models_file.write_text(TORCH_MODELS)
        models: list[Model] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            fp32 = dict(zip([s.key for s in SPECS], pool.map(lambda s: build(s, models_file, work), SPECS)))
            int8_specs = [s for s in SPECS if s.calib is not None or s.calib_file is not None]
            int8 = dict(zip([s.key for s in int8_specs],
                            pool.map(lambda s: build_int8(s, fp32[s.key].path, work), int8_specs)))
        for spec in SPECS:
            models.append(fp32[spec.key])
            if spec.key in int8:
                models.append(int8[spec.key])
        for model in models:
            log(f"profiling {model.key} {model.variant}")
            profile(model, targets, args.runs, args.repeats)
        load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        elapsed = time.perf_counter() - started
        if args.keep:
            save(models, micro, targets, args.keep,
                 {"runs": args.runs, "repeats": args.repeats, "load_start": load_start, "load_end": load_end,
                  "onnxruntime": onnxruntime.__version__, "elapsed_s": elapsed})
        report(models, micro, targets, args.runs, args.repeats, load_start, load_end, onnxruntime.__version__,
               elapsed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(models: list[Model], micro: Micro, targets: Path, runs: int, repeats: int, load_start: float,
           load_end: float, ort_version: str, elapsed_s: float) -> None:
    import tomllib

    host = tomllib.loads((targets / "host.toml").read_text())
    peaks = host["peak_ops_per_s"]
    dram = host["memory_bandwidth_bytes_per_s"]
    facts = {id(m): graph_facts(m.path) for m in models}
    node_overhead = models[0].report["estimates"]["host"]["node_overhead_us"]
    none = Constants(node_overhead, 0.0, {})
    for m in models:  # the what-if arithmetic with every switch off is edgeopt's estimate
        mine = price(m, facts[id(m)], micro, WhatIf(), dram, none)[0]
        theirs = m.report["estimates"]["host"]["latency_ms"]
        assert abs(mine - theirs) <= 1e-6 * max(theirs, 1e-3), (m.key, m.variant, mine, theirs)
    groups, unmapped = {}, {}
    for m in models:
        groups[id(m)], unmapped[id(m)] = kernel_groups(m, facts[id(m)], micro.run_overhead_us)
    off = [m.unprofiled_p50_ms or float("nan") for m in models]

    def constants(overhead_us: float, exclude: int | None) -> Constants:
        return Constants(overhead_us, micro.run_overhead_us, fit_efficiency(groups, peaks, overhead_us, exclude))

    def errors(what: WhatIf, overhead_us: float, leave_one_out: bool = False) -> list[float]:
        """Absolute % errors vs the unprofiled p50; efficiencies fitted on all models, or (leave one
        model out) on the other models only."""
        fitted = constants(overhead_us, None)
        return [abs_err(price(m, facts[id(m)], micro, what, dram,
                              constants(overhead_us, id(m)) if leave_one_out else fitted)[0], x)
                for m, x in zip(models, off)]

    # A tiny kernel's dispatch costs ~0.2-0.4 µs, but real kernels also pay setup (NCHWc blocking,
    # packing, requantization, output allocation) that the efficiencies do not model; the sweep at the
    # end shows the error against the overhead: edgeopt's 2 µs is kept.
    overhead_us = node_overhead
    everything = WhatIf.all()
    fitted_all = constants(overhead_us, None)

    print(f"{machine_line()}; onnxruntime {ort_version}, "
          f"Python {platform.python_version()}; 1 intra-op thread; load average {load_start:.2f} at start, "
          f"{load_end:.2f} at end\n")
    eff = ", ".join(f"{k} {v:g}" for k, v in host.get("efficiency", {}).items())
    print(f"Calibrated host (`edgeopt targets calibrate host --threads 1`): fp32 {peaks['fp32'] / 1e9:.1f} GOPS, "
          f"int8 {peaks.get('int8', 0) / 1e9:.1f} GOPS, memory {dram / 1e9:.1f} GB/s; efficiency {eff}; "
          f"node overhead {node_overhead:g} µs.  ")
    print(f"Measured: `edgeopt profile -t host --measure --threads 1 --runs {runs}` (best of {repeats} by mean): "
          "*measured ms* is `comparisons[0].total.measured_ms`, the p50 of the runner's timed runs (profiler off; per-op times come from a separate profiled pass). "
          "*profiler off* is the same runner (`edgeopt/runtime/device_runner.py`) without `--profile`, "
          f"best p50 of {repeats}. int8 = `edgeopt convert --quantize static --force-int8 --min-cosine 0` "
          "(QDQ u8/s8 per-channel). *what-if* = all the changes of the last table, efficiencies fitted on these "
          "models (in-sample; the leave-one-model-out figure is given below the table).\n")

    # ---- table 1: per model
    print("| model | variant | MACs | estimated ms | measured ms | est/meas | abs error % | measured ms, profiler off "
          "| est/meas (off) | abs error % (off) | what-if ms | what-if/meas (off) | what-if abs error % (off) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    err_on, err_off, what_on, what_off = [], [], [], []
    for m, x_off in zip(models, off):
        total = m.report["comparisons"][0]["total"]
        est, meas = total["estimated_ms"], total["measured_ms"]
        what_ms = price(m, facts[id(m)], micro, everything, dram, fitted_all)[0]
        err_on.append(abs_err(est, meas))
        err_off.append(abs_err(est, x_off))
        what_on.append(abs_err(what_ms, meas))
        what_off.append(abs_err(what_ms, x_off))
        print(f"| {m.label} | {m.variant} | {fmt_count(m.report['estimates']['host']['macs_total'])} | {fmt_ms(est)} | "
              f"{fmt_ms(meas)} | {fmt_ratio(est / meas)} | {err_on[-1]:.0f} | {fmt_ms(x_off)} | "
              f"{fmt_ratio(est / x_off)} | {err_off[-1]:.0f} | {fmt_ms(what_ms)} | {fmt_ratio(what_ms / x_off)} | "
              f"{what_off[-1]:.0f} |")

    def summary(errs: list[float]) -> str:
        fp32 = [e for e, m in zip(errs, models) if m.variant == "fp32"]
        int8 = [e for e, m in zip(errs, models) if m.variant == "int8"]
        return (f"{statistics.median(errs):.0f}% (fp32 {statistics.median(fp32):.0f}%, int8 "
                f"{statistics.median(int8):.0f}%; worst {max(errs):.0f}%)")

    print(f"\n**Median absolute error of edgeopt's estimate vs `comparisons[0]` (runner p50): {summary(err_on)}** "
          f"over {len(models)} models.  ")
    print(f"Median absolute error of edgeopt's estimate vs the p50 with the profiler off: {summary(err_off)}.  ")
    loo = errors(everything, overhead_us, leave_one_out=True)
    print(f"What-if (this script's arithmetic, in-sample): vs profiler off {summary(what_off)}; vs profiler on "
          f"{statistics.median(what_on):.0f}%. With each model's efficiencies fitted on the other models only: "
          f"{summary(loo)}.\n")

    # ---- table 1b: what the profiler costs
    print("What onnxruntime's profiler adds to the runs `comparisons[0]` is built from: kernels run per inference, "
          "the sum of their profiled times (edgeopt's per-op figures: total / (runs + warm-up + 1), so the first "
          "run's one-time costs are in them), and the p50 with and without the profiler. *kernel-time scale* brings "
          "the kernel times down to the unprofiled p50; the per-class table below uses it.\n")
    print("| model | variant | kernels | kernel sum ms (profiler) | p50 ms profiler on | p50 ms profiler off "
          "| on/off | profiler cost µs per kernel | kernel-time scale |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m, x_off in zip(models, off):
        times = per_op_ms(m)
        on = measured_p50(m)
        print(f"| {m.label} | {m.variant} | {len(times)} | {fmt_ms(sum(times.values()))} | {fmt_ms(on)} | "
              f"{fmt_ms(x_off)} | {fmt_ratio(on / x_off)} | {(on - x_off) / max(len(times), 1) * 1000:.1f} | "
              f"{profiler_scale(m, micro.run_overhead_us):.2f} |")

    # ---- table 2: per op type as edgeopt reports it
    est_by: dict[str, float] = {}
    meas_by: dict[str, float] = {}
    seen_in: dict[str, set] = {}
    for m in models:
        for op, row in m.report["comparisons"][0]["by_op_type"].items():
            est_by[op] = est_by.get(op, 0.0) + row["estimated_ms"]
            meas_by[op] = meas_by.get(op, 0.0) + row["measured_ms"]
            seen_in.setdefault(op, set()).add(f"{m.key}/{m.variant}")
    print("\nPer op type, as `comparisons[0].by_op_type` reports it, summed over all models (measured = onnxruntime "
          "profiler kernel time per run, averaged over all runs incl. warm-up; kernels that onnxruntime fused and "
          "renamed, and whose name edgeopt does not map back, keep onnxruntime's op type):\n")
    print("| op type | models | estimated ms | measured ms | est/meas |")
    print("|---|---:|---:|---:|---:|")
    for op in sorted(est_by, key=lambda k: -max(est_by[k], meas_by[k])):
        ratio = est_by[op] / meas_by[op] if meas_by[op] > 0 else None
        print(f"| {op} | {len(seen_in[op])} | {fmt_ms(est_by[op])} | {fmt_ms(meas_by[op])} | "
              f"{fmt_ratio(ratio) if ratio is not None else 'no kernel (fused)'} |")
    print(f"| **total** | {len(models)} | {fmt_ms(sum(est_by.values()))} | {fmt_ms(sum(meas_by.values()))} | "
          f"{fmt_ratio(sum(est_by.values()) / sum(meas_by.values()))} |")

    # ---- table 3: per kernel class, fusion-aware
    rows: dict[tuple[str, str], dict] = {}

    def row_for(key: tuple[str, str]) -> dict:
        return rows.setdefault(key, {"n": 0, "est": 0.0, "what": 0.0, "meas": 0.0, "corr": 0.0, "macs": 0.0,
                                     "models": set()})

    for m in models:
        f = facts[id(m)]
        fused = fused_epilogues(f)
        what_nodes = price(m, f, micro, everything, dram, fitted_all)[1]
        what_by_root: dict[str, float] = {}
        for name, us in what_nodes.items():
            root = fused.get(name, name)
            what_by_root[root] = what_by_root.get(root, 0.0) + us / 1000
        for g in groups[id(m)]:
            row = row_for((g.cls, g.dtype))
            row["n"] += 1
            row["est"] += g.est_ms
            row["what"] += what_by_root.get(g.root, 0.0)
            row["meas"] += g.measured_ms
            row["corr"] += g.corrected_ms
            row["macs"] += g.macs
            row["models"].add(id(m))
        for op, (meas, corr) in unmapped[id(m)].items():
            row = row_for((f"{op} (kernels not mapped to a node)", "-"))
            row["meas"] += meas
            row["corr"] += corr
            row["models"].add(id(m))
    print("\nPer kernel class, fusion-aware: onnxruntime's kernels mapped back to the model node they implement "
          "(NCHWc and fused kernels are named after their output tensor), with the estimates of the epilogues they "
          "absorb (Conv+Clip/Relu, Conv+Add, Gemm+Relu, Add+LayerNorm, Add+Gelu, MatMul+Div) added to that node. "
          "*measured* is the profiler's kernel time; *corrected* is that times the model's kernel-time scale "
          "(last column above). *in models* = sum of 2·MACs / peak over sum of (corrected time - node overhead) "
          f"for the class's kernels with >= {FIT_MIN_MACS / 1e6:g}M MACs and >= 0.5 MAC/byte, as a fraction of the "
          "calibrated peak of the dtype (the fitted efficiency the what-if uses); *isolated* = the same class in a "
          "chain of identical kernels (microbenchmark, larger shape), as a fraction of the same peak.\n")
    print("| kernel class | dtype | kernels | models | estimated ms | what-if ms | measured ms | corrected ms "
          "| est/corrected | what-if/corrected | of peak, in models | of peak, isolated |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (cls, dtype), row in sorted(rows.items(), key=lambda kv: -kv[1]["corr"]):
        fitted = fitted_all.efficiency.get((cls, dtype))
        isolated = micro.kernels.get((cls, dtype))
        print(f"| {cls} | {dtype} | {row['n'] or '-'} | {len(row['models'])} | {fmt_ms(row['est'])} | "
              f"{fmt_ms(row['what'])} | {fmt_ms(row['meas'])} | {fmt_ms(row['corr'])} | "
              f"{fmt_ratio(row['est'] / row['corr']) if row['corr'] else '-'} | "
              f"{fmt_ratio(row['what'] / row['corr']) if row['corr'] else '-'} | "
              f"{'-' if fitted is None else f'{fitted:.2f}'} | "
              f"{'-' if isolated is None else f'{isolated[1] / peaks[dtype]:.2f}'} |")

    # ---- table 4: what-if ablation
    def mib(size: int) -> str:
        return f"{size / (1 << 20):g} MiB"

    def effs(prefix: str) -> str:
        return ", ".join(f"{cls.split('-', 1)[1]} {dtype} {fitted_all.efficiency[(cls, dtype)]:.2f}"
                         for cls in FITTED_CLASSES for dtype in ("fp32", "int8")
                         if cls.startswith(prefix) and (cls, dtype) in fitted_all.efficiency)

    changes = [
        ("overhead", f"node overhead kept at {overhead_us:g} µs (a tiny kernel's dispatch alone measures "
                     f"{micro.node_overhead_us:.2f} µs; see the sweep below), plus {micro.run_overhead_us:.1f} µs "
                     "per run (session.run of a one-node model)"),
        ("fusion", "activations/Add/Div that onnxruntime fuses into Conv, Gemm, MatMul, LayerNorm, Gelu cost 0"),
        ("gather", "Gather reads the rows it gathers (its output size), not its whole data input (the embedding "
                   "table)"),
        ("bandwidth", "read bandwidth by working set (" + ", ".join(f"≤{mib(size)} {b / 1e9:.0f} GB/s"
                                                                   for size, b in micro.bandwidth)
                      + f", beyond: {dram / 1e9:.0f} GB/s) instead of the calibrated {dram / 1e9:.0f} GB/s copy"),
        ("conv", f"Conv efficiency (of the dtype's peak): {effs('conv')}"),
        ("matmul", f"MatMul/Gemm efficiency: {effs('matmul')}"),
        ("elementwise", "per output element: " + ", ".join(f"{k} {v:.2f} ns" for k, v in micro.ns_per_element.items())
                        + " (Erf/Tanh/Sigmoid/Exp as Gelu)"),
        ("lstm", "LSTM = X·W as one GEMM + per step and direction: R (4h·h·4 B) read at the working-set "
                 f"bandwidth + {micro.node_overhead_us:.2f} µs"),
    ]
    print("\nWhat-if, one change at a time: median absolute error of the total against the p50 with the profiler off "
          "(the latency a user gets). *alone*: only this change on top of edgeopt's model; *all but*: every other "
          "change. Efficiencies are fitted on these models (table above); bandwidths, the per-run overhead and the "
          "ns/element figures are microbenchmarks run by this script.\n")
    print("| change | constants | median abs error, alone | median abs error, all but this |")
    print("|---|---|---:|---:|")
    print(f"| none (edgeopt as is) | | {statistics.median(err_off):.0f}% | |")
    for name, text in changes:
        alone = WhatIf(**{name: True})
        but = WhatIf(**{k: k != name for k in WhatIf.__dataclass_fields__})
        print(f"| {name} | {text} | {statistics.median(errors(alone, overhead_us)):.0f}% | "
              f"{statistics.median(errors(but, overhead_us)):.0f}% |")
    print(f"| all | | {statistics.median(what_off):.0f}% | |")
    print(f"| all, leave one model out | efficiencies for each model fitted on the other models | "
          f"{statistics.median(loo):.0f}% | |")
    sweep = []
    for value in (0.25, 0.5, 1.0, 2.0, 3.0):
        errs = errors(everything, value)
        sweep.append(f"{value:g} µs: {statistics.median(errs):.0f}% (worst {max(errs):.0f}%)")
    print("\nNode overhead with every other change on (efficiencies refitted for each value): " + "; ".join(sweep)
          + ".")
    isolated = "; ".join(f"{cls} {dtype} {fixed:.1f} µs + {rate / 1e9:.0f} GOPS"
                         for (cls, dtype), (fixed, rate) in micro.kernels.items())
    print(f"\nIsolated-kernel microbenchmarks (fixed µs + rate, from a small and a large shape): {isolated}. "
          "Shapes: " + "; ".join(f"{k}: {v}" for k, v in micro.shapes.items()) + ".")
    print(f"\nTotal runtime {elapsed_s:.0f} s (calibration, microbenchmarks, builds and measurements).")


if __name__ == "__main__":
    main()
