"""The tflite stage (``--format tflite``): the PyTorch source, as pruning and fine-tuning left it, converted
with litert-torch to ``OUT/model.tflite`` beside the ONNX model, and held against the source with the same
parity check (the LiteRT interpreter runs it on the same sample inputs, through its serving signature,
whose inputs carry the model's own input names).

litert-torch pulls jax, transformers and more, and a typing-extensions pin (through xdsl) that the pydantic
edgeopt needs cannot meet, so it is an extra of its own (``edgeopt[tflite-export]``) outside the test
extras; the stage is refused before anything runs where it is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ExportError, InputError, VerificationError
from edgeopt.formats.artifact import ModelArtifact, ModelFormat
from edgeopt.stages.common.context import TFLITE_MODEL, Reference, StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, register_details
from edgeopt.stages.tflite.int8 import TfliteInt8

TFLITE_FILE = TFLITE_MODEL
INSTALL_HINT = "pip install 'edgeopt[tflite-export]' (litert-torch; see the README on TFLite)"


@register_details("tflite")
class TfliteDetails(StageDetails):
    converter: str | None = None  # "litert-torch 0.10.0"
    signature: str | None = None
    inputs: list[str] = []
    outputs: list[str] = []
    int8: TfliteInt8 | None = None  # with --calib: the int8 candidate and whether it shipped


def check_tflite_export(context_format: ModelFormat | None, requested: str) -> None:
    """Before anything runs: a PyTorch source, and litert-torch installed."""
    if requested != "tflite":
        return
    if context_format is ModelFormat.ONNX:
        raise InputError("--format tflite converts PyTorch sources (litert-torch); this source is ONNX",
                         "convert the PyTorch model it came from, or convert the ONNX model with another tool")
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        raise InputError("--format tflite needs litert-torch, which is not installed", INSTALL_HINT) from None


def _module(context: StageContext) -> Any:
    module = context.facts.get("torch_module")
    if module is None:
        source = context.facts.get("torch_source")
        module = source.callable() if source is not None else None
    if module is None:
        raise InputError("--format tflite converts PyTorch sources; this run has no PyTorch module",
                         "give a factory (pkg.mod:fn), a TorchScript file or a .pt2 program")
    return module


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """The converter's prints (Python and native) go to stderr while it runs."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (an embedding host): Python's prints only
        saved = None
    try:
        if saved is not None:
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


class TfliteStage:
    name = "tflite"

    def applies(self, context: StageContext) -> bool:
        return context.config.format == "tflite"

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        import litert_torch
        import torch

        reference: Reference = context.reference
        with context.stage("tflite", "Converting to TFLite (litert-torch)") as record:
            module = _module(context).eval()
            names = [s.name for s in reference.specs]
            feeds, _expected = reference.sample(context.config.parity.seed, None)
            kwargs = {name: torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in names}
            path = context.work_dir / TFLITE_FILE
            try:
                with _quiet_stdout():  # its progress lines would corrupt `--json` output on stdout
                    converted = litert_torch.convert(module, sample_args=(), sample_kwargs=kwargs)
                    converted.export(str(path))
            except Exception as exc:  # the converter's own errors name the op it could not lower
                text = " ".join(str(exc).split())
                op = re.search(r"(aten\.[A-Za-z0-9_.]+|tfl\.[A-Za-z0-9_]+)", text)
                # where in the user's module: the converter's "Original traceback" names the file and line
                source = re.search(r'Original traceback: File "([^"]+)", line (\d+)', text)
                at = f" at {Path(source.group(1)).name}:{source.group(2)}" if source else ""
                raise ExportError(f"litert-torch could not convert the model"
                                  f"{f' (op {op.group(1)}{at})' if op else ''}: "
                                  f"{text.split(' While executing ')[0][:300]}",
                                  "replace the op in the model, or ship the ONNX model") from None
            version = getattr(litert_torch, "__version__", "?")
            check, signature, outputs = _parity(path, reference, context)
            record.details = TfliteDetails(converter=f"litert-torch {version}", signature=signature, inputs=names,
                                           outputs=outputs)
            record.parity.append(check)
            if not check.passed:
                worst = next(o for o in check.outputs if not o.passed)
                record.status = "failed"
                raise VerificationError(
                    f"parity check failed after tflite: output {worst.name!r} differs from the source "
                    f"(max abs diff {worst.max_abs_diff:.3g})",
                    "litert-torch changed what the model computes; rerun with --debug --keep-failed to inspect it")
            data = context.facts.get("quantization_data")
            settings = context.config.quantize
            if data is not None and data[0] is not None and settings.mode in ("auto", "static"):
                record.details.int8 = _int8(module, kwargs, path, data, context, record)
            artifact = ModelArtifact.from_file(path, ModelFormat.TFLITE, produced_by="tflite",
                                               parent=context.last_artifact())
            record.outputs.append(artifact)
            context.produced.append(path)
        return model  # the ONNX model goes on unchanged


