"""TFLite as a format of its own, on a published model: basic-pitch 0.4.0 ships the same note-transcription
network as `nmp.tflite` and `nmp.onnx` (installed with `pip install --no-deps` into the benchmark's cache).

For each file: what `edgeopt inspect` reads (ops, MACs, parameters, fully int8), the static estimate on the
host target, and the latency measured here at one thread, interleaved in one run: LiteRT with XNNPACK (its
default), LiteRT without it, and onnxruntime on the ONNX file; medians and ratios, plus the agreement of
the interpreters' outputs on the same tones.

    python benchmarks/tflite.py [--workdir DIR] [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402
from machine import machine_line  # noqa: E402


def litert(path: Path, xnnpack: bool):
    from ai_edge_litert import interpreter as lite

    options = {} if xnnpack else {"experimental_op_resolver_type": lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    engine = lite.Interpreter(model_path=str(path), num_threads=1, **options)
    engine.allocate_tensors()
    (detail,) = engine.get_input_details()
    outputs = engine.get_output_details()

    def run(x: np.ndarray) -> list[np.ndarray]:
        engine.set_tensor(detail["index"], x)
        engine.invoke()
        return [engine.get_tensor(o["index"]) for o in sorted(outputs, key=lambda o: o["name"])]

    return run


def onnxruntime_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    order = sorted(range(len(session.get_outputs())), key=lambda i: session.get_outputs()[i].name)

    def run(x: np.ndarray) -> list[np.ndarray]:
        got = session.run(None, {name: x})
        return [got[i] for i in order]

    return run


def interleaved(runners: dict[str, object], x: np.ndarray, seconds: float) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for name in names:
        for _ in range(3):
            runners[name](x)
    started, rounds = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or rounds < 5:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:  # order rotates: no runner always follows the same one
            t0 = time.perf_counter()
            runners[name](x)
            times[name].append((time.perf_counter() - t0) * 1000)
        rounds += 1
    return times


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=zoo.DEFAULT_WORKDIR)
    parser.add_argument("--seconds", type=float, default=20.0, help="interleaved timing per model")
    args = parser.parse_args()
    from edgeopt.commands.inspect import inspect_model
    from edgeopt.commands.profile import profile_model

    onnx_path = zoo.model_path("pitch", args.workdir)
    tflite_path = onnx_path.with_name("nmp.tflite")
    x = next(iter(zoo.tones(1, seed=0).values())).astype(np.float32)
    print(machine_line())
    print(f"model: basic-pitch {zoo.PACKAGES['basic-pitch']} nmp ({tflite_path.stat().st_size} B .tflite, "
          f"{onnx_path.stat().st_size} B .onnx); input {list(x.shape)}; 1 thread\n")
    facts = {}
    for label, path in (("tflite", tflite_path), ("onnx", onnx_path)):
        graph = inspect_model(path).graph
        estimate = profile_model(path, ["host"], threads=[1]).estimates["host"]
        facts[label] = (graph, estimate)
    runners = {"LiteRT + XNNPACK": litert(tflite_path, True), "LiteRT, no XNNPACK": litert(tflite_path, False),
               "onnxruntime (nmp.onnx)": onnxruntime_session(onnx_path)}
    times = interleaved(runners, x, args.seconds)
    reference = runners["onnxruntime (nmp.onnx)"](x)
    print("| runtime | file | edgeopt MACs | params | host estimate ms | measured p50 ms | estimate / measured | "
          "x onnxruntime | output cosine vs onnxruntime (worst) |")
    print("|---|---|---|---|---|---|---|---|---|")
    ort_p50 = float(np.median(times["onnxruntime (nmp.onnx)"]))
    for name, runner in runners.items():
        label = "onnx" if "onnxruntime" in name else "tflite"
        graph, estimate = facts[label]
        macs = graph["macs_total"]
        params = graph["parameter_count"]
        p50 = float(np.median(times[name]))
        worst = min(cosine(a, b) for a, b in zip(runner(x), reference))
        print(f"| {name} | nmp.{label} | {macs / 1e6:.1f} M | {params} | {estimate.latency_ms:.2f} | {p50:.2f} | "
              f"{estimate.latency_ms / p50:.2f} | {p50 / ort_p50:.2f} | {worst:.6f} |")
    graph = facts["tflite"][0]
    print(f"\nnmp.tflite as inspect reads it: {sum(graph['op_counts'].values())} ops "
          f"({', '.join(f'{k} {v}' for k, v in list(graph['op_counts'].items())[:5])}, ...), "
          f"fully int8: {graph['fully_int8']}, float16 weights: {len(graph['float16_weights'])}; "
          f"{len(times['LiteRT + XNNPACK'])} interleaved rounds")


if __name__ == "__main__":
    main()
