#!/usr/bin/env python
"""Structured pruning: params, MACs, host latency and accuracy at ratios 0, 0.25, 0.5, with and
without fine-tuning, then int8.

Two models, both on scikit-learn's bundled ``load_digits`` (no download):

- **digits**: the bundled example (``models/digits``: trained weights, its train/eval split);
- **mbv2**: a MobileNetV2-style CNN (inverted residuals, depthwise 3x3, ReLU6, width 1.0 of a
  32-256 channel ladder) on the same digits upsampled to 64x64 (``--mbv2-size``), trained here
  for a few epochs.

For each ratio: ``edgeopt.stages.prune.prune_module`` (magnitude, per layer, channels rounded to this
host's SIMD multiple), then ``finetune`` (distilled from the unpruned model, early stopping on a
validation split of the train data), export to ONNX, int8 with edgeopt's quantization search
(static, the host recipe, latency measured here, so the layers whose int8 kernels are slower here
stay float: "int8 layers"; forced so the int8 column always exists). Accuracy is top-1 on the
held-out eval split (never seen in training or fine-tuning). Latency: onnxruntime, 1 thread,
batch 1, every model of a table timed interleaved in one loop (rotated rounds), medians, and
"x r0" is the median of per-round ratios to the unpruned fp32 model. Each round runs every model
10 times in a row (steady state: its weights warm in the caches, as in an inference loop);
the "cold" column repeats the timing with one run per model per round.

    python benchmarks/prune.py [--models digits,mbv2] [--budget 20] [--epochs 12] [--keep DIR]

A run on a 2-core x86_64 host with AVX-512 (multiple 16), torch 2.13.0, onnxruntime 1.32.0
(about 15 minutes; "acc" is top-1 on the 360 eval samples; ratios to unpruned fp32, steady
state, and in the last column with one run per model per round):

    model  ratio  params   MACs        acc pruned  acc fine-tuned  host fp32 (x r0)  acc int8  host int8 (x r0)  cold fp32/int8
    digits 0      23,946   599,680     1.0000      1.0000          0.0188 ms (1.00)  1.0000    0.0155 ms (0.83)  1.00 / 0.85
    digits 0.25   19,162   525,792     1.0000      1.0000          0.0174 ms (0.93)  1.0000    0.0150 ms (0.80)  0.95 / 0.82
    digits 0.5    7,450    230,720     0.2583      1.0000          0.0130 ms (0.69)  1.0000    0.0133 ms (0.71)  0.71 / 0.73
    mbv2   0      205,932  42,600,960  0.9944      0.9944          1.1735 ms (1.00)  0.9944    0.6892 ms (0.59)  1.00 / 0.69
    mbv2   0.25   128,540  29,301,632  0.1000      1.0000          0.7954 ms (0.67)  1.0000    0.5218 ms (0.45)  0.72 / 0.55
    mbv2   0.5    58,940   15,822,080  0.1000      0.9944          0.4462 ms (0.38)  0.9944    0.3072 ms (0.27)  0.43 / 0.34

digits runs in microseconds, so per-kernel overhead, not channel count, bounds its latency.
On mbv2 the quantization search kept the stem and the first depthwise convolution in float
(their int8 kernels were slower here), which is what makes int8 pay after pruning.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
sys.path.insert(0, str(REPO))

RATIOS = (0.0, 0.25, 0.5)


def load_digits_model():
    import torch

    spec = importlib.util.spec_from_file_location("_digits_model", DIGITS / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(torch.load(DIGITS / "digits_cnn.pt", weights_only=True))
    return model.eval()


def mbv2(classes: int = 10):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.residual = stride == 1 and cin == cout
            layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                            nn.ReLU6(inplace=True)]
            layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2Style(nn.Module):
        # (expand, out channels, repeats, first stride): MobileNetV2's ladder, shortened for small inputs.
        SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))

        def __init__(self) -> None:
            super().__init__()
            layers = [nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
            cin = 32
            for expand, cout, repeats, stride in self.SETTINGS:
                for i in range(repeats):
                    layers.append(Block(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            layers += [nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6(inplace=True)]
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(256, classes))

        def forward(self, image):
            x = self.features(image)
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return MobileNetV2Style()


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = torch.nn.functional.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear",
                                              align_corners=False)
    return out.numpy().astype(np.float32)


def datasets(name: str, size: int):
    train, evaluation, calib = (np.load(DIGITS / f) for f in ("train.npz", "eval.npz", "calib.npz"))
    x_train, y_train, x_eval, y_eval, x_calib = (train["image"], train["labels"], evaluation["image"],
                                                 evaluation["labels"], calib["image"])
    if name == "mbv2":
        x_train, x_eval, x_calib = (upsample(a, size) for a in (x_train, x_eval, x_calib))
    return x_train, y_train, x_eval, y_eval, x_calib


def train_from_scratch(model, x, y, epochs: int, seed: int):
    from edgeopt.stages.prune.finetuning import BatchLoader, FinetuneConfig, finetune

    count = len(y)
    order = np.random.default_rng(seed).permutation(count)
    val, fit = np.sort(order[: count // 10]), np.sort(order[count // 10:])
    config = FinetuneConfig(epochs=epochs, lr=3e-3, schedule="cosine", weight_decay=1e-4, patience=epochs,
                            batch_size=32, seed=seed)
    return finetune(model, BatchLoader.of_arrays([x[fit]], y[fit], 32, shuffle=True, seed=seed),
                    BatchLoader.of_arrays([x[val]], y[val], 256, shuffle=False), config)


def accuracy_torch(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def accuracy_onnx(path: Path, x, y) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predictions = np.concatenate([session.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])
    return float((predictions.argmax(1) == y).mean())


def quantize_int8(fp32_path: Path, out_path: Path, x_calib, x_eval, y_eval) -> str:
    import onnx

    from edgeopt.stages.simplify import simplify
    from edgeopt.stages.quantize.search import QuantizeOptions, search
    from edgeopt.targets import load_target

    model = simplify(onnx.load(fp32_path))
    # Host target, latency measured: the search keeps in float the layers whose int8 kernels are
    # slower here (speed fallback); force_int8 so the int8 column exists even where int8 loses.
    options = QuantizeOptions(mode="static", force_int8=True, latency_budget_s=4.0)
    calibration = [{"image": x_calib[i:i + 16]} for i in range(0, len(x_calib), 16)]
    evaluation = [{"image": x_eval[i:i + 1]} for i in range(min(len(x_eval), 200))]
    quantized, outcome = search(model, target=load_target("host"), options=options, calibration=calibration,
                                evaluation=evaluation, labels=y_eval[:len(evaluation)],
                                timing_feeds=evaluation[0])
    if quantized is None:
        raise RuntimeError(f"quantization failed: {outcome.reason}")
    onnx.save(quantized, out_path)
    chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
    for_speed = sorted({n for t in chosen.speed_fallback if t.accepted for n in t.nodes} & {
        n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")})
    return f"{len(for_speed)} layer(s) float for speed" if for_speed else "all int8"


def run_model(name: str, args, work: Path) -> list[str]:
    import onnx
    import torch

    from edgeopt.data import InputSpec
    from edgeopt.stages.prune import (FinetuneConfig, PruneConfig, export_module, finetune, flag_not_faster,
                               load_finetune_data, onnx_figures, preferred_channel_multiple, prune_module)
    from edgeopt.runtime.latency import compare_latency
    from edgeopt.targets import load_target

    torch.manual_seed(0)
    x_train, y_train, x_eval, y_eval, x_calib = datasets(name, args.mbv2_size)
    lines = [f"### {name}", ""]
    started = time.perf_counter()
    if name == "digits":
        base = load_digits_model()
        trained_note = "bundled weights"
    else:
        base = mbv2()
        result = train_from_scratch(base, x_train, y_train, args.train_epochs, seed=0)
        trained_note = f"trained here {result.epochs_run} epochs in {time.perf_counter() - started:.0f} s"
    size = x_train.shape[-1]
    spec = [InputSpec("image", (1, 1, size, size), "float32")]
    example = torch.from_numpy(x_eval[:1])
    host = load_target("host")
    multiple, why = preferred_channel_multiple(host)
    targets = [load_target("rpi5"), load_target("cortex-a55")]

    # Fine-tuning data: the train split with a seeded validation hold-out (eval stays unseen).
    np.savez(work / f"{name}_train.npz", image=x_train, labels=y_train)
    data = load_finetune_data(work / f"{name}_train.npz", spec, val_fraction=0.15, batch_size=32, seed=0)
    rows = []
    models: dict[str, Path] = {}
    for ratio in RATIOS:
        tag = f"r{ratio:g}"
        if ratio == 0:
            pruned, acc_pruned, ft, prune_note = base, accuracy_torch(base, x_eval, y_eval), None, "-"
            module = base
        else:
            config = PruneConfig(ratio=ratio, criterion="magnitude", scope="per_layer", channel_multiple=multiple)
            result = prune_module(base, example, config)
            pruned = result.module
            acc_pruned = accuracy_torch(pruned, x_eval, y_eval)
            module = copy.deepcopy(pruned)  # keep the pruned-only model for its accuracy
            ft_config = FinetuneConfig(epochs=args.epochs, lr=2e-3, schedule="cosine", weight_decay=1e-5,
                                       patience=3, batch_size=32, distill_weight=0.5, temperature=4.0, seed=0)
            ft = finetune(module, data.train, data.val, ft_config, teacher=base)
            prune_note = f"{result.params_ratio:.2f}x params"
        path = work / f"{name}_{tag}.onnx"
        export_module(module, spec, path, output_names=["logits"])
        fp32 = onnx.load(path)
        figures = onnx_figures(tag, fp32, targets, {"image": [1, 1, size, size]})
        int8_path = work / f"{name}_{tag}_int8.onnx"
        recipe = quantize_int8(path, int8_path, x_calib, x_eval, y_eval)
        int8_figures = onnx_figures(f"{tag} int8", onnx.load(int8_path), targets, {"image": [1, 1, size, size]})
        models[f"{tag} fp32"] = path
        models[f"{tag} int8"] = int8_path
        rows.append(dict(ratio=ratio, figures=figures, int8_figures=int8_figures, acc_before=accuracy_torch(
            base, x_eval, y_eval), acc_pruned=acc_pruned, acc_ft=accuracy_onnx(path, x_eval, y_eval),
            acc_int8=accuracy_onnx(int8_path, x_eval, y_eval), ft=ft, note=prune_note, recipe=recipe))
    feeds = {"image": x_eval[:1]}
    # Steady state (bursts of 10 runs per model per round, caches warm with the model's own
    # weights, as in an inference loop) and one run per model per round (weights start cold).
    latency = compare_latency(models, feeds, reference="r0 fp32", threads=1, min_time_s=args.budget / 2,
                              budget_s=args.budget, burst=10)
    cold = compare_latency(models, feeds, reference="r0 fp32", threads=1, min_time_s=args.budget / 2,
                           budget_s=args.budget)
    lines.append(f"{trained_note}; channel multiple {multiple} ({why}); eval {len(y_eval)} samples; "
                 f"{time.perf_counter() - started:.0f} s")
    lines.append("")
    lines.append("| ratio | params | MACs | size KB | est. rpi5 ms | acc pruned | acc fine-tuned (epochs) "
                 "| host fp32 ms (x r0) | acc int8 | int8 KB | host int8 ms (x r0 fp32) | int8 layers "
                 "| cold: fp32 / int8 (x r0 fp32) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        tag = f"r{row['ratio']:g}"
        fig, fig8 = row["figures"], row["int8_figures"]
        fp, q = latency[f"{tag} fp32"], latency[f"{tag} int8"]
        ft = row["ft"]
        ft_text = f"{row['acc_ft']:.4f} ({ft.epochs_run}{', early stop' if ft.stopped_early else ''})" if ft \
            else f"{row['acc_ft']:.4f} (-)"
        est = fig.estimated_latency_ms.get("rpi5")
        lines.append(
            f"| {row['ratio']:g} | {fig.params:,} | {fig.macs:,} | {fig.size_bytes / 1024:.1f} | "
            f"{est:.3f} | {row['acc_pruned']:.4f} | {ft_text} | {fp.median_ms:.4f} "
            f"({fp.ratio_to_reference or 1.0:.2f}) | {row['acc_int8']:.4f} | {fig8.size_bytes / 1024:.1f} | "
            f"{q.median_ms:.4f} ({q.ratio_to_reference:.2f}) | {row['recipe']} | "
            f"{cold[f'{tag} fp32'].ratio_to_reference or 1.0:.2f} / {cold[f'{tag} int8'].ratio_to_reference:.2f} |")
        if row["ratio"]:
            fig.host_latency_ratio = fp.ratio_to_reference
            for flag in flag_not_faster(rows[0]["figures"], fig):
                lines.append(f"|  | flagged: {flag} ||||||||||||")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,mbv2")
    parser.add_argument("--budget", type=float, default=20.0, help="latency seconds per model table")
    parser.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs at most")
    parser.add_argument("--train-epochs", type=int, default=12, help="mbv2 training epochs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--mbv2-size", type=int, default=64, help="mbv2 input height and width (digits upsampled)")
    parser.add_argument("--keep", type=Path, help="keep the ONNX files here")
    args = parser.parse_args()
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    print(f"{machine_line()}; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            print("\n".join(run_model(name.strip(), args, work)), flush=True)


if __name__ == "__main__":
    main()