def _int8(module: Any, kwargs: dict[str, Any], path: Path, data: Any, context: StageContext,
          record: Any) -> TfliteInt8:
    """The int8 candidate (int8.py); when it ships it replaces the float file at ``path``."""
    from edgeopt.metrics.fidelity import metric_floors
    from edgeopt.stages.common.speed_rule import describe_ratio, fast_enough, speed_refusal
    from edgeopt.stages.tflite.int8 import SignatureModel, interleaved_ms, judge, quantize_module

    settings, config = context.config.quantize, context.config
    calibration, evaluation = data[0], data[1] if data[1] is not None else data[0]
    candidate = context.work_dir / ".model-int8.tflite"
    float_model = SignatureModel(path, threads=settings.threads)
    result = TfliteInt8(per_channel=settings.per_channel is not False, float_size_bytes=path.stat().st_size)
    context.events.note("quantizing the TFLite model (PT2E, int8)")
    try:
        with _quiet_stdout():
            result.calibration_samples = quantize_module(module, kwargs, calibration, result.per_channel,
                                                         float_model.batch or 1, settings.max_calib_samples,
                                                         candidate)
    except Exception as exc:  # an op the int8 flow cannot take: the float file ships, and the report says why
        result.reason = f"int8 conversion failed: {' '.join(str(exc).split())[:300]}"
        record.warnings.append(f"TFLite: {result.reason}; the float model.tflite ships")
        return result
    int8_model = SignatureModel(candidate, threads=settings.threads)
    floors = metric_floors(settings.min_cosine, settings.min_top1)
    result.fidelity, result.metrics = judge(float_model, int8_model, evaluation, dict(settings.metrics), floors)
    result.size_bytes = candidate.stat().st_size
    shortfall = result.fidelity.shortfall(settings.min_cosine, settings.min_top1)
    faithful = shortfall is None
    device = context.device  # --ssh: the board that runs the model times both files
    timed = device is not None or config.targets[0] == "host"
    where = f"on {device.name}" if device is not None else "on this machine"
    if faithful and timed:
        feeds = next(iter(evaluation.batches(float_model.batch or 1)))
        if device is not None:
            context.events.note(f"timing float vs int8 .tflite on {device.name}")
            stats = device.latency({"float": path, "int8": candidate}, feeds, context.events)
            result.float_ms, result.int8_ms = round(stats["float"].median_ms, 4), round(stats["int8"].median_ms, 4)
            result.latency_ratio = round(stats["int8"].ratio_to_reference, 4)
            result.timed_on = device.name
        else:
            context.events.note("timing float vs int8 .tflite on this machine")
            times = interleaved_ms({"float": float_model, "int8": int8_model}, feeds)
            result.float_ms, result.int8_ms = round(times["float"], 4), round(times["int8"], 4)
            result.latency_ratio = round(times["int8"] / times["float"], 4)
            result.timed_on = "host"
    if not faithful:
        result.reason = f"int8 is below the floor: {shortfall}"
    elif timed and not fast_enough(result.latency_ratio, settings.min_speedup) and not settings.force_int8:
        result.reason = "int8 " + speed_refusal(result.latency_ratio, settings.min_speedup, where)
    else:
        result.shipped = "int8"
        result.reason = ("faithful" + (f" and {describe_ratio(result.latency_ratio)} {where}" if timed else
                                       f"; not timed ({config.targets[0]} is not this machine; --ssh times it "
                                       "on the device)"))
        candidate.replace(path)
    candidate.unlink(missing_ok=True)
    return result


def _parity(path: Path, reference: Reference, context: StageContext) -> tuple[Any, str, list[str]]:
    """The .tflite against the source on the parity samples, through its serving signature."""
    from edgeopt.stages.common.parity import parity_check
    from edgeopt.stages.tflite.int8 import SignatureModel

    model = SignatureModel(path)
    names = [s.name for s in reference.specs]
    samples = []
    settings = context.config.parity
    for index in range(settings.samples):
        feeds, expected = reference.sample(settings.seed + index, None)
        samples.append((expected, model({name: feeds[name] for name in names})))
    batch = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
    return (parity_check(path.name, "source", samples, model.output_names, context.tolerance, [batch]), model.key,
            model.output_names)
