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
from edgeopt.stages.common.context import Reference, StageContext, StageModel
from edgeopt.stages.common.records import StageDetails, register_details

TFLITE_FILE = "model.tflite"
INSTALL_HINT = "pip install 'edgeopt[tflite-export]' (litert-torch; see the README on TFLite)"


@register_details("tflite")
class TfliteDetails(StageDetails):
    converter: str | None = None  # "litert-torch 0.10.0"
    signature: str | None = None
    inputs: list[str] = []
    outputs: list[str] = []


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


def _output_index(name: str) -> int:
    found = re.search(r"(\d+)$", name)
    return int(found.group(1)) if found else 0


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
                raise ExportError(f"litert-torch could not convert the model"
                                  f"{f' (op {op.group(1)})' if op else ''}: {text[:300]}",
                                  "replace the op in the model, or ship the ONNX model") from None
            version = getattr(litert_torch, "__version__", "?")
            check, signature, outputs = _parity(path, reference, context)
            record.details = TfliteDetails(converter=f"litert-torch {version}", signature=signature, inputs=names,
                                           outputs=outputs)
            record.parity.append(check)
            artifact = ModelArtifact.from_file(path, ModelFormat.TFLITE, produced_by="tflite",
                                               parent=context.last_artifact())
            record.outputs.append(artifact)
            context.produced.append(path)
            if not check.passed:
                worst = next(o for o in check.outputs if not o.passed)
                record.status = "failed"
                raise VerificationError(
                    f"parity check failed after tflite: output {worst.name!r} differs from the source "
                    f"(max abs diff {worst.max_abs_diff:.3g})",
                    "litert-torch changed what the model computes; rerun with --debug --keep-failed to inspect it")
        return model  # the ONNX model goes on unchanged


def _parity(path: Path, reference: Reference, context: StageContext) -> tuple[Any, str, list[str]]:
    """The .tflite against the source on the parity samples, through its serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.stages.common.parity import parity_check

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    key = next(iter(signatures))
    runner = interpreter.get_signature_runner(key)
    outputs = sorted(signatures[key]["outputs"], key=_output_index)
    names = [s.name for s in reference.specs]
    samples = []
    settings = context.config.parity
    for index in range(settings.samples):
        feeds, expected = reference.sample(settings.seed + index, None)
        got = runner(**{name: np.ascontiguousarray(feeds[name]) for name in names})
        samples.append((expected, [np.asarray(got[name]) for name in outputs]))
    batch = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
    return parity_check(path.name, "source", samples, outputs, context.tolerance, [batch]), key, outputs
