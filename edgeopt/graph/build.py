"""The neutral graph of a loaded model, built by the graph adapter its format's handler names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeopt.errors import UnsupportedFormatError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.graph.model import Graph


def build_graph(model: Any, input_shapes: Mapping[Any, Sequence[int]] | None = None, *,
                format: ModelFormat = ModelFormat.ONNX) -> Graph:
    """The graph.model.Graph of ``model`` (as the format's ``load`` returns it) at ``input_shapes``."""
    from edgeopt.formats.registry import entry_point

    adapter = entry_point(format, "graph")
    if adapter is None:
        raise UnsupportedFormatError(f"edgeopt cannot analyse {format.value} models statically yet",
                                     "convert the model to ONNX first")
    return adapter(model, input_shapes)
