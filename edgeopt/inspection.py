"""`edgeopt inspect`: what a model file is, how big, how heavy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgeopt.artifact import ModelFormat, sniff_format
from edgeopt.errors import ModelLoadError, UnsupportedFormatError
from edgeopt.fsutil import gzip_size, sha256_file
from edgeopt.onnx_io import load_onnx

INSPECT_SCHEMA_VERSION = 1


class FileFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    format: ModelFormat
    sha256: str
    size_bytes: int  # the model file plus its external-data files
    gzip_size_bytes: int
    external_data_files: list[dict[str, Any]] = []
    checker_error: str | None = None


class InspectResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = INSPECT_SCHEMA_VERSION
    file: FileFacts
    graph: dict[str, Any]
    counted_at: str | None = None  # the input shapes MACs were counted at, with where each size came from
    unsized_dims: str | None = None  # why MACs were not counted: dims nothing gives a size, and the flags


def inspect_model(path: Path, input_shapes: dict[str | None, tuple[int, ...]] | None = None,
                  dims: dict[str, int] | None = None) -> InspectResult:
    from edgeopt.analysis.shapes import declared_input_specs
    from edgeopt.analysis.summary import summarize_graph
    from edgeopt.data import metadata_dict, resolve_inputs

    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}", "check the path")
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a file", "give the path of an .onnx file")
    fmt = sniff_format(path)
    if fmt is ModelFormat.TFLITE:
        raise UnsupportedFormatError(f"{path} is a TFLite model; inspect reads ONNX models today",
                                     "TFLite support is planned; inspect the ONNX model it came from")
    if fmt in (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.TORCH_PICKLE):
        raise UnsupportedFormatError(
            f"{path} is a PyTorch file ({fmt.value}); inspect reads ONNX models",
            f"export it first: edgeopt convert {path} -o OUT --input-shape ..., then edgeopt inspect OUT/model.onnx",
        )
    if fmt is ModelFormat.UNKNOWN:
        raise ModelLoadError(f"cannot tell what kind of model {path} is", "inspect reads .onnx files")
    # Weights are not needed for the summary: leave external data on disk.
    loaded = load_onnx(path, load_external_data=False)
    # Every symbolic dim sized by data.resolve (flags, metadata, a batch axis at 1); MACs are counted
    # only where every dim has a size, never at a silent 1.
    resolved = resolve_inputs(declared_input_specs(loaded.model, skip_unfeedable=True), shapes=input_shapes,
                              dims=dims,
                              metadata=metadata_dict([(p.key, p.value) for p in loaded.model.metadata_props]),
                              allow_unresolved=True)
    summary = summarize_graph(loaded.model, input_shapes=resolved.shapes or None)
    graph = summary.model_dump(mode="json")
    unsized = None
    if resolved.unresolved:
        unsized = "; ".join(f"{u.describe()} has no size ({u.fix})" for u in resolved.unresolved)
        graph.update(macs_total=None, macs_by_op_type={}, macs_unknown_nodes=[])
    counted_at = None if unsized else resolved.describe()
    files = loaded.all_files
    facts = FileFacts(
        path=str(path),
        format=ModelFormat.ONNX,
        sha256=sha256_file(path),
        size_bytes=sum(f.stat().st_size for f in files),
        gzip_size_bytes=gzip_size(files),
        external_data_files=[
            {"location": f.location, "size_bytes": f.path.stat().st_size, "tensors": f.tensors}
            for f in loaded.external_files
        ],
        checker_error=loaded.checker_error,
    )
    return InspectResult(file=facts, graph=graph, counted_at=counted_at, unsized_dims=unsized)
