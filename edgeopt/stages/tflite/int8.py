"""int8 TFLite: the module quantized by PyTorch's PT2E flow with litert-torch's quantizer (symmetric int8,
weights per channel unless ``--per-tensor``), calibrated on the run's calibration data, converted to a fully
int8 ``.tflite``. It is judged against the float ``.tflite`` on the evaluation data with the task metrics and
floor of the ONNX search (metrics/fidelity.py), and timed beside it in LiteRT, on the host (``-t host``) or on
the ``--ssh`` device: it ships only when it meets the floor and is faster, or with ``--force-int8``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.metrics import MetricPlan
from edgeopt.metrics.fidelity import Fidelity, FidelityRun

TIMING_S = 2.0


class TfliteInt8(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shipped: str = "float"  # "int8" | "float"
    reason: str = ""
    per_channel: bool = True
    calibration_samples: int = 0
    fidelity: Fidelity | None = None
    metrics: list[dict[str, Any]] = []
    size_bytes: int | None = None
    float_size_bytes: int | None = None
    float_ms: float | None = None  # median of interleaved runs, here (-t host) or on the --ssh device
    int8_ms: float | None = None
    timed_on: str | None = None  # "host", or the --ssh device
    latency_ratio: float | None = None


def output_index(name: str) -> int:
    found = re.search(r"(\d+)$", name)
    return int(found.group(1)) if found else 0


class SignatureModel:
    """A .tflite through its serving signature, fed float arrays at any batch: integer inputs quantized
    with their scale and zero point, integer outputs dequantized, rows run in chunks of the model's batch."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        signatures = interpreter.get_signature_list()
        self.key = key = next(iter(signatures))
        self.runner = interpreter.get_signature_runner(key)
        self.inputs = self.runner.get_input_details()
        details = self.runner.get_output_details()
        self.output_names = sorted(signatures[key]["outputs"], key=output_index)
        self.outputs = [details[name] for name in self.output_names]
        first = next(iter(self.inputs.values()))
        self.batch = int(first["shape"][0]) if len(first["shape"]) else 0

    def feeds_for(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The interpreter's own inputs: integer inputs quantized with their scale and zero point."""
        args = {}
        for name, detail in self.inputs.items():
            value = np.asarray(feeds[name])
            scale, zero = detail["quantization"]
            if scale and np.issubdtype(detail["dtype"], np.integer):
                info = np.iinfo(detail["dtype"])
                value = np.clip(np.round(value / scale) + zero, info.min, info.max)
            args[name] = np.ascontiguousarray(value.astype(detail["dtype"]))
        return args

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        got = self.runner(**self.feeds_for(feeds))
        outputs = []
        for name, detail in zip(self.output_names, self.outputs):
            value = np.asarray(got[name])
            scale, zero = detail["quantization"]
            outputs.append((value.astype(np.float32) - zero) * scale if scale else value)
        return outputs

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = int(next(iter(feeds.values())).shape[0])
        if not self.batch or rows == self.batch:
            return self._run(feeds)
        parts: list[list[np.ndarray]] = []
        for start in range(0, rows, self.batch):
            chunk = {k: v[start:start + self.batch] for k, v in feeds.items()}
            short = self.batch - int(next(iter(chunk.values())).shape[0])
            if short:  # the last rows padded with copies of the last, their outputs dropped
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in chunk.items()}
            got = self._run(chunk)
            parts.append([g[:self.batch - short] for g in got])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def quantize_module(module: Any, kwargs: dict[str, Any], calibration: Any, per_channel: bool, batch: int,
                    limit: int | None, path: Path) -> int:
    """Write the PT2E-quantized module as a fully int8 .tflite; returns the calibration samples seen."""
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel))
    program = torch.export.export(module, (), kwargs).module()
    prepared = quantize_pt2e.prepare_pt2e(program, quantizer)
    seen = 0
    with torch.no_grad():
        for feeds in calibration.batches(batch):
            if int(next(iter(feeds.values())).shape[0]) != batch or (limit and seen >= limit):
                continue  # the exported program takes its own batch only
            prepared(**{name: torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in kwargs})
            seen += batch
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, (), kwargs, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return seen


def judge(float_model: SignatureModel, int8_model: SignatureModel, evaluation: Any, configured: dict[str, str],
          floors: dict[str, float]) -> tuple[Fidelity, list[dict[str, Any]]]:
    """The int8 file against the float one on every evaluation batch, with the task metrics."""
    batches = list(evaluation.labelled_batches(16))
    if not batches:
        raise ValueError("the evaluation data yielded no batch")
    first = float_model(batches[0][0])
    labelled = any(labels is not None for _feeds, labels in batches)
    plan = MetricPlan(float_model.output_names, first, configured, has_labels=labelled, floors=floors)
    run = FidelityRun(float_model.output_names, plan)
    for feeds, labels in batches:
        run.update(float_model(feeds), int8_model(feeds), labels)
    return run.result(), plan.describe()


def interleaved_ms(models: dict[str, SignatureModel], feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Median ms of each model's interpreter run (inputs already in its own dtype, as an app holds them), runs
    in rotating order."""
    names = list(models)
    prepared = {name: models[name].feeds_for(feeds) for name in names}
    calls = {name: (lambda runner=models[name].runner, args=prepared[name]: runner(**args)) for name in names}
    for name in names:
        calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    started, rounds = time.perf_counter(), 0
    while time.perf_counter() - started < TIMING_S or rounds < 10:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            begin = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - begin) * 1000)
        rounds += 1
    return {name: float(np.median(values)) for name, values in times.items()}
