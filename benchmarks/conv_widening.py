#!/usr/bin/env python
"""Thin convolutions as published beside their widened forms (the widen stage, graph/onnx_conv_widening.py).

Each Conv below (with its activation, as models have it) is one model: the Conv as it is, and the same Conv
computing k output columns as k x the channels, for every k the stage would try. Each in fp32 and in int8
(onnxruntime's QDQ quantizer as `real_models.py` runs it: u8 activations, s8 per-channel weights, MinMax on 8
random samples). Runs are interleaved (every variant once per round, the order rotating), one intra-op thread,
batch 1; medians and the ratio to the Conv as it is (the median of per-round ratios). The shapes: basic-pitch's (a spectrogram's 8→8
3x39, 8→1 5x5 and 32→1 7x3 Convs), a segmentation head's 1x1 to 2 classes, and a 3→8 RGB stem.

    python benchmarks/conv_widening.py [--seconds 2]
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

# name, (input channels, output channels, kernel h, kernel w, stride h, stride w), input (h, w), activation
SHAPES = [
    ("basic-pitch 8→8 3x39", (8, 8, 3, 39, 1, 1), (172, 264), "Relu"),
    ("basic-pitch 8→1 5x5", (8, 1, 5, 5, 1, 1), (172, 264), "Sigmoid"),
    ("basic-pitch 32→1 7x3", (32, 1, 7, 3, 1, 1), (172, 88), "Sigmoid"),
    ("seg head 64→2 1x1", (64, 2, 1, 1, 1, 1), (128, 128), None),
    ("RGB stem 3→8 3x3 s2", (3, 8, 3, 3, 2, 2), (224, 224), "Relu"),
]


def conv_model(spec, size, activation):
    from onnx import TensorProto, helper, numpy_helper

    cin, cout, kh, kw, sh, sw = spec
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((cout, cin, kh, kw)) / np.sqrt(cin * kh * kw))
                                     .astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", strides=[sh, sw],
                              pads=[kh // 2, kw // 2, kh // 2, kw // 2])]
    out = "c"
    if activation:
        nodes.append(helper.make_node(activation, ["c"], ["y"], name="act"))
        out = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, *size])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def int8(model, samples: list[dict[str, np.ndarray]], folder: Path, label: str) -> bytes:
    """The model as plain onnxruntime quantizes it (real_models.ort_static's recipe) on ``samples``."""
    import onnx
    from real_models import ort_static  # benchmarks/real_models.py

    source, target = folder / f"{label}.onnx", folder / f"{label}.int8.onnx"
    onnx.save(model, source)
    ort_static(source, target, {name: np.concatenate([s[name] for s in samples]) for name in samples[0]})
    return target.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per shape and precision")
    args = parser.parse_args()

    from edgeopt.graph.onnx_conv_widening import thin_convs, widen
    from edgeopt.graph.onnx_shapes import resolve_shapes
    from edgeopt.runtime.latency import compare_latency

    print(machine_line())
    print("one intra-op thread, batch 1, interleaved rounds; ratio: median of per-round ratios to the Conv as it is\n")
    print("| Conv (and activation) | input | precision | as it is ms | " + " | ".join(f"x{k}" for k in (2, 4, 8, 16))
          + " |")
    print("|---|---|---|---:|" + "---:|" * 4)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec, size, activation in SHAPES:
            model = conv_model(spec, size, activation)
            shape = (1, spec[0], *size)
            shapes = {k: v.shape for k, v in resolve_shapes(model, {"x": shape}).items()}
            (conv,) = thin_convs(model, shapes)
            variants = {"as is": model}
            for factor in conv.factors:
                copy = model.__class__()
                copy.CopyFrom(model)
                variants[f"x{factor}"] = widen(copy, conv, factor)
            samples = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]
            for precision in ("fp32", "int8"):
                data = {label: (m.SerializeToString() if precision == "fp32"
                                else int8(m, samples, Path(tmp), label.replace(" ", "_")))
                        for label, m in variants.items()}
                stats = compare_latency(data, samples[0], reference="as is", threads=1,
                                        min_time_s=args.seconds, budget_s=4 * args.seconds)
                cells = [f"{stats[f'x{k}'].ratio_to_reference:.2f}x" if f"x{k}" in stats else "-"
                         for k in (2, 4, 8, 16)]
                print(f"| {name} | {'x'.join(map(str, shape))} | {precision} | {stats['as is'].median_ms:.3f} | "
                      + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
