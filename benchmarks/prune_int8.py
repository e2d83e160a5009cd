#!/usr/bin/env python
"""Does int8 pay after pruning? The MobileNetV2-style CNN of benchmarks/prune.py (random weights:
latency does not depend on them), unpruned and pruned 0.5 (channels rounded to 16), each in fp32,
in several int8 recipes and as edgeopt's quantization search ships it for this host (speed
fallback included), timed side by side in onnxruntime (1 thread, batch 1, interleaved rotated
rounds of one run per model, "x r0" = median of per-round ratios to the unpruned fp32 model).

    python benchmarks/prune_int8.py [--size 64] [--budget 15]

A run on a 2-core x86_64 host with AVX-512 VNNI (onnxruntime 1.32.0), 64x64 input:

    r0 fp32 1.00 | r0.5 fp32 0.41
    r0.5 int8: u8s8 QDQ 0.39, s8s8 QDQ 0.52, u8s8 QOperator 0.38, u8s8 per-tensor 0.38,
               depthwise float 0.42, edgeopt search 0.32 (stem and first depthwise conv kept float)
    r0 int8:   u8s8 QDQ 0.63, s8s8 QDQ 0.88, edgeopt search 0.63 (no layer kept float)

Every plain recipe quantizes the 1-channel stem and the 16-channel depthwise convolution at full
resolution, whose int8 kernels are 2-3x slower than fp32 here; that cancels what int8 gains in
the pointwise layers once the model is pruned. Keeping those two in float is the difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds of interleaved timing")
    args = parser.parse_args()
    import onnx
    import torch

    from edgeopt.config.settings import PruneConfig
    from edgeopt.data import InputSpec
    from edgeopt.stages.prune.structured import export_module, prune_module
    from edgeopt.stages.quantize.quantizer import quantize
    from edgeopt.stages.quantize.recipes import Recipe
    from edgeopt.stages.quantize.search import QuantizeOptions, search
    from edgeopt.targets import load_target
    from edgeopt.runtime.latency import compare_latency
    from prune import mbv2

    torch.manual_seed(0)
    size = args.size
    spec = [InputSpec("image", (1, 1, size, size), "float32")]
    rng = np.random.default_rng(0)
    calib = [{"image": rng.standard_normal((1, 1, size, size)).astype(np.float32)} for _ in range(16)]
    with tempfile.TemporaryDirectory() as tmp:
        unpruned = mbv2().eval()
        paths = {"r0": Path(tmp) / "r0.onnx", "r0.5": Path(tmp) / "r05.onnx"}
        export_module(unpruned, spec, paths["r0"])
        pruned = prune_module(unpruned, (torch.randn(1, 1, size, size),), PruneConfig(ratio=0.5, channel_multiple=16))
        export_module(pruned.module, spec, paths["r0.5"])
        models: dict[str, bytes | Path] = {f"{tag} fp32": path for tag, path in paths.items()}
        for tag, path in paths.items():
            float_model = onnx.load(str(path))
            depthwise = [n.name for n in float_model.graph.node if n.op_type == "Conv"
                         and any(a.name == "group" and a.i > 1 for a in n.attribute)]
            recipes = {"u8s8 QDQ": Recipe(mode="static", activation_type="u8", weight_type="s8"),
                       "s8s8 QDQ": Recipe(mode="static", activation_type="s8", weight_type="s8"),
                       "u8s8 QOperator": Recipe(mode="static", activation_type="u8", weight_type="s8",
                                                format="qoperator"),
                       "u8s8 per-tensor": Recipe(mode="static", activation_type="u8", weight_type="s8",
                                                 per_channel=False),
                       "depthwise float": Recipe(mode="static", activation_type="u8", weight_type="s8")
                       .excluding(depthwise)}
            for name, recipe in recipes.items():
                models[f"{tag} int8 {name}"] = quantize(float_model, recipe, calib).SerializeToString()
            # What edgeopt ships for the host: the search, whose speed fallback keeps the layers
            # with slower int8 kernels in float.
            options = QuantizeOptions(mode="static", force_int8=True, latency_budget_s=4.0)
            searched, outcome = search(float_model, target=load_target("host"), options=options, calibration=calib,
                                       evaluation=calib[:8], labels=None, timing_feeds=calib[0])
            chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
            kept = sum(t.accepted for t in chosen.speed_fallback)
            models[f"{tag} int8 edgeopt search ({kept} layer(s) float for speed)"] = searched.SerializeToString()
        stats = compare_latency(models, calib[0], reference="r0 fp32", threads=1, budget_s=args.budget,
                                min_time_s=args.budget / 2)
    print(machine_line())
    print(f"| model ({size}x{size}) | median ms | x r0 fp32 |")
    print("|---|---|---|")
    for label, value in stats.items():
        print(f"| {label} | {value.median_ms:.4f} | {value.ratio_to_reference or 1.0:.2f} |")


if __name__ == "__main__":
    main()
