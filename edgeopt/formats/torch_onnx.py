"""PyTorch → ONNX with the torch.export-based (dynamo) exporter.

Strategy, recorded in the report: dynamo with a dynamic batch axis; if that fails,
dynamo with static shapes; TorchScript archives (and, as a last resort, modules
dynamo cannot capture) go through torch's TorchScript exporter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import InputSpec
from edgeopt.errors import ExportError, InputError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.onnx import SINGLE_FILE_LIMIT_BYTES
from edgeopt.formats.torch import TorchSource, import_torch

_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch._export", "onnxscript", "torch.fx")


@dataclass
class TorchExportResult:
    path: Path
    exporter: str
    dynamic_batch: bool
    attempts: list[str] = field(default_factory=list)  # what failed before the one that worked
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[io.StringIO]:
    """The exporters print progress and warnings on stdout/stderr; keep --json clean."""
    sink = io.StringIO()
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def torch_input_specs(
    source: TorchSource, shapes: dict[str | None, tuple[int, ...]], dtypes: dict[str, str]
) -> list[InputSpec]:
    """Concrete input specs for a torch source from --input-shape/--input-dtype and the file."""
    allowed = source.input_names + source.optional_inputs
    shapes = dict(shapes)
    if None in shapes:
        if len(source.input_names) != 1:
            raise InputError(
                f"the model takes {len(source.input_names)} inputs ({', '.join(source.input_names)}); "
                "an unnamed --input-shape is ambiguous", "name each input: --input-shape NAME=DIMS")
        shapes[source.input_names[0]] = shapes.pop(None)
    for name in list(shapes) + list(dtypes):
        if name not in allowed:
            raise InputError(f"unknown input {name!r}", f"the model's forward() takes: {', '.join(allowed)}")
    used = source.input_names + [n for n in source.optional_inputs if n in shapes]
    specs = []
    for name in used:
        shape = shapes.get(name, source.example_shapes.get(name))
        if shape is None:
            raise InputError(
                f"PyTorch sources need the shape of input {name!r}",
                f"pass --input-shape {name}=1x3x224x224 (your model's real dims)",
            )
        if name in shapes and name in source.example_shapes:
            fixed = source.example_shapes[name]
            dynamic = set(source.dynamic_dims.get(name, []))
            if len(fixed) != len(shape) or any(
                    f != s for axis, (f, s) in enumerate(zip(fixed, shape)) if axis not in dynamic):
                raise InputError(
                    f"--input-shape {name}={'x'.join(map(str, shape))} does not fit the exported program, "
                    f"which fixes {name} to {'x'.join(map(str, fixed))} (dynamic axes: {sorted(dynamic) or 'none'})",
                    "only the program's dynamic axes can change")
        specs.append(InputSpec(name, tuple(shape), dtypes.get(name, source.example_dtypes.get(name, "float32"))))
    return specs


def to_torch_inputs(specs: list[InputSpec], feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
    torch = import_torch()
    # np.array keeps 0-d inputs 0-d (np.ascontiguousarray would make them 1-d).
    return tuple(torch.from_numpy(np.array(feeds[s.name], copy=True)) for s in specs)


def run_torch_named(source: TorchSource, specs: list[InputSpec],
                    feeds: dict[str, np.ndarray]) -> list[tuple[str | None, np.ndarray]]:
    """Reference outputs, flattened in the order the exporters flatten them, each with a
    name taken from dict keys in the output structure ("boxes", "head.scores"), or None."""
    torch = import_torch()
    from torch.utils._pytree import tree_flatten_with_path

    model = source.callable()
    try:
        with torch.inference_mode():
            outputs = model(*to_torch_inputs(specs, feeds))
    except Exception as exc:
        shapes = ", ".join(s.describe() for s in specs)
        raise InputError(f"the PyTorch model rejected inputs {shapes}: {_line(exc)}",
                         "check --input-shape / --input-dtype against what forward() expects") from None
    flat, _ = tree_flatten_with_path(outputs)
    leaves = [(_path_name(path), leaf) for path, leaf in flat if isinstance(leaf, torch.Tensor)]
    if not leaves:
        raise InputError("the PyTorch model returned no tensors", "forward() must return tensors")
    return [(name, leaf.detach().cpu().numpy()) for name, leaf in leaves]


def _path_name(path: tuple[Any, ...]) -> str | None:
    parts = [str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", "")))) for key in path]
    if not any(hasattr(key, "key") or hasattr(key, "name") for key in path):
        return None  # positional outputs only: keep the exporter's names
    return ".".join(parts)


def output_names_from(named: list[tuple[str | None, np.ndarray]]) -> list[str] | None:
    """ONNX output names when the model's outputs carry names and they are unique."""
    names = [name for name, _ in named]
    if any(name is None for name in names) or len(set(names)) != len(names):
        return None
    return [str(name) for name in names]


