#!/usr/bin/env python
"""Fit on one set, report on a disjoint one: how far edgeopt's static estimates are from measurement.

**Fit set (in sample).** Everything the host's figures come from: the automatic host calibration
(runtime/host_calibration.py) times one-op MatMul and Conv models (peaks), two bandwidth models, the memory
probes, and one reference model per op class (runtime/class_bench.py: depthwise, 1x1, thin and narrow Convs, an
LSTM; depthwise and 1x1 in int8). The class models are priced here with the fitted figures and measured again:
their error is the in-sample error, what the fit itself leaves.

**Validation set (out of sample, disjoint from the fit set).** Models nothing was fitted on:
- the real-model zoo of the quantization issue (benchmarks/zoo.py: six published ONNX models from PyPI wheels,
  generated inputs);
- seven more published models from PyPI wheels, for the estimate only (zoo.ESTIMATE_ONLY: silero-vad's voice
  detectors, a YOLOv8n detector, PP-OCRv4's detector, recognizer and direction classifier), inputs sized and
  filled on the command line;
- the int8 models `edgeopt convert` made of the zoo in benchmarks/real_models.py's last run under the same
  WORKDIR, where it left them (what a release pipeline profiles and gates; absent on a fresh machine);
- the bundled digits CNN (`models/digits`);
- synthetic models built here with torch (MobileNetV2 at widths 0.5 and 1.0, a ResNet-style 3x3 stack, a
  transformer encoder, a 2-layer LSTM, an MLP), fp32 and int8 QDQ (every quantizable node int8);
- the calibration's three held-out mixed models (class_bench.check_models: it times them but fits nothing on them).

The host's figures are measured once, by the automatic calibration a first use runs (or read from its cache), and
pinned for the whole run (a `host.toml` under WORKDIR/estimate/.../targets that every profile reads). Where the
fit set's median error at a thread count exceeds RECALIBRATE_AT once measured (the figures and the rows measured in
different spells of a shared machine), the figures are measured again and every row priced by the set whose fit
agrees better (static profiles, the measurements kept); the output's first line says which set priced the run.
Each model: `edgeopt profile MODEL -t host --measure --threads T --runs N --json` at one thread and at all cores
(`--repeats` passes over the whole list, minutes apart, the least disturbed run kept: lowest p50), the estimate
priced at T against the measured p50; and at one thread the estimated peak RSS increase against the measured one.
The summary gives, per set: runs within ±10% (latency) and ±15% (memory), median and 90th-percentile absolute
error. The 90th percentile of the
validation set is the band edgeopt's estimates carry on this architecture (analysis/validation.py).

    python benchmarks/estimate_accuracy.py [--runs 30] [--repeats 2] [--workdir DIR] [--json FILE]
    python benchmarks/estimate_accuracy.py --quick   # no zoo, one repeat, fp32 synthetic only: about 3 minutes

Built models are kept under WORKDIR/estimate (rebuilt when edgeopt's revision changes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zoo  # benchmarks/zoo.py
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
LATENCY_GOAL, MEMORY_GOAL = 0.10, 0.15  # issue 16: within 10% / 15% of the measurement on 90% of real models
# The fit set times the calibration's own models again: where its median latency error at a thread count exceeds
# this, the figures were measured in another spell of a shared machine than the rows (a VM's second core taken for
# minutes: one run's two-thread class figures came out 14-26% slow while its measurements were quiet, and priced
# its fit set +21..+176% at two threads). The figures are then measured again and every row priced by the set whose
# fit agrees better; the choice reads the fit set alone, never the validation rows.
RECALIBRATE_AT = 0.10
CALIB_SAMPLES = 16
MiB = 1 << 20

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
class Entry:
    name: str
    group: str  # fit | zoo | bundled | synthetic | held-out check
    path: Path
    extra: list[str]  # profile arguments: inputs, fills


@dataclass
class Synthetic:
    key: str
    label: str
    source: list[str]  # `edgeopt convert` source and shape arguments ({models} = the torch models file)
    calib: dict[str, tuple[tuple[int, ...], str]] | None  # input -> (shape per sample, dtype) for int8
    fill: list[str]


SYNTHETIC = [
    Synthetic("mbv2_050", "MobileNetV2 w0.5 96x96", ["{models}:build_mbv2_050", "--input-shape", "image=1x3x96x96"],
              {"image": ((3, 96, 96), "float32")}, []),
    Synthetic("mbv2_100", "MobileNetV2 w1.0 96x96", ["{models}:build_mbv2_100", "--input-shape", "image=1x3x96x96"],
              {"image": ((3, 96, 96), "float32")}, []),
    Synthetic("resnetish", "ResNet-ish 3x3 stack 64x64",
              ["{models}:build_resnetish", "--input-shape", "image=1x3x64x64"], {"image": ((3, 64, 64), "float32")}, []),
    # integer inputs are never random: token id 1 for parity and timing
    Synthetic("transformer", "transformer enc. 4L d256 seq64",
              ["{models}:build_transformer", "--input-shape", "input_ids=1x64", "--input-dtype", "input_ids=int64",
               "--fill", "input_ids=1"], {"input_ids": ((64,), "int64")}, ["--fill", "input_ids=1"]),
    # static int8 keeps onnxruntime's LSTM float (only the head would change): fp32 only
    Synthetic("lstm", "LSTM 2L h256 seq50", ["{models}:build_lstm", "--input-shape", "sequence=1x50x64"], None, []),
    Synthetic("mlp", "MLP 512-2048-2048-10", ["{models}:build_mlp", "--input-shape", "input=1x512"],
              {"input": ((512,), "float32")}, []),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def edgeopt(*args: str, timeout: float = 1200) -> str:
    done = subprocess.run([sys.executable, "-m", "edgeopt", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit {done.returncode}")
    return done.stdout


def calibration_data(spec: Synthetic, path: Path) -> Path:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, (shape, dtype) in spec.calib.items():
        feeds[name] = (rng.integers(0, 8000, (CALIB_SAMPLES, *shape)) if dtype == "int64"
                       else rng.standard_normal((CALIB_SAMPLES, *shape))).astype(dtype)
    np.savez(path, **feeds)
    return path


def build_synthetic(work: Path, int8: bool) -> list[Entry]:
    models_file = work / "torch_models.py"
    models_file.write_text(TORCH_MODELS)
    entries = []
    for spec in SYNTHETIC:
        fp32 = work / spec.key / "model.onnx"
        if not fp32.exists():
            log(f"building {spec.key}")
            edgeopt("convert", *[a.format(models=models_file) for a in spec.source], "-o", str(fp32.parent))
        entries.append(Entry(spec.label + " fp32", "synthetic", fp32, spec.fill))
        if int8 and spec.calib is not None:
            q = work / f"{spec.key}_int8" / "model.onnx"
            if not q.exists():
                log(f"building {spec.key} int8")
                calib = calibration_data(spec, work / f"{spec.key}_calib.npz")
                # --min-cosine 0: every quantizable node int8, the case the int8 cost model prices
                edgeopt("convert", str(fp32), "--calib", str(calib), "--quantize", "static", "--force-int8",
                        "--min-cosine", "0", "-o", str(q.parent))
            entries.append(Entry(spec.label + " int8", "synthetic", q, spec.fill))
    return entries


def build_digits(work: Path) -> list[Entry]:
    entries = [Entry("digits CNN fp32", "bundled", DIGITS / "digits_cnn.onnx", [])]
    q = work / "digits_int8" / "model.onnx"
    if not q.exists():
        log("building digits int8")
        edgeopt("convert", str(DIGITS / "digits_cnn.onnx"), "--calib", str(DIGITS / "calib.npz"), "--quantize",
                "static", "--force-int8", "--min-cosine", "0", "-o", str(q.parent))
    entries.append(Entry("digits CNN int8", "bundled", q, []))
    return entries


def write_models(work: Path, models: dict[str, bytes], group: str, prefix: str) -> list[Entry]:
    entries = []
    for key, data in models.items():
        path = work / group.replace(" ", "-") / f"{prefix}{key.replace(' ', '_').replace('@', '_')}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(Entry(f"{prefix}{key}", group, path, integer_fills(data)))
    return entries


def integer_fills(data: bytes) -> list[str]:
    """``--fill`` arguments for a model's 8-bit inputs (the int8 element kinds' maps): edgeopt never fills integer
    inputs at random, and any value times these kernels alike."""
    import onnx

    return [argument for value in onnx.load_from_string(data).graph.input
            if value.type.tensor_type.elem_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
            for argument in ("--fill", f"{value.name}=3")]


def converted_int8(workdir: Path, key: str) -> Path | None:
    """The int8 model `edgeopt convert` made of a zoo model in benchmarks/real_models.py's last run under
    ``workdir`` (what a release pipeline profiles and gates), or None where that run left none or shipped float (a
    model published already quantized, kept as it came, holds no QuantizeLinear: the zoo row prices it)."""
    import onnx

    path = workdir / "runs" / "real_models" / key / "edgeopt" / "model.onnx"
    if not path.is_file():
        return None
    model = onnx.load(str(path), load_external_data=False)
    return path if any(node.op_type in ("QuantizeLinear", "QLinearConv")
                       for node in model.graph.node) else None


def pin_host_figures(work: Path, folder_name: str = "targets", fresh: bool = False) -> Path:
    """The host's figures as its automatic calibration measures them on first use here, written once into a
    targets folder that every profile of the run reads: each use of the cached entry re-checks the machine's
    speed and measures again past a 20% drift, and on a VM whose neighbours come and go that re-measurement
    lands mid-run (one priced the last rows of a run 15-26% over the figures the first rows had, its element
    and depthwise rates 20-35% slow against one taken minutes later). One set of figures for every row: the
    rows differ by the models, not by when their calibration happened."""
    import shutil

    from edgeopt.runtime.host_calibration import host_calibration_dir, host_for_estimates, machine_key
    from edgeopt.targets import load_target, target_to_toml

    folder = work / folder_name
    folder.mkdir(exist_ok=True)
    if fresh:  # measured now, not read from this machine's cached entry
        shutil.rmtree(host_calibration_dir() / machine_key(), ignore_errors=True)
    figures = host_for_estimates(load_target("host"))
    if figures.peak_ops_per_s.fp32 is None:
        raise SystemExit("the host's automatic calibration measured nothing: see `edgeopt profile MODEL` on stderr")
    (folder / "host.toml").write_text(target_to_toml(figures, "the host's automatic calibration, pinned for one "
                                                               "benchmark run"))
    return folder


def profile(entry: Entry, threads: int, runs: int, targets: Path) -> dict:
    """One `edgeopt profile --measure --json` report of the model at ``threads``, priced by the pinned figures."""
    return json.loads(edgeopt("profile", str(entry.path), "-t", "host", "--targets-dir", str(targets), "--measure",
                              "--threads", str(threads), "--runs", str(runs), "--json", *entry.extra))


def measured_row(entry: Entry, threads: int, reports: list[dict]) -> dict:
    """The least disturbed of the model's profiles (lowest measured p50): latency and, at one thread, memory."""
    p50s = [r["comparisons"][0]["total"]["measured_ms"] for r in reports]
    report = reports[p50s.index(min(p50s))]
    total = report["comparisons"][0]["total"]
    row = {"model": entry.name, "group": entry.group, "threads": threads, "estimated_ms": total["estimated_ms"],
           "measured_ms": total["measured_ms"], "latency_error": total["estimated_ms"] / total["measured_ms"] - 1,
           "repeats_spread": max(p50s) / min(p50s) - 1}
    estimate = report["estimates"]["host"].get("runtime_memory") or {}
    measured = report["measurements"]["host"][0].get("memory") or {}
    if threads == 1 and estimate.get("peak_increase_bytes") and measured.get("peak_rss_increase_bytes"):
        row.update(estimated_memory=estimate["peak_increase_bytes"], measured_memory=measured["peak_rss_increase_bytes"],
                   memory_error=estimate["peak_increase_bytes"] / measured["peak_rss_increase_bytes"] - 1)
    return row


