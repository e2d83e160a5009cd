#!/usr/bin/env python
"""Latency of what `edgeopt convert` hands back, beside the plain alternatives.

For each model: PyTorch eager, onnxruntime on the raw exporter output (OUT/export.onnx)
and onnxruntime on edgeopt's final model (OUT/model.onnx, simplified). Runs are
interleaved (A, B, C, A, B, C, ...) so drift hits all three alike; medians and ratios
are printed. One intra-op thread, batch 1, CPU.

    python benchmarks/export_latency.py [--runs 300]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]

MOBILENET_LIKE = '''
import torch
from torch import nn


def block(cin, cout, stride, expand):
    hidden = cin * expand
    return nn.Sequential(
        nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))


class MobileNetLike(nn.Module):
    """MobileNetV2-style inverted residuals at 96x96 (random weights: latency does not care)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(block(16, 24, 2, 6), block(24, 32, 2, 6), block(32, 64, 2, 6),
                                    block(64, 96, 1, 6), block(96, 160, 2, 6))
        self.head = nn.Linear(160, 10)

    def forward(self, image):
        x = self.blocks(self.stem(image))
        return self.head(x.mean(dim=(2, 3)))


def build():
    torch.manual_seed(0)
    model = MobileNetLike().eval()
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model
'''


def convert(factory: str, weights: str | None, shape: str, out: Path) -> None:
    command = [sys.executable, "-m", "edgeopt", "convert", factory, "--input-shape", shape, "-o", str(out)]
    if weights:
        command += ["--weights", weights]
    subprocess.run(command, check=True, capture_output=True)


def load_factory(spec: str):
    import importlib.util

    file, func = spec.rsplit(":", 1)
    module_spec = importlib.util.spec_from_file_location(f"bench_{abs(hash(file))}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, func)()


def measure(name: str, factory: str, weights: str | None, shape: str, runs: int, work: Path) -> list[str]:
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    out = work / name
    convert(factory, weights, shape, out)
    model = load_factory(factory)
    if weights:
        model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    dims = tuple(int(d) for d in shape.split("=")[1].split("x"))
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {
        label: ort.InferenceSession(str(out / file), options, providers=["CPUExecutionProvider"])
        for label, file in (("raw export", "export.onnx"), ("edgeopt", "model.onnx"))
    }
    xt = torch.from_numpy(x)
    candidates = {
        "torch eager": lambda: model(xt),
        "raw export": lambda: sessions["raw export"].run(None, {"image": x}),
        "edgeopt": lambda: sessions["edgeopt"].run(None, {"image": x}),
    }
    times: dict[str, list[float]] = {label: [] for label in candidates}
    with torch.inference_mode():
        for _ in range(20):  # warm-up
            for fn in candidates.values():
                fn()
        for _ in range(runs):
            for label, fn in candidates.items():
                start = time.perf_counter()
                fn()
                times[label].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times["torch eager"])
    rows = []
    for label, samples in times.items():
        median = statistics.median(samples)
        rows.append(f"| {name} | {label} | {median:.3f} | {np.percentile(samples, 90):.3f} | {median / base:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    digits = REPO / "models" / "digits"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "mobilenet_like.py").write_text(MOBILENET_LIKE)
        rows = measure("digits CNN (1x1x8x8)", f"{digits / 'model.py'}:build_model", str(digits / "digits_cnn.pt"),
                       "image=1x1x8x8", args.runs, work)
        rows += measure("MobileNetV2-like (1x3x96x96)", f"{work / 'mobilenet_like.py'}:build", None,
                        "image=1x3x96x96", args.runs, work)
    print(machine_line())
    print(f"{args.runs} interleaved runs each, batch 1, 1 thread; ratio vs torch eager (lower is faster)\n")
    print("| model | runtime | median ms | p90 ms | ratio |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
