"""What measuring and checking code runs a model through: a ``Runner`` (inputs, outputs, run), opened for
the model's format by ``open_runner``. onnxruntime today (``onnxruntime_runner``); a format's handler
(``formats.registry``) names the runner that runs it, so LiteRT is one module and its handler's line."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgeopt.data.specs import InputSpec
from edgeopt.errors import UnsupportedFormatError
from edgeopt.formats.artifact import ModelFormat


ModelSource = bytes | str | Path  # a serialized model, or its file


class Runner(Protocol):
    label: str

    def input_specs(self) -> list[InputSpec]: ...

    def output_names(self) -> list[str]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def open_runner(model: ModelSource, *, label: str, threads: int | None = None, optimization: str = "all",
                format: ModelFormat = ModelFormat.ONNX) -> Runner:
    """A runner for ``model`` (serialized bytes or a file) in ``format``."""
    from edgeopt.formats.registry import entry_point

    factory = entry_point(format, "runner")
    if factory is None:
        raise UnsupportedFormatError(f"{label}: no runtime runs {format.value} models here",
                                     "convert the model to ONNX first")
    return factory(model, label=label, threads=threads, optimization=optimization)