def fit_disagreement(rows: list[dict]) -> dict[int, float]:
    """Per thread count, the fit set's median latency error (absolute): how far the figures are from a
    re-measurement of the very models they were fitted on."""
    found = {}
    for threads in sorted({r["threads"] for r in rows if r["group"] == "fit"}):
        errors = sorted(abs(r["latency_error"]) for r in rows if r["group"] == "fit" and r["threads"] == threads)
        found[threads] = errors[len(errors) // 2]
    return found


def reprice(rows: list[dict], entries: list[Entry], targets: Path) -> list[dict]:
    """``rows`` with their estimates priced again by the figures in ``targets`` (static profiles, the measurements
    kept)."""
    from concurrent.futures import ThreadPoolExecutor

    by_name = {entry.name: entry for entry in entries}

    def priced(row: dict) -> dict:
        entry = by_name[row["model"]]
        report = json.loads(edgeopt("profile", str(entry.path), "-t", "host", "--targets-dir", str(targets),
                                    "--threads", str(row["threads"]), "--json", *entry.extra))
        estimate = report["estimates"]["host"]
        again = dict(row, estimated_ms=estimate["latency_ms"],
                     latency_error=estimate["latency_ms"] / row["measured_ms"] - 1)
        peak = (estimate.get("runtime_memory") or {}).get("peak_increase_bytes")
        if "memory_error" in row and peak:
            again.update(estimated_memory=peak, memory_error=peak / row["measured_memory"] - 1)
        return again

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(priced, rows))