def _parameter_bytes(source: TorchSource) -> int:
    module = source.module
    try:
        state = module.state_dict()
    except Exception:
        return 0
    return sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "numel"))


def export_torch(
    source: TorchSource,
    specs: list[InputSpec],
    out_path: Path,
    *,
    opset: int | None,
    dynamic_batch: bool,
    output_count: int,
    output_names: list[str] | None = None,
) -> TorchExportResult:
    torch = import_torch()
    batched = [s for s in specs if len(s.shape) >= 1]
    attempts: list[str] = []
    big = _parameter_bytes(source) >= SINGLE_FILE_LIMIT_BYTES
    script_output_names = output_names or (
        ["output"] if output_count == 1 else [f"output_{i}" for i in range(output_count)])

    def example(batch: int | None) -> tuple[Any, ...]:
        from edgeopt.data import random_inputs

        return to_torch_inputs(specs, random_inputs(specs, seed=0, batch=batch))

    if source.kind is ModelFormat.TORCHSCRIPT:
        _export_torchscript(source, specs, out_path, example(None), opset, dynamic_batch, script_output_names)
        return TorchExportResult(out_path, "torchscript", dynamic_batch and bool(batched))

    strategies: list[tuple[str, bool]] = []
    if source.kind is ModelFormat.TORCH_EXPORT:
        strategies.append(("dynamo", bool(source.dynamic_dims)))
    else:
        if dynamic_batch and batched:
            strategies.append(("dynamo", True))
        strategies.append(("dynamo", False))
    result_warnings: list[str] = []
    for exporter, dynamic in strategies:
        try:
            with quiet_exporter():
                if source.kind is ModelFormat.TORCH_EXPORT:
                    program = torch.onnx.export(source.module, dynamo=True, opset_version=opset,
                                                output_names=output_names)
                else:
                    # torch.export specialises size-1 dims, so a dynamic batch needs an example batch >= 2.
                    batch = max(2, int(batched[0].shape[0])) if dynamic else None
                    dynamic_shapes = (
                        {s.name: ({0: torch.export.Dim("batch", min=1)} if len(s.shape) >= 1 else None) for s in specs}
                        if dynamic else None
                    )
                    program = torch.onnx.export(
                        source.module, example(batch), dynamo=True, opset_version=opset,
                        dynamic_shapes=dynamic_shapes, input_names=[s.name for s in specs],
                        output_names=output_names,
                    )
                program.save(str(out_path), external_data=big)
        except Exception as exc:
            attempts.append(f"{exporter} ({'dynamic' if dynamic else 'static'} batch): {_line(exc)}")
            continue
        if dynamic_batch and batched and not dynamic:
            result_warnings.append("the batch axis could not be made dynamic; the model has a fixed batch size "
                                   f"({attempts[-1] if attempts else 'the program fixes it'})")
        return TorchExportResult(out_path, exporter, dynamic, attempts, result_warnings)
    # torch.export could not capture the model (data-dependent control flow and the like).
    if source.kind is not ModelFormat.TORCH_EXPORT:
        try:
            _export_torchscript(source, specs, out_path, example(None), opset, dynamic_batch, script_output_names)
            result_warnings.append("torch.export could not capture the model; exported by tracing with the "
                                   f"TorchScript exporter instead ({attempts[-1]})")
            return TorchExportResult(out_path, "torchscript-trace", dynamic_batch and bool(batched), attempts,
                                     result_warnings)
        except ExportError as exc:
            attempts.append(str(exc))
    raise ExportError(f"PyTorch → ONNX export failed: {attempts[0] if attempts else 'unknown error'}",
                      "make the model torch.export-able (https://pytorch.org/docs/stable/export.html); "
                      "rerun with --debug for every attempt")


def _export_torchscript(source: TorchSource, specs: list[InputSpec], out_path: Path, example: tuple[Any, ...],
                        opset: int | None, dynamic_batch: bool, output_names: list[str]) -> None:
    torch = import_torch()
    names = [s.name for s in specs]
    dynamic_axes: dict[str, dict[int, str]] | None = None
    if dynamic_batch:
        # Output batch axes follow from the inputs' through the traced graph.
        dynamic_axes = {s.name: {0: "batch"} for s in specs if len(s.shape) >= 1}
    try:
        with quiet_exporter():
            torch.onnx.export(source.module, example, str(out_path), dynamo=False, input_names=names,
                              output_names=output_names, dynamic_axes=dynamic_axes,
                              opset_version=opset or 17, do_constant_folding=True)
    except Exception as exc:
        raise ExportError(f"TorchScript → ONNX export failed: {_line(exc)}",
                          "rerun with --debug for the full error") from None


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]
