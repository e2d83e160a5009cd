"""`edgeopt inspect`: what a model file is, how big, how heavy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.onnx import load_onnx
from edgeopt.fsutil import gzip_size, sha256_file

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
    valid: bool = True  # False: the graph has structural faults (formats/onnx_faults.py); no runtime can run it
    faults: list[str] = []


class InspectResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = INSPECT_SCHEMA_VERSION
    file: FileFacts
    graph: dict[str, Any]
    counted_at: str | None = None  # the input shapes MACs were counted at, with where each size came from
    unsized_dims: str | None = None  # why MACs were not counted: dims nothing gives a size, and the flags


def inspect_model(path: Path, input_shapes: dict[str | None, tuple[int, ...]] | None = None,
                  dims: dict[str, int] | None = None) -> InspectResult:
    from edgeopt.graph.onnx_shapes import declared_input_specs
    from edgeopt.analysis.summary import summarize_graph
    from edgeopt.data import metadata_dict, resolve_inputs
    from edgeopt.formats.sources import identify_source

    source = identify_source(str(path), accepted=(ModelFormat.ONNX, ModelFormat.TFLITE), command="inspect")
    path = source.path
    if source.format is ModelFormat.TFLITE:
        return _inspect_tflite(path)
    # Weights are not needed for the summary: leave external data on disk.
    loaded = load_onnx(path, load_external_data=False)
    # Every symbolic dim sized by data.resolve (flags, metadata, a batch axis at 1); MACs are counted
    # only where every dim has a size, never at a silent 1.
    resolved = resolve_inputs(declared_input_specs(loaded.model, skip_unfeedable=True), shapes=input_shapes,
                              dims=dims,
                              metadata=metadata_dict([(p.key, p.value) for p in loaded.model.metadata_props]),
                              allow_unresolved=True)
    summary = summarize_graph(loaded.model, input_shapes=(resolved.shapes or None) if not loaded.faults else None)
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
        valid=not loaded.faults,
        faults=loaded.faults,
    )
    return InspectResult(file=facts, graph=graph, counted_at=counted_at, unsized_dims=unsized)


def _inspect_tflite(path: Path) -> InspectResult:
    """The flatbuffer read without running it (analysis/tflite_summary.py)."""
    from edgeopt.analysis.tflite_summary import summarize_tflite
    from edgeopt.formats.tflite import load_tflite

    graph = summarize_tflite(load_tflite(path))
    facts = FileFacts(path=str(path), format=ModelFormat.TFLITE, sha256=sha256_file(path),
                      size_bytes=path.stat().st_size, gzip_size_bytes=gzip_size([path]))
    return InspectResult(file=facts, graph=graph)
