"""Model formats, one handler each: how a file is recognised (``sniff``), and, where edgeopt reads the
format as a graph, how it is loaded safely, what its inputs are, how it is saved, the runner that runs it
and the adapter that turns it into the neutral graph static analysis prices. ``sniff_format``
asks the handlers in registration order.

A new format is one module with its handler plus its line in ``_BUILTIN`` (TFLite: ``formats/tflite.py``).
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.formats.artifact import ModelFormat


@dataclass(frozen=True)
class FormatHandler:
    format: ModelFormat
    sniff: Callable[[bytes, Path], bool]  # (the file's first bytes, its path) -> is it this format?
    load: Callable[[Path], Any] | None = None  # safe load (no untrusted code, external data confined)
    input_specs: Callable[[Any], list[Any]] | None = None  # the loaded model's inputs as data.InputSpec
    save: Callable[[Any, Path], list[Path]] | None = None  # atomic; returns the files written
    runner: str | None = None  # "module:factory" of the runtime that runs it (runtime.runner)
    graph: str | None = None  # "module:function" adapting a loaded model to graph.model.Graph (graph.build)


_HANDLERS: list[FormatHandler] = []
# (module, attribute) of each built-in handler, in sniffing order: the first that recognises a file wins
_BUILTIN = [("edgeopt.formats.tflite", "HANDLER"), ("edgeopt.formats.registry", "TORCH_ARCHIVES"),
            ("edgeopt.formats.registry", "TORCH_PICKLE"), ("edgeopt.formats.onnx", "HANDLER")]


def register_format(handler: FormatHandler) -> None:
    _HANDLERS[:] = [h for h in _HANDLERS if h.format is not handler.format] + [handler]


def handlers() -> list[FormatHandler]:
    if not _HANDLERS:
        for module, name in _BUILTIN:
            register_format(getattr(importlib.import_module(module), name))
    return list(_HANDLERS)


def handler_for(fmt: ModelFormat) -> FormatHandler | None:
    return next((h for h in handlers() if h.format is fmt), None)


def entry_point(fmt: ModelFormat, role: str) -> Callable[..., Any] | None:
    """The callable a format's handler names for ``role`` ("runner" or "graph"), imported; None when the
    format has no handler or its handler names none."""
    handler = handler_for(fmt)
    spec = getattr(handler, role) if handler is not None else None
    if spec is None:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def sniff_format(path: Path) -> ModelFormat:
    """Tell the model format from the file's content, falling back to its suffix."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return ModelFormat.UNKNOWN
    if zipfile.is_zipfile(path):
        found = _zip_format(path)
        return found if found is not None else ModelFormat.UNKNOWN
    for handler in handlers():
        if handler.sniff(head, path):
            return handler.format
    return ModelFormat.UNKNOWN


# -- formats edgeopt recognises but does not read as a graph (yet) ------------------------------------


def _zip_format(path: Path) -> ModelFormat | None:
    """torch.export (.pt2), TorchScript and zip-format torch.save files, told apart by their members."""
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        return ModelFormat.TORCH_EXPORT
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return ModelFormat.TORCHSCRIPT
    if any(n.endswith("data.pkl") for n in names):
        return ModelFormat.TORCH_PICKLE
    return None


TORCH_ARCHIVES = FormatHandler(ModelFormat.TORCH_EXPORT, sniff=lambda head, path: False)  # zip members decide
# legacy (non-zip) torch.save or a plain pickle
TORCH_PICKLE = FormatHandler(ModelFormat.TORCH_PICKLE,
                             sniff=lambda head, path: head[:1] == b"\x80" or
                             path.suffix.lower() in {".pt", ".pth", ".pkl", ".bin"})
