"""What the reporting commands (inspect, profile, gate) need of a model file, whatever its format: its inputs as
``InputSpec``s, its metadata, its output names, its nodes for naming per-op measurements, and the loaded
object its format's graph adapter takes. One function per format fills it; the commands never branch on the
format's own structures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.data.specs import InputSpec
from edgeopt.formats.artifact import ModelFormat


@dataclass
class ModelView:
    format: ModelFormat
    model: Any  # onnx.ModelProto (external data left on disk), formats.tflite.TfliteModel
    specs: list[InputSpec]
    metadata: dict[str, str]
    output_names: list[str]
    # (name, op type, inputs, outputs) per node, in order: what per-op timings are mapped onto
    nodes: list[tuple[str, str, list[str], list[str]]]
    external_files: list[Path] = field(default_factory=list)


def open_view(path: Path, fmt: ModelFormat) -> ModelView:
    """The view of ``path`` (already identified as ``fmt``); weights stay on disk."""
    if fmt is ModelFormat.TFLITE:
        return _tflite_view(path)
    from edgeopt.formats.onnx import load_onnx
    from edgeopt.graph.onnx_shapes import declared_input_specs

    loaded = load_onnx(path, load_external_data=False)
    loaded.require_valid()
    model = loaded.model
    return ModelView(fmt, model, declared_input_specs(model), {p.key: p.value for p in model.metadata_props},
                     [o.name for o in model.graph.output],
                     [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node],
                     [f.path for f in loaded.external_files])


def _tflite_view(path: Path) -> ModelView:
    from edgeopt.data.specs import declared_dim
    from edgeopt.errors import UnsupportedFormatError
    from edgeopt.formats.tflite import load_tflite
    from edgeopt.graph.tflite_adapter import tensor_names

    model = load_tflite(path)
    graph = model.main
    names = tensor_names(graph)
    specs = []
    for index in graph.inputs:
        tensor = graph.tensors[index]
        if tensor.dtype in ("string", "resource", "variant") or tensor.dtype.startswith("type"):
            raise UnsupportedFormatError(f"input {tensor.name!r} has type {tensor.dtype}, which edgeopt cannot feed",
                                         "profile a model whose inputs are tensors of numbers")
        pattern = tensor.shape_signature or tensor.shape
        # the runtime's names: what the interpreter's input details call each input
        specs.append(InputSpec(tensor.name, tuple(declared_dim(int(d)) for d in pattern), tensor.dtype,
                               quantized=tensor.quantization is not None and tensor.dtype != "int32"))
    nodes = [(f"{op.op.lower()}_{op.index}", op.op, [names[i] for i in op.inputs if i >= 0],
              [names[i] for i in op.outputs]) for op in graph.operators]
    return ModelView(ModelFormat.TFLITE, model, specs, {}, [graph.tensors[i].name for i in graph.outputs], nodes)
