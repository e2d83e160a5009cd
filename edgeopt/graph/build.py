"""The neutral graph of a loaded model, built by the graph adapter its format's handler names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeopt.errors import UnsupportedFormatError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.graph.model import Graph


def build_graph(model: Any, input_shapes: Mapping[Any, Sequence[int]] | None = None, *,
                format: ModelFormat = ModelFormat.ONNX, input_values: Mapping[str, Any] | None = None) -> Graph:
    """The graph.model.Graph of ``model`` (as the format's ``load`` returns it) at ``input_shapes``;
    ``input_values``: inputs whose values are known (they decide an ONNX If's branch)."""
    from edgeopt.formats.registry import entry_point

    adapter = entry_point(format, "graph")
    if adapter is None:
        raise UnsupportedFormatError(f"edgeopt cannot analyse {format.value} models statically yet",
                                     "convert the model to ONNX first")
    if input_values and format == ModelFormat.ONNX:
        return adapter(model, input_shapes, input_values=input_values)
    return adapter(model, input_shapes)