def summary(rows: list[dict], key: str, goal: float) -> str:
    errors = sorted(abs(r[key]) for r in rows if r.get(key) is not None)
    if not errors:
        return "-"
    within = sum(1 for e in errors if e <= goal)
    p90 = errors[min(len(errors) - 1, int(np.ceil(0.9 * len(errors))) - 1)]
    return (f"within ±{goal:.0%}: {within} of {len(errors)}; median {errors[len(errors) // 2]:.0%}; "
            f"90% within ±{p90:.0%}")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2,
                        help="profile each model this many times per thread count, keep the lowest p50")
    parser.add_argument("--quick", action="store_true", help="no zoo, no int8 synthetic models, one repeat")
    zoo.add_output_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    from edgeopt.runtime.class_bench import check_models, class_models

    revision = zoo.edgeopt_revision()  # "0.1.0 (727062f + uncommitted changes)": models built by that code
    work = args.workdir / "estimate" / ("".join(c if c.isalnum() else "-" for c in revision)).strip("-")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    entries = write_models(work, {k: data for k, (data, _ops) in class_models().items()}, "fit", "class ")
    entries += write_models(work, check_models(), "held-out check", "check ")
    entries += build_digits(work)
    entries += build_synthetic(work, int8=not args.quick)
    if not args.quick:
        for key in zoo.MODELS:
            path = zoo.model_path(key, args.workdir, log=log)
            data = zoo.data_file(key, "calib", 8, args.workdir)
            entries.append(Entry(f"{key} (zoo)", "zoo", path, ["--inputs", str(data), "--input-samples", "1"]))
            shipped = converted_int8(args.workdir, key)
            if shipped is not None:
                entries.append(Entry(f"{key} int8 (convert's)", "zoo int8", shipped,
                                     ["--inputs", str(data), "--input-samples", "1"]))
        for key, (_package, _member, arguments, _title) in zoo.ESTIMATE_ONLY.items():
            entries.append(Entry(f"{key} (published)", "published", zoo.model_path(key, args.workdir, log=log),
                                 arguments))
    log("measuring the host's figures (its automatic calibration, pinned for the run)")
    targets = pin_host_figures(work)
    cores = os.cpu_count() or 1
    # the repeats are passes over the whole list, minutes apart: a disturbance of the machine that lasts a minute
    # (a VM's second core taken for a while: two-thread runs of one model measured 0.95x and 1.37x of one thread
    # ten minutes apart) spoils one pass, and the least disturbed profile is kept
    reports: dict[tuple[int, int], list[dict]] = {}
    passes = max(1, args.repeats)
    for repeat in range(passes):
        for index, entry in enumerate(entries):
            for threads in sorted({1, cores}):
                log(f"profiling {entry.name} at {threads} thread(s), pass {repeat + 1} of {passes}")
                try:
                    reports.setdefault((index, threads), []).append(profile(entry, threads, args.runs, targets))
                except (RuntimeError, KeyError, IndexError) as exc:
                    log(f"  {entry.name}: {exc}")
    rows = []
    for (index, threads), found in sorted(reports.items()):
        if not found:  # every profile of it failed (logged above)
            continue
        try:
            rows.append(measured_row(entries[index], threads, found))
        except (KeyError, IndexError) as exc:
            log(f"  {entries[index].name}: {exc}")
    figures = "the host's figures measured at the start"
    first = fit_disagreement(rows)
    if first and max(first.values()) > RECALIBRATE_AT:
        log("the fit set disagrees with the figures (median error " + ", ".join(
            f"{error:.0%} at {threads} thread(s)" for threads, error in first.items()) + "): measuring them again")
        again = reprice(rows, entries, pin_host_figures(work, "targets-again", fresh=True))
        second = fit_disagreement(again)
        chosen = max(second.values()) < max(first.values())
        errors = ", ".join(f"{first[t]:.0%} -> {second[t]:.0%} at {t} thread(s)" for t in first)
        figures = (f"the host's figures measured again after the measurements (the fit set's median error {errors})"
                   if chosen else f"the host's figures measured at the start (measured again after the "
                                  f"measurements, the fit set agreed no better: median error {errors})")
        rows = again if chosen else rows
    print(machine_line() + f"; onnxruntime {__import__('onnxruntime').__version__}, edgeopt {zoo.edgeopt_revision()}"
          f"; {args.runs} runs, best of {args.repeats}; priced by {figures}")
    print()
    print("| set | model | threads | estimated ms | measured p50 ms | repeats spread | latency error "
          "| estimated peak MiB | measured peak MiB | memory error |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        memory = (f"{r['estimated_memory'] / MiB:.1f} | {r['measured_memory'] / MiB:.1f} | {pct(r['memory_error'])}"
                  if "memory_error" in r else "- | - | -")
        print(f"| {r['group']} | {r['model']} | {r['threads']} | {r['estimated_ms']:.3f} | {r['measured_ms']:.3f} "
              f"| {r['repeats_spread']:.0%} | {pct(r['latency_error'])} | {memory} |")
    print()
    validation = [r for r in rows if r["group"] != "fit"]
    for title, chosen in (("fit set (in sample)", [r for r in rows if r["group"] == "fit"]),
                          ("validation set (out of sample)", validation),
                          ("  of which the real-model zoo", [r for r in rows if r["group"] == "zoo"]),
                          ("  of which convert's int8 models of the zoo", [r for r in rows if r["group"] == "zoo int8"]),
                          ("  of which published models (the zoo and the estimate-only ones)",
                           [r for r in rows if r["group"] in ("zoo", "published")])):
        print(f"- {title}:")
        for threads in sorted({r["threads"] for r in chosen}):
            print(f"  - latency at {threads} thread(s): "
                  f"{summary([r for r in chosen if r['threads'] == threads], 'latency_error', LATENCY_GOAL)}")
        print(f"  - peak memory (1 thread): {summary(chosen, 'memory_error', MEMORY_GOAL)}")
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
